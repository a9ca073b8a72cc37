"""x-subproblem solvers vs independent references (scipy linprog and brute force over bucket pairs).

The helpers ``make_groups`` / ``check_groups`` are also used by ``bench/bench_solvers.py`` for the
full 10,000-instance agreement sweep; CI runs a reduced, fixed-seed sweep.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.optimize import linprog

from metaq_utils.core.grid import Grid
from metaq_utils.core.subproblem import (
    SOLVERS,
    SubproblemSolution,
    lower_hull,
    solve_cvxpy,
    solve_hull,
)

XI_MODELS = ("normal", "sorted", "ties", "constant", "concave", "convex", "large", "spiky")
RULE_SOLVERS = ("cutting_plane_scalar", "cutting_plane_vectorized", "breakpoints", "hull_pava", "hull_chain")


# ----------------------------------------------------------------------------- instances


def make_group(rng: np.random.Generator, C: int, model: str, n_w: int, uniform: bool = True):
    """One ξ on one v with n_w weights incl. edge cases (grid values, midpoints, outside the range)."""
    if uniform:
        v = Grid(float(rng.uniform(-1, 1)), float(rng.uniform(0.1, 2.0)), C).v.copy()
    else:
        v = np.sort(rng.uniform(-2, 2, C))
        v = v[np.concatenate([[True], np.diff(v) > 1e-3])]
        C = v.shape[0]
    m = float(rng.uniform(v[0], v[-1]))
    xi = {
        "normal": lambda: rng.normal(size=C),
        "sorted": lambda: np.sort(rng.normal(size=C)),
        "ties": lambda: rng.integers(0, 3, C).astype(np.float64),
        "constant": lambda: np.full(C, float(rng.normal())),
        "concave": lambda: -3.0 * (v - m) ** 2 + rng.normal(),
        "convex": lambda: 3.0 * (v - m) ** 2 + rng.normal(),
        "large": lambda: 1e3 * rng.normal(size=C),
        "spiky": lambda: np.where(rng.random(C) < 0.2, -5.0, 0.0) + 0.01 * rng.normal(size=C),
    }[model]()
    delta = float(np.min(np.diff(v)))
    n_rand = max(1, n_w // 2)
    pool = [
        rng.uniform(v[0] - delta, v[-1] + delta, n_rand),  # random, some outside the range
        rng.choice(v, size=max(1, n_w // 4)),  # exactly on grid values (hull vertices among them)
        v[[0, -1]],  # the two ends
        0.5 * (v[:-1] + v[1:])[rng.integers(0, C - 1, max(1, n_w // 8))],  # midpoints
        np.array([v[0] - 3.0 * delta, v[-1] + 3.0 * delta]),  # clearly outside
    ]
    w = np.concatenate(pool)[:n_w] if n_w >= 4 else np.concatenate(pool)[:4]
    return v, xi, w


def make_groups(seed: int, n_instances: int, big_C: bool = True):
    """Fixed-seed groups totalling about n_instances weights over C ∈ {2..256} (+ 1024)."""
    rng = np.random.default_rng(seed)
    Cs = [2, 3, 4, 5, 6, 8, 16, 32, 64, 256]
    groups, total = [], 0
    i = 0
    while total < n_instances:
        C = Cs[i % len(Cs)]
        model = XI_MODELS[(i // len(Cs)) % len(XI_MODELS)]
        groups.append(make_group(rng, C, model, 24, uniform=(i % 7 != 3)))
        total += groups[-1][2].shape[0]
        i += 1
    if big_C:
        for model in ("normal", "ties", "convex"):
            groups.append(make_group(rng, 1024, model, 6))
    return groups


# ----------------------------------------------------------------------------- references


def lp_reference(w: float, v: np.ndarray, xi: np.ndarray) -> tuple[float, float]:
    """Value and HiGHS multiplier of (31) for one (clamped) weight, straight from scipy."""
    C = v.shape[0]
    res = linprog(xi, A_eq=np.vstack([v, np.ones(C)]), b_eq=[w, 1.0], bounds=(0, 1), method="highs")
    assert res.status == 0, res.message
    return float(res.fun), float(res.eqlin.marginals[0])


class BruteForce:
    """Envelope value and the LP's optimal-multiplier interval by enumerating bucket pairs."""

    def __init__(self, v: np.ndarray, xi: np.ndarray):
        C = v.shape[0]
        a, b = np.triu_indices(C, k=1)
        self.v, self.xi, self.a, self.b = v, xi, a, b
        self.slope = (xi[b] - xi[a]) / (v[b] - v[a])
        self.scale = max(1.0, float(np.abs(xi).max()))

    def __call__(self, w: float) -> tuple[float, float, float]:
        v, xi, a, b = self.v, self.xi, self.a, self.b
        straddle = (v[a] <= w) & (w <= v[b])
        vals = xi[a[straddle]] + self.slope[straddle] * (w - v[a[straddle]])
        on = np.flatnonzero(v == w)
        env = min(vals.min(), xi[on].min()) if on.size else vals.min()
        tol = 1e-12 * self.scale
        j = on[0] if on.size else -1
        if j >= 0 and xi[j] <= env + tol:  # w is an optimal single bucket: a vertex (or on an edge)
            left = self.slope[b == j]  # slopes (a, j), a < j
            right = self.slope[a == j]  # slopes (j, b), b > j
            lo = left.max() if left.size else -np.inf
            hi = right.min() if right.size else np.inf
        else:  # strictly inside an envelope segment: the unique slope of the optimal pairs
            inner = straddle & (v[a] < w) & (w < v[b])
            vals_in = xi[a[inner]] + self.slope[inner] * (w - v[a[inner]])
            opt = self.slope[inner][vals_in <= env + tol]
            lo, hi = opt.min(), opt.max()
        return float(env), float(lo), float(hi)


