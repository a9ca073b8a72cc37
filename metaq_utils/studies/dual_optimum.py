"""The true maximum of the dual (17), certified from both sides — method code, not a notebook
helper: :func:`true_optimum` brackets max_ξ φ_w(ξ) between a dual lower bound and a primal upper
bound.

It rests on two facts, both checked in ``tests/test_analysis.py``:

1. On ξ = a + β(v − v̄) (ξ linear in v) the envelope of (v_b, ξ_b) is that line, so
   φ_w(a + β(v − v̄)) = Σ_b (c*_b log2 c*_b − ξ_b c*_b) + n a + β Σ_i (w_i − v̄) is smooth and
   concave in (a, β); :func:`linear_dual_optimum` maximises it by Newton's method. It is the dual
   of the relaxation that keeps only Σ_b c_b = n and Σ_b v_b c_b = Σ_i w_i, so it is a lower
   bound on φ(w), and it *is* φ(w) when its c* can be split into n distributions on v with means
   w_i.
2. By Strassen's theorem such a split exists iff the empirical distribution of the (clamped)
   weights precedes c/n in the convex order: equal means and
   Σ_b c_b (v_b − t)_+ ≥ Σ_i (w_i − t)_+ for every t — for a measure on the grid it suffices to
   check t = v_k (both sides are convex in t, the left one linear between grid values). So the
   primal (9)–(15) with n × C variables reduces to a convex program in the C counts alone
   (:func:`reduced_primal`), small enough for CVXPY at n = 44,000, C = 256.

Also :func:`optimum_check` (against the n × C CVXPY primal) and :func:`centred_weights`. NumPy
only (CVXPY imported where the primal is solved).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from metaq_utils.core import dual
from metaq_utils.core.dual import LN2
from metaq_utils.core.grid import Grid

__all__ = ["linear_dual_optimum", "convex_order_slack", "ReducedPrimal", "reduced_primal", "Optimum", "true_optimum",
           "centred_weights", "optimum_check"]


def linear_dual_optimum(oracle: dual.DualOracle, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """max φ_w over ξ = a + β(v − v̄) by a damped Newton method on (a, β); returns (ξ, φ_w(ξ)).

    On that line the envelope is the line itself, so the function is smooth:
    F(a, β) = Σ_b h(ξ_b) + n a + β Σ_i (clamp(w_i) − v̄), h(ξ) = min_{c∈[c_lo,c_hi]} c log2 c − ξc,
    with ∇F = (n − Σc*, Σ_i (w_i − v̄) − Σ c*_b (v_b − v̄)) and Hessian −ln2 Σ_{b free} c*_b [1, u; u, u²].
    The value is a lower bound on φ(w); it equals φ(w) when c*(ξ) is feasible for the primal
    (check with :func:`convex_order_slack`).
    """
    v = oracle.grid.v
    u = v - v.mean()
    n = oracle.n
    # Σ_i clamp(w_i) − v̄, from the oracle's per-interval aggregates (exact: Σ x_mass·v = Σ clamp(w))
    x_mass = oracle.evaluate(np.zeros(oracle.C)).x_mass
    su = float(x_mass @ u)

    ln_lo = math.log(oracle.c_lo) if oracle.c_lo > 0 else -math.inf
    ln_hi = math.log(oracle.c_hi)

    def F(p):
        xi = p[0] + p[1] * u
        raw = xi * LN2 - 1.0  # ln c* before the clamp (29)
        t = np.clip(raw, ln_lo, ln_hi)
        c = np.exp(t)
        val = float(c @ (t / LN2 - xi)) + n * p[0] + p[1] * su
        return val, c, (raw > ln_lo) & (raw < ln_hi)

    p = np.array([math.log2(n / oracle.C) + 1.0 / LN2, 0.0])
    val, c, free = F(p)
    for _ in range(max_iter):
        grad = np.array([n - c.sum(), su - c @ u])
        cf = c * free * LN2
        H = -np.array([[cf.sum(), cf @ u], [cf @ u, cf @ (u * u)]])
        H -= 1e-12 * max(1.0, -np.trace(H)) * np.eye(2)
        step = -np.linalg.solve(H, grad)
        dec = float(grad @ step)  # predicted increase (×2)
        if dec <= 1e-14 * max(1.0, abs(val)):
            break
        s = 1.0
        while True:
            v2, c2, f2 = F(p + s * step)
            if v2 >= val + 0.25 * s * dec or s < 1e-12:
                break
            s *= 0.5
        if v2 < val:
            break
        p, val, c, free = p + s * step, v2, c2, f2
    xi = p[0] + p[1] * u
    return xi, oracle(xi)[0]


def convex_order_slack(c: np.ndarray, w: np.ndarray, grid: Grid) -> tuple[float, float, float]:
    """Strassen's test that counts c on the grid can be split into n distributions with means w_i.

    Returns (|Σc − n|, |Σ c_b v_b − Σ clamp(w_i)|, min_k [Σ_b c_b (v_b − v_k)_+ − Σ_i (w_i − v_k)_+]):
    c is feasible for (10)–(15) iff the first two vanish and the third is ≥ 0.
    """
    v = grid.v
    wc = np.sort(grid.clamp(w))
    n = wc.shape[0]
    tail = np.concatenate([np.cumsum(wc[::-1])[::-1], [0.0]])  # Σ of w_i from position m on
    m = np.searchsorted(wc, v, side="right")
    rhs = tail[m] - (n - m) * v  # Σ_i (w_i − v_k)_+
    lhs = np.maximum(v[None, :] - v[:, None], 0.0) @ c
    return abs(float(c.sum()) - n), abs(float(c @ v) - float(wc.sum())), float((lhs - rhs).min())


@dataclass(frozen=True)
class ReducedPrimal:
    """The primal (9)–(15) in the C counts alone (Strassen), solved by CVXPY."""

    value: float  # min Σ c log2 c: φ(w) (to the solver's accuracy, ~1e-8 relative)
    c: np.ndarray  # (C,) optimal counts
    status: str
    seconds: float


def reduced_primal(
    w: np.ndarray, grid: Grid, c_lo: float = 0.01, c_hi: float | None = None, solver: str = "CLARABEL"
) -> ReducedPrimal:
    """min Σ_b c_b log2 c_b s.t. Σc = n, v·c = Σ clamp(w), Σ_b c_b (v_b − v_k)_+ ≥ Σ_i (w_i − v_k)_+ ∀k,
    c_lo ≤ c ≤ c_hi — the same optimum as the n × C program of
    :func:`metaq_utils.core.dual.solve_primal_cvxpy` (Strassen's theorem), with C variables."""
    import cvxpy as cp  # optional dependency

    t0 = time.perf_counter()
    v = grid.v
    wc = np.sort(grid.clamp(w))
    n = wc.shape[0]
    c_hi = float(n) if c_hi is None else float(c_hi)
    tail = np.concatenate([np.cumsum(wc[::-1])[::-1], [0.0]])
    m = np.searchsorted(wc, v, side="right")
    rhs = tail[m] - (n - m) * v
    A = np.maximum(v[None, :] - v[:, None], 0.0)
    c = cp.Variable(grid.C)
    cons = [cp.sum(c) == n, v @ c == float(wc.sum()), A[:-1] @ c >= rhs[:-1], c >= c_lo]
    if c_hi < n:
        cons.append(c <= c_hi)
    prob = cp.Problem(cp.Minimize(-cp.sum(cp.entr(c)) / LN2), cons)
    prob.solve(solver=solver)
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"reduced primal failed: {prob.status}")
    return ReducedPrimal(float(prob.value), np.asarray(c.value, dtype=np.float64), str(prob.status),
                         time.perf_counter() - t0)


