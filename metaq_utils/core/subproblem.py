"""Solvers of the METaQ x-subproblem (spec §2.1–2.2, thesis (30)–(33) and §2.2).

For one weight w and multipliers ξ ∈ R^C the x-subproblem is the LP

    min ξ·x   s.t.  v·x = w  (31),  Σ_b x_b = 1  (32),  0 ≤ x ≤ 1  (33).

Its value is the lower convex envelope of the points (v_b, ξ_b) evaluated at w; an optimal x mixes
the two envelope (lower-hull) vertices that bracket w, and the multiplier β of (31) is the slope of
the envelope at w (the LP's sensitivity ∂value/∂w, the convention of Theorem 1).

Edge cases — identical for every solver in this module:

* **w outside [v_0, v_{C−1}]**: the LP is infeasible there; w is first *clamped* to the range, so
  the solution is the end bucket (value ξ_0 or ξ_{C−1}) and β is the slope of the first (resp.
  last) envelope segment.
* **w on a hull vertex v_j** (including w on a grid value that is a vertex, and the ends): x is the
  single bucket j (``lo == hi == j``, ``theta == 0``). Any β in [left slope, right slope] is an
  optimal multiplier; the rule here is **the slope of the segment to the right of the vertex,
  except at the last vertex v_{C−1}, where it is the slope of the segment to its left**.
  For the hull-based solvers "w is on the vertex" means ``w == v[j]`` in float64; the fast dual
  oracle (:mod:`metaq_utils.core.dual`) locates weights by grid arithmetic and may, for a weight lying
  exactly on a grid value, report the left slope instead — always inside the optimal set.
  :func:`solve_linprog` and :func:`solve_cvxpy` return whatever multiplier the LP solver picks
  (any point of the optimal set).
* **w on a grid value that is not a hull vertex**: x mixes the two bracketing vertices (the
  single bucket is not optimal unless it lies on the envelope).
* **ties in ξ / collinear points**: any optimal x is acceptable; the hull solvers drop collinear
  points (PAVA pools equal slopes, the monotone chain pops them), the thesis' breakpoint rule keeps
  the nearest one. Values and multipliers are the same either way.
* **unsorted ξ**: nothing assumes ξ sorted (the thesis did; the reference code sorted ξ).
* **C = 2**: the envelope is the chord; every solver handles it. C = 1024 is tested as well.

The shared result type is :class:`SubproblemSolution`: x_i = (1 − θ_i)·e_{lo_i} + θ_i·e_{hi_i}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from metaq_utils.core.grid import Grid, as_finite_float64

try:  # the compiled PAVA kernel behind scipy.optimize.isotonic_regression (scipy >= 1.12)
    from scipy.optimize._pava_pybind import pava as scipy_pava
except ImportError:  # pragma: no cover - exercised only on other scipy versions
    scipy_pava = None
# scipy_pava(y, w, r) -> (y, w, r, nb): the isotonic regression of y with weights w in place; the
# blocks start at r[0..nb] (r needs len(y) + 1 entries). None on a scipy without it (then
# lower_hull_pava falls back to scipy.optimize.isotonic_regression). Private to scipy, so reached
# here once, for this module and metaq_utils.core.dual.

__all__ = [
    "SubproblemSolution",
    "lower_hull",
    "lower_hull_pava",
    "scipy_pava",
    "lower_hull_chain",
    "lower_hull_breakpoints",
    "solve_linprog",
    "solve_cvxpy",
    "solve_cutting_plane_scalar",
    "solve_cutting_plane_vectorized",
    "solve_breakpoints",
    "solve_hull",
    "SOLVERS",
]


@dataclass(frozen=True)
class SubproblemSolution:
    """Solutions of n x-subproblems (30)–(33) sharing one ξ, x in sparse form."""

    value: np.ndarray  # (n,) optimal value min ξ·x_i
    lo: np.ndarray  # (n,) int64 left bucket of x_i
    hi: np.ndarray  # (n,) int64 right bucket of x_i (== lo when x_i is a single bucket)
    theta: np.ndarray  # (n,) mass on hi: x_i = (1 − θ) e_lo + θ e_hi, θ ∈ [0, 1]
    beta: np.ndarray  # (n,) multiplier of v·x = w (31): the envelope slope at w_i
    method: str  # which solver produced it

    @property
    def n(self) -> int:
        """Number of weights."""
        return int(self.value.shape[0])

    def x_dense(self, C: int) -> np.ndarray:
        """The n × C matrix x (for tests and small n only)."""
        x = np.zeros((self.n, C))
        rows = np.arange(self.n)
        np.add.at(x, (rows, self.lo), 1.0 - self.theta)
        np.add.at(x, (rows, self.hi), self.theta)
        return x

    def bucket_mass(self, C: int) -> np.ndarray:
        """Σ_i x_i ∈ R^C (the first term of the supergradient, Theorem 2)."""
        return np.bincount(self.lo, weights=1.0 - self.theta, minlength=C) + np.bincount(
            self.hi, weights=self.theta, minlength=C
        )


# ----------------------------------------------------------------------------- inputs


def _as_v(v: np.ndarray | Grid) -> np.ndarray:
    """Bucket values from a Grid or a 1-D strictly increasing finite array (float64)."""
    if isinstance(v, Grid):
        return v.v
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"v must be a 1-D array with at least 2 values, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("v contains NaN or inf")
    if not (np.diff(arr) > 0).all():
        raise ValueError("v must be strictly increasing")
    return arr


def _check_xi(xi: np.ndarray, C: int) -> np.ndarray:
    """ξ as a finite float64 vector of length C."""
    arr = np.asarray(xi, dtype=np.float64)
    if arr.shape != (C,):
        raise ValueError(f"xi must have shape ({C},), got {arr.shape}")
    return as_finite_float64(arr, "xi")


def _prepare(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (w, v, ξ) and clamp w to [v_0, v_{C−1}] (documented edge-case rule)."""
    v_arr = _as_v(v)
    xi_arr = _check_xi(xi, v_arr.shape[0])
    w_arr = np.asarray(w, dtype=np.float64)
    if w_arr.ndim > 1:
        raise ValueError(f"w must be a scalar or a 1-D array, got shape {w_arr.shape}")
    w_arr = as_finite_float64(np.atleast_1d(w_arr), "w")
    return np.clip(w_arr, v_arr[0], v_arr[-1]), v_arr, xi_arr


