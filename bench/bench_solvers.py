"""Benchmark of the METaQ optimisation core (issue 3): subproblem solvers, the dual hot path, scaling.

Run from the repository root:

    python bench/bench_solvers.py            # full run, writes results/bench_solvers.json (~5–10 min)
    python bench/bench_solvers.py --quick    # smaller counts, writes results/bench_solvers_quick.json

Every ratio printed is measured in the same run. Thesis figures (spec §2.2.4) were measured on an
Apple M1 with other implementations; they are printed beside ours, not compared as like for like.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy

from metaq_utils.core import dual
from metaq_utils.core.grid import THESIS_GRID_R, THESIS_GRID_W0, Grid
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

REPO = Path(__file__).resolve().parent.parent

W0, R = THESIS_GRID_W0, THESIS_GRID_R  # the thesis' training range
N_LENET = 44_426
REFERENCE_MS = {6: 32.0, 64: 284.0, 256: 1871.0}  # spec §2.2: reference FISTA, this machine


def timed(f, repeat: int = 1) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def load_test_helpers():
    """The agreement-sweep helpers live with the tests (one definition of the checks)."""
    spec = importlib.util.spec_from_file_location("test_subproblem", REPO / "tests" / "test_subproblem.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- reference-like baseline


def _dense_knapsack(xi: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy port of the reference ``knapsack_specialized``: breakpoints, then dense n × C float32 x."""
    C = xi.shape[0]
    b_list, b = [], 0
    while True:
        delta_xi = xi[b + 1 :] - xi[b]
        delta_v = v[b + 1 :] - v[b]
        b = int(np.argmin(delta_xi / delta_v)) + 1 + b_list[-1] if b_list else 0
        if b != C - 1:
            b_list.append(b)
        if b + 1 > C - 1:
            break
    b_list.append(C - 1)
    bp = np.asarray(b_list)
    w_idx = np.searchsorted(v, w)
    s = np.clip(np.searchsorted(bp, w_idx), 1, bp.shape[0] - 1)
    right, left = bp[s], bp[s - 1]
    right = np.where(w > v[-1], bp[-1], np.where(w < v[0], bp[0], right))
    left = np.where(w > v[-1], bp[-1], np.where(w < v[0], bp[0], left))
    n = w.shape[0]
    x1 = np.zeros((n, C), dtype=np.float32)
    x2 = np.zeros((n, C), dtype=np.float32)
    x1[np.arange(n), left] = 1
    x2[np.arange(n), right] = 1
    v32 = v.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where left == right, masked below
        theta = ((w - x2 @ v32) / ((x1 - x2) @ v32))[:, None]
        x_opt = np.where(x1 == x2, x1, x1 * theta + x2 * (1 - theta))
    lam = -(xi[right] - xi[left]) / np.where(right == left, 1.0, v[right] - v[left])
    return x_opt, lam


def dense_reference_fista(w: np.ndarray, v: np.ndarray, xi: np.ndarray, zeta: float, iterations: int):
    """numpy port of the reference FISTA (utils/optimization.py): n × C matrices every iteration."""
    n = w.shape[0]
    w32 = w.astype(np.float32)
    xi_prev, t_prev, phi = xi.copy(), 1.0, None
    for _ in range(iterations):
        x_opt, lam = _dense_knapsack(xi, v, w32)
        sum_x = x_opt.sum(axis=0)
        c = np.clip(np.exp(math.log(2.0) * xi - 1), 0, n)
        g = sum_x - c
        phi = np.sum(c * np.log(c) / math.log(2.0)) - np.sum(xi * c) + np.sum(xi * sum_x)
        t = (1 + math.sqrt(1 + 4 * t_prev**2)) / 2
        y = xi + ((t_prev - 1) / t) * (xi - xi_prev)
        xi_prev, xi, t_prev = xi, np.sort(y + g / zeta), t
    return xi, lam, phi


# ----------------------------------------------------------------------------- sections


