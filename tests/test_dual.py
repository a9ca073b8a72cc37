"""The Lagrangian dual: oracle vs independent references, maximisers, strong duality, Theorem 1."""

from __future__ import annotations

import importlib.util
import math
import time
import tracemalloc

import numpy as np
import pytest
from scipy.optimize import linprog, minimize, minimize_scalar

from metaq_utils.core import dual
from metaq_utils.core.dual import (
    METHODS,
    DualOracle,
    c_star,
    phi_w,
    simplex_qp,
    solve_dual,
    solve_primal_cvxpy,
    supergradient,
)
from metaq_utils.core.grid import Grid
from metaq_utils.core.subproblem import solve_hull

HAVE_CVXPY = importlib.util.find_spec("cvxpy") is not None
needs_cvxpy = pytest.mark.skipif(not HAVE_CVXPY, reason="the primal reference needs cvxpy")


def lp_phi(w: np.ndarray, grid: Grid, xi: np.ndarray, c_lo: float, c_hi: float):
    """φ_w(ξ) and Σ_i x*_i from one scipy linprog per weight plus a scalar minimisation per bucket."""
    v = grid.v
    A = np.vstack([v, np.ones(grid.C)])
    total, mass = 0.0, np.zeros(grid.C)
    for wi in np.clip(w, v[0], v[-1]):
        res = linprog(xi, A_eq=A, b_eq=[wi, 1.0], bounds=(0, 1), method="highs")
        total += res.fun
        mass += res.x
    c_part = 0.0
    for b in range(grid.C):
        f = lambda c: c * math.log2(c) - xi[b] * c if c > 0 else 0.0  # noqa: E731
        r = minimize_scalar(f, bounds=(c_lo, c_hi), method="bounded", options={"xatol": 1e-12})
        c_part += min(r.fun, f(c_lo), f(c_hi))
    return total + c_part, mass


# ----------------------------------------------------------------------------- c-subproblem


