"""The post-training range rule: which ``[w0 − r, w0 + r]`` a trained model is quantized on.

One rule, for every caller (the CLI's ``quantize`` and ``compress``, and whoever quantizes a
checkpoint after training):

1. explicit values (``w0=`` / ``r=``, e.g. the ``--w0`` / ``--r`` flags) win, each on its own;
2. otherwise the range of the grid the model was **trained on**, read from the checkpoint (its
   ``grid``), or from the METaQ configuration / :class:`~metaq_utils.core.grid.Grid` given instead;
3. only when there is no grid at all (plain training, no METaQ term) the thesis range
   (:func:`metaq_utils.core.grid.thesis_grid`) — and :attr:`QuantRange.source` says so, for the output.

The number of buckets ``C_Q`` is the caller's (a sweep, a flag, or the checkpoint's own ``C``).
NumPy only: a checkpoint is read by duck typing (its ``grid`` attribute), torch is not imported.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metaq_utils.core.grid import THESIS_GRID_R, THESIS_GRID_W0, Grid

__all__ = ["QuantRange", "posttraining_range", "posttraining_grid", "training_grid_of"]

THESIS_FALLBACK = "the thesis range (no training grid recorded: plain training)"


@dataclass(frozen=True)
class QuantRange:
    """A quantization range and where it came from (printed beside every result)."""

    w0: float
    r: float
    source: str  # e.g. "the checkpoint's training grid", THESIS_FALLBACK, "--w0/--r"

    def grid(self, C: int) -> Grid:
        """The range split into ``C`` buckets."""
        return Grid(self.w0, self.r, C)

    def describe(self) -> str:
        """One line for the output: the range and its origin."""
        return (f"range [{self.w0 - self.r:.6g}, {self.w0 + self.r:.6g}] (w0 = {self.w0:g}, r = {self.r:g}): "
                f"{self.source}")


def training_grid_of(source: Any) -> Grid | None:
    """The grid a model was trained on, from what is given, or None (plain training).

    ``source``: a checkpoint (anything with a ``grid`` attribute: a ``{"w0", "r", "C"}`` dict or
    None, as :class:`metaq_utils.nn.checkpoints.Checkpoint` holds), a METaQ configuration (its
    ``grid`` property), a :class:`Grid`, a grid dict, or None. A malformed grid raises ValueError.
    """
    if source is None or isinstance(source, Grid):
        return source
    if not isinstance(source, Mapping) and hasattr(source, "grid"):
        source = source.grid
        if source is None or isinstance(source, Grid):
            return source
    if isinstance(source, Mapping):
        return Grid.from_dict(source)
    raise TypeError(f"cannot read a training grid from {type(source).__name__}")


def posttraining_range(source: Any, *, w0: float | None = None, r: float | None = None) -> QuantRange:
    """The post-training range for a model (see the module docstring for the rule)."""
    trained = training_grid_of(source)
    if trained is not None:
        base, origin = (trained.w0, trained.r), "the training grid recorded with the model"
    else:
        base, origin = (THESIS_GRID_W0, THESIS_GRID_R), THESIS_FALLBACK
    if w0 is None and r is None:
        return QuantRange(base[0], base[1], origin)
    given = " and ".join(k for k, x in (("w0", w0), ("r", r)) if x is not None)
    rest = "" if w0 is not None and r is not None else f"; otherwise {origin}"
    rng = QuantRange(base[0] if w0 is None else float(w0), base[1] if r is None else float(r),
                     f"{given} given explicitly{rest}")
    rng.grid(2)  # validate (finite, r > 0) now, with the range's own message
    return rng


def posttraining_grid(source: Any, C_Q: int, *, w0: float | None = None, r: float | None = None) -> Grid:
    """``posttraining_range(source, w0=w0, r=r).grid(C_Q)``: the grid to quantize on with C_Q buckets."""
    return posttraining_range(source, w0=w0, r=r).grid(C_Q)
