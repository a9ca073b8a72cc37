"""x-subproblem instances and their references (the CuttingPlaneAlgo notebook, spec §2.2).

Random instances of the LP (30)–(33) with their edge cases (:func:`random_instances`), an
independent reference for the value and the *set* of optimal multipliers
(:func:`envelope_reference`), the agreement table of every solver against it
(:func:`agreement_table`), and a trace of Kelley's cutting plane in the dual λ-space
(:func:`kelley_trace`, :func:`dual_1d`). NumPy / SciPy / pandas only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from metaq_utils.core.grid import Grid
from metaq_utils.core.subproblem import SOLVERS, SubproblemSolution, solve_cvxpy

__all__ = ["Instance", "INSTANCE_XI_MODELS", "W_KINDS", "random_instances", "envelope_reference",
           "brute_force_vertices", "agreement_table", "KelleyStep", "kelley_trace", "dual_1d"]


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

    Same rule as :func:`metaq_utils.core.subproblem.solve_cutting_plane_scalar`: start from the two
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