def test_c_star_closed_form_against_scalar_minimisation():
    rng = np.random.default_rng(0)
    xi = np.concatenate([rng.normal(0, 4, 40), [-50.0, 0.0, 1 / math.log(2), 30.0]])
    c_lo, c_hi = 0.01, 100.0
    c = c_star(xi, c_lo, c_hi)
    for b in range(xi.shape[0]):
        f = lambda t: t * math.log2(t) - xi[b] * t  # noqa: E731
        r = minimize_scalar(f, bounds=(c_lo, c_hi), method="bounded", options={"xatol": 1e-12})
        assert c[b] == pytest.approx(r.x, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(c_star(np.array([1 / math.log(2)]), 0, 1e9), 1.0)  # 2^0 = 1
    assert c_star(np.array([-50.0]), 0.01, 1e9)[0] == 0.01 and c_star(np.array([30.0]), 0.01, 100)[0] == 100


# ----------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("C", [2, 6, 16])
def test_oracle_matches_linprog_reference(C):
    rng = np.random.default_rng(C)
    grid = Grid(-0.11, 1.114, C)
    w = np.concatenate([rng.normal(-0.1, 0.5, 40), grid.v[[0, -1]], [grid.lo - 1, grid.hi + 1]])
    o = DualOracle(w, grid)
    for xi in (rng.normal(0, 2, C), np.sort(rng.normal(0, 2, C)), 3 * rng.normal(size=C) + 5):
        ref_val, ref_mass = lp_phi(w, grid, xi, 0.01, w.shape[0])
        e = o.evaluate(xi)
        assert e.value == pytest.approx(ref_val, rel=1e-9, abs=1e-7)
        np.testing.assert_allclose(e.x_mass, ref_mass, atol=1e-7)
        np.testing.assert_allclose(e.g, e.x_mass - c_star(xi, 0.01, w.shape[0]), atol=1e-12)
        assert e.x_mass.sum() == pytest.approx(w.shape[0], rel=1e-12)
    # ties: x* is not unique, the value is
    xi = rng.integers(0, 2, C).astype(float)
    assert o(xi)[0] == pytest.approx(lp_phi(w, grid, xi, 0.01, w.shape[0])[0], rel=1e-9, abs=1e-7)


def test_oracle_beta_matches_subproblem_solution():
    rng = np.random.default_rng(1)
    grid = Grid(0.0, 1.0, 32)
    w = rng.uniform(-1.3, 1.3, 500)  # none exactly on a grid value
    xi = rng.normal(size=32)
    o = DualOracle(w, grid)
    s = solve_hull(w, grid, xi)
    np.testing.assert_allclose(o.beta(xi), s.beta, rtol=1e-12, atol=1e-12)
    e = o.evaluate(xi)
    np.testing.assert_allclose(e.x_mass, s.bucket_mass(32), atol=1e-9)
    c = c_star(xi, 0.01, 500)
    assert e.value == pytest.approx(s.value.sum() + np.sum(c * np.log2(c) - xi * c), rel=1e-12)


def test_oracle_chunked_equals_unchunked_and_float32():
    rng = np.random.default_rng(2)
    grid = Grid(-0.2, 0.9, 64)
    w = rng.normal(0, 0.5, 10_001)
    xi = rng.normal(0, 3, 64)
    a = DualOracle(w, grid)
    b = DualOracle(w, grid, chunk=777)
    ea, eb = a.evaluate(xi), b.evaluate(xi)
    assert ea.value == pytest.approx(eb.value, rel=1e-12)
    np.testing.assert_allclose(ea.g, eb.g, atol=1e-9)
    np.testing.assert_array_equal(a.beta(xi), b.beta(xi))
    w32 = w.astype(np.float32)
    c32 = DualOracle(w32, grid).evaluate(xi)
    c64 = DualOracle(w32.astype(np.float64), grid).evaluate(xi)
    assert c32.value == c64.value
    r = solve_dual(w32, grid, iterations=3)
    assert r.beta.dtype == np.float64 and r.beta.shape == (10_001,)


def test_supergradient_inequality_on_random_pairs():
    """φ_w(ξ') ≤ φ_w(ξ) + g(ξ)·(ξ' − ξ) (Theorem 2): 300 random pairs, several scales."""
    rng = np.random.default_rng(3)
    worst = np.inf
    for C in (3, 6, 64):
        grid = Grid(0.1, 1.0, C)
        w = rng.normal(0.1, 0.6, 300)
        o = DualOracle(w, grid)
        for _ in range(100):
            xi = rng.normal(0, 3, C) + 8
            xi2 = xi + rng.normal(0, rng.choice([1e-3, 0.1, 3.0]), C)
            f, g = o(xi)
            f2, _ = o(xi2)
            slack = f + g @ (xi2 - xi) - f2
            worst = min(worst, slack / max(1.0, abs(f)))
            assert slack >= -1e-10 * max(1.0, abs(f))
    print("\nmin relative slack of the supergradient inequality:", worst)


def test_finite_differences_where_smooth():
    """Away from hull changes φ_w is smooth along a direction: central differences ≈ g·d."""
    rng = np.random.default_rng(4)
    grid = Grid(0.0, 1.0, 8)
    w = rng.normal(0, 0.5, 200)
    o = DualOracle(w, grid)
    checked = 0
    for _ in range(60):
        xi = rng.normal(0, 2, 8) + 5
        d = rng.normal(size=8)
        h = 1e-5
        same = all(
            np.array_equal(o.evaluate(xi + s * h * d).vertices, o.evaluate(xi).vertices) for s in (-1, 1)
        )
        if not same:
            continue
        fd = (o(xi + h * d)[0] - o(xi - h * d)[0]) / (2 * h)
        assert fd == pytest.approx(o(xi)[1] @ d, rel=1e-5, abs=1e-5)
        checked += 1
    assert checked >= 30


def test_phi_w_and_supergradient_wrappers():
    grid = Grid(0.0, 1.0, 6)
    w = np.linspace(-1, 1, 30)
    xi = np.arange(6.0)
    f, g = DualOracle(w, grid)(xi)
    assert phi_w(w, grid, xi) == f
    np.testing.assert_array_equal(supergradient(w, grid, xi), g)


# ----------------------------------------------------------------------------- maximisers


@pytest.mark.parametrize("method", METHODS)
def test_result_is_consistent(method):
    rng = np.random.default_rng(5)
    grid = Grid(-0.11, 1.114, 16)
    w = rng.normal(-0.1, 0.4, 2000)
    r = solve_dual(w, grid, method, iterations=12, zeta=1e4, step_scale=1e-4)
    o = DualOracle(w, grid)
    f, g = o(r.xi)
    assert r.value == pytest.approx(f, rel=1e-12) and r.value == pytest.approx(r.history.max(), rel=1e-15)
    np.testing.assert_allclose(r.g, g, atol=1e-9)
    np.testing.assert_array_equal(r.beta, o.beta(r.xi))
    assert r.method == method and r.iterations == len(r.history) <= 12
    assert r.beta.dtype == np.float64 and r.beta.shape == (2000,)
    if method != "bundle":
        assert r.iterations == 12
    with pytest.raises(Exception):
        r.value = 0.0  # type: ignore[misc]  # frozen


def test_warm_start_is_the_first_point():
    rng = np.random.default_rng(6)
    grid = Grid(0.0, 1.0, 8)
    w = rng.normal(0, 0.4, 500)
    xi0 = rng.normal(0, 1, 8) + 6
    for method in METHODS:
        r = solve_dual(w, grid, method, iterations=4, xi0=xi0, zeta=1e3, step_scale=1e-3)
        assert r.history[0] == pytest.approx(phi_w(w, grid, xi0), rel=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_sort_xi_evaluates_only_sorted_points(method):
    """sort_xi (the reference behaviour): every evaluated ξ is sorted, so every β ≥ 0 (spec §4.3)."""
    rng = np.random.default_rng(7)
    grid = Grid(0.0, 1.0, 12)
    w = rng.normal(0, 0.5, 3000)
    xi0 = rng.normal(0, 1, 12) + 8  # unsorted on purpose
    r = solve_dual(w, grid, method, iterations=10, xi0=xi0, zeta=3e3, step_scale=1e-3, sort_xi=True)
    assert r.points.shape == (r.iterations, 12) and r.iterations >= 2
    assert all(np.all(np.diff(x) >= 0) for x in r.points)
    for x, f in zip(r.points, r.history):  # the recorded points are the evaluated ones
        assert DualOracle(w, grid)(x)[0] == pytest.approx(f, rel=1e-13)
    assert np.all(np.diff(r.xi) >= 0) and np.all(r.beta >= 0)


def test_fista_is_the_spec_recursion():
    """(82)–(84) replayed by hand with the oracle: same points, same history."""
    rng = np.random.default_rng(8)
    grid = Grid(0.0, 1.0, 10)
    w = rng.normal(0, 0.5, 800)
    o = DualOracle(w, grid)
    xi0 = rng.normal(0, 1, 10) + 7
    zeta = 2e3
    r = solve_dual(w, grid, "fista", iterations=6, xi0=xi0, zeta=zeta)
    xi_prev, xi, t_prev, t, hist = xi0, xi0, 1.0, 1.0, []
    for _ in range(6):
        sigma = xi + (t_prev - 1) / t * (xi - xi_prev)
        f, g = o(sigma)
        hist.append(f)
        xi_prev, xi = xi, sigma + g / zeta
        t_prev, t = t, (1 + math.sqrt(1 + 4 * t * t)) / 2
    np.testing.assert_allclose(r.history, hist, rtol=1e-13)


def test_dss_step_and_pbm_thesis_update():
    rng = np.random.default_rng(9)
    grid = Grid(0.0, 1.0, 5)
    w = rng.normal(0, 0.5, 100)
    o = DualOracle(w, grid)
    xi0 = rng.normal(0, 1, 5) + 4
    r = solve_dual(w, grid, "dss", iterations=3, xi0=xi0, step_scale=0.01)
    x1 = xi0 + 0.01 * o(xi0)[1]
    x2 = x1 + 0.005 * o(x1)[1]
    np.testing.assert_allclose(r.history, [o(xi0)[0], o(x1)[0], o(x2)[0]], rtol=1e-13)
    # thesis PBM: with one element in the bundle the first step is ξ0 + g0/ζ
    r = solve_dual(w, grid, "pbm_thesis", iterations=2, xi0=xi0, zeta=50.0)
    assert r.history[1] == pytest.approx(o(xi0 + o(xi0)[1] / 50.0)[0], rel=1e-13)


def test_simplex_qp_against_slsqp():
    rng = np.random.default_rng(10)
    for m in (1, 2, 3, 5, 10, 20):
        for _ in range(10):
            G = rng.normal(size=(m, 7)) * rng.choice([1.0, 1e3])
            if m > 2:
                G[1] = G[0]  # duplicate cuts: singular Q
            Q = G @ G.T / rng.choice([1.0, 1e5])
            q = np.abs(rng.normal(size=m)) * rng.choice([0.0, 1.0, 100.0])
            lam = simplex_qp(Q, q)
            assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0, abs=1e-12)
            obj = lambda x: 0.5 * x @ Q @ x + q @ x  # noqa: E731
            ref = minimize(
                obj, np.full(m, 1.0 / m), jac=lambda x: Q @ x + q, method="SLSQP",
                bounds=[(0, 1)] * m, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                options={"ftol": 1e-15, "maxiter": 1000},
            )
            vertex = min(obj(np.eye(m)[j]) for j in range(m))
            best_ref = min(ref.fun, vertex)
            assert obj(lam) <= best_ref + 1e-9 * (1 + abs(best_ref))


# ----------------------------------------------------------------------------- primal, strong duality


@needs_cvxpy
def test_primal_reproduces_the_spec_measurements():
    """Spec §4.2 (n = 60, C = 6, v on [−1, 1]): φ = 203.06 (one interior value), 199.32 (even)."""
    grid = Grid(0.0, 1.2, 6)
    np.testing.assert_allclose(grid.v, [-1, -0.6, -0.2, 0.2, 0.6, 1], atol=1e-15)
    assert solve_primal_cvxpy(np.full(60, grid.v[2]), grid).value == pytest.approx(203.06, abs=0.005)
    even = solve_primal_cvxpy(np.repeat(grid.v, 10), grid)
    assert even.value == pytest.approx(199.32, abs=0.005)
    # spread evenly: Σ c log2 c = n log2 n − n log2 C exactly
    assert even.value == pytest.approx(60 * math.log2(60) - 60 * math.log2(6), abs=1e-5)


STRONG_CASES = {
    "one_value": lambda rng, g: np.full(60, g.v[2]),
    "even": lambda rng, g: np.repeat(g.v, 10),
    "gauss": lambda rng, g: rng.normal(0, 0.4, 60),
    "clustered": lambda rng, g: np.concatenate([rng.normal(-0.6, 0.03, 30), rng.normal(0.5, 0.05, 30)]),
    "uniform_C16": lambda rng, g: rng.uniform(-1.3, 1.3, 50),
}


@needs_cvxpy
@pytest.mark.parametrize("case", sorted(STRONG_CASES))
def test_strong_duality_against_the_cvxpy_primal(case):
    """max φ_w(ξ) = φ(w) to 1e-4 relative for FISTA and the bundle method; gaps of all printed."""
    rng = np.random.default_rng(12)
    grid = Grid(0.0, 1.2, 16 if case.endswith("C16") else 6)
    w = STRONG_CASES[case](rng, grid)
    p = solve_primal_cvxpy(w, grid)
    runs = {
        "fista_15_zeta1e5": dict(method="fista", iterations=15, zeta=1e5),
        "fista_2000_zeta1e5": dict(method="fista", iterations=2000, zeta=1e5),
        "bundle_15_zeta30": dict(method="bundle", iterations=15, zeta=30.0),
        "bundle_300_zeta30": dict(method="bundle", iterations=300, zeta=30.0),
        "pbm_thesis_300_zeta1e3": dict(method="pbm_thesis", iterations=300, zeta=1e3),
        "dss_2000_scale0.05": dict(method="dss", iterations=2000, step_scale=0.05),
    }
    gaps = {}
    for name, kw in runs.items():
        r = solve_dual(w, grid, **kw)
        gaps[name] = (p.value - r.value) / abs(p.value)
        assert r.value <= p.value + 1e-6 * abs(p.value), name  # weak duality, any method
    print(f"\n{case}: primal {p.value:.6f}; relative gaps " + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()))
    assert gaps["fista_2000_zeta1e5"] <= 1e-4
    assert gaps["bundle_300_zeta30"] <= 1e-4