@dataclass(frozen=True)
class Optimum:
    """max_ξ φ_w(ξ) (17), bracketed from both sides."""

    value: float  # the best dual value found (a lower bound on φ(w)): the reference optimum
    xi: np.ndarray  # (C,) the ξ that attains it
    primal_value: float  # the reduced primal's value (an upper bound up to the solver's accuracy)
    linear_value: float  # the best dual value on ξ linear in v
    linear_is_optimal: bool  # the linear-ξ optimum's c* is primal feasible (Strassen): it is φ(w)
    source: str  # which candidate gave `value`: "linear" | "primal c" | "bundle polish"
    beta: np.ndarray  # (n,) per-weight multipliers (envelope slopes) at xi

    @property
    def rel_gap(self) -> float:
        """(upper − lower)/|lower|: how well the optimum is pinned down (solver accuracy ~1e-8)."""
        return (self.primal_value - self.value) / abs(self.value)


def true_optimum(
    w: np.ndarray,
    grid: Grid,
    c_lo: float = 0.01,
    c_hi: float | None = None,
    oracle: dual.DualOracle | None = None,
    polish_iterations: int = 200,
    primal: bool = True,
) -> Optimum:
    """The dual maximum, from up to three candidates and a primal upper bound.

    Candidates (dual lower bounds, each evaluated by the oracle): the linear-ξ Newton optimum
    (:func:`linear_dual_optimum`), certified optimal when its c* passes Strassen's test
    (:func:`convex_order_slack`); with ``primal``, ξ_b = log2 c_b + 1/ln 2 from the reduced
    primal's optimal c (stationarity of the c-subproblem), whose value is also the upper bound
    (CVXPY, accurate to ~1e-8 relative); and, when the linear optimum is not certified, a
    proximal-bundle polish from the best candidate. Without ``primal`` (fast, no CVXPY)
    ``primal_value`` is NaN.
    """
    oracle = dual.DualOracle(w, grid, c_lo, c_hi) if oracle is None else oracle
    xi_lin, val_lin = linear_dual_optimum(oracle)
    c_lin = dual.c_star(xi_lin, oracle.c_lo, oracle.c_hi)
    s_n, s_v, s_cx = convex_order_slack(c_lin, w, grid)
    n = oracle.n
    linear_ok = bool(s_n <= 1e-7 * n and s_v <= 1e-7 * n * (1.0 + np.abs(grid.v).max())
                     and s_cx >= -1e-7 * n * grid.delta)
    cands = [("linear", xi_lin, val_lin)]
    primal_value = math.nan
    if primal:
        prim = reduced_primal(w, grid, oracle.c_lo, oracle.c_hi)
        primal_value = prim.value
        xi_p = np.log2(np.clip(prim.c, oracle.c_lo, oracle.c_hi)) + 1.0 / LN2
        cands.append(("primal c", xi_p, oracle(xi_p)[0]))
    if not linear_ok and polish_iterations > 0:
        start = max(cands, key=lambda t: t[2])[1]
        r = dual.proximal_bundle(oracle, start, polish_iterations, zeta=1e4, bundle_size=30)
        cands.append(("bundle polish", r.xi, r.value))
    source, xi, val = max(cands, key=lambda t: t[2])
    return Optimum(float(val), xi.copy(), primal_value, float(val_lin), linear_ok, source, oracle.beta(xi))


