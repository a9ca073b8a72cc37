"""The dual maximisers measured against the true optimum (the SubgradientBundleMethods notebook,
spec §2.4): timed runs (:func:`run_method`), convergence curves (:func:`convergence_runs`), the
thesis' Tables 1–6 re-measured (:func:`dual_tables`, :func:`compare_with_thesis`), iterations to
reach a gap (:func:`iterations_to_gap`), the ζ sweep (:func:`zeta_sweep`), the warm-start
experiments (:func:`warm_start_one_step`, :func:`warm_start_chain`) and small named weight sets
(:func:`example_weight_sets`). NumPy / pandas only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from metaq_utils.core import dual
from metaq_utils.core.grid import Grid
from metaq_utils.studies.dual_optimum import Optimum, true_optimum

__all__ = ["MethodRun", "run_method", "best_so_far_gap", "iterations_to_gap", "TABLE_METHODS", "dual_tables",
           "THESIS_N_TABLES", "compare_with_thesis", "zeta_sweep", "WARM_METHODS", "warm_start_one_step",
           "warm_start_chain", "example_weight_sets", "convergence_runs"]


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

    Returns (long table, {C: Optimum}). Thesis values (``metaq_utils.studies.thesis.DUAL_TABLES``) are
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
    """Views of :func:`dual_tables` beside ``metaq_utils.studies.thesis.DUAL_TABLES``.

    Returns (values, per_C, seconds):
    * values — index (C, method): the thesis' max φ_w and ours (best value, relative gap to the
      optimum) from each start;
    * per_C — the optimum (ours), n·log2(n/C) — a lower bound on φ(w) for *every* weight vector
      (Σ c log2 c over Σc = n is smallest at c = n/C) — and, for the thesis (n = 44,000), its best
      reported value and how far below that bound it lies;
    * seconds — the thesis' seconds and ours per start.
    """
    from metaq_utils.studies.thesis import DUAL_TABLES

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
