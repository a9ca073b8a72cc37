"""The METaQ bucket grid (spec §1, thesis §1.1.1).

The range ``[w0 - r, w0 + r]`` is split into ``C`` equal buckets of width ``delta = 2r/C``;
bucket ``b`` covers ``[w0 - r + b*delta, w0 - r + (b+1)*delta)`` and is represented by its centre

    v_b = w0 - r + (2b + 1) * r / C,      b = 0..C-1   (ascending).

Two index maps are provided and must not be confused:

* :meth:`Grid.bucket_of` — the *quantisation* bucket of a weight (which bucket's cell contains it);
* :meth:`Grid.interval_of` — the *grid interval* ``[v_k, v_{k+1}]`` between two consecutive
  centres that contains the (clamped) weight, used by the x-subproblem (spec §2.1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["Grid", "as_finite_float64", "check_finite", "THESIS_GRID_W0", "THESIS_GRID_R", "THESIS_GRID_C",
           "thesis_grid"]

# The thesis' training range (spec §3): centre w0 = −0.11, half-width r = 1.114, i.e.
# [−1.224, 1.004], with C = 6 buckets during training. Write these names, not the numbers.
THESIS_GRID_W0 = -0.11
THESIS_GRID_R = 1.114
THESIS_GRID_C = 6


def check_finite(a: np.ndarray, name: str = "w") -> None:
    """ValueError if the array ``a`` holds NaN or ±inf, saying how many of each: the package's one
    finite-value check (weights, ξ, codebooks)."""
    finite = np.isfinite(a)
    if not finite.all():
        n_nan = int(np.count_nonzero(np.isnan(a)))
        n_inf = int(np.size(a) - np.count_nonzero(finite)) - n_nan
        raise ValueError(f"{name} contains NaN or inf ({n_nan + n_inf} non-finite value(s): "
                         f"{n_nan} NaN and {n_inf} infinite)")


def as_finite_float64(a: np.ndarray, name: str = "w") -> np.ndarray:
    """Return ``a`` as a float64 array (no copy if already float64); ValueError on NaN/inf."""
    arr = np.asarray(a, dtype=np.float64)
    check_finite(arr, name)
    return arr


@dataclass(frozen=True)
class Grid:
    """Uniform bucket grid on ``[w0 - r, w0 + r]`` with ``C`` buckets."""

    w0: float  # centre of the range
    r: float  # half-width of the range, > 0
    C: int  # number of buckets, >= 2

    def __post_init__(self) -> None:
        if isinstance(self.C, bool) or not isinstance(self.C, (int, np.integer)):
            raise TypeError(f"C must be an int, got {type(self.C).__name__}")
        if self.C < 2:
            raise ValueError(f"C must be >= 2, got {self.C}")
        if not math.isfinite(float(self.w0)):
            raise ValueError(f"w0 must be finite, got {self.w0}")
        if not math.isfinite(float(self.r)):
            raise ValueError(f"r must be finite, got {self.r}")
        if not float(self.r) > 0.0:
            raise ValueError(f"r must be > 0, got {self.r}")
        # normalise the field types (frozen: go through object.__setattr__)
        object.__setattr__(self, "w0", float(self.w0))
        object.__setattr__(self, "r", float(self.r))
        object.__setattr__(self, "C", int(self.C))

    @property
    def delta(self) -> float:
        """Bucket width Δ = 2r/C (also the spacing of the centres v)."""
        return 2.0 * self.r / self.C

    @property
    def lo(self) -> float:
        """Left end of the range, w0 − r."""
        return self.w0 - self.r

    @property
    def hi(self) -> float:
        """Right end of the range, w0 + r."""
        return self.w0 + self.r

    @cached_property
    def v(self) -> np.ndarray:
        """Bucket centres v_b = w0 − r + (2b+1)·r/C, ascending float64, read-only."""
        b = np.arange(self.C, dtype=np.float64)
        v = self.w0 - self.r + (2.0 * b + 1.0) * self.r / self.C
        v.setflags(write=False)
        return v

    def clamp(self, w: np.ndarray) -> np.ndarray:
        """Clip w to [v_0, v_{C−1}] (the feasible range of the x-subproblem), float64."""
        v = self.v
        return np.clip(as_finite_float64(w), v[0], v[-1])

    def interval_of(self, w: np.ndarray) -> np.ndarray:
        """Grid interval k ∈ [0, C−2] with v_k ≤ clamp(w) < v_{k+1} (k = C−2 for w ≥ v_{C−1}).

        Exact with respect to the stored ``v`` (a binary search, not floor arithmetic), so a
        weight equal to a centre v_k (k < C−1) lies in interval k, i.e. at its left end.
        """
        k = np.searchsorted(self.v, as_finite_float64(w), side="right") - 1
        return np.clip(k, 0, self.C - 2)

    def bucket_of(self, w: np.ndarray, name: str = "w") -> np.ndarray:
        """Quantisation bucket b = floor((w − lo)/Δ), clipped to [0, C−1] (int64 array, the shape
        of ``w``; a 0-d array for a scalar). Half-open buckets; ``w < lo`` → 0, ``w ≥ hi`` → C − 1.
        The package's one bucket map (:func:`metaq_utils.quant.quantization.quantize_indices` is it)."""
        u = np.floor((as_finite_float64(w, name) - self.lo) / self.delta)
        return np.asarray(np.clip(u, 0, self.C - 1)).astype(np.int64)  # asarray: keep 0-d arrays arrays

    def quantize(self, w: np.ndarray) -> np.ndarray:
        """Replace each weight by the centre of its bucket (float64)."""
        return self.v[self.bucket_of(w)]

    def with_C(self, C: int) -> "Grid":
        """The same range ``[w0 − r, w0 + r]`` split into ``C`` buckets."""
        return Grid(self.w0, self.r, C)

    # -- serialisation: the one shape a grid has in checkpoints, configs and JSON ----------------
    def to_dict(self) -> dict[str, Any]:
        """``{"w0": float, "r": float, "C": int}`` (JSON-safe; what checkpoints store)."""
        return {"w0": self.w0, "r": self.r, "C": self.C}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Grid":
        """The inverse of :meth:`to_dict`, validated: exactly the keys ``w0``, ``r``, ``C``, numbers
        (not strings or booleans), ``C`` an integer (an integral float such as 6.0 is accepted),
        and the checks of the constructor (finite, r > 0, C ≥ 2). ``ValueError`` otherwise."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a grid must be a mapping with keys w0, r, C, got {type(d).__name__}")
        keys = set(d)
        if keys != {"w0", "r", "C"}:
            missing, extra = sorted({"w0", "r", "C"} - keys), sorted(map(str, keys - {"w0", "r", "C"}))
            raise ValueError(f"a grid has exactly the keys w0, r, C (missing {missing}, unexpected {extra})")
        for k in ("w0", "r", "C"):
            if isinstance(d[k], (bool, np.bool_)) or not isinstance(d[k], (int, float, np.integer, np.floating)):
                raise ValueError(f"grid {k} must be a number, got {d[k]!r}")
        C = d["C"]
        if not isinstance(C, (int, np.integer)):
            if not (math.isfinite(C) and float(C).is_integer()):
                raise ValueError(f"grid C must be an integer, got {C!r}")
            C = int(C)
        return cls(float(d["w0"]), float(d["r"]), int(C))


def thesis_grid(C: int = THESIS_GRID_C) -> Grid:
    """The thesis' range ``[−0.11 − 1.114, −0.11 + 1.114]`` with ``C`` buckets (6: the training grid)."""
    return Grid(THESIS_GRID_W0, THESIS_GRID_R, C)