def centred_weights(w: np.ndarray, grid: Grid) -> np.ndarray:
    """w shifted to mean exactly w0 (and shrunk towards it if needed so that no weight is clamped).

    For such weights uniform counts c = n/C are primal feasible, so the constant start
    ξ = log2(n/C) + 1/ln 2 (:func:`metaq_utils.core.dual.default_xi0`; our solver's former default,
    used by neither the thesis nor its reference code) is already a dual maximiser and
    φ(w) = n·log2(n/C).
    """
    d = np.asarray(w, dtype=np.float64) - float(np.mean(w))
    half = float(grid.v[-1] - grid.w0)
    return grid.w0 + d * min(1.0, 0.95 * half / float(np.abs(d).max()))


def optimum_check(w: np.ndarray, grid: Grid, full_primal: bool = True) -> dict:
    """One row comparing the dual maximum with the primal: the n × C CVXPY program (small n only,
    ``full_primal``), the reduced C-variable program, and β's spread at the dual optimum."""
    opt = true_optimum(w, grid)
    row = {"n": len(w), "C": grid.C}
    if full_primal:
        full = dual.solve_primal_cvxpy(w, grid)
        inside = (w > grid.v[0]) & (w < grid.v[-1])  # at a clamped end β is not unique
        row["full primal (CVXPY, n×C)"] = full.value
        row["β spread, full primal (interior w)"] = float(np.ptp(full.beta[inside])) if inside.any() else math.nan
    row.update({"reduced primal (C vars)": opt.primal_value, "dual maximum (ours)": opt.value,
                "linear ξ certified": opt.linear_is_optimal, "β mean": float(opt.beta.mean()),
                "β spread (max − min)": float(np.ptp(opt.beta))})
    return row