def bench_hot_path(quick: bool, clustered: bool = False) -> dict:
    """Warm-started 15-iteration FISTA at n = 44,426 for C ∈ {6, 64, 256, 1024} (the training call).

    Weights: the thesis' uniform initialisation on [w0 − r, w0 + r], or (``clustered``) a trained-like
    N(w0, 0.05²) set, float64 as the regularizer passes them; the warm start is the ξ of a previous
    solve and the weights have moved by one small step since.
    """
    rng = np.random.default_rng(0)
    w = rng.normal(W0, 0.05, N_LENET) if clustered else rng.uniform(W0 - R, W0 + R, N_LENET)
    reps = 30 if quick else 200
    out = {"median_ms": {}, "min_ms": {}, "p90_ms": {}, "per_iteration_us": {}, "oracle_build_ms": {}}
    for C in (6, 64, 256, 1024):
        grid = Grid(W0, R, C)
        xi = dual.solve_dual(w, grid, iterations=15).xi  # the previous step's ξ
        w_step = w + rng.normal(0, 1e-4, N_LENET)  # the weights after one optimizer step
        timed(lambda: dual.solve_dual(w_step, grid, "fista", 15, 1e5, xi0=xi), 10)  # warm-up
        ts = np.array(timed(lambda: dual.solve_dual(w_step, grid, "fista", 15, 1e5, xi0=xi), reps)) * 1e3
        o = dual.DualOracle(w_step, grid)
        ev = np.array(timed(lambda: o._eval(xi), reps * 5)) * 1e6
        build = np.array(timed(lambda: dual.DualOracle(w_step, grid), reps)) * 1e3
        out["median_ms"][C] = float(np.median(ts))
        out["min_ms"][C] = float(ts.min())
        out["p90_ms"][C] = float(np.percentile(ts, 90))
        out["per_iteration_us"][C] = float(np.median(ev))
        out["oracle_build_ms"][C] = float(np.median(build))
        print(f"  C={C:5d}: FISTA-15 median {np.median(ts):.3f} ms (min {ts.min():.3f}, p90 "
              f"{np.percentile(ts, 90):.3f}); one oracle call {np.median(ev):.1f} µs; O(n) pass "
              f"{np.median(build):.3f} ms")
    return out


def bench_dense_baseline(quick: bool, hot: dict) -> dict:
    """The reference-like dense n × C FISTA (numpy port), same inputs, same run."""
    rng = np.random.default_rng(0)
    w = rng.uniform(W0 - R, W0 + R, N_LENET)
    out = {}
    for C in (6, 64) if quick else (6, 64, 256):
        grid = Grid(W0, R, C)
        xi = np.sort(dual.solve_dual(w, grid, iterations=15).xi)
        t = min(timed(lambda: dense_reference_fista(w, grid.v, xi, 1e5, 15), 2 if C == 256 else 3)) * 1e3
        ours = hot["median_ms"][C]
        out[C] = {"dense_ms": t, "ours_ms": ours, "speedup": t / ours,
                  "reference_ms_spec": REFERENCE_MS[C], "speedup_vs_spec_reference": REFERENCE_MS[C] / ours}
        print(f"  C={C:4d}: dense n×C port {t:9.1f} ms  ours {ours:.3f} ms  -> {t / ours:8.0f}x "
              f"(spec's torch reference {REFERENCE_MS[C]:.0f} ms -> {REFERENCE_MS[C] / ours:.0f}x)")
    return out


