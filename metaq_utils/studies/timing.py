"""Timing studies (the CuttingPlaneAlgo and ComplexityAnalysis notebooks): the thesis' §2.2.4
comparisons at small sizes (:func:`thesis_timing_comparison`), hull-construction times against C
(:func:`time_hull_methods`) and the empirical exponent (:func:`loglog_slope`). Every time is the
best of several runs (:func:`best_time`), the least disturbed by other jobs.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from metaq_utils.core import dual
from metaq_utils.core.grid import THESIS_GRID_R, THESIS_GRID_W0, Grid, thesis_grid
from metaq_utils.core.subproblem import (
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

__all__ = ["best_time", "thesis_timing_comparison", "time_hull_methods", "loglog_slope"]


def best_time(f: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of f (the least disturbed by other jobs)."""
    best = math.inf
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def thesis_timing_comparison(
    n_cvxpy: int = 30,
    n_scalar_c5: int = 2000,
    n_weights_c256: int = 10_000,
    repeats: int = 3,
    seed: int = 0,
    w0: float = THESIS_GRID_W0,
    r: float = THESIS_GRID_R,
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
    from metaq_utils.studies.thesis import SPEEDUPS

    th = list(SPEEDUPS.values())
    rng = np.random.default_rng(seed)
    rows = []
    g256 = Grid(w0, r, 256)
    inst = [(rng.uniform(g256.lo, g256.hi, 1), rng.normal(size=256)) for _ in range(n_cvxpy)]
    t_cp = best_time(lambda: [solve_cutting_plane_scalar(w, g256, xi) for w, xi in inst], repeats)
    t_lp = best_time(lambda: [solve_linprog(w, g256, xi) for w, xi in inst], repeats)
    t_cvx = best_time(lambda: [solve_cvxpy(w, g256, xi) for w, xi in inst], 1)
    rows.append(("(a) C=256, one instance at a time", "CVXPY", "cutting plane (scalar)", n_cvxpy,
                 t_cvx, t_cp, th[0][2]))
    rows.append(("(a) C=256, one instance at a time", "linprog (HiGHS)", "cutting plane (scalar)", n_cvxpy,
                 t_lp, t_cp, np.nan))
    g5 = Grid(w0, r, 5)
    w5 = rng.uniform(g5.lo, g5.hi, n_scalar_c5)
    xi5 = rng.normal(size=5)
    t_s = best_time(lambda: solve_cutting_plane_scalar(w5, g5, xi5), 1)
    t_v = best_time(lambda: solve_cutting_plane_vectorized(w5, g5, xi5), repeats)
    rows.append(("(b) C=5, weights sharing one ξ", "cutting plane (scalar)", "cutting plane (vectorised)",
                 n_scalar_c5, t_s, t_v, th[1][2]))
    w44 = rng.uniform(g256.lo, g256.hi, n_weights_c256)
    xi = rng.normal(size=256)
    t_cpv = best_time(lambda: solve_cutting_plane_vectorized(w44, g256, xi), repeats)
    t_bp = best_time(lambda: solve_breakpoints(w44, g256, xi), 5 * repeats)
    t_hull = best_time(lambda: solve_hull(w44, g256, xi, "pava"), 5 * repeats)
    oracle = dual.DualOracle(w44, g256)
    t_or = best_time(lambda: oracle(xi), 20 * repeats)
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
            v = thesis_grid(C).v
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
                best = best_time(lambda: [f(v, xi) for _ in range(reps)], repeats) / reps
                rows.append({"xi": kind, "C": C, "method": name, "seconds": best, "vertices": h})
    return pd.DataFrame(rows)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (the empirical exponent)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])
