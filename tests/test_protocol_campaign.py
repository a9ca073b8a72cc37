"""experiments/protocol_campaign.py on the campaign runner (metaq_utils.campaign): the recipe is chosen
on validation and gates the other seeds, a finished run is never redone (its declared identity, or an
old result whose settings are the declared ones), a live worker's claim is respected and a dead one's
taken over, and the frontier rows aggregate ≥ 3 seeds with their budget (no training here: the runs
are faked)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaq_utils.campaign import CampaignError, identity_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def pc():
    spec = importlib.util.spec_from_file_location("protocol_campaign", REPO / "experiments" / "protocol_campaign.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _dense(pc, ctx, arch, recipe, seed, val, test=0.99):
    """A dense result.json as the script wrote it before the runner."""
    _write(pc.dense_dir(ctx, arch, recipe, seed) / "result.json",
           {"arch": arch, "recipe": recipe, "seed": seed, "val_accuracy": val, "test_accuracy": test,
            "best_epoch": 3, "train_config": pc.dense_config(ctx, arch, recipe, seed).to_dict()})


def _inq(pc, ctx, seed, **over):
    """An INQ b=5 result.json as the script wrote it before the runner (from the chosen reference)."""
    res = {"arch": "lenet5", "seed": seed, "test_accuracy": 0.99 + seed / 1000, "val_accuracy": 0.991,
           "file_bits": 1000 + seed, "selection": "validation", "n_params": 44426,
           "config": {**pc.INQConfig(**pc.inq_settings(ctx, 5), seed=seed).to_dict(), **over},
           "dense_reference": {"recipe": pc.chosen_recipe(ctx, "lenet5")}}
    _write(pc.method_dir(ctx, "inq", pc.inq_name(5), seed) / "result.json", res)


def test_recipe_is_chosen_on_validation_and_gates_the_other_seeds(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    a, b = list(pc.RECIPES)
    assert pc.chosen_recipe(ctx, "lenet5") is None
    states = pc.campaign(ctx).status()
    assert states[f"dense:lenet5:{a}:s1"] == "waiting" and states[f"dense:lenet5:{a}:s0"] == "todo"
    _dense(pc, ctx, "lenet5", a, 0, val=0.990, test=0.999)
    _dense(pc, ctx, "lenet5", b, 0, val=0.992, test=0.980)
    assert pc.chosen_recipe(ctx, "lenet5") == b                 # validation decides, not test
    choice = json.loads((tmp_path / "dense_reference/protocol/lenet5/recipe_choice.json").read_text())
    assert choice["chosen"] == b and choice["seed0_val_accuracy"] == {a: 0.990, b: 0.992}
    states = pc.campaign(ctx).status()
    assert states[f"dense:lenet5:{b}:s1"] == "todo" and states[f"dense:lenet5:{a}:s1"] == "skipped"
    assert states[f"dense:lenet5:{a}:s0"] == "done"
    assert states["lc:conv-prune_fc-quant:s0"] == "todo"       # seed 0's reference is the chosen recipe's
    assert states["lc:conv-prune_fc-quant:s1"] == "waiting"    # seed 1's is not trained yet
    assert pc.dense_reference(ctx, "lenet5", 0)[1]["val_accuracy"] == 0.992


def test_deep_compression_bit_settings_wait_for_the_one_that_prunes(pc, tmp_path):
    c = pc.campaign(pc.Ctx(tmp_path, smoke=False, command="test"))
    dc = [r for r in c.runs if r.name.startswith("dc:lenet5:q1.6:s1:")]
    assert [r.name for r in dc] == ["dc:lenet5:q1.6:s1:conv8_fc5", "dc:lenet5:q1.6:s1:conv5_fc4",
                                    "dc:lenet5:q1.6:s1:conv4_fc3"]
    assert dc[0].after == tuple(pc.dense_name("lenet5", r, 1) for r in pc.RECIPES)
    assert all(r.after == dc[0].after + (dc[0].name,) for r in dc[1:])
    assert [r.out.parent.name for r in dc] == ["lenet5_q1.6_conv8_fc5", "lenet5_q1.6_conv5_fc4", "lenet5_q1.6_conv4_fc3"]
    assert dc[1].identity["config"]["conv_bits"] == 5 and dc[1].identity["config"]["layer_quality"] == [["conv1.weight", 0.8]]


def test_claims_live_and_dead_workers(pc, tmp_path):
    c = pc.campaign(pc.Ctx(tmp_path, smoke=False, command="test"))
    run = c.runs[0]
    path = Path(run.out) / ".claim"
    live = subprocess.Popen([sys.executable, "-c",
                             "import time; from metaq_utils.store.claims import ClaimFile; "
                             f"ClaimFile({str(path)!r}).claim('other'); print('held', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        assert c.status()[run.name] == "running"
    finally:
        live.kill()
        live.wait()
    assert c.status()[run.name] == "todo" and not path.exists()   # a dead worker's claim is taken over


def test_a_declared_protocol_run_is_resumed_by_its_identity(pc, tmp_path, monkeypatch):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    for r in pc.RECIPES:
        _dense(pc, ctx, "lenet5", r, 0, val=0.99 if r == "adam_cos_aug" else 0.98)
    calls = []

    def fake_inq(ctx_, bits, seed):
        calls.append((bits, seed))
        return {"seed": seed, "val_accuracy": 0.99, "test_accuracy": 0.99, "file_bits": 1000, "n_params": 44426}

    monkeypatch.setattr(pc, "run_inq", fake_inq)
    c = pc.campaign(ctx)
    assert c.run("w0", only=["inq:b5:s0"]) == 1 and calls == [(5, 0)]
    run = next(r for r in c.runs if r.name == "inq:b5:s0")
    res = json.loads((run.out / "result.json").read_text())
    assert res["identity_key"] == run.key == identity_key(run.identity)
    assert run.identity == {"campaign": "protocol", "method": "inq", "arch": "lenet5", "seed": 0,
                            "config": {"fractions": [0.5, 0.75, 0.875, 1.0], "epochs_per_step": 6, "bits": 5}}
    again = pc.campaign(ctx)                                    # a new worker: the same declaration
    assert again.status()["inq:b5:s0"] == "done"
    assert again.run("w1", only=["inq:b5:s0"]) == 0 and calls == [(5, 0)]
    monkeypatch.setattr(pc, "INQ_EPOCHS_PER_STEP", 7)           # another budget is another run
    with pytest.raises(CampaignError, match="another identity"):
        pc.campaign(ctx).run("w0", only=["inq:b5:s0"])
    assert calls == [(5, 0)]


def test_finished_runs_are_skipped_and_rows_aggregate_three_seeds(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    for r in pc.RECIPES:
        _dense(pc, ctx, "lenet5", r, 0, val=0.99 if r == "adam_cos_aug" else 0.98)
    name = pc.inq_name(5)
    for s in pc.SEEDS[:2]:
        _inq(pc, ctx, s)
    run = next(r for r in pc.campaign(ctx).runs if r.name == "inq:b5:s0")
    assert pc.campaign(ctx).status()["inq:b5:s0"] == "done"    # written before the runner, of these settings
    recorded = json.loads((run.out / "identity.json").read_text())
    assert recorded["identity_key"] == run.key
    assert pc.frontier_rows(ctx) == []                                        # 2 seeds: no row
    _inq(pc, ctx, 2)
    (row,) = pc.frontier_rows(ctx)
    assert row.method == "inq" and row.run == f"protocol/{name}" and row.seeds == 3
    assert row.selection == "validation" and row.budget and "paper partition" in row.budget
    assert abs(row.test_acc_mean - (0.99 + 0.001)) < 1e-12 and row.file_bits == 1001


def test_an_old_result_with_other_settings_is_not_taken_for_the_declared_run(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    for r in pc.RECIPES:
        _dense(pc, ctx, "lenet5", r, 0, val=0.99 if r == "adam_cos_aug" else 0.98)
    _inq(pc, ctx, 0, epochs_per_step=1)
    with pytest.raises(CampaignError, match="epochs_per_step 1"):
        pc.campaign(ctx).status()
    _inq(pc, ctx, 0)
    res = json.loads((pc.method_dir(ctx, "inq", pc.inq_name(5), 0) / "result.json").read_text())
    res["dense_reference"]["recipe"] = "adam_cos"               # not the chosen reference
    _write(pc.method_dir(ctx, "inq", pc.inq_name(5), 0) / "result.json", res)
    with pytest.raises(CampaignError, match="dense reference"):
        pc.campaign(ctx).status()
