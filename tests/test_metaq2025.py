"""metaq_utils.metaq2025 (METaQ's 2025 form under the protocol, the main job): a short run on a
small MNIST subset is checked against independent recomputations — the file decodes to the
reported accuracy, the selected epoch and C' obey their validation rules, the size is the file's,
a resumed run continues where it stopped — and bad input is refused by name."""
import json

import numpy as np
import pytest
import torch

from metaq_utils.coding.fileformat import read_compressed
from metaq_utils.frontier import FrontierPoint
from metaq_utils.metaq2025 import CONFIGS, Config2025, nearest_table, ship, train_2025
from metaq_utils.nn.checkpoints import load_checkpoint
from metaq_utils.nn.networks import model_from_compressed
from metaq_utils.nn.training import evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_mnist):
    out = tmp_path_factory.mktemp("m25") / "logged_seed0"
    res = train_2025(out, "logged", 0, 1, small_mnist, command="test")
    return out, res


def test_decoded_file_is_what_is_reported(run, small_mnist):
    out, res = run
    data = (out / "model.mtq").read_bytes()
    assert res["file_bits"] == 8 * len(data)
    model = model_from_compressed(read_compressed(out / "model.mtq"))
    assert evaluate(model, small_mnist.test_x, small_mnist.test_y)["accuracy"] == res["test_accuracy_decoded"]
    assert evaluate(model, small_mnist.val_x, small_mnist.val_y)["accuracy"] == res["val_accuracy_decoded"]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    nz = np.count_nonzero(w)
    assert res["reference_size"]["sparsity"] == pytest.approx(1 - nz / w.size, abs=1e-9)
    assert json.loads((out / "result.json").read_text())["file_bits"] == res["file_bits"]


def test_selection_rules_on_validation(run):
    _, res = run
    h = res["history"]
    best = max(r["val_accuracy_sparse"] for r in h)
    assert res["selected"]["val_accuracy_sparse"] == best
    assert res["selection"] == "validation"
    scan = {r["C"]: r for r in res["scan"]}
    if res["C_rule"].startswith("BestQuantization"):
        ok = [c for c, r in scan.items() if r["val_accuracy_quantized"] >= res["val_accuracy_float"] - 0.002]
        assert res["C_chosen"] == min(ok, key=lambda c: scan[c]["entropy_quantized_bits"])
    else:
        assert res["C_chosen"] == 64
    row = h[0]
    assert set(row["beta"]) >= {"mean", "std", "zero_bucket_mean"}   # the zero bucket's share of β is reported
    assert 0 < row["zero_bucket_share"] <= 1
    assert row["entropy_quantized_bits"] > 0


def test_resume_continues(run, small_mnist, tmp_path):
    out, res = run
    import shutil
    shutil.copytree(out, tmp_path / "r")
    (tmp_path / "r" / "result.json").unlink()
    res2 = train_2025(tmp_path / "r", "logged", 0, 2, small_mnist, command="test")
    assert [r["epoch"] for r in res2["history"]] == [1, 2]
    assert res2["history"][0] == res["history"][0]                     # epoch 1 not retrained
    assert "resumed at epoch 1" in (tmp_path / "r" / "log.txt").read_text()


def test_none_control_adds_no_term(small_mnist, tmp_path):
    res = train_2025(tmp_path / "n", "none_pruned", 0, 1, small_mnist, command="test")
    assert "beta" not in res["history"][0] and res["settings"]["solver"] == "none"


def test_ship_and_table(run, tmp_path):
    out, res = run
    before, after = ship(res, out, "m", tmp_path, tmp_path)
    ck = load_checkpoint(before, expected_arch="lenet5")
    assert ck.config["method"] == "metaq-reference-2025" and ck.metrics["file_bits"] == res["file_bits"]
    assert after.read_bytes() == (out / "model.mtq").read_bytes()
    pts = [FrontierPoint(method="ours-prune-ste", network="lenet5", accuracy=0.991, file_bits=23163, run="h",
                         selection="validation", seeds=3, test_acc_mean=0.991, test_acc_std=0.0003, val_acc_mean=0.99,
                         file_bits_mean=23163, file_bits_std=64, budget="b", n_params=44426),
           FrontierPoint(method="x", network="lenet5", accuracy=0.9, file_bits=100, run="t", selection="test", seeds=1,
                         test_acc_mean=0.9, budget="", n_params=44426)]
    t = nearest_table(res, pts)
    assert "this run" in t and "ours-prune-ste" in t and "| x |" not in t   # test-selected rows are left out


def test_bad_input():
    with pytest.raises(ValueError, match="solver"):
        Config2025(1.0, None, "bogus")
    with pytest.raises(ValueError, match="delta"):
        Config2025(float("nan"), None, "2025")
    with pytest.raises(ValueError, match="sign"):
        Config2025(1.0, None, "2025", sign=2.0)
    with pytest.raises(ValueError, match="unknown configuration"):
        train_2025("/nonexistent", "nope", 0, 1, None, command="")
    with pytest.raises(ValueError, match="epochs"):
        train_2025("/nonexistent", "logged", 0, 0, None, command="")
    assert set(CONFIGS) >= {"logged", "none_pruned", "zero_bucket_off", "pruning_off", "flipped_sign"}


