"""metaq_utils.studies (the analysis notebooks' code) against independent references (LP, Qhull,
CVXPY, probability theory); metaq_utils.studies as their re-export."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import linprog, minimize
from scipy.spatial import ConvexHull

from metaq_utils import studies as A
from metaq_utils.core import dual
from metaq_utils.core.grid import Grid
from metaq_utils.core.subproblem import SOLVERS, lower_hull_pava, solve_cutting_plane_scalar, solve_hull
from metaq_utils.studies import breakpoints as BP
from metaq_utils.studies import dual_optimum as DO
from metaq_utils.studies import dual_runs as DR
from metaq_utils.studies import instances as INS
from metaq_utils.studies import plots as PL
from metaq_utils.studies import timing as TM

needs_cvxpy = pytest.mark.skipif(importlib.util.find_spec("cvxpy") is None, reason="needs cvxpy")


def _lp(w, v, xi):
    res = linprog(xi, A_eq=np.vstack([v, np.ones(v.shape[0])]), b_eq=[w, 1.0], bounds=(0, 1), method="highs")
    assert res.status == 0
    return res.fun, res.eqlin.marginals[0]


# ----------------------------------------------------------------------------- x-subproblem


def test_random_instances_cover_every_case():
    inst = INS.random_instances(600, seed=3)
    assert {i.xi_model for i in inst} == set(INS.INSTANCE_XI_MODELS)
    assert {i.w_kind for i in inst} == set(INS.W_KINDS)
    assert {2, 1024} <= {i.C for i in inst} and any(not i.uniform for i in inst)
    for i in inst:
        assert np.all(np.diff(i.v) > 0) and i.xi.shape == (i.C,)
        if i.w_kind == "outside":
            assert i.w < i.v[0] or i.w > i.v[-1]
        if i.w_kind in ("grid_value", "hull_vertex", "end"):
            assert i.w in set(i.v.tolist())
    again = INS.random_instances(600, seed=3)
    assert all(np.array_equal(a.xi, b.xi) and a.w == b.w for a, b in zip(inst, again))


@pytest.mark.parametrize("C", [2, 3, 7, 40])
def test_brute_force_vertices_match_qhull(C):
    rng = np.random.default_rng(C)
    for _ in range(20):
        v = np.sort(rng.uniform(-1, 1, C))
        xi = rng.normal(size=C)
        if C == 2:
            expected = {0, 1}
        else:
            hull = ConvexHull(np.column_stack([v, xi]))
            lower = hull.equations[:, 1] < 0  # facets whose outward normal points down
            expected = set(hull.simplices[lower].ravel().tolist())
        assert set(INS.brute_force_vertices(v, xi).tolist()) == expected


def _lp_multiplier_interval(w, v, xi, V, slack):
    """[min λ, max λ] over the LP dual's optimal face {λv_b + μ ≤ ξ_b, λw + μ ≥ V − slack}, by HiGHS."""
    A_ub = np.vstack([np.column_stack([v, np.ones_like(v)]), [-w, -1.0]])
    b_ub = np.concatenate([xi, [-(V - slack)]])
    out = []
    for sign in (1.0, -1.0):
        res = linprog([sign, 0.0], A_ub=A_ub, b_ub=b_ub, bounds=[(None, None)] * 2, method="highs")
        if res.status == 3:  # unbounded: the interval is open on that side
            out.append(-sign * math.inf)
        else:
            assert res.status == 0, res.message
            out.append(float(res.x[0]))
    return out


def test_envelope_reference_against_the_lp_and_its_dual():
    for inst in INS.random_instances(300, seed=1, big_C_every=0):
        V, lo, hi = INS.envelope_reference(inst.w, inst.v, inst.xi)
        wc = float(np.clip(inst.w, inst.v[0], inst.v[-1]))
        val, marg = _lp(wc, inst.v, inst.xi)
        scale = max(1.0, np.abs(inst.xi).max())
        assert V == pytest.approx(val, abs=1e-9 * scale)
        tb = 1e-6 * (1 + scale / np.diff(inst.v).min())
        assert lo - tb <= marg <= hi + tb  # HiGHS' multiplier is one of the optimal ones
        lp_lo, lp_hi = _lp_multiplier_interval(wc, inst.v, inst.xi, V, 1e-12 * scale)
        for mine, ref in ((lo, lp_lo), (hi, lp_hi)):
            if math.isinf(ref):
                assert mine == ref
            else:
                assert mine == pytest.approx(ref, abs=tb)