def _from_pairs(
    w: np.ndarray,
    v: np.ndarray,
    xi: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    beta: np.ndarray,
    method: str,
) -> SubproblemSolution:
    """Solution from a bracketing pair v_lo ≤ w ≤ v_hi per weight, canonical sparse form."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    span = v[hi] - v[lo]
    same = span == 0.0  # a single bucket already (lo == hi)
    theta = np.clip((w - v[lo]) / np.where(same, 1.0, span), 0.0, 1.0)
    theta = np.where(same, 0.0, theta)
    at_lo = w == v[lo]
    at_hi = w == v[hi]
    hi = np.where(at_lo, lo, hi)  # w on a vertex: a single bucket
    lo = np.where(at_hi, hi, lo)
    theta = np.where(at_lo | at_hi, 0.0, theta)
    value = (1.0 - theta) * xi[lo] + theta * xi[hi]
    return SubproblemSolution(value, lo, hi, theta, np.asarray(beta, dtype=np.float64), method)


def _from_vertices(
    w: np.ndarray, v: np.ndarray, xi: np.ndarray, idx: np.ndarray, method: str
) -> SubproblemSolution:
    """Place each w between its two bracketing hull vertices idx (ascending, 0 and C−1 included).

    The segment is found with ``searchsorted(side="right")``: a weight on vertex j (j < last)
    gets segment j — the right slope; at the last vertex the clip gives the left slope.
    """
    idx = np.asarray(idx, dtype=np.int64)
    j = np.searchsorted(v[idx], w, side="right") - 1
    j = np.clip(j, 0, idx.shape[0] - 2)
    lo, hi = idx[j], idx[j + 1]
    slopes = (xi[idx[1:]] - xi[idx[:-1]]) / (v[idx[1:]] - v[idx[:-1]])
    return _from_pairs(w, v, xi, lo, hi, slopes[j], method)


# ----------------------------------------------------------------------------- lower hulls


def lower_hull_chain(v: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Lower hull of (v_b, ξ_b) by Andrew's monotone chain, O(C); collinear points dropped.

    v must be strictly increasing. Returns the ascending vertex indices (0 and C−1 included).
    """
    vl = v.tolist()
    xl = xi.tolist()
    h: list[int] = []
    for i in range(len(vl)):
        x, y = vl[i], xl[i]
        while len(h) >= 2:
            a, b = h[-2], h[-1]
            # pop b unless (a, b, i) turns strictly counter-clockwise (b strictly below chord a–i)
            if (vl[b] - vl[a]) * (y - xl[a]) - (xl[b] - xl[a]) * (x - vl[a]) <= 0.0:
                h.pop()
            else:
                break
        h.append(i)
    return np.asarray(h, dtype=np.int64)


