"""The computations behind the analysis notebooks (spec §2.2–2.4).

* **CuttingPlaneAlgo** — random x-subproblem instances with their edge cases
  (:func:`random_instances`), an independent reference for the value and the *set* of optimal
  multipliers of the LP (30)–(33) (:func:`envelope_reference`), the agreement table of every
  solver against it (:func:`agreement_table`), a trace of Kelley's cutting plane in the dual
  λ-space (:func:`kelley_trace`, :func:`dual_1d`) and the thesis' §2.2.4 timing comparisons at
  small sizes (:func:`thesis_timing_comparison`).
* **ComplexityAnalysis** — lower-hull vertex ("breakpoint") counts of (v_b, ξ_b) under named
  random models for ξ (:data:`BREAKPOINT_MODELS`, :func:`breakpoint_counts`), Beta fits under
  two stated normalisations with the tail probability computed in log space (:func:`fit_beta`,
  :func:`log10_beta_sf`), the exact probability for the random-walk model, and hull-construction
  timings against C (:func:`time_hull_methods`).
* **SubgradientBundleMethods** — the true maximum of the dual (17), certified from both sides
  (:func:`true_optimum`: a dual lower bound and a primal upper bound; :func:`optimum_check`
  against the n × C CVXPY primal), convergence runs of the dual maximisers
  (:func:`convergence_runs`, :func:`plot_convergence`), the thesis' Tables 1–6 re-measured
  (:func:`dual_tables`, :func:`compare_with_thesis`), iterations to reach a gap
  (:func:`iterations_to_gap`), the ζ sweep (:func:`zeta_sweep`) and the warm-start experiments
  (:func:`warm_start_one_step`, :func:`warm_start_chain`).

The true optimum rests on two facts, both checked in ``tests/test_analysis.py``:

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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from scipy.optimize import linprog

from metaq_utils import dual
from metaq_utils.grid import Grid
from metaq_utils.subproblem import (
    SOLVERS,
    SubproblemSolution,
    lower_hull_breakpoints,
    lower_hull_chain,
    lower_hull_pava,
    solve_breakpoints,
    solve_cutting_plane_scalar,
    solve_cutting_plane_vectorized,
    solve_cvxpy,
    solve_hull,
    solve_linprog,
)

__all__ = [
    # x-subproblem
    "Instance",
    "INSTANCE_XI_MODELS",
    "W_KINDS",
    "random_instances",
    "envelope_reference",
    "brute_force_vertices",
    "agreement_table",
    "KelleyStep",
    "kelley_trace",
    "dual_1d",
    "thesis_timing_comparison",
    # breakpoints
    "BREAKPOINT_MODELS",
    "sample_xi",
    "breakpoint_counts",
    "BETA_NORMALISATIONS",
    "BetaFit",
    "fit_beta",
    "log10_beta_sf",
    "log10_p_all_vertices_random_walk",
    "time_hull_methods",
    "loglog_slope",
    # dual
    "linear_dual_optimum",
    "convex_order_slack",
    "ReducedPrimal",
    "reduced_primal",
    "Optimum",
    "true_optimum",
    "MethodRun",
    "run_method",
    "best_so_far_gap",
    "iterations_to_gap",
    "TABLE_METHODS",
    "dual_tables",
    "THESIS_N_TABLES",
    "compare_with_thesis",
    "zeta_sweep",
    "WARM_METHODS",
    "example_weight_sets",
    "centred_weights",
    "optimum_check",
    "convergence_runs",
    "plot_convergence",
    "warm_start_one_step",
    "warm_start_chain",
    "find_lenet5_checkpoint",
]

LN2 = math.log(2.0)


def _timed(f: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of f (the least disturbed by other jobs)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


# ============================================================================ x-subproblem


@dataclass(frozen=True)
class Instance:
    """One x-subproblem (30)–(33): min ξ·x s.t. v·x = w, Σx = 1, 0 ≤ x ≤ 1."""

    v: np.ndarray  # (C,) strictly increasing bucket values
    xi: np.ndarray  # (C,) multipliers ξ
    w: float  # the weight (may lie outside [v_0, v_{C−1}]: clamped by every solver)
    xi_model: str  # how ξ was drawn (INSTANCE_XI_MODELS)
    w_kind: str  # where w was put (W_KINDS)
    uniform: bool  # v is a uniform grid (else sorted random values)

    @property
    def C(self) -> int:
        return int(self.v.shape[0])


INSTANCE_XI_MODELS = ("normal", "sorted", "ties", "constant", "concave", "convex", "large", "spiky")
W_KINDS = ("interior", "grid_value", "hull_vertex", "end", "midpoint", "outside")


def brute_force_vertices(v: np.ndarray, xi: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Strict lower-hull vertices of (v_b, ξ_b) by comparing every pair of slopes, O(C²).

    b is a strict vertex iff every slope to a point on its left is smaller than every slope to a
    point on its right (the two ends always are). Independent of the O(C) hull codes.
    """
    C = v.shape[0]
    S = (xi[None, :] - xi[:, None]) / (v[None, :] - v[:, None] + np.eye(C))  # S[a, b]
    upper = np.triu(np.ones((C, C), dtype=bool), k=1)
    left_max = np.where(upper, S, -np.inf).max(axis=0)  # max_{a<b} S[a, b]
    right_min = np.where(upper, S, np.inf).min(axis=1)  # min_{c>b} S[b, c]
    scale = 1.0 + np.abs(np.where(np.isfinite(left_max), left_max, 0.0)) + np.abs(
        np.where(np.isfinite(right_min), right_min, 0.0))
    return np.flatnonzero(right_min - left_max > rtol * scale)