@needs_cvxpy
def test_theorem_1_subgradient_of_phi():
    """φ(w') ≥ φ(w) + β·(w' − w) with φ from the direct convex solve, β from the primal and the dual."""
    rng = np.random.default_rng(13)
    grid = Grid(0.0, 1.2, 6)
    w = rng.normal(0, 0.4, 40)
    p = solve_primal_cvxpy(w, grid)
    r = solve_dual(w, grid, "bundle", iterations=300, zeta=30.0)
    assert (p.value - r.value) / p.value <= 1e-6
    wc = grid.clamp(w)
    worst_p = worst_d = np.inf
    for k in range(24):
        w2 = w + rng.normal(0, [0.01, 0.1, 0.5][k % 3], w.shape[0])
        f2 = solve_primal_cvxpy(w2, grid).value
        dw = grid.clamp(w2) - wc
        worst_p = min(worst_p, f2 - p.value - p.beta @ dw)
        worst_d = min(worst_d, f2 - p.value - r.beta @ dw)
    print(f"\nTheorem 1: min slack with primal β {worst_p:.2e}, with dual β {worst_d:.2e} (φ = {p.value:.3f})")
    assert worst_p >= -1e-6 * p.value and worst_d >= -1e-6 * p.value
    # interior weights have a unique multiplier; at a clamped end any value on one side is optimal
    inner = (w > grid.v[0]) & (w < grid.v[-1])
    assert inner.sum() >= 35
    np.testing.assert_allclose(r.beta[inner], p.beta[inner], atol=1e-3)
    left = w <= grid.v[0]
    assert np.all(p.beta[left] <= r.beta[left] + 1e-6)  # the primal's pick lies in (−∞, right slope]