def lower_hull_pava(v: np.ndarray, xi: np.ndarray, uniform: bool = False) -> np.ndarray:
    """Lower hull of (v_b, ξ_b) by isotonic regression of the slopes (PAVA), O(C).

    The slopes of the greatest convex minorant are the Δv-weighted isotonic (non-decreasing)
    regression of the chord slopes d_b = (ξ_{b+1} − ξ_b)/(v_{b+1} − v_b); its blocks are the hull
    segments, so the block boundaries are the hull vertices. ``uniform=True`` skips the division
    when v is equally spaced (the blocks do not depend on a common scale).
    """
    C = xi.shape[0]
    d = np.diff(xi)
    if uniform:
        wts = np.ones(C - 1)
    else:
        dv = np.diff(v)
        d = d / dv
        wts = dv.copy()
    if scipy_pava is not None:
        r = np.empty(C, dtype=np.intp)
        _, _, r, nb = scipy_pava(d, wts, r)
        return r[: nb + 1].astype(np.int64)
    from scipy.optimize import isotonic_regression  # pragma: no cover

    return np.asarray(isotonic_regression(d, weights=wts).blocks, dtype=np.int64)  # pragma: no cover


def lower_hull_breakpoints(v: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """The thesis' breakpoints (§2.2.3) by repeated argmin, O(C·h) for h vertices.

    From breakpoint b, the next one is the bucket b' > b where argmin_b (ξ_b − λ v_b) switches as
    λ grows: the minimiser of the slope (ξ_b' − ξ_b)/(v_b' − v_b); ties go to the first (nearest)
    index, as in the reference code, so collinear points are kept.
    """
    C = xi.shape[0]
    idx = [0]
    b = 0
    while b < C - 1:
        slopes = (xi[b + 1 :] - xi[b]) / (v[b + 1 :] - v[b])
        b = b + 1 + int(np.argmin(slopes))
        idx.append(b)
    return np.asarray(idx, dtype=np.int64)


_HULLS = {"pava": lower_hull_pava, "chain": lower_hull_chain, "breakpoints": lower_hull_breakpoints}


def lower_hull(v: np.ndarray | Grid, xi: np.ndarray, method: str = "pava") -> np.ndarray:
    """Ascending indices of the lower-hull vertices of (v_b, ξ_b); method in pava|chain|breakpoints."""
    v_arr = _as_v(v)
    xi_arr = _check_xi(xi, v_arr.shape[0])
    if method not in _HULLS:
        raise ValueError(f"unknown hull method {method!r}; choose from {sorted(_HULLS)}")
    return _HULLS[method](v_arr, xi_arr)


# ----------------------------------------------------------------------------- solvers


def solve_linprog(w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray) -> SubproblemSolution:
    """Generic reference: one ``scipy.optimize.linprog(method="highs")`` per weight.

    β is HiGHS' marginal of (31), i.e. ∂value/∂w (some point of the optimal-multiplier set).
    """
    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    C = v_arr.shape[0]
    A_eq = np.vstack([v_arr, np.ones(C)])
    n = w_arr.shape[0]
    value = np.empty(n)
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    theta = np.empty(n)
    beta = np.empty(n)
    for i, wi in enumerate(w_arr):
        res = linprog(xi_arr, A_eq=A_eq, b_eq=[wi, 1.0], bounds=(0.0, 1.0), method="highs")
        if res.status != 0:
            raise RuntimeError(f"linprog failed on weight {i} (w={wi!r}): {res.message}")
        support = np.flatnonzero(res.x > 1e-12)
        if support.shape[0] == 1:
            lo[i] = hi[i] = support[0]
            theta[i] = 0.0
        elif support.shape[0] == 2:
            lo[i], hi[i] = support
            theta[i] = res.x[support[1]] / (res.x[support[0]] + res.x[support[1]])
        else:
            raise RuntimeError(f"linprog returned a non-basic x with support {support.tolist()}")
        value[i] = res.fun
        beta[i] = res.eqlin.marginals[0]
    return SubproblemSolution(value, lo, hi, theta, beta, "linprog")


def solve_cvxpy(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray, solver: str = "CLARABEL"
) -> SubproblemSolution:
    """CVXPY reference, as the thesis used (optional: needs ``cvxpy``; interior-point by default).

    An interior-point x may spread over tied or nearly tied buckets; it is purified to the cheapest
    pair of support buckets bracketing w. The multiplier is CVXPY's dual value (accuracy ~1e-8).
    """
    import cvxpy as cp  # optional dependency

    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    C = v_arr.shape[0]
    x = cp.Variable(C)
    w_par = cp.Parameter()
    cons = [v_arr @ x == w_par, cp.sum(x) == 1, x >= 0, x <= 1]
    prob = cp.Problem(cp.Minimize(xi_arr @ x), cons)
    n = w_arr.shape[0]
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    beta = np.empty(n)
    for i, wi in enumerate(w_arr):
        w_par.value = float(wi)
        prob.solve(solver=solver)
        if prob.status != cp.OPTIMAL:
            raise RuntimeError(f"cvxpy failed on weight {i} (w={wi!r}): {prob.status}")
        xv = np.asarray(x.value)
        support = np.flatnonzero(xv > 1e-9 * max(1.0, xv.max()))
        left = support[v_arr[support] <= wi]
        right = support[v_arr[support] >= wi]
        if left.size == 0 or right.size == 0:  # numerically at an end of the range
            left = right = support[[np.argmin(np.abs(v_arr[support] - wi))]]
        # purification: the cheapest bracketing pair among the support buckets
        va, vb = v_arr[left][:, None], v_arr[right][None, :]
        span = np.where(vb > va, vb - va, 1.0)
        th = np.where(vb > va, (wi - va) / span, 0.0)
        val = (1.0 - th) * xi_arr[left][:, None] + th * xi_arr[right][None, :]
        ia, ib = np.unravel_index(int(np.argmin(val)), val.shape)
        lo[i], hi[i] = left[ia], right[ib]
        # CVXPY's Lagrangian is f + ν·(v·x − w) for `v@x == w`, so ∂value/∂w = −ν
        beta[i] = -float(cons[0].dual_value)
    return _from_pairs(w_arr, v_arr, xi_arr, lo, hi, beta, "cvxpy")


def _kelley_pair(
    wi: float, v: np.ndarray, xi: np.ndarray, k: int, tol: float
) -> tuple[int, int, float]:
    """Kelley's cutting plane for one weight (thesis (48)–(50)); returns the final pair and λ."""
    a, b = k, k + 1  # x' = e_a, x'' = e_b: the single-bucket points bracketing w
    C = xi.shape[0]
    for _ in range(C + 2):
        lam = (xi[b] - xi[a]) / (v[b] - v[a])  # (48)–(50): the two cuts intersect here
        red = xi - lam * v  # reduced costs; x+ = argmin (ξ − λ+ v)·x
        j = int(np.argmin(red))
        if red[j] >= red[a] - tol:  # the model's maximum lies on the dual function: optimal
            return a, b, lam
        if v[j] <= wi:
            a = j  # x+ on the left of w replaces x'
        else:
            b = j  # x+ on the right of w replaces x''
    raise RuntimeError("cutting plane did not terminate")  # pragma: no cover - finite by theory


def _tol(xi: np.ndarray, v: np.ndarray) -> float:
    """Termination tolerance of the cutting planes on reduced costs (relative to the data)."""
    return 1e-13 * (1.0 + float(np.abs(xi).max()) + float(np.abs(np.diff(xi)).max()) * float(
        np.abs(v).max() / np.diff(v).min()
    ))


def solve_cutting_plane_scalar(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray
) -> SubproblemSolution:
    """Kelley's cutting plane on the 1-D dual, one weight at a time (thesis §2.2.2)."""
    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    C = v_arr.shape[0]
    k0 = np.clip(np.searchsorted(v_arr, w_arr, side="right") - 1, 0, C - 2)
    tol = _tol(xi_arr, v_arr)
    n = w_arr.shape[0]
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    beta = np.empty(n)
    for i in range(n):
        lo[i], hi[i], beta[i] = _kelley_pair(float(w_arr[i]), v_arr, xi_arr, int(k0[i]), tol)
    return _from_pairs(w_arr, v_arr, xi_arr, lo, hi, beta, "cutting_plane_scalar")


def solve_cutting_plane_vectorized(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray, block: int = 1 << 21
) -> SubproblemSolution:
    """The same cutting plane over all weights at once (numpy, n_active × C per round).

    Rows are processed in blocks of at most ``block`` matrix entries to bound memory.
    """
    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    C = v_arr.shape[0]
    n = w_arr.shape[0]
    a = np.clip(np.searchsorted(v_arr, w_arr, side="right") - 1, 0, C - 2)
    b = a + 1
    lam = np.empty(n)
    tol = _tol(xi_arr, v_arr)
    rows = max(1, block // C)
    active = np.arange(n)
    for _ in range(C + 2):
        if active.size == 0:
            break
        still = []
        for s in range(0, active.size, rows):
            ids = active[s : s + rows]
            aa, bb = a[ids], b[ids]
            lm = (xi_arr[bb] - xi_arr[aa]) / (v_arr[bb] - v_arr[aa])  # (48)–(50)
            lam[ids] = lm
            red = xi_arr[None, :] - lm[:, None] * v_arr[None, :]
            j = red.argmin(axis=1)
            not_done = red[np.arange(ids.size), j] < (xi_arr[aa] - lm * v_arr[aa]) - tol
            if not not_done.any():
                continue
            ids, j = ids[not_done], j[not_done]
            left = v_arr[j] <= w_arr[ids]
            a[ids[left]] = j[left]
            b[ids[~left]] = j[~left]
            still.append(ids)
        active = np.concatenate(still) if still else np.empty(0, dtype=np.int64)
    if active.size:  # pragma: no cover - finite by theory
        raise RuntimeError("vectorised cutting plane did not terminate")
    return _from_pairs(w_arr, v_arr, xi_arr, a, b, lam, "cutting_plane_vectorized")


def solve_breakpoints(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray
) -> SubproblemSolution:
    """The thesis' specialised algorithm (§2.2.3): breakpoints once, then place each weight."""
    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    return _from_vertices(w_arr, v_arr, xi_arr, lower_hull_breakpoints(v_arr, xi_arr), "breakpoints")


def solve_hull(
    w: np.ndarray | float, v: np.ndarray | Grid, xi: np.ndarray, hull: str = "pava"
) -> SubproblemSolution:
    """Fast path: O(C) lower hull (``hull`` = "pava" or "chain"), then one binary search per weight."""
    w_arr, v_arr, xi_arr = _prepare(w, v, xi)
    if hull not in ("pava", "chain"):
        raise ValueError(f"hull must be 'pava' or 'chain', got {hull!r}")
    idx = _HULLS[hull](v_arr, xi_arr)
    return _from_vertices(w_arr, v_arr, xi_arr, idx, f"hull_{hull}")


SOLVERS = {
    "linprog": solve_linprog,
    "cutting_plane_scalar": solve_cutting_plane_scalar,
    "cutting_plane_vectorized": solve_cutting_plane_vectorized,
    "breakpoints": solve_breakpoints,
    "hull_pava": lambda w, v, xi: solve_hull(w, v, xi, "pava"),
    "hull_chain": lambda w, v, xi: solve_hull(w, v, xi, "chain"),
}