def _draw_xi(rng: np.random.Generator, model: str, v: np.ndarray) -> np.ndarray:
    C = v.shape[0]
    m = float(rng.uniform(v[0], v[-1]))
    if model == "normal":
        return rng.normal(size=C)
    if model == "sorted":
        return np.sort(rng.normal(size=C))
    if model == "ties":
        return rng.integers(0, 3, C).astype(np.float64)
    if model == "constant":
        return np.full(C, float(rng.normal()))
    if model == "concave":
        return -3.0 * (v - m) ** 2 + rng.normal()
    if model == "convex":  # every point a hull vertex: the cutting plane's worst case
        return 3.0 * (v - m) ** 2 + rng.normal()
    if model == "large":
        return 1e3 * rng.normal(size=C)
    if model == "spiky":
        return np.where(rng.random(C) < 0.2, -5.0, 0.0) + 0.01 * rng.normal(size=C)
    raise ValueError(f"unknown ξ model {model!r}; choose from {INSTANCE_XI_MODELS}")


def _draw_w(rng: np.random.Generator, kind: str, v: np.ndarray, xi: np.ndarray) -> float:
    delta = float(np.min(np.diff(v)))
    if kind == "interior":
        return float(rng.uniform(v[0], v[-1]))
    if kind == "grid_value":
        return float(rng.choice(v))
    if kind == "hull_vertex":
        return float(v[rng.choice(brute_force_vertices(v, xi))])
    if kind == "end":
        return float(v[0] if rng.random() < 0.5 else v[-1])
    if kind == "midpoint":
        k = int(rng.integers(0, v.shape[0] - 1))
        return float(0.5 * (v[k] + v[k + 1]))
    if kind == "outside":
        side = -1.0 if rng.random() < 0.5 else 1.0
        end = v[0] if side < 0 else v[-1]
        return float(end + side * delta * rng.uniform(0.01, 3.0))
    raise ValueError(f"unknown weight kind {kind!r}; choose from {W_KINDS}")


def random_instances(
    n: int,
    seed: int = 0,
    Cs: Sequence[int] = (2, 3, 5, 8, 16, 64, 256),
    big_C: int = 1024,
    big_C_every: int = 97,
    nonuniform_every: int = 5,
) -> list[Instance]:
    """n fixed-seed instances cycling through every (ξ model, weight kind) pair and C in ``Cs``.

    Every ``big_C_every``-th instance has C = ``big_C``; every ``nonuniform_every``-th one has
    sorted random (non-uniform) v instead of a Grid's centres. Edge cases included by
    construction: w on a grid value, on a hull vertex, at an end, at a midpoint, outside the
    range; tied, constant, convex (all vertices) and large-scale ξ; C = 2.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    pairs = [(m, k) for m in INSTANCE_XI_MODELS for k in W_KINDS]
    for i in range(n):
        C = big_C if big_C_every and i % big_C_every == big_C_every - 1 else Cs[i % len(Cs)]
        xi_model, w_kind = pairs[(i // len(Cs)) % len(pairs)]
        uniform = not (nonuniform_every and i % nonuniform_every == nonuniform_every - 1)
        if uniform:
            v = Grid(float(rng.uniform(-1, 1)), float(rng.uniform(0.1, 2.0)), C).v.copy()
        else:
            v = np.sort(rng.uniform(-2, 2, C))
            while np.diff(v).min() <= 1e-6 * (v[-1] - v[0]):  # keep v strictly increasing
                v = np.sort(rng.uniform(-2, 2, C))
        xi = _draw_xi(rng, xi_model, v)
        out.append(Instance(v, xi, _draw_w(rng, w_kind, v, xi), xi_model, w_kind, uniform))
    return out


def envelope_reference(w: float, v: np.ndarray, xi: np.ndarray) -> tuple[float, float, float]:
    """(V, D−, D+): the LP value at clamp(w) and the interval of its optimal multipliers of v·x = w.

    V is the lower envelope by enumeration of every bucket pair straddling w (and any bucket at
    w), O(C²). The multiplier set comes from the LP dual, max λw + μ s.t. λv_b + μ ≤ ξ_b: λ is
    optimal iff ξ_b + λ(w − v_b) ≥ V for every b, i.e.
    D− = max_{v_b < w} (V − ξ_b)/(w − v_b) ≤ λ ≤ D+ = min_{v_b > w} (ξ_b − V)/(v_b − w)
    (±inf at the ends of the range, where any smaller/larger λ is optimal too).
    Independent of the package's hull code.
    """
    w = float(np.clip(w, v[0], v[-1]))
    left = np.flatnonzero(v < w)
    right = np.flatnonzero(v > w)
    on = np.flatnonzero(v == w)
    cands = [xi[on].min()] if on.size else []
    if left.size and right.size:
        va, xa = v[left][:, None], xi[left][:, None]
        vb, xb = v[right][None, :], xi[right][None, :]
        cands.append(float((xa + (xb - xa) * (w - va) / (vb - va)).min()))
    V = float(min(cands))
    d_lo = float(((V - xi[left]) / (w - v[left])).max()) if left.size else -math.inf
    d_hi = float(((xi[right] - V) / (v[right] - w)).min()) if right.size else math.inf
    return V, d_lo, d_hi


def _lp_value(w: float, v: np.ndarray, xi: np.ndarray) -> float:
    """The LP (30)–(33) at clamp(w), straight from scipy's HiGHS."""
    C = v.shape[0]
    res = linprog(xi, A_eq=np.vstack([v, np.ones(C)]), b_eq=[float(np.clip(w, v[0], v[-1])), 1.0],
                  bounds=(0.0, 1.0), method="highs")
    if res.status != 0:
        raise RuntimeError(f"reference linprog failed: {res.message}")
    return float(res.fun)