# ----------------------------------------------------------------------------- speed and memory


def test_hot_path_is_fast_and_flat_in_C():
    """Loose guard (timings are in the benchmark): 15 FISTA iterations at n = 44,426 in < 30 ms."""
    rng = np.random.default_rng(14)
    w = rng.normal(-0.1, 0.4, 44_426).astype(np.float32)
    for C in (6, 1024):
        grid = Grid(-0.11, 1.114, C)
        xi = solve_dual(w, grid).xi
        t = min(_timed(lambda: solve_dual(w, grid, xi0=xi)) for _ in range(5))
        assert t < 0.03, (C, t)


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def test_extra_memory_is_bounded_per_weight():
    """Chunked pass: peak extra memory (β included) ≤ 16 bytes per weight, never n × C."""
    n = 2_000_000
    w = np.random.default_rng(15).normal(0, 0.4, n)
    grid = Grid(-0.11, 1.114, 1024)
    tracemalloc.start()
    try:
        r = solve_dual(w, grid, iterations=5, oracle=DualOracle(w, grid, chunk=1 << 16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.beta.shape == (n,)
    assert peak / n <= 16.0, peak / n


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_have_clear_messages():
    grid = Grid(0.0, 1.0, 6)
    w = np.zeros(10)
    with pytest.raises(ValueError, match=r"w contains NaN or inf \(first at index 3\)"):
        solve_dual(np.array([0.0, 0.1, 0.2, np.nan]), grid)
    with pytest.raises(ValueError, match="w contains NaN or inf"):
        solve_dual(np.array([np.inf, 0.0]), grid)
    with pytest.raises(ValueError, match="w must be a 1-D array"):
        solve_dual(np.zeros((3, 3)), grid)
    with pytest.raises(ValueError, match="at least one weight"):
        solve_dual(np.zeros(0), grid)
    with pytest.raises(ValueError, match=r"xi must have shape \(6,\)"):
        solve_dual(w, grid, xi0=np.zeros(5))
    with pytest.raises(ValueError, match="xi contains NaN or inf"):
        solve_dual(w, grid, xi0=np.array([0, 0, np.nan, 0, 0, 0.0]))
    with pytest.raises(ValueError, match="unknown method"):
        solve_dual(w, grid, method="adam")
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        solve_dual(w, grid, iterations=0)
    with pytest.raises(ValueError, match="zeta must be finite and > 0"):
        solve_dual(w, grid, zeta=0.0)
    with pytest.raises(ValueError, match="need finite 0 <= c_lo < c_hi"):
        solve_dual(w, grid, c_lo=5.0, c_hi=1.0)
    with pytest.raises(TypeError, match="grid must be a metaq_utils.core.grid.Grid"):
        DualOracle(w, (0.0, 1.0, 6))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bundle_size must be >= 2"):
        solve_dual(w, grid, method="bundle", bundle_size=1)
    with pytest.raises(ValueError, match="C must be >= 2"):
        Grid(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="r must be > 0"):
        Grid(0.0, -1.0, 6)


def test_module_exports():
    for name in dual.__all__:
        assert hasattr(dual, name)


def test_chunked_index_storage_for_very_large_C():
    """Large C needs uint32 (laned) interval indices in the chunked path."""
    rng = np.random.default_rng(16)
    grid = Grid(0.0, 1.0, 70_000)
    w = rng.uniform(-1.1, 1.1, 3000)
    xi = rng.normal(size=70_000)
    a, b = DualOracle(w, grid), DualOracle(w, grid, chunk=256)
    assert b._k.dtype == np.uint32
    np.testing.assert_array_equal(a.beta(xi), b.beta(xi))
    assert a(xi)[0] == pytest.approx(b(xi)[0], rel=1e-12)


@pytest.mark.parametrize("method", ["dss", "pbm_thesis", "fista"])
def test_last_return_rule_gives_the_final_iterate_and_the_last_evaluation(method):
    """xi_return='last' (the reference code's rule): ξ is the iterate after the last update, never
    evaluated; value, g and β belong to the last evaluated point. 'best' keeps the best point."""
    rng = np.random.default_rng(3)
    grid = Grid(-0.11, 1.114, 6)
    w = rng.normal(0.2, 0.3, 2000)
    oracle = DualOracle(w, grid)
    xi0 = np.sort(rng.uniform(0, 1, 6))
    last = solve_dual(w, grid, method=method, iterations=4, zeta=50.0, xi0=xi0, oracle=oracle, xi_return="last",
                      step_scale=1e-3)
    best = solve_dual(w, grid, method=method, iterations=4, zeta=50.0, xi0=xi0, oracle=oracle, step_scale=1e-3)
    np.testing.assert_array_equal(last.history, best.history)          # the same iterations
    assert last.value == last.history[-1] and best.value == best.history.max()
    value, g = oracle(last.points[-1])
    np.testing.assert_array_equal(last.g, g)
    np.testing.assert_array_equal(last.beta, oracle.beta(last.points[-1]))
    if method != "pbm_thesis":       # (the thesis' PBM may step back to a point it evaluated before)
        assert not any(np.array_equal(last.xi, p) for p in last.points)   # the returned ξ: not evaluated
    if method == "dss":                                                 # replay the last update (74)–(75)
        np.testing.assert_allclose(last.xi, last.points[-1] + (1e-3 / 4) * g, rtol=1e-12)
    with pytest.raises(ValueError, match="xi_return must be one of"):
        solve_dual(w, grid, method=method, xi_return="first")
    with pytest.raises(ValueError, match="returns its best point"):
        solve_dual(w, grid, method="bundle", xi_return="last")