def bench_thesis_comparisons(quick: bool) -> dict:
    """Spec §2.2.4: the thesis' three solver comparisons, with its ratios beside ours."""
    rng = np.random.default_rng(1)
    out = {}
    # (a) LP / CVXPY vs cutting plane, 1,000 instances at C = 256 (own ξ and w per instance)
    n_a = 100 if quick else 1000
    n_cvx = 30 if quick else 1000
    grid = Grid(W0, R, 256)
    inst = [(rng.uniform(grid.lo, grid.hi, 1), rng.normal(size=256)) for _ in range(n_a)]
    t_cp = timed(lambda: [solve_cutting_plane_scalar(wi, grid, xi) for wi, xi in inst])[0] / n_a
    t_lp = timed(lambda: [solve_linprog(wi, grid, xi) for wi, xi in inst])[0] / n_a
    t_cvx = timed(lambda: [solve_cvxpy(wi, grid, xi) for wi, xi in inst[:n_cvx]])[0] / n_cvx
    out["lp_cvxpy_vs_cutting_plane_C256"] = {
        "instances": n_a, "cvxpy_instances": n_cvx,
        "cutting_plane_ms_per_instance": t_cp * 1e3, "linprog_ms_per_instance": t_lp * 1e3,
        "cvxpy_ms_per_instance": t_cvx * 1e3,
        "ratio_cvxpy_over_cutting_plane": t_cvx / t_cp, "ratio_linprog_over_cutting_plane": t_lp / t_cp,
        "thesis_ratio_cvxpy_over_cutting_plane": 3.19 / 0.20,
        "seconds_per_1000": {"cutting_plane": t_cp * 1e3, "linprog": t_lp * 1e3, "cvxpy": t_cvx * 1e3},
    }
    print(f"  (a) C=256, per instance: cutting plane {t_cp * 1e3:.3f} ms, linprog {t_lp * 1e3:.2f} ms, "
          f"CVXPY {t_cvx * 1e3:.1f} ms -> CVXPY/CP {t_cvx / t_cp:.0f}x, linprog/CP {t_lp / t_cp:.0f}x "
          f"(thesis CVXPY/CP 16x)")
    # (b) scalar vs vectorised cutting plane at C = 5 on 10,000 instances (10,000 weights, one ξ)
    grid5 = Grid(W0, R, 5)
    w5 = rng.uniform(grid5.lo, grid5.hi, 10_000)
    xi5 = rng.normal(size=5)
    n_b = 2000 if quick else 10_000
    t_scalar = min(timed(lambda: solve_cutting_plane_scalar(w5[:n_b], grid5, xi5), 1)) * 10_000 / n_b
    t_vec = min(timed(lambda: solve_cutting_plane_vectorized(w5, grid5, xi5), 5))
    out["scalar_vs_vectorized_cutting_plane_C5"] = {
        "instances": 10_000, "scalar_measured_on": n_b, "scalar_s": t_scalar, "vectorized_s": t_vec,
        "ratio": t_scalar / t_vec, "thesis_ratio": 2378.0,
        "note": "10,000 weights sharing one random ξ ~ N(0, 1); scalar time scaled from the measured count",
    }
    print(f"  (b) C=5, 10,000 weights: scalar {t_scalar:.3f} s, vectorised {t_vec * 1e3:.2f} ms -> "
          f"{t_scalar / t_vec:.0f}x (thesis 2,378x)")
    # (c) vectorised cutting plane vs specialised vs fast path, 44,000 weights at C = 256
    w44 = rng.uniform(grid.lo, grid.hi, 44_000)
    xi = rng.normal(size=256)
    runs = 2 if quick else 5
    t_cpv = min(timed(lambda: solve_cutting_plane_vectorized(w44, grid, xi), runs))
    t_bp = min(timed(lambda: solve_breakpoints(w44, grid, xi), runs * 10))
    t_hp = min(timed(lambda: solve_hull(w44, grid, xi, "pava"), runs * 10))
    t_hc = min(timed(lambda: solve_hull(w44, grid, xi, "chain"), runs * 10))
    o = dual.DualOracle(w44, grid)
    t_or = float(np.median(timed(lambda: o._eval(xi), 500)))
    t_orb = min(timed(lambda: dual.DualOracle(w44, grid)._eval(xi), runs * 10))
    out["vectorized_cp_vs_specialised_vs_fast_C256"] = {
        "weights": 44_000, "runs": runs,
        "vectorized_cutting_plane_s": t_cpv, "specialised_breakpoints_s": t_bp,
        "hull_pava_per_weight_s": t_hp, "hull_chain_per_weight_s": t_hc,
        "aggregated_oracle_call_s": t_or, "aggregated_oracle_with_O_n_pass_s": t_orb,
        "ratio_vectorized_cp_over_specialised": t_cpv / t_bp,
        "ratio_specialised_over_hull_pava": t_bp / t_hp,
        "ratio_vectorized_cp_over_aggregated_oracle_call": t_cpv / t_or,
        "ratio_specialised_over_aggregated_oracle_call": t_bp / t_or,
        "thesis_ratio_vectorized_cp_over_specialised": 215.98 / 18.66,
        "note": "per-weight solvers return x and β for all 44,000 weights; the aggregated oracle call "
                "returns φ_w and g in O(C) after the O(n) pass (one dual iteration of training)",
    }
    print(f"  (c) C=256, 44,000 weights: vectorised CP {t_cpv * 1e3:.1f} ms, specialised {t_bp * 1e3:.2f} ms, "
          f"hull (pava) {t_hp * 1e3:.2f} ms, hull (chain) {t_hc * 1e3:.2f} ms, aggregated oracle call "
          f"{t_or * 1e6:.1f} µs (+O(n) pass: {t_orb * 1e3:.2f} ms)")
    print(f"      vectorised CP / specialised {t_cpv / t_bp:.1f}x (thesis 11.58x); specialised / "
          f"aggregated oracle call {t_bp / t_or:.0f}x")
    # the hulls alone, all O(C) or O(C·h)
    hulls = {}
    for C in (64, 256, 1024):
        g = Grid(W0, R, C)
        x = rng.normal(size=C)
        hulls[C] = {name: float(np.median(timed(lambda f=f: f(g.v, x), 200))) * 1e6
                    for name, f in (("pava", lower_hull_pava), ("chain", lower_hull_chain),
                                    ("breakpoints", lower_hull_breakpoints))}
    out["hull_construction_us"] = hulls
    print("  hull construction (µs): " + "; ".join(
        f"C={C}: " + ", ".join(f"{k} {v:.1f}" for k, v in h.items()) for C, h in hulls.items()))
    return out


