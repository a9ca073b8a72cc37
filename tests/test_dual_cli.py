"""`python -m metaq_utils dual CHECKPOINT --variant V --steps K --json` (issue 12)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from metaq_utils.core.reference import ReferenceSolver, reference_grid, sorted_uniform_xi
from metaq_utils.nn.checkpoints import save_checkpoint
from metaq_utils.nn.networks import build_model

from conftest import REPO


@pytest.fixture
def uniform_ckpt(tmp_path):
    """A LeNet-5 at the thesis' start (uniform in [w0 − r, w0 + r]), saved with its grid."""
    torch.manual_seed(0)
    m = build_model("lenet5")
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-1.224, 1.004)
    path = tmp_path / "u.pt"
    save_checkpoint(path, m, "lenet5", grid={"w0": -0.11, "r": 1.114, "C": 6})
    return path, m


def _dual(*args):
    out = subprocess.run([sys.executable, "-m", "metaq_utils", "dual", *map(str, args)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    return out


def test_dual_reference_json_matches_the_solver(uniform_ckpt):
    path, m = uniform_ckpt
    out = _dual(path, "--variant", "reference", "--steps", "3", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["variant"] == "reference" and res["start_rule"] == "sorted_uniform" and res["return_rule"] == "last"
    assert len(res["steps"]) == 3 and 0.15 < res["share_above_grid"] < 0.17
    w = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy()
    solver = ReferenceSolver(reference_grid(-0.11, 1.114, 6), w.size, xi0=sorted_uniform_xi(6, 0.0, 1.0, 0))
    for step in res["steps"]:
        beta, st = solver.solve(w)
        np.testing.assert_allclose(step["xi"], st.xi, rtol=1e-6)
        assert step["beta"]["max"] == pytest.approx(float(beta.max()))
        assert step["beta"]["min"] > 0 and step["beta"]["distinct"] >= 2


def test_dual_constant_best_shows_beta_zero_and_given_start(uniform_ckpt):
    path, _ = uniform_ckpt
    res = json.loads(_dual(path, "--variant", "constant_best", "--steps", "2", "--json").stdout)
    assert all(s["beta"]["max"] == 0 and s["beta"]["min"] == 0 for s in res["steps"])
    res = json.loads(_dual(path, "--variant", "thesis", "--xi0", "0,1,2,3,4,5", "--steps", "1", "--json").stdout)
    assert res["start_rule"] == "given" and res["steps"][0]["beta"]["max"] > 0


def test_dual_bad_input_is_named(uniform_ckpt, tmp_path):
    path, _ = uniform_ckpt
    out = _dual(path, "--xi0", "1,2")
    assert out.returncode != 0 and "xi0 must be 6 finite values" in out.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:1000])          # a truncated checkpoint
    out = _dual(bad)
    assert out.returncode != 0 and "bad.pt" in out.stderr


def test_dual_reference_2025_json_reports_the_zero_bucket(uniform_ckpt):
    """`--variant reference_2025`: the logged grid (C 64, r 1.1, w0 −0.017), the 1b7583f solve, and the
    zero bucket's share and β over it in each step's β statistics."""
    from metaq_utils.core.reference_2025 import Reference2025Solver, grid_2025, quantize_center
    path, m = uniform_ckpt
    out = _dual(path, "--variant", "reference_2025", "--steps", "2", "--delta", "10.53", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["variant"] == "reference_2025" and res["grid"] == {"w0": -0.017, "r": 1.1, "C": 64}
    w = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy()
    g = grid_2025(64, 1.1)
    solver = Reference2025Solver(g.v, w.size, 10.53, xi0=sorted_uniform_xi(64, 0.0, 1.0, 0))
    k, _ = quantize_center(w, g.v)
    for step in res["steps"]:
        beta = solver.solve(w)
        np.testing.assert_allclose(step["xi"], solver.xi, rtol=1e-6)
        b = step["beta"]
        assert b["zero_bucket"] == 32 and b["zero_bucket_share"] == pytest.approx(float(np.mean(k == 32)))
        assert b["beta_zero_bucket_mean"] == pytest.approx(float(beta[k == 32].mean()))
        assert b["knapsack_prune"] + b["knapsack_split"] + b["knapsack_below"] + b["knapsack_above"] == pytest.approx(1)
    bad = _dual(path, "--variant", "reference_2025", "--bucket-zero", "63")
    assert bad.returncode != 0 and "bucket_zero" in bad.stderr