def test_agreement_table_passes_the_package_solvers_and_catches_wrong_ones():
    inst = INS.random_instances(160, seed=5, big_C_every=0)
    t = INS.agreement_table(inst, cvxpy_instances=0)
    assert list(t.index) == ["reference: linprog vs enumeration", *SOLVERS]
    assert (t["failures"] == 0).all() and (t["instances"] == 160).all()
    assert (t.loc[list(SOLVERS), "β inside LP interval"] == 1.0).all()

    def off_value(w, v, xi):
        s = solve_hull(w, v, xi)
        return replace(s, value=s.value + 1e-6 * max(1.0, np.abs(xi).max()))

    def off_beta(w, v, xi):
        s = solve_hull(w, v, xi)
        return replace(s, beta=s.beta + 1e-2 * (1 + np.abs(s.beta)))

    def infeasible(w, v, xi):
        s = solve_hull(w, v, xi)
        return replace(s, theta=np.where(s.lo != s.hi, 0.5 * s.theta, s.theta))

    bad = INS.agreement_table(inst, {"off_value": off_value, "off_beta": off_beta, "infeasible": infeasible}, 0)
    assert bad.loc["off_value", "value fails"] == 160
    assert bad.loc["off_beta", "multiplier fails"] > 100
    assert bad.loc["infeasible", "x/feasibility fails"] > 50


@needs_cvxpy
def test_agreement_table_with_cvxpy():
    t = INS.agreement_table(INS.random_instances(12, seed=9, big_C_every=0), cvxpy_instances=4)
    assert t.loc["cvxpy", "instances"] == 4 and t["failures"].sum() == 0


def test_kelley_trace_matches_the_solver_and_brackets_the_optimum():
    for inst in INS.random_instances(300, seed=2):
        steps = INS.kelley_trace(inst.w, inst.v, inst.xi)
        s = solve_cutting_plane_scalar(inst.w, inst.v, inst.xi)
        V, lo, hi = INS.envelope_reference(inst.w, inst.v, inst.xi)
        scale = max(1.0, np.abs(inst.xi).max())
        last = steps[-1]
        assert last.lam == pytest.approx(float(s.beta[0]), abs=1e-12 * (1 + abs(last.lam)))
        assert last.model_value == pytest.approx(V, abs=1e-9 * scale)
        assert last.dual_value == pytest.approx(V, abs=1e-9 * scale)
        assert last.new_bucket == last.a
        wc = float(np.clip(inst.w, inst.v[0], inst.v[-1]))
        for st in steps:
            assert inst.v[st.a] <= wc <= inst.v[st.b]
            assert st.dual_value <= st.model_value + 1e-9 * scale  # weak duality of the model
            assert st.dual_value <= V + 1e-9 * scale
        models = [st.model_value for st in steps]
        assert all(b <= a + 1e-9 * scale for a, b in zip(models, models[1:]))  # the model only drops
        d = INS.dual_1d(np.array([last.lam]), wc, inst.v, inst.xi)
        assert d[0] == pytest.approx(V, abs=1e-9 * scale)


def test_thesis_timing_comparison_smoke():
    df = TM.thesis_timing_comparison(n_cvxpy=2, n_scalar_c5=50, n_weights_c256=300, repeats=1)
    assert df.shape == (6, 8) and (df["our ratio"] > 0).all()
    assert df["thesis ratio"].notna().sum() == 3


# ----------------------------------------------------------------------------- breakpoints


def test_breakpoint_counts_random_walk_matches_sparre_andersen():
    """Convex minorant of a random walk with C − 1 exchangeable continuous steps: the faces are the
    cycles of a uniform random permutation, so E[#vertices] = 1 + H_{C−1}, Var = H − H^(2)."""
    C, N = 64, 4000
    k = BP.breakpoint_counts("random_walk", C, N, seed=11)
    H = sum(1 / j for j in range(1, C))
    H2 = sum(1 / j**2 for j in range(1, C))
    assert abs(k.mean() - (1 + H)) < 4 * math.sqrt((H - H2) / N)
    assert k.var() == pytest.approx(H - H2, rel=0.1)