def right_rule(lo: float, hi: float, w: float, v: np.ndarray) -> float:
    """The documented multiplier rule: slope to the right, except at the last vertex."""
    return lo if w == v[-1] else hi


def check_groups(groups, solvers=None, with_cvxpy: int = 0) -> dict:
    """Run every solver on every group; count instances and failures per solver and check."""
    solvers = dict(SOLVERS) if solvers is None else solvers
    fails: dict[str, dict[str, int]] = {k: {} for k in solvers}
    worst: dict[str, float] = {k: 0.0 for k in solvers}
    n_inst = 0
    cvx_left = with_cvxpy
    for v, xi, w in groups:
        wc = np.clip(w, v[0], v[-1])
        bf = BruteForce(v, xi)
        refs = [lp_reference(float(x), v, xi) for x in wc]
        lp_val = np.array([r[0] for r in refs])
        bfs = np.array([bf(float(x)) for x in wc])
        scale = bf.scale
        tol_val = 1e-9 * scale
        tol_beta = 1e-8 * (1.0 + float(np.abs(xi).max()) / float(np.diff(v).min()))
        assert np.all(np.abs(lp_val - bfs[:, 0]) <= tol_val), "the two references disagree"
        n_inst += w.shape[0]
        todo = dict(solvers)
        if cvx_left > 0:
            todo["cvxpy"] = solve_cvxpy
            fails.setdefault("cvxpy", {})
            worst.setdefault("cvxpy", 0.0)
            cvx_left -= 1
        for name, solve in todo.items():
            s: SubproblemSolution = solve(w, v, xi)
            loose = name == "cvxpy"  # an interior-point solver: ~1e-8 accuracy
            tv = 1e-6 * scale if loose else tol_val
            tb = 1e-5 * (1.0 + float(np.abs(xi).max()) / float(np.diff(v).min())) if loose else tol_beta

            def bad(check: str, mask: np.ndarray) -> None:
                if mask.any():
                    fails[name][check] = fails[name].get(check, 0) + int(mask.sum())

            err = np.abs(s.value - lp_val)
            worst[name] = max(worst[name], float(err.max() / scale))
            bad("value", err > tv)
            C = v.shape[0]
            bad("index", (s.lo < 0) | (s.hi >= C) | (s.lo > s.hi) & (s.theta > 0))
            bad("theta", (s.theta < 0) | (s.theta > 1) | ((s.lo == s.hi) & (s.theta != 0)))
            vx = (1 - s.theta) * v[s.lo] + s.theta * v[s.hi]  # v·x (10)/(31)
            bad("feasible", np.abs(vx - wc) > 1e-9 * (1.0 + np.abs(v).max()))
            xval = (1 - s.theta) * xi[s.lo] + s.theta * xi[s.hi]
            bad("value_is_xi_dot_x", np.abs(xval - s.value) > 1e-12 * scale + (tv if loose else 0))
            inside = (s.beta >= bfs[:, 1] - tb) & (s.beta <= bfs[:, 2] + tb)
            bad("multiplier_in_optimal_set", ~inside)
            if name in RULE_SOLVERS:
                rule = np.array([right_rule(lo, hi, x, v) for (_, lo, hi), x in zip(bfs, wc)])
                bad("multiplier_rule", np.abs(s.beta - rule) > tb)
    return {"instances": n_inst, "failures": fails, "worst_value_error_rel": worst}