def bench_scaling(quick: bool) -> dict:
    """15-iteration FISTA at C = 256 for n = 1e4 … 1e8 synthetic weights: time and peak extra memory.

    Time: median of repeated runs after one untimed-in-the-median first call, which is recorded
    separately: at large n it also pays the kernel for fresh (transparent huge) pages — numpy
    madvises big arrays and this kernel compacts memory on such faults (defrag = madvise), which
    cost 1–3 s for the first 800 MB here, independent of this code.
    Memory: tracemalloc peak during one solve, beyond the weights themselves (β included).
    """
    ns = [10**4, 10**5, 10**6, 10**7] + ([] if quick else [10**8])
    grid = Grid(W0, R, 256)
    out = {}
    for n in ns:
        rng = np.random.default_rng(n)
        w = rng.standard_normal(n)
        w *= 0.4
        reps = 3 if n >= 10**7 else 10
        gc.collect()
        t = time.perf_counter()  # the first call also pays the OS for fresh (huge) pages
        r = dual.solve_dual(w, grid, "fista", 15, 1e5)
        first = time.perf_counter() - t
        del r
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            r = dual.solve_dual(w, grid, "fista", 15, 1e5)
            ts.append(time.perf_counter() - t)
            del r
        gc.collect()
        tracemalloc.start()
        r = dual.solve_dual(w, grid, "fista", 15, 1e5)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del r
        med = float(np.median(ts))
        out[n] = {"seconds": med, "seconds_min": min(ts), "seconds_all": ts, "first_call_seconds": first,
                  "peak_extra_bytes": peak, "extra_bytes_per_weight": peak / n}
        print(f"  n={n:>11,d}: median {med:8.4f} s  ({med / n * 1e9:6.1f} ns/weight; runs "
              + ", ".join(f"{t:.3f}" for t in ts[:3]) + f"; first call {first:.3f} s), peak extra "
              f"{peak / n:6.2f} B/weight (β itself is 8 B/weight)")
        del w
        gc.collect()
    return out