def test_p_all_vertices_random_walk_exact_formula():
    rng = np.random.default_rng(0)
    C, N = 4, 60_000
    v = np.arange(C, dtype=float)
    hits = sum(INS.brute_force_vertices(v, np.cumsum(rng.normal(size=C))).shape[0] == C for _ in range(N))
    p = 10 ** BP.log10_p_all_vertices_random_walk(C)
    assert p == pytest.approx(1 / 6)
    assert abs(hits / N - p) < 4 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("model", sorted(BP.BREAKPOINT_MODELS))
def test_breakpoint_counts_equal_brute_force_and_thesis_method(model):
    C = 32
    rng = np.random.default_rng(1)
    v = Grid(-0.11, 1.114, C).v
    for _ in range(10):
        xi = BP.sample_xi(model, C, rng)
        assert xi.shape == (C,) and np.isfinite(xi).all()
        assert len(INS.brute_force_vertices(v, xi)) == len(lower_hull_pava(v, xi))
    a = BP.breakpoint_counts(model, C, 30, seed=4, hull="pava")
    b = BP.breakpoint_counts(model, C, 30, seed=4, hull="breakpoints")
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 2 and a.max() <= C


def test_log10_beta_sf_against_scipy_and_the_tail_bound():
    for a, b, x in [(3.0, 40.0, 0.3), (7.0, 240.0, 0.1), (2.5, 0.8, 0.9), (20.0, 700.0, 0.08), (5.0, 60.0, 0.6)]:
        assert BP.log10_beta_sf(a, b, x) == pytest.approx(np.log10(stats.beta.sf(x, a, b)), rel=1e-9, abs=1e-9)
    # far beyond float64: P(U ≥ x) lies between x^(a−1)·T and T with T = (1−x)^b/(b·B(a, b))
    a, b, x = 7.0, 700.0, 1 - 1 / 512
    T = (b * math.log1p(-x) - math.log(b) - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)) / math.log(10)
    val = BP.log10_beta_sf(a, b, x)
    assert T + (a - 1) * math.log10(x) - 1e-9 <= val <= T + 1e-9 and val < -1000
    with pytest.raises(ValueError):
        BP.log10_beta_sf(2.0, 3.0, 1.0)


@pytest.mark.parametrize("normalisation", list(BP.BETA_NORMALISATIONS))
def test_fit_beta(normalisation):
    C = 256
    k = BP.breakpoint_counts("iid_normal", C, 800, seed=0)
    fit = BP.fit_beta(k, C, normalisation)
    u = k / C if normalisation == "k/C" else (k - 1.5) / (C - 1)
    a, b, _, _ = stats.beta.fit(u, floc=0, fscale=1)
    assert (fit.a, fit.b) == pytest.approx((a, b))
    total = fit.pmf(np.arange(2, C + 1)).sum()
    assert total == pytest.approx(1.0, abs=1e-12 if normalisation != "k/C" else 1e-3)
    assert fit.log10_p_all < -100 and np.isfinite(fit.loglik)
    with pytest.raises(ValueError):
        BP.fit_beta(np.array([1, 3]), C)