# ----------------------------------------------------------------------------- tests


def test_agreement_sweep_against_linprog_and_brute_force():
    """All solvers on ~1,500 fixed-seed instances incl. every edge case (bench: 10,000)."""
    with_cvxpy = 3 if importlib.util.find_spec("cvxpy") is not None else 0  # optional reference
    out = check_groups(make_groups(seed=2024, n_instances=1500), with_cvxpy=with_cvxpy)
    print("\ninstances:", out["instances"], "worst rel value error:", out["worst_value_error_rel"])
    assert out["instances"] >= 1500
    assert out["failures"] == {k: {} for k in out["failures"]}, out["failures"]


@pytest.mark.parametrize("hull", ["pava", "chain", "breakpoints"])
def test_hull_vertices_are_the_lower_hull(hull):
    """Every point lies on or above the hull polyline; every strict vertex (brute force) is kept."""
    rng = np.random.default_rng(7)
    for C in (2, 3, 5, 64, 1024):
        for model in XI_MODELS:
            v, xi, _ = make_group(rng, C, model, 4)
            idx = lower_hull(v, xi, hull)
            assert idx[0] == 0 and idx[-1] == C - 1 and np.all(np.diff(idx) > 0)
            env = np.interp(v, v[idx], xi[idx])
            assert np.all(xi >= env - 1e-12 * max(1, np.abs(xi).max()))
            # strict vertices (brute force over pairs): max left slope < min right slope
            S = (xi[None, :] - xi[:, None]) / (v[None, :] - v[:, None] + np.eye(C))  # S[a, b]
            upper = np.triu(np.ones((C, C), dtype=bool), k=1)
            left_max = np.where(upper, S, -np.inf).max(axis=0)  # max_{a<j} S[a, j]
            right_min = np.where(upper, S, np.inf).min(axis=1)  # min_{b>j} S[j, b]
            gap = right_min - left_max
            strict = gap > 1e-9 * (1 + np.abs(np.where(np.isfinite(left_max), left_max, 0))
                                   + np.abs(np.where(np.isfinite(right_min), right_min, 0)))
            assert set(np.flatnonzero(strict)) <= set(idx.tolist()), (hull, C, model)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_two_buckets(name):
    """C = 2: the envelope is the chord; outside points clamp to the ends."""
    v = np.array([-1.0, 1.0])
    xi = np.array([3.0, -1.0])
    w = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    s = SOLVERS[name](w, v, xi)
    np.testing.assert_allclose(s.value, [3.0, 3.0, 1.0, 0.0, -1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(s.beta[2:4], -2.0, atol=1e-12)
    if name in RULE_SOLVERS:
        np.testing.assert_allclose(s.beta, -2.0, atol=1e-12)  # chord slope at every point
    np.testing.assert_array_equal(s.lo[[0, 1]], 0)
    np.testing.assert_array_equal(s.hi[[4, 5]], 1)


@pytest.mark.parametrize("name", RULE_SOLVERS)
def test_vertex_multiplier_rule(name):
    """β is the right slope at a vertex (−1 at v_0, 1.5 at the vertex 0), the left one at v_{C−1}."""
    v = np.array([-1.0, 0.0, 1.0, 2.0])
    xi = np.array([1.0, 0.0, 2.0, 3.0])
    # points (−1,1), (0,0), (1,2), (2,3): the lower hull is 0–1–3 with slopes −1 and 1.5
    # (point 2 lies above the segment 1–3)
    s = SOLVERS[name](np.array([-1.0, 0.0, 1.0, 2.0, 0.5]), v, xi)
    np.testing.assert_allclose(s.value, [1.0, 0.0, 1.5, 3.0, 0.75], atol=1e-12)
    np.testing.assert_allclose(s.beta, [-1.0, 1.5, 1.5, 1.5, 1.5], atol=1e-12)
    assert s.lo[1] == s.hi[1] == 1 and s.theta[1] == 0.0  # single bucket at a vertex
    assert (s.lo[2], s.hi[2]) == (1, 3)  # a grid value above the hull mixes the bracketing vertices


def test_sparse_x_helpers_match_dense():
    rng = np.random.default_rng(3)
    v, xi, w = make_group(rng, 16, "normal", 40)
    s = solve_hull(w, v, xi)
    X = s.x_dense(16)
    np.testing.assert_allclose(X.sum(1), 1.0)
    np.testing.assert_allclose(X @ v, np.clip(w, v[0], v[-1]), atol=1e-12)
    np.testing.assert_allclose(X @ xi, s.value, atol=1e-12)
    np.testing.assert_allclose(s.bucket_mass(16), X.sum(0), atol=1e-12)
    assert s.n == w.shape[0]


def test_float32_weights_and_grid_input():
    g = Grid(-0.11, 1.114, 6)
    rng = np.random.default_rng(5)
    xi = rng.normal(size=6)
    w32 = rng.uniform(-1.2, 1.0, 50).astype(np.float32)
    a = solve_hull(w32, g, xi)
    b = solve_hull(w32.astype(np.float64), g.v, xi)
    np.testing.assert_array_equal(a.value, b.value)
    assert a.value.dtype == np.float64 and a.beta.dtype == np.float64


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_bad_inputs(name):
    solve = SOLVERS[name]
    v = np.array([0.0, 1.0, 2.0])
    xi = np.zeros(3)
    with pytest.raises(ValueError, match="w contains NaN or inf"):
        solve(np.array([0.5, np.nan]), v, xi)
    with pytest.raises(ValueError, match="w contains NaN or inf"):
        solve(np.array([np.inf]), v, xi)
    with pytest.raises(ValueError, match="xi contains NaN or inf"):
        solve(np.array([0.5]), v, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"xi must have shape \(3,\)"):
        solve(np.array([0.5]), v, np.zeros(4))
    with pytest.raises(ValueError, match="w must be a scalar or a 1-D array"):
        solve(np.zeros((2, 2)), v, xi)
    with pytest.raises(ValueError, match="v must be strictly increasing"):
        solve(np.array([0.5]), np.array([0.0, 2.0, 1.0]), xi)
    with pytest.raises(ValueError, match="v must be a 1-D array with at least 2 values"):
        solve(np.array([0.5]), np.array([1.0]), np.zeros(1))
    with pytest.raises(ValueError, match="v contains NaN or inf"):
        solve(np.array([0.5]), np.array([0.0, np.nan, 1.0]), xi)


def test_unknown_hull_method():
    with pytest.raises(ValueError, match="unknown hull method"):
        lower_hull(np.array([0.0, 1.0]), np.zeros(2), "quickhull")
    with pytest.raises(ValueError, match="hull must be 'pava' or 'chain'"):
        solve_hull(0.5, np.array([0.0, 1.0]), np.zeros(2), hull="breakpoints")


def test_the_checker_catches_wrong_answers():
    """The sweep's checks are not vacuous: perturbed solutions are reported."""
    from dataclasses import replace

    def left_slope(w, v, xi):  # β from the segment on the left at vertices: valid but not the rule
        s = solve_hull(w, v, xi)
        wr = -np.asarray(w)[::-1]
        m = solve_hull(wr, -v[::-1], xi[::-1])  # mirror: right slope there = −(left slope here)
        return replace(s, beta=-m.beta[::-1])

    def off_value(w, v, xi):
        s = solve_hull(w, v, xi)
        return replace(s, value=s.value + 1e-7 * max(1.0, np.abs(xi).max()))

    def off_beta(w, v, xi):
        s = solve_hull(w, v, xi)
        return replace(s, beta=s.beta + 1e-3 * (1 + np.abs(s.beta)))

    groups = make_groups(seed=11, n_instances=200, big_C=False)
    out = check_groups(groups, {"hull_pava": left_slope, "off_value": off_value, "off_beta": off_beta})
    f = out["failures"]
    assert f["hull_pava"].get("multiplier_rule", 0) > 0
    assert "multiplier_in_optimal_set" not in f["hull_pava"] and "value" not in f["hull_pava"]
    assert f["off_value"].get("value", 0) > 0 and f["off_value"].get("value_is_xi_dot_x", 0) > 0
    assert f["off_beta"].get("multiplier_in_optimal_set", 0) > 0