def agreement_table(
    instances: Sequence[Instance],
    solvers: dict[str, Callable] | None = None,
    cvxpy_instances: int = 50,
) -> pd.DataFrame:
    """Every solver against the references on every instance: one row per solver.

    References per instance: the value of scipy's ``linprog(method="highs")``, and
    :func:`envelope_reference` (pair enumeration + the LP dual's optimal-multiplier interval);
    the two values must agree (row ``reference: linprog vs enumeration``). A solver fails an
    instance when its value is off by more than 1e-9·max(1, |ξ|_∞) (1e-6 for CVXPY, an
    interior-point method), when v·x ≠ clamp(w), when x is not a valid pair (θ ∉ [0, 1]), or
    when β lies outside [D−, D+] by more than 1e-8·(1 + |ξ|_∞/min Δv) (1e-5 for CVXPY).
    CVXPY runs on the first ``cvxpy_instances`` instances only (it is ~10 ms per solve).
    """
    solvers = dict(SOLVERS) if solvers is None else dict(solvers)
    if cvxpy_instances > 0:
        solvers["cvxpy"] = solve_cvxpy
    stats_: dict[str, dict] = {k: {"instances": 0, "max_err": 0.0, "inside": 0, "value": 0,
                                   "feasible": 0, "x": 0, "multiplier": 0, "failed": 0}
                               for k in solvers}
    ref = {"instances": 0, "max_err": 0.0, "failed": 0}
    for idx, inst in enumerate(instances):
        v, xi, w = inst.v, inst.xi, inst.w
        wc = float(np.clip(w, v[0], v[-1]))
        scale = max(1.0, float(np.abs(xi).max()))
        V, d_lo, d_hi = envelope_reference(w, v, xi)
        lp = _lp_value(w, v, xi)
        e = abs(lp - V) / scale
        ref["instances"] += 1
        ref["max_err"] = max(ref["max_err"], e)
        ref["failed"] += int(e > 1e-9)
        for name, solve in solvers.items():
            if name == "cvxpy" and idx >= cvxpy_instances:
                continue
            s: SubproblemSolution = solve(np.array([w]), v, xi)
            loose = name == "cvxpy"
            tv = (1e-6 if loose else 1e-9) * scale
            tb = (1e-5 if loose else 1e-8) * (1.0 + float(np.abs(xi).max()) / float(np.diff(v).min()))
            val, beta = float(s.value[0]), float(s.beta[0])
            lo, hi, th = int(s.lo[0]), int(s.hi[0]), float(s.theta[0])
            st = stats_[name]
            st["instances"] += 1
            err = abs(val - lp)
            st["max_err"] = max(st["max_err"], err / scale)
            bad_value = err > tv
            bad_x = not (0 <= lo < inst.C and 0 <= hi < inst.C and 0.0 <= th <= 1.0
                         and (lo != hi or th == 0.0))
            vx = (1.0 - th) * v[min(max(lo, 0), inst.C - 1)] + th * v[min(max(hi, 0), inst.C - 1)]
            bad_feas = abs(vx - wc) > 1e-9 * (1.0 + float(np.abs(v).max()))
            inside = (d_lo - tb) <= beta <= (d_hi + tb)
            st["value"] += int(bad_value)
            st["x"] += int(bad_x)
            st["feasible"] += int(bad_feas)
            st["multiplier"] += int(not inside)
            st["inside"] += int(inside)
            st["failed"] += int(bad_value or bad_x or bad_feas or not inside)
    rows = [{"solver": "reference: linprog vs enumeration", "instances": ref["instances"],
             "max rel. value error": ref["max_err"], "β inside LP interval": np.nan,
             "value fails": ref["failed"], "x/feasibility fails": 0, "multiplier fails": 0,
             "failures": ref["failed"]}]
    for name, st in stats_.items():
        k = max(st["instances"], 1)
        rows.append({"solver": name, "instances": st["instances"], "max rel. value error": st["max_err"],
                     "β inside LP interval": st["inside"] / k, "value fails": st["value"],
                     "x/feasibility fails": st["x"] + st["feasible"], "multiplier fails": st["multiplier"],
                     "failures": st["failed"]})
    return pd.DataFrame(rows).set_index("solver")


@dataclass(frozen=True)
class KelleyStep:
    """One iteration of Kelley's method on the 1-D dual of the x-subproblem (thesis (48)–(50))."""

    a: int  # x' = e_a, the cut with v_a ≤ w
    b: int  # x'' = e_b, the cut with v_b > w
    lam: float  # where the two cuts intersect: the maximiser of the model
    model_value: float  # the model's maximum ξ_a + λ(w − v_a) (an upper bound)
    dual_value: float  # d(λ) = λw + min_j (ξ_j − λ v_j) (a lower bound)
    new_bucket: int  # x+ = e_j, the argmin of the reduced costs ξ − λv (the new cut)