def test_time_hull_methods_smoke_and_loglog_slope():
    df = TM.time_hull_methods(Cs=(8, 16), repeats=1, budget_s=0.01)
    assert len(df) == 2 * 2 * 3 and (df["seconds"] > 0).all()
    assert (df[df.xi == "convex"]["vertices"] == df[df.xi == "convex"]["C"]).all()
    assert TM.loglog_slope([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- the dual


def test_linear_dual_optimum_against_a_generic_optimizer():
    rng = np.random.default_rng(0)
    w = rng.normal(0.05, 0.3, 3000)
    grid = Grid(-0.11, 1.114, 16)
    o = dual.DualOracle(w, grid)
    xi, val = DO.linear_dual_optimum(o)
    u = grid.v - grid.v.mean()
    assert np.allclose(np.diff(xi) / np.diff(u), np.diff(xi)[0] / np.diff(u)[0])  # linear in v
    res = minimize(lambda p: -o(p[0] + p[1] * u)[0], [10.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-12, "fatol": 1e-12, "maxiter": 5000})
    assert val == pytest.approx(-res.fun, rel=1e-10)
    assert val >= -res.fun - 1e-9 * abs(val)
    # the weights' mean ≠ w0: the optimum tilts ξ; for mean = w0 (and no weight clamped) it is the
    # flat start c* = n/C, value n·log2(n/C)
    wc = rng.uniform(-0.5, 0.5, 3000)
    wc = wc - wc.mean() + grid.w0
    xi0, val0 = DO.linear_dual_optimum(dual.DualOracle(wc, grid))
    assert val0 == pytest.approx(3000 * math.log2(3000 / 16), rel=1e-12)
    assert np.ptp(xi0) < 1e-9


def test_convex_order_slack_accepts_a_real_split_and_rejects_a_too_narrow_one():
    rng = np.random.default_rng(3)
    grid = Grid(0.0, 1.0, 8)
    w = rng.uniform(-1.2, 1.2, 500)
    c_ok = solve_hull(w, grid, rng.normal(size=8)).bucket_mass(8)  # an actual Σ_i x_i
    s_n, s_v, s_cx = DO.convex_order_slack(c_ok, w, grid)
    assert s_n < 1e-9 and s_v < 1e-9 and s_cx >= -1e-9
    c_bad = np.zeros(8)
    c_bad[3:5] = 250.0  # mean 0 like w, but far less spread than the weights
    c_bad *= 500 / c_bad.sum()
    assert DO.convex_order_slack(c_bad, w, grid)[2] < 0


@needs_cvxpy
@pytest.mark.parametrize("C", [4, 8])
def test_reduced_primal_and_true_optimum_against_the_full_primal(C):
    grid = Grid(-0.11, 1.114, C)
    for name, w in DR.example_weight_sets(90, grid, seed=C).items():
        full = dual.solve_primal_cvxpy(w, grid)
        red = DO.reduced_primal(w, grid)
        assert red.value == pytest.approx(full.value, rel=2e-6), name
        opt = DO.true_optimum(w, grid)
        assert opt.value <= full.value + 2e-6 * abs(full.value)  # weak duality
        assert opt.value == pytest.approx(full.value, rel=2e-5), name  # strong duality
        if name == "ends":
            assert not opt.linear_is_optimal
        else:
            assert opt.linear_is_optimal and opt.source == "linear"
            assert opt.value == pytest.approx(full.value, rel=1e-7)
            # β the same for every weight: the full primal's multipliers agree (spec §4.2)
            assert np.ptp(opt.beta) < 1e-9 * (1 + abs(opt.beta).max())
            inside = (w > grid.v[0]) & (w < grid.v[-1])  # at a clamped end any larger slope is optimal
            np.testing.assert_allclose(full.beta[inside], opt.beta.mean(), atol=1e-4 * (1 + abs(opt.beta.mean())))


def test_gap_helpers():
    h = np.array([1.0, 5.0, 3.0, 9.0, 9.99])
    g = DR.best_so_far_gap(h, 10.0)
    np.testing.assert_allclose(g, [0.9, 0.5, 0.5, 0.1, 0.001])
    assert DR.iterations_to_gap(h, 10.0, 0.5) == 2 and DR.iterations_to_gap(h, 10.0, 1e-4) is None


@needs_cvxpy
def test_dual_tables_respect_weak_duality():
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 0.3, 4000)
    methods = {k: v for k, v in DR.TABLE_METHODS.items() if k != "DSS 1000 it"}
    df, optima = DR.dual_tables(w, -0.11, 1.114, Cs=(16, 8), methods=methods)
    assert len(df) == 2 * 2 * len(methods)
    assert (df["rel_gap"] >= -1e-10).all()  # no method beats the maximum
    for C, opt in optima.items():
        assert opt.linear_is_optimal and abs(opt.rel_gap) < 1e-6
        assert opt.value >= 4000 * math.log2(4000 / C)  # φ(w) ≥ n log2(n/C) for every w


@needs_cvxpy
def test_warm_start_helpers_smoke():
    rng = np.random.default_rng(1)
    w = rng.normal(0.0, 0.3, 3000)
    grid = Grid(-0.11, 1.114, 6)
    one = DR.warm_start_one_step(w, grid, max_iterations=30)
    warm = one[one.start.str.startswith("warm")]
    cold = one[one.start == "ξ = 0"]
    assert (warm["gap at iteration 1"] < 1e-8).all() and (cold["gap at iteration 1"] > 0.5).all()
    chain = DR.warm_start_chain(w, grid, steps=3, iterations=5)
    assert len(chain) == 2 * len(DR.WARM_METHODS) * 3 and chain["certified"].all()
    assert (chain["rel_gap"] >= 0).all()


def test_the_studies_package_re_exports_its_modules_and_imports_no_torch():
    import subprocess
    import sys

    for mod in (INS, BP, TM, DO, DR, PL):
        for name in mod.__all__:
            assert getattr(A, name) is getattr(mod, name), name
    assert len(set(A.__all__)) == len(A.__all__) and "find_lenet5_checkpoint" in A.__all__
    code = ("import sys; import metaq_utils.studies, metaq_utils.studies.dual_optimum, metaq_utils.studies.instances, "
            "metaq_utils.studies.breakpoints, metaq_utils.studies.dual_runs, metaq_utils.studies.timing, "
            "metaq_utils.studies.plots; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_find_checkpoint_skips_only_invalid_checkpoints(tmp_path):
    from metaq_utils.nn.checkpoints import find_checkpoint, save_checkpoint
    from metaq_utils.nn.networks import build_model

    assert find_checkpoint([tmp_path / "missing", tmp_path]) is None
    (tmp_path / "a_junk.pt").write_bytes(b"not a checkpoint")
    save_checkpoint(tmp_path / "b.pt", build_model("lenet300100"), "lenet300100")
    save_checkpoint(tmp_path / "c.pt", build_model("lenet5"), "lenet5")
    assert find_checkpoint([tmp_path]).path.name == "b.pt"
    assert find_checkpoint([tmp_path], expected_arch="lenet5").path.name == "c.pt"


def test_find_lenet5_checkpoint(tmp_path):
    assert A.find_lenet5_checkpoint([tmp_path / "missing", tmp_path]) is None
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    from metaq_utils.nn.checkpoints import save_checkpoint
    from metaq_utils.nn.networks import build_model

    save_checkpoint(tmp_path / "sub" / "m.pt", build_model("lenet5"), "lenet5", grid={"w0": -0.11, "r": 1.114, "C": 6})
    path, w, grid = A.find_lenet5_checkpoint([tmp_path])
    assert path.name == "m.pt" and w.shape == (44_426,) and w.dtype == np.float64 and grid["C"] == 6


def test_centred_weights_make_the_default_start_optimal():
    grid = Grid(-0.11, 1.114, 32)
    w = np.random.default_rng(4).normal(0.2, 0.5, 5000)
    wc = DO.centred_weights(w, grid)
    assert abs(wc.mean() - grid.w0) < 1e-12 and wc.min() > grid.v[0] and wc.max() < grid.v[-1]
    o = dual.DualOracle(wc, grid)
    xi0 = dual.default_xi0(5000, 32)
    assert o(xi0)[0] == pytest.approx(5000 * math.log2(5000 / 32), rel=1e-12)
    assert DO.linear_dual_optimum(o)[1] == pytest.approx(o(xi0)[0], rel=1e-12)
    assert np.abs(o.beta(xi0)).max() == 0.0  # flat ξ: β ≡ 0


@needs_cvxpy
def test_optimum_check_and_convergence_runs():
    grid = Grid(-0.11, 1.114, 6)
    sets = DR.example_weight_sets(60, grid, seed=2)
    row = DO.optimum_check(sets["gaussian"], grid)
    assert row["full primal (CVXPY, n×C)"] == pytest.approx(row["dual maximum (ours)"], rel=1e-6)
    assert row["linear ξ certified"] and row["β spread (max − min)"] < 1e-9
    assert row["β spread, full primal (interior w)"] < 1e-3
    assert not DO.optimum_check(sets["ends"], grid, full_primal=False)["linear ξ certified"]
    o = dual.DualOracle(sets["gaussian"], grid)
    opt = DO.true_optimum(sets["gaussian"], grid, oracle=o)
    runs = DR.convergence_runs(o, opt.value, 12)
    assert set(runs["start"]) == {"c* = n/C", "ξ = 0"} and (runs["rel_gap"] >= 1e-16).all()
    assert len(runs) <= 2 * len(DR.WARM_METHODS) * 12
    import matplotlib
    matplotlib.use("Agg")
    fig = PL.plot_convergence(runs, "test")
    assert len(fig.axes) == 4