def bench_agreement(quick: bool) -> dict:
    """All subproblem solvers vs scipy linprog + brute force on 10,000 fixed-seed instances."""
    helpers = load_test_helpers()
    n = 2000 if quick else 10_000
    t = time.perf_counter()
    res = helpers.check_groups(helpers.make_groups(seed=1234, n_instances=n), with_cvxpy=5 if quick else 20)
    res["seconds"] = time.perf_counter() - t
    res["all_agree"] = all(not f for f in res["failures"].values())
    print(f"  {res['instances']} instances ({res['seconds']:.0f} s): failures {res['failures']}")
    print(f"  worst relative value error per solver: "
          + ", ".join(f"{k} {v:.1e}" for k, v in res["worst_value_error_rel"].items()))
    return res


def bench_hull_vertices(quick: bool) -> dict:
    """Spec §2.3: hull vertices at C = 256 over 10,000 random ξ (model stated: i.i.d. N(0, 1))."""
    rng = np.random.default_rng(5)
    v = Grid(W0, R, 256).v
    n = 2000 if quick else 10_000
    counts = np.array([lower_hull_pava(v, rng.normal(size=256)).shape[0] for _ in range(n)])
    counts_u = np.array([lower_hull_pava(v, rng.uniform(size=256)).shape[0] for _ in range(n)])
    out = {"instances": n,
           "iid_normal": {"max": int(counts.max()), "mean": float(counts.mean()),
                          "histogram": {int(k): int(c) for k, c in zip(*np.unique(counts, return_counts=True))}},
           "iid_uniform": {"max": int(counts_u.max()), "mean": float(counts_u.mean())},
           "thesis": "never more than 13 breakpoints over 10,000 instances (random model not stated)"}
    print(f"  C=256, {n} instances: ξ~N(0,1) iid: mean {counts.mean():.2f}, max {counts.max()} vertices; "
          f"ξ~U(0,1) iid: mean {counts_u.mean():.2f}, max {counts_u.max()} (thesis: max 13)")
    return out