def dual_1d(lam: np.ndarray | float, w: float, v: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """The dual function of the x-subproblem, d(λ) = λw + min_b (ξ_b − λ v_b) (concave)."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    return lam * w + (xi[None, :] - lam[:, None] * v[None, :]).min(axis=1)


def kelley_trace(w: float, v: np.ndarray, xi: np.ndarray, tol: float | None = None) -> list[KelleyStep]:
    """Kelley's cutting plane for one weight, every iteration recorded.

    Same rule as :func:`metaq_utils.subproblem.solve_cutting_plane_scalar`: start from the two
    grid values bracketing clamp(w), intersect their cuts (48)–(50), add x+ = argmin (ξ − λv)·x
    and let it replace x' (if v_j ≤ w) or x'' (otherwise) until the model's maximum lies on the
    dual function (the last step has ``new_bucket`` = a: no new cut).
    """
    v = np.asarray(v, dtype=np.float64)
    xi = np.asarray(xi, dtype=np.float64)
    C = v.shape[0]
    w = float(np.clip(w, v[0], v[-1]))
    a = int(np.clip(np.searchsorted(v, w, side="right") - 1, 0, C - 2))
    b = a + 1
    if tol is None:
        tol = 1e-13 * (1.0 + float(np.abs(xi).max()) + float(np.abs(np.diff(xi)).max())
                       * float(np.abs(v).max() / np.diff(v).min()))
    steps = []
    for _ in range(C + 2):
        lam = (xi[b] - xi[a]) / (v[b] - v[a])
        red = xi - lam * v
        j = int(np.argmin(red))
        model = xi[a] + lam * (w - v[a])
        done = red[j] >= red[a] - tol
        steps.append(KelleyStep(a, b, float(lam), float(model), float(lam * w + red[j]), a if done else j))
        if done:
            return steps
        if v[j] <= w:
            a = j
        else:
            b = j
    raise RuntimeError("cutting plane did not terminate")  # pragma: no cover - finite by theory


def thesis_timing_comparison(
    n_cvxpy: int = 30,
    n_scalar_c5: int = 2000,
    n_weights_c256: int = 10_000,
    repeats: int = 3,
    seed: int = 0,
    w0: float = -0.11,
    r: float = 1.114,
) -> pd.DataFrame:
    """The three comparisons of thesis §2.2.4, measured here at small sizes (ratios, not times).

    (a) CVXPY and linprog vs the scalar cutting plane, one instance (own ξ ~ N(0, 1) and
        w ~ U[range]) at a time, C = 256, ``n_cvxpy`` instances;
    (b) scalar vs vectorised cutting plane, C = 5, ``n_scalar_c5`` weights sharing one ξ;
    (c) vectorised cutting plane vs the specialised breakpoint algorithm, C = 256,
        ``n_weights_c256`` weights sharing one ξ; the O(C) hull and one call of the aggregated
        dual oracle (O(C) after its O(n) pass) are timed beside it.
    Each time is the best of ``repeats`` runs (CVXPY: one run).
    """
    from metaq_utils.thesis import SPEEDUPS

    th = list(SPEEDUPS.values())
    rng = np.random.default_rng(seed)
    rows = []
    g256 = Grid(w0, r, 256)
    inst = [(rng.uniform(g256.lo, g256.hi, 1), rng.normal(size=256)) for _ in range(n_cvxpy)]
    t_cp = _timed(lambda: [solve_cutting_plane_scalar(w, g256, xi) for w, xi in inst], repeats)
    t_lp = _timed(lambda: [solve_linprog(w, g256, xi) for w, xi in inst], repeats)
    t_cvx = _timed(lambda: [solve_cvxpy(w, g256, xi) for w, xi in inst], 1)
    rows.append(("(a) C=256, one instance at a time", "CVXPY", "cutting plane (scalar)", n_cvxpy,
                 t_cvx, t_cp, th[0][2]))
    rows.append(("(a) C=256, one instance at a time", "linprog (HiGHS)", "cutting plane (scalar)", n_cvxpy,
                 t_lp, t_cp, np.nan))
    g5 = Grid(w0, r, 5)
    w5 = rng.uniform(g5.lo, g5.hi, n_scalar_c5)
    xi5 = rng.normal(size=5)
    t_s = _timed(lambda: solve_cutting_plane_scalar(w5, g5, xi5), 1)
    t_v = _timed(lambda: solve_cutting_plane_vectorized(w5, g5, xi5), repeats)
    rows.append(("(b) C=5, weights sharing one ξ", "cutting plane (scalar)", "cutting plane (vectorised)",
                 n_scalar_c5, t_s, t_v, th[1][2]))
    w44 = rng.uniform(g256.lo, g256.hi, n_weights_c256)
    xi = rng.normal(size=256)
    t_cpv = _timed(lambda: solve_cutting_plane_vectorized(w44, g256, xi), repeats)
    t_bp = _timed(lambda: solve_breakpoints(w44, g256, xi), 5 * repeats)
    t_hull = _timed(lambda: solve_hull(w44, g256, xi, "pava"), 5 * repeats)
    oracle = dual.DualOracle(w44, g256)
    t_or = _timed(lambda: oracle(xi), 20 * repeats)
    label = "(c) C=256, weights sharing one ξ"
    rows.append((label, "cutting plane (vectorised)", "specialised (breakpoints)", n_weights_c256,
                 t_cpv, t_bp, th[2][2]))
    rows.append((label, "specialised (breakpoints)", "O(C) hull (PAVA) + placement", n_weights_c256,
                 t_bp, t_hull, np.nan))
    rows.append((label, "specialised (breakpoints)", "aggregated dual oracle, one call", n_weights_c256,
                 t_bp, t_or, np.nan))
    df = pd.DataFrame(rows, columns=["comparison", "slower", "faster", "instances", "slower s", "faster s",
                                     "thesis ratio"])
    df["our ratio"] = df["slower s"] / df["faster s"]
    return df[["comparison", "slower", "faster", "instances", "slower s", "faster s", "our ratio",
               "thesis ratio"]]


# ============================================================================ breakpoints

BREAKPOINT_MODELS = {
    "iid_normal": "ξ_b i.i.d. N(0, 1)",
    "iid_uniform": "ξ_b i.i.d. Uniform(0, 1)",
    "log_histogram": "ξ_b = log2(max(h_b, 0.01)) + 1/ln 2 with h the bucket counts of n = 44,426 weights "
                     "~ N(μ, σ²), μ ~ U(−0.3, 0.1), σ ~ U(0.05, 0.5) (the ξ that makes c* equal the "
                     "histogram), plus i.i.d. N(0, 0.25²) noise",
    "random_walk": "ξ_b = ε_1 + … + ε_b, ε i.i.d. N(0, 1) (expected vertices 1 + Σ_{k<C} 1/k)",
    "fista_iterate": "ξ after 20 FISTA iterations (ζ = 9e4, from ξ = 0) on n = 5,000 weights "
                     "~ N(μ, σ²), μ ~ U(−0.3, 0.1), σ ~ U(0.05, 0.5)",
}


def sample_xi(model: str, C: int, rng: np.random.Generator, w0: float = -0.11, r: float = 1.114) -> np.ndarray:
    """One ξ ∈ R^C under a named random model (:data:`BREAKPOINT_MODELS`), on Grid(w0, r, C)."""
    if model == "iid_normal":
        return rng.normal(size=C)
    if model == "iid_uniform":
        return rng.uniform(size=C)
    if model == "random_walk":
        return np.cumsum(rng.normal(size=C))
    if model in ("log_histogram", "fista_iterate"):
        grid = Grid(w0, r, C)
        n = 44_426 if model == "log_histogram" else 5_000
        w = rng.normal(rng.uniform(-0.3, 0.1), rng.uniform(0.05, 0.5), n)
        if model == "log_histogram":
            h = np.bincount(grid.bucket_of(w), minlength=C).astype(np.float64)
            return np.log2(np.maximum(h, 0.01)) + 1.0 / LN2 + rng.normal(0.0, 0.25, C)
        return dual.solve_dual(w, grid, "fista", 20, 9e4, xi0=np.zeros(C)).xi
    raise ValueError(f"unknown model {model!r}; choose from {sorted(BREAKPOINT_MODELS)}")


def breakpoint_counts(
    model: str, C: int = 256, instances: int = 2000, seed: int = 0, hull: str = "pava"
) -> np.ndarray:
    """Number of lower-hull vertices (the thesis' breakpoints, ends included) per random instance.

    ``hull`` = "pava" (O(C), drops collinear points) or "breakpoints" (the thesis' repeated argmin,
    keeps collinear points; identical counts for continuous random models).
    """
    f = {"pava": lower_hull_pava, "chain": lower_hull_chain, "breakpoints": lower_hull_breakpoints}[hull]
    rng = np.random.default_rng(seed)
    v = Grid(-0.11, 1.114, C).v
    return np.array([f(v, sample_xi(model, C, rng)).shape[0] for _ in range(instances)], dtype=np.int64)


BETA_NORMALISATIONS = {
    "k/C": "u = k/C; the bin of k is [k − ½, k + ½]/C (clipped to [0, 1]); P(k = C) = P(u ≥ (C − ½)/C)",
    "(k-1.5)/(C-1)": "u = (k − 1.5)/(C − 1): [0, 1] cut into C − 1 equal bins, one per k = 2..C; "
                     "P(k = C) = P(u ≥ (C − 2)/(C − 1))",
}


@dataclass(frozen=True)
class BetaFit:
    """A Beta(a, b) fit (loc 0, scale 1) of breakpoint counts k ∈ {2, …, C}, and what it gives k = C."""

    normalisation: str  # a key of BETA_NORMALISATIONS
    C: int
    a: float
    b: float
    log10_p_all: float  # log10 P(k = C) under the fit
    loglik: float  # log-likelihood of the counts under the fit's binned pmf

    def _edges(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(k, dtype=np.float64)
        if self.normalisation == "k/C":
            return np.clip((k - 0.5) / self.C, 0.0, 1.0), np.clip((k + 0.5) / self.C, 0.0, 1.0)
        return (k - 2.0) / (self.C - 1), (k - 1.0) / (self.C - 1)

    def pmf(self, k: np.ndarray) -> np.ndarray:
        """The fitted probability of each count k: the Beta mass of its bin."""
        lo, hi = self._edges(k)
        return special.betainc(self.a, self.b, hi) - special.betainc(self.a, self.b, lo)


def log10_beta_sf(a: float, b: float, x: float, terms: int = 400) -> float:
    """log10 P(U ≥ x) for U ~ Beta(a, b), accurate where the probability underflows float64.

    P(U ≥ x) = I_{1−x}(b, a) = y^b (1−y)^a / (b B(a, b)) · Σ_k (a+b)_k/(b+1)_k y^k with y = 1 − x
    (DLMF 8.17.8), summed in log space; the series converges for y < 1 and fast for small y.
    """
    y = 1.0 - x
    if not 0.0 < y < 1.0:
        raise ValueError(f"x must lie in (0, 1), got {x}")
    if y > 0.5:  # the series is slow there, and the value representable: use scipy
        return float(np.log10(special.betainc(b, a, y)))
    log_pref = b * math.log(y) + a * math.log1p(-y) - math.log(b) - special.betaln(a, b)
    total, term = 1.0, 1.0
    for k in range(terms):
        term *= (a + b + k) / (b + 1 + k) * y
        total += term
        if term < 1e-17 * total:
            break
    return (log_pref + math.log(total)) / math.log(10.0)


def fit_beta(counts: np.ndarray, C: int, normalisation: str = "k/C") -> BetaFit:
    """Beta(a, b) on [0, 1] fitted by maximum likelihood (scipy.stats.beta.fit, floc=0, fscale=1)
    to the counts mapped to u by ``normalisation`` (:data:`BETA_NORMALISATIONS`); P(k = C) is the
    fitted mass of the last bin, computed in log space (:func:`log10_beta_sf`)."""
    if normalisation not in BETA_NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose from {list(BETA_NORMALISATIONS)}")
    k = np.asarray(counts, dtype=np.float64)
    if k.min() < 2 or k.max() > C:
        raise ValueError(f"counts must lie in [2, {C}]")
    u = k / C if normalisation == "k/C" else (k - 1.5) / (C - 1)
    a, b, _, _ = stats.beta.fit(u, floc=0.0, fscale=1.0)
    x_last = (C - 0.5) / C if normalisation == "k/C" else (C - 2.0) / (C - 1)
    fit = BetaFit(normalisation, C, float(a), float(b), log10_beta_sf(a, b, x_last), 0.0)
    ks, m = np.unique(k, return_counts=True)
    ll = float(m @ np.log(np.maximum(fit.pmf(ks), 1e-300)))
    return BetaFit(normalisation, C, fit.a, fit.b, fit.log10_p_all, ll)


def log10_p_all_vertices_random_walk(C: int) -> float:
    """Exact log10 P(all C points are lower-hull vertices) for the random-walk model: the C − 1
    i.i.d. continuous increments must come in increasing order, probability 1/(C − 1)!."""
    return -special.gammaln(C) / math.log(10.0)


def time_hull_methods(
    Cs: Sequence[int] = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    xi_kinds: Sequence[str] = ("iid_normal", "convex"),
    repeats: int = 5,
    seed: int = 0,
    budget_s: float = 0.25,
) -> pd.DataFrame:
    """Seconds per hull construction against C for the thesis' repeated argmin and two O(C) hulls.

    ``xi_kinds``: "iid_normal" (typical, few vertices) or "convex" (ξ = v², every point a vertex:
    the worst case of repeated argmin, O(C²)). Each time is the best of ``repeats`` batches, a
    batch repeating the call until ``budget_s``/``repeats`` seconds have passed (at least once).
    """
    rng = np.random.default_rng(seed)
    methods = {"thesis: repeated argmin": lower_hull_breakpoints,
               "monotone chain (O(C), Python)": lower_hull_chain,
               "PAVA (O(C), compiled)": lower_hull_pava}
    rows = []
    for kind in xi_kinds:
        for C in Cs:
            v = Grid(-0.11, 1.114, C).v
            if kind == "iid_normal":
                xi = rng.normal(size=C)
            elif kind == "convex":
                xi = (v - v.mean()) ** 2
            else:
                raise ValueError(f"unknown ξ kind {kind!r}")
            for name, f in methods.items():
                h = f(v, xi).shape[0]
                t = time.perf_counter()
                f(v, xi)
                one = time.perf_counter() - t
                reps = max(1, int(budget_s / repeats / max(one, 1e-7)))
                best = _timed(lambda: [f(v, xi) for _ in range(reps)], repeats) / reps
                rows.append({"xi": kind, "C": C, "method": name, "seconds": best, "vertices": h})
    return pd.DataFrame(rows)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (the empirical exponent)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


# ============================================================================ the dual


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
    :func:`metaq_utils.dual.solve_primal_cvxpy` (Strassen's theorem), with C variables."""
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


@dataclass(frozen=True)
class MethodRun:
    """One run of a dual maximiser, timed."""

    label: str
    result: dual.DualResult
    seconds: float  # wall clock of the solve (the oracle's O(n) pass excluded)


def run_method(oracle: dual.DualOracle, xi0: np.ndarray, label: str = "", **kw) -> MethodRun:
    """``solve_dual(oracle=oracle, xi0=xi0, **kw)``, timed (kw: method, iterations, zeta, …)."""
    t = time.perf_counter()
    r = dual.solve_dual(None, oracle.grid, oracle=oracle, xi0=xi0, **kw)
    return MethodRun(label or kw.get("method", "fista"), r, time.perf_counter() - t)


def best_so_far_gap(history: np.ndarray, optimum: float) -> np.ndarray:
    """Relative gap (optimum − max_{j≤k} φ_j)/|optimum| per iteration, floored at 1e-16."""
    best = np.maximum.accumulate(np.asarray(history, dtype=np.float64))
    return np.maximum((optimum - best) / abs(optimum), 1e-16)


def iterations_to_gap(history: np.ndarray, optimum: float, rel_gap: float) -> int | None:
    """Oracle evaluations until the best value found is within rel_gap·|optimum| (None: never)."""
    hit = np.flatnonzero(best_so_far_gap(history, optimum) <= rel_gap)
    return int(hit[0]) + 1 if hit.size else None


# label -> solve_dual keywords: the thesis' Tables 1–6 (ζ_FISTA = 9e4, ζ_PBM = 1e6) + our bundle
TABLE_METHODS: dict[str, dict] = {
    "DSS 1000 it": {"method": "dss", "iterations": 1000},
    "DSS 20 it": {"method": "dss", "iterations": 20},
    "FISTA": {"method": "fista", "iterations": 20, "zeta": 9e4},
    "PBM": {"method": "pbm_thesis", "iterations": 20, "zeta": 1e6, "bundle_size": 10},
    "bundle (ours)": {"method": "bundle", "iterations": 20, "zeta": 1e4, "bundle_size": 10},
}


def _starts(n: int, C: int, starts: Iterable[str]) -> dict[str, np.ndarray]:
    out = {}
    for s in starts:
        if s == "c* = n/C":
            out[s] = dual.default_xi0(n, C)
        elif s == "ξ = 0":
            out[s] = np.zeros(C)
        else:
            raise ValueError(f"unknown start {s!r}; use 'c* = n/C' or 'ξ = 0'")
    return out


def dual_tables(
    w: np.ndarray,
    w0: float,
    r: float,
    Cs: Sequence[int] = (256, 128, 64, 32, 16, 8),
    starts: Sequence[str] = ("c* = n/C", "ξ = 0"),
    methods: dict[str, dict] | None = None,
) -> tuple[pd.DataFrame, dict[int, Optimum]]:
    """The thesis' Tables 1–6 re-measured: per C, start and method, the best φ_w found, its
    relative gap to the true optimum (:func:`true_optimum`) and the seconds of the solve.

    Returns (long table, {C: Optimum}). Thesis values (``metaq_utils.thesis.DUAL_TABLES``) are
    joined in by the notebook.
    """
    methods = TABLE_METHODS if methods is None else methods
    rows, optima = [], {}
    for C in Cs:
        grid = Grid(w0, r, C)
        oracle = dual.DualOracle(w, grid)
        opt = true_optimum(w, grid, oracle=oracle)
        optima[C] = opt
        for start, xi0 in _starts(oracle.n, C, starts).items():
            for label, kw in methods.items():
                run = run_method(oracle, xi0, label, **kw)
                rows.append({"C": C, "start": start, "method": label, "value": run.result.value,
                             "rel_gap": (opt.value - run.result.value) / abs(opt.value),
                             "iterations": run.result.iterations, "seconds": run.seconds,
                             "optimum": opt.value})
    return pd.DataFrame(rows), optima


THESIS_N_TABLES = 44_000  # n of the thesis' Tables 1–6


def compare_with_thesis(tables: pd.DataFrame, optima: dict[int, Optimum]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Views of :func:`dual_tables` beside ``metaq_utils.thesis.DUAL_TABLES``.

    Returns (values, per_C, seconds):
    * values — index (C, method): the thesis' max φ_w and ours (best value, relative gap to the
      optimum) from each start;
    * per_C — the optimum (ours), n·log2(n/C) — a lower bound on φ(w) for *every* weight vector
      (Σ c log2 c over Σc = n is smallest at c = n/C) — and, for the thesis (n = 44,000), its best
      reported value and how far below that bound it lies;
    * seconds — the thesis' seconds and ours per start.
    """
    from metaq_utils.thesis import DUAL_TABLES

    def thesis_cell(C, m, k):
        return DUAL_TABLES.get(C, {}).get(m, (math.nan, math.nan))[k]

    starts = list(dict.fromkeys(tables["start"]))
    idx = pd.MultiIndex.from_frame(tables[["C", "method"]].drop_duplicates())
    values = pd.DataFrame(index=idx)
    values["thesis φ"] = [thesis_cell(C, m, 0) for C, m in idx]
    seconds = pd.DataFrame(index=idx)
    seconds["thesis s"] = [thesis_cell(C, m, 1) for C, m in idx]
    for st in starts:
        part = tables[tables.start == st].set_index(["C", "method"])
        values[f"ours φ ({st})"] = part["value"]
        values[f"gap ({st})"] = part["rel_gap"]
        seconds[f"ours s ({st})"] = part["seconds"]
    per_C = []
    for C in dict.fromkeys(tables["C"]):
        n = optima[C].beta.shape[0]
        best_thesis = max(v[0] for v in DUAL_TABLES[C].values()) if C in DUAL_TABLES else math.nan
        floor_thesis = THESIS_N_TABLES * math.log2(THESIS_N_TABLES / C)
        per_C.append({"C": C, "optimum (ours)": optima[C].value, "n·log2(n/C) (ours)": n * math.log2(n / C),
                      "optimum − n·log2(n/C)": optima[C].value - n * math.log2(n / C),
                      "linear ξ certified": optima[C].linear_is_optimal,
                      "thesis best φ": best_thesis, "thesis n·log2(n/C)": floor_thesis,
                      "thesis best below its floor by": (floor_thesis - best_thesis) / floor_thesis})
    return values, pd.DataFrame(per_C).set_index("C"), seconds


def zeta_sweep(
    oracle: dual.DualOracle,
    optimum: float,
    zetas: Sequence[float] = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7),
    methods: Sequence[str] = ("fista", "pbm_thesis", "bundle"),
    iterations: int = 20,
    starts: Sequence[str] = ("c* = n/C", "ξ = 0"),
) -> pd.DataFrame:
    """Relative gap of the best value after ``iterations`` evaluations, per ζ, method and start."""
    rows = []
    for start, xi0 in _starts(oracle.n, oracle.C, starts).items():
        for method in methods:
            for z in zetas:
                r = dual.solve_dual(None, oracle.grid, method, iterations, z, xi0=xi0, oracle=oracle)
                rows.append({"start": start, "method": method, "zeta": z,
                             "rel_gap": max((optimum - r.value) / abs(optimum), 0.0)})
    return pd.DataFrame(rows)


WARM_METHODS: dict[str, dict] = {
    "DSS": {"method": "dss"},
    "FISTA (ζ = 9e4)": {"method": "fista", "zeta": 9e4},
    "PBM (ζ = 1e6)": {"method": "pbm_thesis", "zeta": 1e6},
    "bundle (ζ = 1e4)": {"method": "bundle", "zeta": 1e4},
}


def warm_start_one_step(
    w: np.ndarray,
    grid: Grid,
    step: float = 7e-4,
    seed: int = 0,
    methods: dict[str, dict] | None = None,
    max_iterations: int = 200,
    rel_gaps: Sequence[float] = (1e-4, 1e-6, 1e-8),
) -> pd.DataFrame:
    """Solve on w, move w as one optimizer step would, re-solve cold and warm.

    The step: w' = w + step·ε, ε i.i.d. N(0, 1) (the size of one Adam step at lr = ``step``).
    Starts: "c* = n/C", "ξ = 0" (cold) and "warm" = the optimal ξ for w. Reported: the gap at the
    first evaluation and the oracle evaluations each method needs (within ``max_iterations``;
    None: not reached) to bring the best value within each relative gap of the optimum for w'.
    """
    methods = WARM_METHODS if methods is None else methods
    rng = np.random.default_rng(seed)
    prev = true_optimum(w, grid, primal=False)
    w_new = w + step * rng.normal(size=w.shape[0])
    oracle = dual.DualOracle(w_new, grid)
    opt = true_optimum(w_new, grid, oracle=oracle)
    xi0s = _starts(oracle.n, grid.C, ("c* = n/C", "ξ = 0"))
    xi0s["warm (optimum for w)"] = prev.xi
    rows = []
    for start, xi0 in xi0s.items():
        for label, kw in methods.items():
            r = dual.solve_dual(None, grid, iterations=max_iterations, xi0=xi0, oracle=oracle, **kw)
            row = {"start": start, "method": label,
                   "gap at iteration 1": max((opt.value - r.history[0]) / abs(opt.value), 0.0)}
            for g in rel_gaps:
                row[f"iterations to {g:.0e}"] = iterations_to_gap(r.history, opt.value, g)
            rows.append(row)
    return pd.DataFrame(rows)


def warm_start_chain(
    w: np.ndarray,
    grid: Grid,
    steps: int = 50,
    iterations: int = 15,
    step: float = 7e-4,
    seed: int = 0,
    methods: dict[str, dict] | None = None,
    starts: Sequence[str] = ("c* = n/C", "ξ = 0"),
) -> pd.DataFrame:
    """Training-like chain: at every step w moves by step·N(0, 1) and each method runs
    ``iterations`` evaluations warm-started from its own previous ξ (as the regularizer does).

    Returns one row per (start, method, step) with the relative gap of the step's result to the
    optimum for that step's weights (the linear-ξ optimum, certified by Strassen's test; steps
    where the certificate fails are reported with ``certified`` False).
    """
    methods = WARM_METHODS if methods is None else methods
    rng = np.random.default_rng(seed)
    ws = [np.asarray(w, dtype=np.float64)]
    for _ in range(steps - 1):
        ws.append(ws[-1] + step * rng.normal(size=ws[-1].shape[0]))
    oracles = [dual.DualOracle(wt, grid) for wt in ws]
    opts = [true_optimum(wt, grid, oracle=o, primal=False, polish_iterations=0) for wt, o in zip(ws, oracles)]
    rows = []
    for start, xi0 in _starts(len(w), grid.C, starts).items():
        for label, kw in methods.items():
            xi = xi0
            for t, (o, opt) in enumerate(zip(oracles, opts)):
                r = dual.solve_dual(None, grid, iterations=iterations, xi0=xi, oracle=o, **kw)
                xi = r.xi
                rows.append({"start": start, "method": label, "step": t + 1,
                             "rel_gap": max((opt.value - r.value) / abs(opt.value), 0.0),
                             "certified": opt.linear_is_optimal})
    return pd.DataFrame(rows)


def example_weight_sets(n: int, grid: Grid, seed: int = 0) -> dict[str, np.ndarray]:
    """Small named weight sets for checks against the full primal.

    "gaussian": N(0, 0.3²); "clustered": three tight clusters N(m, 0.02²), m ∈ {−0.5, 0.1, 0.4};
    "ends": piled next to both ends of the range, inside it (uniform within 0.02Δ–0.3Δ of v_0 and
    of v_{C−1}) — the case where ξ linear in v is *not* optimal.
    """
    rng = np.random.default_rng(seed)
    v, d = grid.v, grid.delta
    return {
        "gaussian": rng.normal(0.0, 0.3, n),
        "clustered": np.concatenate([rng.normal(m, 0.02, n // 3) for m in (-0.5, 0.1, 0.4)]
                                    + [rng.normal(0.1, 0.02, n - 3 * (n // 3))]),
        "ends": np.concatenate([rng.uniform(v[0] + 0.02 * d, v[0] + 0.3 * d, n // 2),
                                rng.uniform(v[-1] - 0.3 * d, v[-1] - 0.02 * d, n - n // 2)]),
    }


def centred_weights(w: np.ndarray, grid: Grid) -> np.ndarray:
    """w shifted to mean exactly w0 (and shrunk towards it if needed so that no weight is clamped).

    For such weights uniform counts c = n/C are primal feasible, so the thesis' default start
    ξ = log2(n/C) + 1/ln 2 is already a dual maximiser and φ(w) = n·log2(n/C).
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


def convergence_runs(
    oracle: dual.DualOracle,
    optimum: float,
    iterations: int,
    methods: dict[str, dict] | None = None,
    starts: Sequence[str] = ("c* = n/C", "ξ = 0"),
) -> pd.DataFrame:
    """φ_w(ξ_k) and the best-so-far relative gap per oracle evaluation, per method and start.

    ``methods``: label -> solve_dual keywords without ``iterations`` (default :data:`WARM_METHODS`:
    DSS γ_k = 1/k, FISTA ζ = 9e4, the thesis' PBM ζ = 1e6, the proximal bundle ζ = 1e4).
    """
    methods = WARM_METHODS if methods is None else methods
    frames = []
    for start, xi0 in _starts(oracle.n, oracle.C, starts).items():
        for label, kw in methods.items():
            run = run_method(oracle, xi0, label, iterations=iterations, **kw)
            h = run.result.history
            frames.append(pd.DataFrame({"start": start, "method": label, "iteration": np.arange(1, len(h) + 1),
                                        "value": h, "rel_gap": best_so_far_gap(h, optimum),
                                        "seconds": run.seconds}))
    return pd.concat(frames, ignore_index=True)


def plot_convergence(runs: pd.DataFrame, title: str = ""):
    """φ_w(ξ_k) (symlog) and the best-so-far gap to the optimum (log) against k, one row per start."""
    import matplotlib.pyplot as plt

    starts = list(dict.fromkeys(runs["start"]))
    fig, axes = plt.subplots(len(starts), 2, figsize=(12, 3.4 * len(starts)), squeeze=False)
    for row, start in zip(axes, starts):
        part = runs[runs.start == start]
        for k, (label, g) in enumerate(part.groupby("method", sort=False)):
            row[0].plot(g["iteration"], g["value"], color=f"C{k}", lw=0.9, label=label)
            row[1].plot(g["iteration"], g["rel_gap"], color=f"C{k}", lw=1.2, label=label)
        row[0].set_yscale("symlog", linthresh=1e3, linscale=0.5)
        lo_v, hi_v = float(part["value"].min()), float(part["value"].max())
        cand = (-1e15, -1e12, -1e9, -1e6, -1e3, 0.0, 1e3, 1e6, 1e9, 1e12, 1e15)
        below = max([t for t in cand if t <= lo_v], default=cand[0])
        above = min([t for t in cand if t >= hi_v], default=cand[-1])
        row[0].set_yticks([t for t in cand if below <= t <= above])
        row[0].set_ylabel(r"$\varphi_w(\xi_k)$"); row[0].set_title(f"{title} — start {start}", fontsize=10)
        row[1].set_yscale("log"); row[1].set_ylabel("best-so-far relative gap")
        row[1].set_title(f"gap to the true optimum — start {start}", fontsize=10)
        for ax in row:
            ax.set_xscale("log"); ax.set_xlabel("iteration k (oracle evaluations)"); ax.grid(alpha=0.3, which="both")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def find_lenet5_checkpoint(folders: Sequence[str | Path]) -> tuple[Path, np.ndarray, dict] | None:
    """The first loadable LeNet-5 checkpoint under ``folders`` (searched in order, files sorted).

    Returns (path, flat float64 weights in ``model.parameters()`` order, its grid dict or {}), or
    None when there is none. Needs PyTorch (imported here only).
    """
    from metaq_utils.checkpoints import CheckpointError, load_checkpoint
    from metaq_utils.regularizer import flat_parameters

    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.pt")):
            try:
                ckpt = load_checkpoint(path, expected_arch="lenet5")
            except (CheckpointError, OSError, RuntimeError, KeyError, ValueError):
                continue
            w = flat_parameters(ckpt.build_model()).double().numpy()
            return path, w, dict(ckpt.grid or {})
    return None