def test_cli_refuses_unknown_config(capsys):
    from metaq_utils.__main__ import main
    assert main(["metaq2025", "--config", "nope", "--epochs", "1", "--run-dir", "/tmp/metaq2025_cli_nope"]) == 2
    assert "unknown configuration" in capsys.readouterr().err


def test_reference_rule_on_test_is_apart_and_changes_nothing(run, small_mnist, tmp_path):
    """The reference's own (test-set) selection, reported apart: the validation path is the same run,
    and the test-selected block obeys trainer.py's epoch rule and BestQuantization's C' rule,
    recomputed here from the recorded numbers and an independent evaluation of the chosen point."""
    _, res = run
    out = tmp_path / "refrule"
    r2 = train_2025(out, "logged", 0, 2, small_mnist, command="test", reference_rule_on_test=True)
    r1 = train_2025(tmp_path / "plain2", "logged", 0, 2, small_mnist, command="test")
    for k in ("selected_epoch", "C_chosen", "file_bits", "test_accuracy_decoded", "val_accuracy_decoded"):
        assert r2[k] == r1[k], k
    assert r1["history"][0]["val_accuracy_sparse"] == res["history"][0]["val_accuracy_sparse"]
    assert "reference_rule_test_selected" not in r1
    t = r2["reference_rule_test_selected"]
    assert t["selection"] == "test"
    accs = [h["test_accuracy_sparse_C64"] for h in r2["history"]]
    assert t["epoch"] == 1 + accs.index(max(accs))          # the first epoch of the best (strictly beats)
    ok = [s for s in t["scan"] if s["test_accuracy_quantized"] >= t["test_accuracy_float"] - 0.002]
    assert t["C_chosen"] == (min(ok, key=lambda s: s["entropy_quantized_bits"])["C"] if ok else 64)
    # the chosen epoch's state, quantized at C' and sparsified, evaluated independently
    from metaq_utils.core.reference_2025 import grid_2025, quantize_center
    model = model_from_compressed(read_compressed(out / "model.mtq"))
    state = torch.load(out / "best_test_state.pt", weights_only=False)["model"]
    model.load_state_dict(state)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    v = grid_2025(t["C_chosen"], 1.1, bucket_zero=0, w0=-0.017).v if t["C_chosen"] != 64 else grid_2025(64, 1.1).v
    _, q = quantize_center(w, v)
    q = q + np.float32(0.0)
    q[np.abs(q) <= 1e-3] = 0.0
    o = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(q[o:o + p.numel()].reshape(p.shape)))
            o += p.numel()
    assert evaluate(model, small_mnist.test_x, small_mnist.test_y)["accuracy"] == t["test_accuracy_sparse_Cprime"]


def test_campaign_declarations_on_the_runner(run, tmp_path, load_script):
    """experiments/metaq2025.py declares its runs for metaq_utils.campaign: a result from before the
    runner is accepted only when its network/configuration/seed/epochs/settings agree (and then gets
    its identity.json), a finished run is not retrained, another identity is refused by name."""
    import shutil
    from metaq_utils.campaign import CampaignError
    exp = load_script("experiments/metaq2025.py")
    out, _ = run
    shutil.copytree(out, tmp_path / "logged_e1_seed0")
    no_data = lambda: pytest.fail("a finished run was started again")   # noqa: E731
    c = exp.campaign(["logged"], [0], 1, "lenet5", False, no_data, "test", root=tmp_path)
    assert c.status() == {"logged_e1_seed0": "done"}
    ident = json.loads((tmp_path / "logged_e1_seed0" / "identity.json").read_text())
    assert ident["identity"]["config"] == "logged" and ident["identity"]["seed"] == 0
    assert c.run("w0") == 0
    # the same result under the folder of another declaration: refused, naming what differs
    shutil.copytree(out, tmp_path / "delta5_e1_seed0")
    with pytest.raises(CampaignError, match="config 'logged'"):
        exp.campaign(["delta5"], [0], 1, "lenet5", False, no_data, "test", root=tmp_path).status()
    shutil.copytree(out, tmp_path / "reference_rule" / "logged_e1_seed0")
    with pytest.raises(CampaignError, match="test-selected block"):
        exp.campaign(["logged"], [0], 1, "lenet5", True, no_data, "test", root=tmp_path).status()
    # a declaration that changed (another seed's identity recorded in the folder) is never overwritten
    (tmp_path / "logged_e1_seed0" / "result.json").write_text(json.dumps({"identity_key": "0" * 16}))
    with pytest.raises(CampaignError, match="another identity"):
        c.status()
