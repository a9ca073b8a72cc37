"""The Lagrangian dual of METaQ (spec §2.1, §2.4; thesis (16)–(29), (74)–(87)).

Relaxing (12) with multipliers ξ ∈ R^C gives the concave dual function

    φ_w(ξ) = Σ_b (c*_b log2 c*_b − ξ_b c*_b) + Σ_i env_ξ(w_i)                     (16), Thm 2

with c*_b = clamp(2^(ξ_b − 1/ln 2), c_lo, c_hi) (25)/(29) and env_ξ the lower convex envelope of
the points (v_b, ξ_b) (the x-subproblem (30)–(33), :mod:`metaq_utils.core.subproblem`). A supergradient
is g_b = Σ_i x*_ib − c*_b (Theorem 2) and, at a dual maximiser, the envelope slopes β_i are the
multipliers of (10): a subgradient of φ at w (Theorem 1).

The fast oracle (:class:`DualOracle`) uses the fact that weights do not move during a dual solve:
one O(n) pass computes, per grid interval [v_k, v_{k+1}], the number of weights and the sum of
their offsets; every later evaluation is O(C): an O(C) lower hull (PAVA on the chord slopes) and
O(#segments) arithmetic. Nothing of size n × C is ever formed; the per-weight β is one gather at
the end. The O(n) pass, the evaluation, the β gather and the whole FISTA loop run compiled
(:mod:`metaq_utils.core._kernels`, numba); their NumPy formulations are kept beside them as the
reference they are tested against.

Edge cases follow :mod:`metaq_utils.core.subproblem`: weights outside [v_0, v_{C−1}] are clamped; the
interval of a weight is found by grid arithmetic u = (w − v_0)/Δ, so a weight exactly on a grid
value may be attributed to either adjacent interval by rounding — its value is the same and its β
is the left or right slope at that point, both valid multipliers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from metaq_utils.core import _kernels
from metaq_utils.core.grid import Grid, as_finite_float64
from metaq_utils.core.subproblem import lower_hull_pava, scipy_pava

__all__ = [
    "c_star",
    "c_bounds",
    "DualEval",
    "DualOracle",
    "DualResult",
    "NonFiniteWeightError",
    "phi_w",
    "supergradient",
    "default_xi0",
    "solve_dual",
    "dss",
    "fista",
    "pbm_thesis",
    "proximal_bundle",
    "simplex_qp",
    "PrimalSolution",
    "solve_primal_cvxpy",
    "METHODS",
    "RETURN_RULES",
    "FistaSolver",
]

LN2 = math.log(2.0)
_TINY = 1e-300
_LANES = _kernels.LANES  # interleaved histogram copies in the O(n) pass
DEFAULT_CHUNK = 1 << 16  # weights per chunk of the laned O(n) pass


def c_star(xi: np.ndarray, c_lo: float, c_hi: float) -> np.ndarray:
    """c-subproblem (25)/(29): argmin_{c ∈ [c_lo, c_hi]} c log2 c − ξ c = clamp(2^(ξ − 1/ln 2))."""
    return np.clip(np.exp(np.asarray(xi, dtype=np.float64) * LN2 - 1.0), c_lo, c_hi)


def _c_part(xi: np.ndarray, c: np.ndarray) -> float:
    """Σ_b c_b log2 c_b − ξ_b c_b (0·log 0 = 0)."""
    return float(c @ (np.log2(np.maximum(c, _TINY)) - xi))


def c_bounds(c_lo: float, c_hi: float | None, n: int) -> tuple[float, float, float, float]:
    """Validated bounds of the c-subproblem (29) and their logs: (c_lo, c_hi, ln c_lo, ln c_hi).

    ``c_hi=None`` means n (thesis); c_lo = 0 gives ln c_lo = −inf (no lower clamp).
    """
    c_hi = float(n) if c_hi is None else float(c_hi)
    c_lo = float(c_lo)
    if not (math.isfinite(c_lo) and math.isfinite(c_hi) and 0.0 <= c_lo < c_hi):
        raise ValueError(f"need finite 0 <= c_lo < c_hi, got c_lo={c_lo}, c_hi={c_hi}")
    return c_lo, c_hi, (math.log(c_lo) if c_lo > 0.0 else -math.inf), math.log(c_hi)


def default_xi0(n: int, C: int) -> np.ndarray:
    """The constant start ξ_b = log2(n/C) + 1/ln 2, i.e. c* = n/C in every bucket.

    Its envelope is flat (β = 0). It is :func:`solve_dual`'s default when no start is given and the
    first start of the variant ``constant_best``; the thesis text is silent on the start and the
    reference code starts from ξ sorted uniform in [0, 1] (:mod:`metaq_utils.core.reference`)."""
    return np.full(C, math.log2(max(n, 1) / C) + 1.0 / LN2)


class NonFiniteWeightError(ValueError):
    """A weight is NaN or ±inf; ``index`` is the first such position in the flat vector w."""

    def __init__(self, index: int, message: str | None = None) -> None:
        super().__init__(message or f"w contains NaN or inf (first at index {index})")
        self.index = int(index)


@dataclass(frozen=True)
class DualEval:
    """One evaluation of the dual oracle at ξ."""

    xi: np.ndarray  # (C,) the point
    value: float  # φ_w(ξ) (16)
    g: np.ndarray  # (C,) supergradient Σ_i x*_i − c* (Theorem 2)
    c_star: np.ndarray  # (C,) c-subproblem solution (29)
    x_mass: np.ndarray  # (C,) Σ_i x*_i
    vertices: np.ndarray  # ascending lower-hull vertex indices of (v, ξ)
    slopes: np.ndarray  # envelope slope on each hull segment


class DualOracle:
    """φ_w(ξ) and a supergradient in O(C) per call after one O(n) pass over w (spec §2.2).

    The O(n) pass and the evaluation run in compiled kernels (:mod:`metaq_utils.core._kernels`); the
    same computations in NumPy are kept as :meth:`_aggregate_numpy` and :meth:`_eval_numpy`, the
    readable reference that the kernels are tested against.

    Memory: O(C) for the aggregates plus the interval index of every weight, kept for the final
    β gather: uint16 (2 bytes per weight; uint32 for C > 65,536). ``index_out`` may pass a
    reusable array of that dtype and length n (the training loop does, to avoid a fresh
    allocation per step). ``w`` (float32 or float64) is referenced, not copied. ``chunk`` sets
    how the laned aggregates are accumulated (see :mod:`metaq_utils.core._kernels`).
    """

    def __init__(
        self,
        w: np.ndarray,
        grid: Grid,
        c_lo: float = 0.01,
        c_hi: float | None = None,
        chunk: int = DEFAULT_CHUNK,
        index_out: np.ndarray | None = None,
    ) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a metaq_utils.core.grid.Grid, got {type(grid).__name__}")
        w_arr = np.asarray(w)
        if w_arr.ndim != 1:
            raise ValueError(f"w must be a 1-D array of weights, got shape {w_arr.shape}")
        if w_arr.shape[0] == 0:
            raise ValueError("w must contain at least one weight")
        if w_arr.dtype not in (np.float32, np.float64):
            w_arr = w_arr.astype(np.float64)
        w_arr = np.ascontiguousarray(w_arr)
        n = w_arr.shape[0]
        c_lo, c_hi, self._ln_c_lo, self._ln_c_hi = c_bounds(c_lo, c_hi, n)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.grid = grid
        self.n = n
        self.C = C = grid.C
        self.c_lo = c_lo
        self.c_hi = c_hi
        self.chunk = int(chunk)
        self._v = grid.v
        self._v0 = float(grid.v[0])
        self._inv_delta = 1.0 / grid.delta
        index_dtype = index_dtype_for(C)
        if index_out is None:
            index_out = np.empty(n, dtype=index_dtype)
        elif index_out.shape != (n,) or index_out.dtype != index_dtype or not index_out.flags.c_contiguous:
            raise ValueError(f"index_out must be a contiguous {np.dtype(index_dtype).name} array of "
                             f"shape ({n},), got {index_out.dtype} {index_out.shape}")
        self._k = index_out
        N, U, bad = _kernels.aggregate(w_arr, self._v0 * self._inv_delta, self._inv_delta, C,
                                       self.chunk, self._k)
        if bad >= 0:
            raise NonFiniteWeightError(bad)
        self._set_aggregates(N, U)  # self._cum (3 × C prefix sums) and self.counts
        self._ones = np.ones(C - 1)
        self._rbuf = np.empty(C, dtype=np.intp)
        self._dbuf = np.empty(C - 1)
        self._wbuf = np.empty(C - 1)

    def _set_aggregates(self, N: np.ndarray, U: np.ndarray) -> None:
        """Prefix sums from the laned per-interval count N and Σu (u_i = (w_i − v_0)/Δ)."""
        self._cum, self.counts = _kernels.prefix_sums(N, U, self.C)

    def _prefix_sums_numpy(self, N: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference for :func:`metaq_utils.core._kernels.prefix_sums`: (cum, counts) with NumPy."""
        C = self.C
        N_lanes, U_lanes = N.reshape(_LANES, C - 1), U.reshape(_LANES, C - 1)
        N, U = N_lanes[0].copy(), U_lanes[0].copy()
        for lane in range(1, _LANES):  # lanes added in order (sum(axis=0) may reorder)
            N += N_lanes[lane]
            U += U_lanes[lane]
        kN = N * np.arange(C - 1)  # Σ_{i in k} k (exact integers)
        cum = np.zeros((3, C))
        np.cumsum(N, out=cum[0, 1:])  # cumN[k] = Σ_{k' < k} N_k'
        np.cumsum(U - kN, out=cum[1, 1:])  # Σ_{k' < k} Σ_i (w_i − v_k')/Δ
        np.cumsum(kN, out=cum[2, 1:])  # Σ_{k' < k} k'·N_k'
        return cum, N

    def _aggregate_numpy(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reference for the O(n) kernel: (laned N, laned U, interval index) with NumPy.

        Consecutive weights of a chunk are spread over _LANES interleaved copies of the C − 1 bins
        (index k + lane·(C − 1)), counted with ``np.bincount``.
        """
        w = np.asarray(w)
        C, n = self.C, w.shape[0]
        nbins = _LANES * (C - 1)
        N, U = np.zeros(nbins), np.zeros(nbins)
        k_all = np.empty(n, dtype=np.intp)
        for s in range(0, n, self.chunk):
            wc = w[s : s + self.chunk]
            if not np.isfinite(wc).all():
                raise NonFiniteWeightError(int(np.flatnonzero(~np.isfinite(wc))[0]) + s)
            u = np.multiply(wc, self._inv_delta, dtype=np.float64)
            u -= self._v0 * self._inv_delta
            np.clip(u, 0.0, C - 1.0, out=u)
            k = np.minimum(u.astype(np.intp), C - 2)
            k_all[s : s + k.shape[0]] = k
            laned = k + (np.arange(k.shape[0]) % _LANES) * (C - 1)
            N += np.bincount(laned, minlength=nbins)
            U += np.bincount(laned, weights=u, minlength=nbins)
        return N, U, k_all

    # ------------------------------------------------------------------ evaluation

    def _hull(self, xi: np.ndarray) -> np.ndarray:
        """Lower-hull vertex indices of (v, ξ) on the uniform grid (PAVA on ξ differences)."""
        if scipy_pava is None:  # pragma: no cover - other scipy versions
            return lower_hull_pava(self._v, xi, uniform=True)
        _, _, r, nb = scipy_pava(xi[1:] - xi[:-1], self._ones.copy(), self._rbuf)
        return r[: nb + 1].copy()

    def _eval(self, xi: np.ndarray) -> tuple:
        """(value, g, c*, x_mass, vertices) at ξ in O(C): the compiled kernel."""
        C = self.C
        g, c, x_mass = np.empty(C), np.empty(C), np.empty(C)
        value, nv = _kernels.evaluate(xi, self._cum, self._ln_c_lo, self._ln_c_hi, self._dbuf,
                                      self._wbuf, self._rbuf, g, c, x_mass)
        return value, g, c, x_mass, self._rbuf[:nv].copy()

    def _eval_numpy(self, xi: np.ndarray) -> tuple:
        """Reference for :meth:`_eval` in NumPy (scipy's PAVA for the hull)."""
        idx = self._hull(xi)
        a = idx[:-1]
        xv = xi[idx]
        dxv = xv[1:] - xv[:-1]
        cs = self._cum[:, idx]
        seg = cs[:, 1:] - cs[:, :-1]  # per hull segment [a, b): N, Σ(w − v_k)/Δ, Σ k
        N = seg[0]
        # Σ_i θ_i over the segment, θ_i = (w_i − v_a)/(v_b − v_a): the mass sent to vertex b
        tsum = (seg[1] + seg[2] - a * N) / (idx[1:] - a)
        x_value = N @ xv[:-1] + tsum @ dxv  # Σ_i env_ξ(w_i)
        x_mass = np.zeros(self.C)
        x_mass[a] = N - tsum
        x_mass[idx[1:]] += tsum
        t = xi * LN2 - 1.0  # ln c* (29), clamped to [ln c_lo, ln c_hi]
        np.minimum(t, self._ln_c_hi, out=t)
        np.maximum(t, self._ln_c_lo, out=t)
        c = np.exp(t)
        value = float(c @ (t * (1.0 / LN2) - xi) + x_value)  # (16): Σ c log2 c − ξ c + Σ env
        return value, x_mass - c, c, x_mass, idx  # g = Σ x* − c* (Theorem 2)

    def slopes(self, xi: np.ndarray, vertices: np.ndarray) -> np.ndarray:
        """Envelope slope on each hull segment."""
        xv = xi[vertices]
        return (xv[1:] - xv[:-1]) / np.diff(self._v[vertices])

    def _check(self, xi: np.ndarray) -> np.ndarray:
        arr = np.asarray(xi, dtype=np.float64)
        if arr.shape != (self.C,):
            raise ValueError(f"xi must have shape ({self.C},), got {arr.shape}")
        return np.ascontiguousarray(as_finite_float64(arr, "xi"))

    def evaluate(self, xi: np.ndarray) -> DualEval:
        """Full evaluation at ξ (validated)."""
        xi = self._check(xi)
        value, g, c, x_mass, idx = self._eval(xi)
        return DualEval(xi.copy(), value, g, c, x_mass, idx, self.slopes(xi, idx))

    def __call__(self, xi: np.ndarray) -> tuple[float, np.ndarray]:
        """(φ_w(ξ), supergradient g)."""
        value, g, *_ = self._eval(self._check(xi))
        return value, g

    def beta_from(self, vertices: np.ndarray, slopes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Per-weight envelope slopes β_i (float64, length n, into ``out`` if given): one gather."""
        slope_of_bin = np.repeat(slopes, np.diff(vertices))  # (C − 1,) slope of each interval
        if out is None:
            out = np.empty(self.n)
        elif out.shape != (self.n,) or out.dtype != np.float64:
            raise ValueError(f"out must be a float64 array of shape ({self.n},), got {out.dtype} {out.shape}")
        return _kernels.gather(slope_of_bin, self._k, out)

    def beta(self, xi: np.ndarray) -> np.ndarray:
        """β at ξ: the multipliers of (10) implied by ξ (Theorem 1 at a dual maximiser)."""
        e = self.evaluate(xi)
        return self.beta_from(e.vertices, e.slopes)


def index_dtype_for(C: int) -> type:
    """dtype of the per-weight interval index: k ≤ C − 2, or C − 1 for the adjacent variant's
    off-range weights (:func:`metaq_utils.core._kernels.adjacent_pass`)."""
    return np.uint16 if C - 1 <= np.iinfo(np.uint16).max else np.uint32


def phi_w(
    w: np.ndarray, grid: Grid, xi: np.ndarray, c_lo: float = 0.01, c_hi: float | None = None
) -> float:
    """The dual function φ_w(ξ) (16)."""
    return DualOracle(w, grid, c_lo, c_hi)(xi)[0]


def supergradient(
    w: np.ndarray, grid: Grid, xi: np.ndarray, c_lo: float = 0.01, c_hi: float | None = None
) -> np.ndarray:
    """The supergradient g = Σ_i x*_i − c* of φ_w at ξ (Theorem 2)."""
    return DualOracle(w, grid, c_lo, c_hi)(xi)[1]


# ----------------------------------------------------------------------------- maximisers


RETURN_RULES = ("best", "last")


@dataclass(frozen=True)
class DualResult:
    """A run of a dual maximiser: the point it returns and its by-products.

    ``xi_return="best"`` (default): ``xi`` is the best evaluated point and ``value``, ``beta``,
    ``g``, ``c_star`` belong to it. ``xi_return="last"`` (the reference code's rule,
    ``utils/optimization.py`` 62 at cardiaa/METaQ ebd4355): ``xi`` is the final iterate — the
    point the next warm-started solve starts from, never evaluated — and ``value``, ``beta``,
    ``g``, ``c_star`` come from the last evaluated point, ``points[-1]``.
    """

    xi: np.ndarray  # (C,) the returned ξ (see the class doc)
    value: float  # φ_w at the kept evaluated point (a lower bound on φ(w))
    history: np.ndarray  # φ_w at the point evaluated in each iteration
    beta: np.ndarray  # (n,) float64 per-weight multipliers (envelope slopes at xi)
    g: np.ndarray  # (C,) supergradient at xi
    c_star: np.ndarray  # (C,) c-subproblem solution at xi
    method: str  # dss | fista | pbm_thesis | bundle
    iterations: int  # oracle evaluations performed
    points: np.ndarray  # (iterations, C) the evaluated points, in order (history[k] = φ_w(points[k]))


class _Best:
    """Tracks the best evaluated point."""

    __slots__ = ("value", "xi", "ev")

    def __init__(self) -> None:
        self.value = -math.inf
        self.xi: np.ndarray | None = None
        self.ev: tuple | None = None

    def offer(self, xi: np.ndarray, ev: tuple) -> None:
        if ev[0] > self.value:
            self.value, self.xi, self.ev = ev[0], xi, ev

    def keep(self, xi: np.ndarray, ev: tuple, last: bool) -> None:
        """Keep this evaluation: always (rule "last") or if it is the best so far (rule "best")."""
        if last or ev[0] > self.value:
            self.value, self.xi, self.ev = ev[0], xi, ev


def _result(oracle: DualOracle, best: _Best, history: list, points: list, method: str,
            beta_out: np.ndarray | None = None, next_xi: np.ndarray | None = None) -> DualResult:
    """The result for the kept point ``best``; ``next_xi`` (rule "last") is the returned ξ."""
    value, g, c, _, idx = best.ev
    beta = oracle.beta_from(idx, oracle.slopes(best.xi, idx), out=beta_out)
    xi = best.xi if next_xi is None else next_xi
    return DualResult(
        np.array(xi, dtype=np.float64), float(value), np.asarray(history), beta, g, c, method, len(history),
        np.array(points).reshape(len(points), oracle.C),
    )


def _check_return(xi_return: str) -> bool:
    """True for the rule "last"; ValueError for an unknown rule."""
    if xi_return not in RETURN_RULES:
        raise ValueError(f"xi_return must be one of {RETURN_RULES}, got {xi_return!r}")
    return xi_return == "last"


def _start(oracle: DualOracle, xi0: np.ndarray, sort_xi: bool) -> np.ndarray:
    """Validated copy of the warm start (sorted when ``sort_xi``)."""
    xi = oracle._check(xi0).copy()
    if sort_xi:
        xi.sort()
    return xi


def dss(
    oracle: DualOracle,
    xi0: np.ndarray,
    iterations: int = 15,
    step_scale: float = 1.0,
    sort_xi: bool = False,
    beta_out: np.ndarray | None = None,
    xi_return: str = "best",
) -> DualResult:
    """Deflected/diminishing subgradient step ξ_{k+1} = ξ_k + γ_k g_k, γ_k = step_scale/k (74)–(75).
    ``xi_return``: "best" evaluated point or "last" iterate (see :class:`DualResult`)."""
    last = _check_return(xi_return)
    xi = _start(oracle, xi0, sort_xi)
    best, history, points = _Best(), [], []
    for k in range(1, iterations + 1):
        ev = oracle._eval(xi)
        history.append(ev[0])
        points.append(xi)
        best.keep(xi, ev, last)
        xi = xi + (step_scale / k) * ev[1]  # (74)–(75)
        if sort_xi:
            xi.sort()
    return _result(oracle, best, history, points, "dss", beta_out, xi if last else None)


def fista(
    oracle: DualOracle,
    xi0: np.ndarray,
    iterations: int = 15,
    zeta: float = 1e5,
    sort_xi: bool = False,
    beta_out: np.ndarray | None = None,
    xi_return: str = "best",
) -> DualResult:
    """FISTA (82)–(84) with the supergradient at the extrapolated point; t_0 = t_1 = 1.

    σ_k = ξ_k + ((t_{k−1} − 1)/t_k)(ξ_k − ξ_{k−1}),  ξ_{k+1} = σ_k + g(σ_k)/ζ,
    t_{k+1} = (1 + sqrt(1 + 4 t_k²))/2. Each iteration evaluates φ_w at σ_k (σ_1 = ξ0).
    With ``sort_xi`` (the reference behaviour) ξ_{k+1} and σ_k are sorted ascending, so every
    evaluated point — and the returned one — is sorted and every β ≥ 0.
    The whole loop runs compiled (:func:`metaq_utils.core._kernels.fista`), with the same oracle
    kernel as :meth:`DualOracle._eval` (``tests/test_kernels.py`` replays it in Python).
    ``xi_return``: "best" evaluated point, or "last": the final iterate ξ_{K+1} with β from σ_K.
    """
    last = _check_return(xi_return)
    xi = _start(oracle, xi0, sort_xi)
    points = np.empty((iterations, oracle.C))
    history = np.empty(iterations)
    xi_next = np.empty(oracle.C)
    k, g, c, x_mass, idx = _kernels.fista(xi, oracle._cum, iterations, 1.0 / zeta, sort_xi,
                                          oracle._ln_c_lo, oracle._ln_c_hi, points, history, last, xi_next)
    if k < 0:
        raise FloatingPointError("FISTA: no evaluated point had a finite dual value")
    best = _Best()
    best.offer(points[k], (history[k], g, c, x_mass, idx))
    return _result(oracle, best, history, points, "fista", beta_out, xi_next if last else None)


def pbm_thesis(
    oracle: DualOracle,
    xi0: np.ndarray,
    iterations: int = 15,
    zeta: float = 1e5,
    bundle_size: int = 10,
    sort_xi: bool = False,
    beta_out: np.ndarray | None = None,
    xi_return: str = "best",
) -> DualResult:
    """The thesis' bundle update (86)–(87).

    Evaluate ξ_k and add (ξ_k, φ_k, g_k) to a FIFO bundle of ``bundle_size``; take the element j
    whose linearisation φ_j + g_j·(ξ_k − ξ_j) is highest at ξ_k (86) and step
    ξ_{k+1} = ξ_j + g_j/ζ (87). (The reference code also added +ζ/2‖ξ_k − ξ_j‖² to the score and
    clipped ξ to [0.01, n]; neither is in the spec, neither is done here.)
    ``xi_return``: "best" evaluated point or "last" iterate (see :class:`DualResult`).
    """
    last = _check_return(xi_return)
    xi = _start(oracle, xi0, sort_xi)
    bundle: deque = deque(maxlen=bundle_size)
    best, history, points = _Best(), [], []
    inv_zeta = 1.0 / zeta
    for _ in range(iterations):
        ev = oracle._eval(xi)
        history.append(ev[0])
        points.append(xi)
        best.keep(xi, ev, last)
        bundle.append((xi, ev[0], ev[1]))
        scores = [f_j + g_j @ (xi - xi_j) for xi_j, f_j, g_j in bundle]  # (86)
        xi_j, _, g_j = bundle[int(np.argmax(scores))]
        xi = xi_j + inv_zeta * g_j  # (87)
        if sort_xi:
            xi.sort()
    return _result(oracle, best, history, points, "pbm_thesis", beta_out, xi if last else None)


def simplex_qp(Q: np.ndarray, q: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """min ½ λᵀQλ + qᵀλ over the simplex {λ ≥ 0, Σλ = 1} (Q PSD), primal active-set method.

    A ridge of 1e-12·mean(diag Q) makes the equality-constrained steps well posed; sizes here are
    the bundle size (≤ a few tens).
    """
    m = q.shape[0]
    Q = np.asarray(Q, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    ridge = 1e-12 * max(float(np.trace(Q)) / m, 1e-300)
    Qr = Q + ridge * np.eye(m)
    scale = max(1.0, float(np.abs(Qr).max()), float(np.abs(q).max()))
    tol = 1e-13 * scale
    j0 = int(np.argmin(0.5 * np.diag(Qr) + q))  # best vertex
    lam = np.zeros(m)
    lam[j0] = 1.0
    free = [j0]
    for _ in range(max_iter):
        F = np.asarray(free)
        k = F.shape[0]
        K = np.zeros((k + 1, k + 1))
        K[:k, :k] = Qr[np.ix_(F, F)]
        K[:k, k] = 1.0
        K[k, :k] = 1.0
        rhs = np.concatenate([-q[F], [1.0]])
        target = np.linalg.solve(K, rhs)[:k]
        if (target >= 0.0).all():
            lam = np.zeros(m)
            lam[F] = target
            grad = Qr @ lam + q
            nu = float(grad[F] @ target)  # common gradient value on the support
            out = np.setdiff1d(np.arange(m), F)
            if out.size == 0:
                return lam
            red = grad[out] - nu
            i = int(np.argmin(red))
            if red[i] >= -tol:
                return lam
            free.append(int(out[i]))
        else:  # move towards target until a component of the support hits zero
            cur = lam[F]
            p = target - cur
            neg = p < 0.0
            steps = cur[neg] / -p[neg]
            t = float(steps.min())
            lam[F] = np.maximum(cur + t * p, 0.0)
            drop = F[neg][int(np.argmin(steps))]
            lam[drop] = 0.0
            lam /= lam.sum()
            free = [j for j in free if j != drop and lam[j] > 0.0]
            if not free:  # pragma: no cover - defensive
                free = [int(np.argmax(lam))]
    raise RuntimeError("simplex_qp did not converge")  # pragma: no cover


def proximal_bundle(
    oracle: DualOracle,
    xi0: np.ndarray,
    iterations: int = 15,
    zeta: float = 1e5,
    bundle_size: int = 10,
    m: float = 0.1,
    sort_xi: bool = False,
    tol: float = 1e-12,
    beta_out: np.ndarray | None = None,
) -> DualResult:
    """A proximal bundle method for the concave φ_w (maximisation).

    Model: m_k(ξ) = min_j φ_j + g_j·(ξ − ξ_j) over the bundle (an upper model). Master:
    max_ξ m_k(ξ) − ζ/2‖ξ − ξ̂‖², solved through its dual on the simplex,
    min_λ Σ λ_j α_j + ‖Σ λ_j g_j‖²/(2ζ) with linearisation errors α_j ≥ 0 at the centre ξ̂;
    then ξ = ξ̂ + Σ λ_j g_j/ζ. Serious step (move the centre) when the actual increase is at
    least ``m`` times the predicted one, null step otherwise. When the bundle would exceed
    ``bundle_size`` the active cuts are replaced by their aggregate (a valid cut). Stops early
    when the predicted increase ≤ tol·(1 + |φ(ξ̂)|). ``sort_xi`` sorts each trial point.
    """
    if bundle_size < 2:
        raise ValueError(f"bundle_size must be >= 2, got {bundle_size}")
    if not 0.0 < m < 1.0:
        raise ValueError(f"m must be in (0, 1), got {m}")
    centre = _start(oracle, xi0, sort_xi)
    ev = oracle._eval(centre)
    f_c = ev[0]
    best, history, points = _Best(), [ev[0]], [centre]
    best.offer(centre, ev)
    G = [ev[1]]  # cut slopes g_j
    b = [ev[0] - ev[1] @ centre]  # cut offsets: cut_j(ξ) = b_j + g_j·ξ
    for _ in range(iterations - 1):
        Gm = np.asarray(G)
        bm = np.asarray(b)
        alpha = np.maximum(bm + Gm @ centre - f_c, 0.0)  # linearisation errors at the centre
        lam = simplex_qp(Gm @ Gm.T / zeta, alpha)
        d = lam @ Gm / zeta
        predicted = float(np.min(alpha + Gm @ d))  # m_k(ξ̂ + d) − φ(ξ̂) ≥ 0
        if predicted <= tol * (1.0 + abs(f_c)):
            break
        trial = centre + d
        if sort_xi:
            trial.sort()
        ev = oracle._eval(trial)
        history.append(ev[0])
        points.append(trial)
        best.offer(trial, ev)
        if ev[0] - f_c >= m * predicted:  # serious step
            centre, f_c = trial, ev[0]
        active = lam > 1e-12
        if int(active.sum()) + 1 > bundle_size:  # aggregate the active cuts
            G = [lam @ Gm]
            b = [float(lam @ bm)]
        else:
            G = list(Gm[active])
            b = list(bm[active])
        G.append(ev[1])
        b.append(ev[0] - ev[1] @ trial)
    return _result(oracle, best, history, points, "bundle", beta_out)


METHODS = ("dss", "fista", "pbm_thesis", "bundle")


def _describe(a) -> str:
    """``dtype shape`` of an array (for an error message), or the type of something else."""
    return f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


class FistaSolver:
    """The warm-started FISTA solve of a training step as one object: it holds ξ, the buffers and
    the rules, and offers :meth:`step` — the O(n) pass, the 15 iterations and ``scale·β`` into the
    gradient buffer, in one compiled call (:func:`metaq_utils.core._kernels.fista_step`).

    The same floats as :func:`fista` on a :class:`DualOracle` followed by the β gather
    (``tests/test_kernels.py``); ``sort_xi`` and ``xi_return`` as there. ``xi`` is the warm start
    of the next :meth:`step` (the best evaluated point, or the last iterate).

    ``index_out`` (contiguous, length n, dtype :func:`index_dtype_for` C) and ``table_out``
    (contiguous float64, length C) may pass the caller's buffers for the interval index and the
    per-interval slopes that :meth:`step` writes (as :class:`DualOracle`'s ``index_out``), so that the
    caller reads β from them itself; they are used as given (``table_out``'s entry C − 1, which no
    step writes, keeps its value). By default the solver allocates its own.
    """

    def __init__(self, grid: Grid, n: int, xi0: np.ndarray, *, iterations: int = 15, zeta: float = 1e5,
                 sort_xi: bool = False, xi_return: str = "best", c_lo: float = 0.01,
                 c_hi: float | None = None, chunk: int = DEFAULT_CHUNK, index_out: np.ndarray | None = None,
                 table_out: np.ndarray | None = None) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a metaq_utils.core.grid.Grid, got {type(grid).__name__}")
        if n < 1 or iterations < 1:
            raise ValueError(f"need n >= 1 and iterations >= 1, got n={n}, iterations={iterations}")
        if not (zeta > 0 and math.isfinite(zeta)):
            raise ValueError(f"zeta must be finite and > 0, got {zeta}")
        self.last = _check_return(xi_return)
        self.grid, self.n, self.C = grid, int(n), grid.C
        self.iterations, self.inv_zeta, self.sort_xi, self.chunk = int(iterations), 1.0 / zeta, bool(sort_xi), chunk
        self._ln_c = c_bounds(c_lo, c_hi, self.n)[2:]          # validates c_lo < c_hi too
        self.xi = self._check_xi(xi0)
        index_dtype = index_dtype_for(self.C)
        if index_out is None:
            index_out = np.empty(self.n, dtype=index_dtype)
        elif (not isinstance(index_out, np.ndarray) or index_out.shape != (self.n,) or index_out.dtype != index_dtype
              or not index_out.flags.c_contiguous or not index_out.flags.writeable):
            raise ValueError(f"index_out must be a writeable contiguous {np.dtype(index_dtype).name} array of "
                             f"shape ({self.n},), got {_describe(index_out)}")
        if table_out is None:
            table_out = np.zeros(self.C)
        elif (not isinstance(table_out, np.ndarray) or table_out.shape != (self.C,) or table_out.dtype != np.float64
              or not table_out.flags.c_contiguous or not table_out.flags.writeable):
            raise ValueError(f"table_out must be a writeable contiguous float64 array of shape ({self.C},), "
                             f"got {_describe(table_out)}")
        self.index = index_out                 # the interval index of every weight (read by beta())
        self.table = table_out                 # the slope of every interval (entry C − 1 unused, kept as given)
        self.points = np.empty((self.iterations, self.C))
        self.history = np.empty(self.iterations)
        self._xi_next = np.empty(self.C)
        self.value: float | None = None        # φ_w at the kept evaluated point of the last step

    def _check_xi(self, xi: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(np.asarray(xi, dtype=np.float64))
        if arr.shape != (self.C,):
            raise ValueError(f"xi must have shape ({self.C},), got {arr.shape}")
        return as_finite_float64(arr, "xi").copy()

    def restart(self, xi0: np.ndarray) -> None:
        """Start the next step from ``xi0`` instead of the warm start."""
        self.xi = self._check_xi(xi0)

    def step(self, w: np.ndarray, scale: float, out: np.ndarray) -> float:
        """One solve on ``w`` from :attr:`xi`; ``out`` (float32/64, length n) receives ``scale·β`` in
        its own dtype. Returns φ_w at the kept point. Raises :class:`NonFiniteWeightError`."""
        grid = self.grid
        inv_delta = 1.0 / grid.delta
        bad, k, _ = _kernels.fista_step(
            w, float(grid.v[0]) * inv_delta, inv_delta, grid.v, self.chunk, self.index, self.xi,
            self.iterations, self.inv_zeta, self.sort_xi, self._ln_c[0], self._ln_c[1],
            self.points, self.history, scale, out, self.table, self.last, self._xi_next)
        if bad >= 0:
            raise NonFiniteWeightError(bad)
        self.xi = (self._xi_next if self.last else self.points[k]).copy()
        self.value = float(self.history[k])
        return self.value

    def beta(self) -> np.ndarray:
        """β of the last step (float64), from the kept interval index."""
        return _kernels.gather(self.table, self.index, np.empty(self.n))


def solve_dual(
    w: np.ndarray,
    grid: Grid,
    method: str = "fista",
    iterations: int = 15,
    zeta: float = 1e5,
    xi0: np.ndarray | None = None,
    c_lo: float = 0.01,
    c_hi: float | None = None,
    sort_xi: bool = False,
    *,
    bundle_size: int = 10,
    m: float = 0.1,
    step_scale: float = 1.0,
    oracle: DualOracle | None = None,
    beta_out: np.ndarray | None = None,
    xi_return: str = "best",
) -> DualResult:
    """Maximise φ_w(ξ) (17) from the warm start ξ0 (default: c* = n/C) — the training hot path.

    method: "dss" | "fista" | "pbm_thesis" | "bundle". ``iterations`` counts oracle evaluations
    (the bundle method may stop earlier when its model predicts no increase). c_hi defaults to n
    (thesis). ``sort_xi`` reproduces the reference code: ξ (the warm start included) is sorted
    ascending after every step, so every evaluated ξ is sorted and every β ≥ 0. ``oracle`` may pass a prebuilt :class:`DualOracle` for (w, grid,
    c_lo, c_hi) to skip the O(n) pass; ``beta_out`` a float64 array
    of length n to receive β (the training loop reuses one).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not (zeta > 0 and math.isfinite(zeta)):
        raise ValueError(f"zeta must be finite and > 0, got {zeta}")
    if oracle is None:
        oracle = DualOracle(w, grid, c_lo, c_hi)
    if xi0 is None:
        xi0 = default_xi0(oracle.n, oracle.C)
    _check_return(xi_return)
    if method == "fista":
        return fista(oracle, xi0, iterations, zeta, sort_xi, beta_out, xi_return)
    if method == "dss":
        return dss(oracle, xi0, iterations, step_scale, sort_xi, beta_out, xi_return)
    if method == "pbm_thesis":
        return pbm_thesis(oracle, xi0, iterations, zeta, bundle_size, sort_xi, beta_out, xi_return)
    if xi_return != "best":
        raise ValueError("the proximal bundle method returns its best point: use xi_return='best'")
    return proximal_bundle(oracle, xi0, iterations, zeta, bundle_size, m, sort_xi, beta_out=beta_out)


# ----------------------------------------------------------------------------- primal reference


@dataclass(frozen=True)
class PrimalSolution:
    """The convex relaxation (9)–(15) solved directly (CVXPY, exponential cone)."""

    value: float  # φ(w) = min Σ c log2 c
    beta: np.ndarray  # (n,) multipliers of (10), = ∂φ/∂w_i (Theorem 1)
    x: np.ndarray  # (n, C)
    c: np.ndarray  # (C,)
    status: str


def solve_primal_cvxpy(
    w: np.ndarray,
    grid: Grid,
    c_lo: float = 0.01,
    c_hi: float | None = None,
    solver: str = "CLARABEL",
) -> PrimalSolution:
    """Solve (9)–(15) with c_lo ≤ c ≤ c_hi (the box the dual's c-subproblem uses) in CVXPY.

    Σ c log2 c = −Σ entr(c)/ln 2 is convex (exponential cone). w is clamped to [v_0, v_{C−1}].
    For small n only (n × C variables).
    """
    import cvxpy as cp  # optional dependency

    w_arr = grid.clamp(as_finite_float64(w, "w"))
    if w_arr.ndim != 1:
        raise ValueError(f"w must be a 1-D array of weights, got shape {w_arr.shape}")
    n, C = w_arr.shape[0], grid.C
    c_hi = float(n) if c_hi is None else float(c_hi)
    X = cp.Variable((n, C), nonneg=True)  # (15); x ≤ 1 is implied by (11) and x ≥ 0
    c = cp.sum(X, axis=0)  # (12), substituted
    con10 = X @ grid.v == w_arr  # (10)
    cons = [con10, cp.sum(X, axis=1) == 1, c >= c_lo]  # (11), box on c
    if c_hi < n:  # Σ c = n makes c ≤ n implicit
        cons.append(c <= c_hi)
    prob = cp.Problem(cp.Minimize(-cp.sum(cp.entr(c)) / LN2), cons)  # (9)
    prob.solve(solver=solver)
    if prob.status != cp.OPTIMAL:
        raise RuntimeError(f"primal solve failed: {prob.status}")
    beta = -np.asarray(con10.dual_value, dtype=np.float64)  # CVXPY: f + ν·(Xv − w) ⇒ ∂φ/∂w = −ν
    return PrimalSolution(
        float(prob.value), beta, np.asarray(X.value), np.asarray(c.value), str(prob.status)
    )
