"""experiments/benchmarks.py on the campaign runner (metaq_utils.campaign): a declared benchmark run is
resumed by its identity and never redone, a changed declaration is never mixed with the old result, a
result written before the runner is accepted only when its seed, settings and dense start are the
declared ones, and LeNet-300-100's dense references are the protocol campaign's runs (no training here:
the recipe is faked)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from metaq_utils.campaign import CampaignError, identity_key

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"density_scale": 1.2, "step": 0.53, "alpha": 0.87, "prune_lr": 0.00052, "structure": 0.4, "quant_lr": 6e-05}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def bm(tmp_path, monkeypatch):
    mod = _load("benchmarks", REPO / "experiments" / "benchmarks.py")
    monkeypatch.setattr(mod, "RUNS", tmp_path)
    monkeypatch.setattr(mod, "load_mnist", lambda: object())
    yield mod
    sys.modules.pop("benchmarks", None)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _old_dense(bm, arch, seed, **over):
    """A dense result.json as the script wrote it before the runner."""
    cfg = bm.TrainConfig(arch=arch, seed=seed, **bm.dense_settings(arch)).to_dict()
    _write(bm.dense_dir(arch, seed) / "result.json",
           {"arch": arch, "recipe": "adam_cos_aug", "seed": seed, "train_config": {**cfg, **over},
            "val_accuracy": 0.99, "test_accuracy": 0.99, "best_epoch": 3, "epoch_seconds_mean": 1.0})


def _old_recipe(bm, path, arch, seed, *, dense_seed=None, test=True, **over):
    """A recipe result.json as run_recipe wrote it before the runner."""
    res = {"method": "ours-prune-ste", "arch": arch, "recipe": {**bm.recipe_config(arch, PARAMS, seed).to_dict(), **over},
           "dense_reference": str(bm.dense_dir(arch, seed if dense_seed is None else dense_seed) / "best.pt"),
           "val_accuracy": 0.991, "file_bits": 50800, "params": PARAMS}
    if test:
        res["test_accuracy"] = 0.99
    _write(path / "result.json", res)


def test_a_declared_benchmark_run_is_resumed_by_its_identity(bm, monkeypatch):
    arch = "lenet5caffe"
    calls = []

    def fake_recipe(dense, data, cfg, out, *, evaluate_test, progress, log, extra):
        calls.append((str(dense), cfg.seed, evaluate_test))
        return {"val_accuracy": 0.99, "test_accuracy": 0.989, "file_bits": 51000, "seconds": 1.0, **extra}

    monkeypatch.setattr(bm, "run_recipe", fake_recipe)
    run = bm.seeds_run(arch, PARAMS, 1)
    with pytest.raises(bm.NotFinished, match="benchmarks.py dense --arch lenet5caffe --seed 1"):
        bm.run_one(run)                                         # its dense reference first
    assert calls == []
    _old_dense(bm, arch, 1)
    assert bm.campaign().status()["dense:lenet5caffe:s1"] == "done"     # written before the runner, these settings
    assert json.loads((bm.dense_dir(arch, 1) / "identity.json").read_text())["identity_key"] == bm.dense_run(arch, 1).key
    res = bm.run_one(run)
    assert calls == [(str(bm.dense_dir(arch, 1) / "best.pt"), 1, True)]
    assert res["identity_key"] == run.key == identity_key(run.identity)
    assert run.out == bm.seeds_dir(arch, PARAMS) / "seed1" and run.after == ("dense:lenet5caffe:s1",)
    assert run.identity["config"]["keep"] == bm.KEEP[arch] and run.identity["config"]["prune_epochs"] == 12
    assert bm.run_one(bm.seeds_run(arch, PARAMS, 1)) == res and len(calls) == 1     # a new declaration: done
    assert bm.seed_results(arch, PARAMS) == [res | {"seed": 1}]
    # the kept-fraction shape is not part of the folder's name: another shape is another run, refused here
    monkeypatch.setitem(bm.KEEP, arch, {**bm.KEEP[arch], "fc1.weight": 0.01})
    with pytest.raises(CampaignError, match="another identity"):
        bm.run_one(bm.seeds_run(arch, PARAMS, 1))
    assert len(calls) == 1


def test_an_old_benchmark_result_with_other_settings_is_refused(bm):
    arch = "lenet5caffe"
    out = bm.recipe_dir(arch, PARAMS) / "seed0"
    _old_recipe(bm, out, arch, 0, test=False)                   # a search trial: no test set
    c = bm.campaign(bm.recipe_run(arch, PARAMS, 0, evaluate_test=False))
    assert c.status()[f"recipe:{arch}:{out.parent.name}:s0"] == "done"
    assert json.loads((out / "identity.json").read_text())["identity_key"] == bm.recipe_run(arch, PARAMS, 0).key
    (out / "identity.json").unlink()
    _old_recipe(bm, out, arch, 0, quant_epochs=5)               # another budget
    with pytest.raises(CampaignError, match="config.quant_epochs 5"):
        bm.campaign(bm.recipe_run(arch, PARAMS, 0)).status()
    _old_recipe(bm, out, arch, 0, dense_seed=2)                 # from another seed's dense reference
    with pytest.raises(CampaignError, match="started from"):
        bm.campaign(bm.recipe_run(arch, PARAMS, 0)).status()
    assert not (out / "identity.json").exists()
    seeds = bm.seeds_dir(arch, PARAMS) / "seed0"
    _old_recipe(bm, seeds, arch, 0, test=False)                 # a seeds run must have evaluated the test set
    with pytest.raises(CampaignError, match="no test accuracy"):
        bm.campaign(bm.seeds_run(arch, PARAMS, 0)).status()
    _old_dense(bm, arch, 0, epochs=40)                          # a dense reference of another length
    with pytest.raises(CampaignError, match="config.epochs 40"):
        bm.campaign().status()
    _old_dense(bm, arch, 0)
    _write(bm.dc_dir((5, 4), 0) / "result.json",                # Deep Compression at other bits
           {"arch": arch, "seed": 0, "dense_reference": str(bm.dense_dir(arch, 0).relative_to(bm.RUNS) / "best.pt"),
            "config": {**bm._plain(bm.DC_CAFFE), "conv_bits": 8, "fc_bits": 5, "seed": 0}})
    with pytest.raises(CampaignError, match="config.conv_bits 8"):
        bm.campaign().status()


def test_lenet300100_dense_references_are_the_protocol_campaigns_runs(bm, tmp_path):
    pc = _load("protocol_campaign", REPO / "experiments" / "protocol_campaign.py")
    try:
        ctx = pc.Ctx(tmp_path, smoke=False, command="test")
        theirs = {r.name: r for r in pc.campaign(ctx).runs}
        for seed in bm.SEEDS:
            ours, other = bm.dense_run("lenet300100", seed), theirs[pc.dense_name("lenet300100", "adam_cos_aug", seed)]
            assert ours.key == other.key and Path(ours.out) == Path(other.out)
        assert bm.dense_run("lenet5caffe", 0).key != theirs[pc.dense_name("lenet5", "adam_cos_aug", 0)].key
    finally:
        sys.modules.pop("protocol_campaign", None)