def bench_dual_table(quick: bool) -> dict:
    """Thesis Tables 1–6 setting (n = 44,000, 20 iterations): best φ_w found per method, vs the optimum.

    The thesis' trained weights and starting ξ are not available: synthetic N(−0.11, 0.3²) weights,
    and two starts — the default c* = n/C and ξ0 = 0 (c* = e^−1 in every bucket). The best value
    of a 2,000-iteration bundle run stands for the optimum (a lower bound on it: every dual value is).
    """
    rng = np.random.default_rng(6)
    w = rng.normal(W0, 0.3, 44_000)
    out = {}
    for C in ((8, 64) if quick else (8, 16, 32, 64, 128, 256)):
        grid = Grid(W0, R, C)
        o = dual.DualOracle(w, grid)
        out[C] = {}
        for start, xi0 in (("c_star_n_over_C", None), ("xi_zero", np.zeros(C))):
            row = {}
            for name, kw in (("dss_1000", dict(method="dss", iterations=1000)),
                             ("dss_20", dict(method="dss", iterations=20)),
                             ("fista_20_zeta9e4", dict(method="fista", iterations=20, zeta=9e4)),
                             ("pbm_thesis_20_zeta1e6", dict(method="pbm_thesis", iterations=20, zeta=1e6)),
                             ("bundle_20_zeta1e5", dict(method="bundle", iterations=20, zeta=1e5)),
                             ("bundle_2000_zeta1e4", dict(method="bundle", iterations=2000, zeta=1e4))):
                t = time.perf_counter()
                r = dual.solve_dual(w, grid, oracle=o, xi0=xi0, **kw)
                row[name] = {"value": r.value, "seconds": time.perf_counter() - t, "iterations": r.iterations}
            best = max(x["value"] for x in row.values())
            for x in row.values():
                x["rel_gap_to_best"] = (best - x["value"]) / abs(best)
            out[C][start] = row
            print(f"  C={C:4d} start {start:15s}: " + ", ".join(f"{k} {x['value']:.4g}" for k, x in row.items()))
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (no n = 1e8)")
    ap.add_argument("--out", default=None, help="output json (default results/bench_solvers[_quick].json)")
    args = ap.parse_args()
    out_path = Path(args.out) if args.out else REPO / "results" / (
        "bench_solvers_quick.json" if args.quick else "bench_solvers.json")
    t_start = time.perf_counter()
    res: dict = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": list(os.getloadavg())},
    }
    print("== hot path: warm-started 15-iteration FISTA, n = 44,426")
    hot = bench_hot_path(args.quick)
    res["fista15_ms"] = hot["median_ms"]
    res["hot_path"] = hot
    print("== hot path, clustered (trained-like) weights N(w0, 0.05²)")
    hot_c = bench_hot_path(args.quick, clustered=True)
    res["fista15_ms_clustered"] = hot_c["median_ms"]
    res["hot_path_clustered"] = hot_c
    print("== reference-like dense baseline (same run)")
    res["dense_reference_baseline"] = bench_dense_baseline(args.quick, hot)
    print("== thesis comparisons (§2.2.4)")
    res["thesis_comparisons"] = bench_thesis_comparisons(args.quick)
    print("== scaling in n (C = 256)")
    scaling = bench_scaling(args.quick)
    res["n_scaling"] = scaling
    big = scaling.get(10**8)
    res["n1e8_seconds"] = big["seconds"] if big else None
    res["n1e8_extra_bytes_per_weight"] = big["extra_bytes_per_weight"] if big else None
    print("== agreement sweep")
    res["agreement_sweep"] = bench_agreement(args.quick)
    print("== hull vertex counts (spec §2.3)")
    res["hull_vertices_C256"] = bench_hull_vertices(args.quick)
    print("== dual maximisers, thesis Tables 1–6 setting")
    res["dual_table"] = bench_dual_table(args.quick)

    f15 = res["fista15_ms"]
    flat = max(f15.values()) / min(f15.values())
    worst256 = max(f15[256], res["fista15_ms_clustered"][256])
    ns = sorted(scaling)
    per_w = [scaling[n]["seconds"] / n for n in ns if n >= 10**6]
    res["targets"] = {
        "fista15_C256_le_2ms": {"target_ms": 2.0, "measured_ms": f15[256],
                                "measured_ms_clustered": res["fista15_ms_clustered"][256],
                                "met": worst256 <= 2.0},
        "fista15_flat_in_C": {"max_over_min_C6_to_C1024": flat, "met": flat <= 2.0,
                              "note": "met when the slowest C costs at most twice the fastest"},
        "n1e8_le_3s": {"target_s": 3.0, "measured_s": res["n1e8_seconds"],
                       "first_call_s": None if big is None else big["first_call_seconds"],
                       "met": None if big is None else big["seconds"] <= 3.0,
                       "note": "median of 3 runs after a first call; the first call also pays for "
                               "the kernel's huge-page compaction of fresh memory (see first_call_s)"},
        "n1e8_le_16_bytes_per_weight": {"target": 16.0, "measured": res["n1e8_extra_bytes_per_weight"],
                                        "met": None if big is None else big["extra_bytes_per_weight"] <= 16.0},
        "linear_in_n": {"seconds_per_weight_for_n_ge_1e6": per_w,
                        "max_over_min": max(per_w) / min(per_w), "met": max(per_w) / min(per_w) <= 2.0},
        "agreement_all_solvers": {"instances": res["agreement_sweep"]["instances"],
                                  "met": res["agreement_sweep"]["all_agree"]},
    }
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["fista15_ms_min"] = hot["min_ms"]
    res["timing_note"] = ("medians of repeated wall-clock runs on a 2-core machine shared with other "
                          "jobs (see load averages); min and p90 are recorded beside them")
    res["total_seconds"] = time.perf_counter() - t_start
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"== targets: " + ", ".join(f"{k}: {v['met']}" for k, v in res["targets"].items()))
    print(f"wrote {out_path.relative_to(REPO)} in {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
