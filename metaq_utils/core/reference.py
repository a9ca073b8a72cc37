"""The METaQ dual solve as its reference implementation runs it during training.

Reference: public repository ``cardiaa/METaQ``, commit ``ebd4355`` (the thesis-era code; the
thesis is its ``Report.pdf``). Every rule below cites the file and line it follows; nothing of
that code is copied. This module is NumPy-only (no torch): the training hook in
:mod:`metaq_utils.nn.regularizer` holds a :class:`ReferenceSolver` and calls :meth:`ReferenceSolver.step`.

The rules (``variant="reference"`` of :class:`metaq_utils.nn.regularizer.METaQConfig`):

1. **Grid: left bucket edges.** ``v = linspace(w0 − r, w0 + r − 2r/C, C)`` in float32
   (``utils/trainer.py`` 43–44), not the bucket centres of the thesis text (spec §1).
2. **Start.** ξ starts sorted uniform in ``[min_xi, max_xi] = [0, 1]`` (``trainer.py`` 48–49,
   ``train.py`` 37–38); every later solve warm-starts from the ξ the previous one returned
   (``trainer.py`` 73). (The reference draws ξ from torch's global generator after the model's
   initialisation; we draw it from ``numpy.random.default_rng(seed)``: the same distribution,
   not the same numbers.)
3. **FISTA** (``utils/optimization.py`` 5–62): 15 iterations; the supergradient is taken at the
   current iterate ξ_k (line 31, *not* at the extrapolated point); t_prev = 1 at every call (27);
   ``y = ξ + ((t_prev − 1)/t)(ξ − ξ_prev)``, ``ξ ← y + g/ζ`` with ζ = ``subgradient_step`` = 1e5
   (``train.py`` 32; ``optimization.py`` 48–52); ξ re-sorted ascending after every step (59–60);
   the **last** iterate is returned, with β from the last oracle evaluation (62); no best-point
   tracking. ``c* = exp(ln2·ξ − 1)`` clamped to ``[0, n]`` (35–36); ``g = Σ_i x*_i − c*`` (39).
4. **Breakpoints** (``utils/knapsack.py`` 18–32): from b = 0, the next breakpoint is the first
   index of the minimum chord slope (``torch.argmin``: equal slopes go to the first index, line
   25), so every point of a flat ξ is a breakpoint.
5. **Bracketing and multipliers** (``knapsack.py`` 38–86): a weight w with v_{k} < w ≤ v_{k+1}
   is split between the two breakpoints around interval k and gets the chord slope
   ``(ξ_r − ξ_l)/(v_r − v_l)`` (81); **a weight above v_{C−1} gets β = ξ_{C−1}/v_{C−1}** and sits
   on the last bucket; **a weight below v_0 gets β = 0** and sits on the first bucket (42–43,
   55–61, 82–86).
6. **Gradient** (``trainer.py`` 78–91): ``grad += λ(1−α)·β`` added before ``loss.backward()``
   (86); the L2 part is Adam's coupled ``weight_decay = λα`` (38), i.e. ``+ λα·w`` (R = ½‖w‖²,
   not the thesis text's ‖w‖²). The repository's HEAD adds ``−β`` instead (``utils/trainer.py``
   85 at HEAD): ``head_sign=True``.
7. **float32** for ξ, t, the supergradient and β, as the reference (its tensors are float32).

The aggregation is ours (the reference builds an n × C matrix): one O(n) pass counts the weights
of each grid interval and sums their offsets, after which each FISTA iteration is O(C ·
breakpoints) — the same Σ_i x*_i up to float summation order (``tests/test_reference.py``
compares it with a line-by-line NumPy transcription of the reference solve).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _kernels
from .dual import NonFiniteWeightError, index_dtype_for

__all__ = ["reference_grid", "sorted_uniform_xi", "ReferenceSolver", "ReferenceStep", "beta_summary"]


def reference_grid(w0: float, r: float, C: int) -> np.ndarray:
    """The reference's training grid: left bucket edges ``linspace(w0 − r, w0 + r − 2r/C, C)``,
    float32 (``utils/trainer.py`` 43–44). Validated: C ≥ 2, r > 0, finite w0."""
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 2:
        raise ValueError(f"C must be an int >= 2, got {C!r}")
    if not (math.isfinite(w0) and math.isfinite(r)):
        raise ValueError(f"w0 and r must be finite, got w0={w0}, r={r}")
    if not r > 0:
        raise ValueError(f"r must be > 0, got {r}")
    lo, hi = w0 - r, w0 + r
    # torch.linspace(min_w, max_w − (max_w − min_w)/C, steps=C) in float32: the end points are
    # computed in Python floats, then ATen's scalar rule in float32 — step = (end − start)/(C − 1),
    # start + step·i for i < C/2, end − step·(C − 1 − i) for the rest. This is bit-identical to
    # torch.linspace for C ≤ 7 (the thesis uses C = 6); for larger C torch's vectorised kernel
    # rounds differently by a few ulp (tests/test_reference.py measures it).
    f32 = np.float32
    start, end = f32(lo), f32(hi - (hi - lo) / C)
    step = (end - start) / f32(C - 1)
    i = np.arange(C)
    return np.where(i < C // 2, start + step * i.astype(f32), end - step * (C - 1 - i).astype(f32)).astype(f32)


def sorted_uniform_xi(C: int, low: float = 0.0, high: float = 1.0, seed: int = 0) -> np.ndarray:
    """ξ drawn uniformly in [low, high] and sorted ascending, float32 (``trainer.py`` 48–49)."""
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"need finite low <= high, got [{low}, {high}]")
    return np.sort(np.random.default_rng(seed).uniform(low, high, C)).astype(np.float32)


@dataclass(frozen=True)
class ReferenceStep:
    """What one reference solve returns."""
    xi: np.ndarray          # (C,) float32: the last iterate (the next solve's warm start)
    phi: float              # φ at the last evaluated point (the iterate before the last update)
    history: np.ndarray     # φ at each evaluated point
    breakpoints: np.ndarray  # breakpoints of the last evaluation
    table: np.ndarray       # (C + 1,) multiplier per code: intervals 0..C−2, above v_{C−1}, below v_0


def beta_summary(beta: np.ndarray) -> dict[str, float]:
    """mean, std, min, max and the number of distinct values (to 1e-9) of a β vector."""
    b = np.asarray(beta, dtype=np.float64)
    return {"mean": float(b.mean()), "std": float(b.std()), "min": float(b.min()), "max": float(b.max()),
            "distinct": int(np.unique(np.round(b, 9)).size)}


class ReferenceSolver:
    """The warm-started reference dual solve: holds ξ and the buffers, offers :meth:`step`.

    ``xi0``: the start (float32, length C); default :func:`sorted_uniform_xi` with ``seed``.
    ``n`` is the number of weights (the clamp ``c* ≤ n``, ``optimization.py`` 23 and 36).
    """

    def __init__(self, v: np.ndarray, n: int, *, iterations: int = 15, zeta: float = 1e5,
                 sort_xi: bool = True, xi0: np.ndarray | None = None, seed: int = 0,
                 min_xi: float = 0.0, max_xi: float = 1.0) -> None:
        v32 = np.asarray(v, dtype=np.float32)
        if v32.ndim != 1 or v32.shape[0] < 2 or not np.isfinite(v32).all() or not (np.diff(v32) > 0).all():
            raise ValueError(f"v must be a finite, strictly increasing 1-D grid of >= 2 values, got {v!r}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if not (zeta > 0 and math.isfinite(zeta)):
            raise ValueError(f"zeta must be finite and > 0, got {zeta}")
        self.C = C = v32.shape[0]
        self.n = int(n)
        self.v32 = v32
        self.v = v32.astype(np.float64)
        self.iterations = int(iterations)
        self.zeta = float(zeta)
        # `(1 / subgradient_step) * g` multiplies a float32 tensor by a Python float: float32
        self.inv_zeta = np.float32(1.0 / zeta)
        self.sort_xi = bool(sort_xi)
        if xi0 is None:
            xi0 = sorted_uniform_xi(C, min_xi, max_xi, seed)
        xi = np.asarray(xi0, dtype=np.float32)
        if xi.shape != (C,) or not np.isfinite(xi).all():
            raise ValueError(f"xi0 must be {C} finite values, got {np.asarray(xi0)!r}")
        self.xi = xi.copy()
        self.index = np.empty(self.n, dtype=index_dtype_for(C + 1))
        self.table = np.zeros(C + 1)
        self._bp = np.empty(C, dtype=np.intp)
        self._g = np.empty(C, dtype=np.float32)
        self._xm = np.empty(C)
        self._xi_prev = np.empty(C, dtype=np.float32)
        self.history = np.empty(self.iterations)
        self.last_phi: float | None = None
        self.last_nb = 0

    def _check_w(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w)
        if w.ndim != 1 or w.shape[0] != self.n:
            raise ValueError(f"w must be a 1-D array of {self.n} weights, got shape {w.shape}")
        if w.dtype not in (np.float32, np.float64):
            w = w.astype(np.float64)
        return np.ascontiguousarray(w)

    def step(self, w: np.ndarray, scale: float, out: np.ndarray) -> float:
        """One warm-started solve on ``w``; ``out`` (float32/64, length n) receives ``scale·β`` in
        its own dtype. Returns φ of the last evaluation. Raises :class:`NonFiniteWeightError`."""
        w = self._check_w(w)
        if out.shape != (self.n,) or out.dtype not in (np.float32, np.float64):
            raise ValueError(f"out must be a float32/float64 array of shape ({self.n},)")
        bad, phi, nb = _kernels.reference_step(
            w, self.v32, self.v, self.index, self.xi, float(self.n), self.iterations, self.inv_zeta,
            self.sort_xi, scale, out, self.table, self._bp, self._g, self._xm, self._xi_prev, self.history)
        if bad >= 0:
            raise NonFiniteWeightError(bad)
        self.last_phi, self.last_nb = float(phi), int(nb)
        return self.last_phi

    def solve(self, w: np.ndarray) -> tuple[np.ndarray, ReferenceStep]:
        """One warm-started solve; returns β (float64, the float32 multipliers) and the step."""
        beta = np.empty(self.n)
        self.step(w, 1.0, beta)
        return beta, ReferenceStep(self.xi.copy(), float(self.last_phi), self.history.copy(),
                                   self._bp[:self.last_nb].copy(), self.table.copy())

    def beta(self) -> np.ndarray:
        """β of the last step (float64 copy of the float32 multipliers), from the kept index."""
        return _kernels.gather(self.table, self.index, np.empty(self.n))

    def off_grid_shares(self) -> tuple[float, float]:
        """Shares of the weights of the last step above v_{C−1} and below v_0."""
        counts = np.bincount(self.index, minlength=self.C + 1)
        return float(counts[self.C - 1] / self.n), float(counts[self.C] / self.n)

    def state(self) -> dict:
        return {"xi": self.xi.copy()}

    def load_state(self, state: dict) -> None:
        xi = np.asarray(state["xi"], dtype=np.float32)
        if xi.shape != (self.C,):
            raise ValueError(f"saved ξ has shape {xi.shape}, expected ({self.C},)")
        self.xi = xi.copy()
