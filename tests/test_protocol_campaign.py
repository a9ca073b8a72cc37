"""experiments/protocol_campaign.py: the recipe is chosen on validation, a finished run is never
redone, a live worker's claim is respected and a dead one's taken over, and the frontier rows
aggregate ≥ 3 seeds with their budget (no training here: the runs are faked)."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_recipe_is_chosen_on_validation_and_gates_the_other_seeds(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    a, b = list(pc.RECIPES)
    assert pc.chosen_recipe(ctx, "lenet5") is None
    _write(pc.dense_dir(ctx, "lenet5", a, 0) / "result.json", {"val_accuracy": 0.990, "test_accuracy": 0.999})
    _write(pc.dense_dir(ctx, "lenet5", b, 0) / "result.json", {"val_accuracy": 0.992, "test_accuracy": 0.980})
    assert pc.chosen_recipe(ctx, "lenet5") == b                 # validation decides, not test
    choice = json.loads((tmp_path / "dense_reference/protocol/lenet5/recipe_choice.json").read_text())
    assert choice["chosen"] == b and choice["seed0_val_accuracy"] == {a: 0.990, b: 0.992}
    states = {j.id: pc.job_state(ctx, j) for j in pc.jobs(ctx)}
    assert states[f"dense:lenet5:{b}:s1"] == "ready" and states[f"dense:lenet5:{a}:s1"] == "skipped"
    assert states[f"dense:lenet5:{a}:s0"] == "done"
    assert states["lc:conv-prune_fc-quant:s0"] == "ready"      # seed 0's reference is the chosen recipe's
    assert states["lc:conv-prune_fc-quant:s1"] == "waiting"    # seed 1's is not trained yet
    assert pc.dense_reference(ctx, "lenet5", 0)[1]["val_accuracy"] == 0.992


def test_claims_live_and_dead_workers(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    job = pc.jobs(ctx)[0]
    assert pc.claim(ctx, job, "w0") and not pc.claimed_by_other(ctx, job)   # our own claim
    assert not pc.claim(ctx, job, "w1")                                       # taken
    path = pc._claim_path(ctx, job)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write(path, {"pid": live.pid, "host": socket.gethostname(), "worker": "other", "since": 0})
        assert pc.job_state(ctx, job) == "running"
    finally:
        live.kill()
        live.wait()
    assert pc.job_state(ctx, job) == "ready" and not path.exists()          # a dead worker's claim is taken over


def test_finished_runs_are_skipped_and_rows_aggregate_three_seeds(pc, tmp_path):
    ctx = pc.Ctx(tmp_path, smoke=False, command="test")
    name = pc.inq_name(5)
    for s in pc.SEEDS[:2]:
        _write(pc.method_dir(ctx, "inq", name, s) / "result.json",
               {"seed": s, "test_accuracy": 0.99 + s / 1000, "val_accuracy": 0.991, "file_bits": 1000 + s,
                "selection": "validation", "n_params": 44426, "config": {"bits": 5, "fractions": [0.5, 1.0]}})
    job = next(j for j in pc.jobs(ctx) if j.id == "inq:b5:s0")
    assert job.done() and pc.job_state(ctx, job) == "done"
    assert pc.frontier_rows(ctx) == []                                        # 2 seeds: no row
    _write(pc.method_dir(ctx, "inq", name, 2) / "result.json",
           {"seed": 2, "test_accuracy": 0.992, "val_accuracy": 0.991, "file_bits": 1002, "selection": "validation",
            "n_params": 44426, "config": {"bits": 5, "fractions": [0.5, 1.0]}})
    (row,) = pc.frontier_rows(ctx)
    assert row.method == "inq" and row.run == f"protocol/{name}" and row.seeds == 3
    assert row.selection == "validation" and row.budget and "paper partition" in row.budget
    assert abs(row.test_acc_mean - 0.991) < 1e-12 and row.file_bits == 1001
