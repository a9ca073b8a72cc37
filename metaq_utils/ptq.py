"""Post-training quantization (thesis §3, Table 7): replace every parameter by the centre of its
bucket on a grid of ``C_Q`` buckets over ``[w0 − r, w0 + r]``, sweep ``C_Q``, select one.

Selection rule (:func:`select_point`): among the swept points whose test accuracy is at least
``reference_accuracy − tolerance``, the one with the lowest zero-order entropy (ties: fewer
buckets). The thesis swept ``C_Q ∈ [1, 1024]``; here ``C_Q ≥ 2`` (with one bucket every weight is
``w0``: a constant network, 9.8 % accuracy on MNIST).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .grid import Grid
from .quantization import dequantize, entropy_bits, quantize_indices
from .training import evaluate

__all__ = ["SweepPoint", "quantize_model", "sweep_cq", "select_point", "model_vector", "load_vector"]


@dataclass(frozen=True)
class SweepPoint:
    """One post-training quantization: C_Q, test accuracy, zero-order entropy (bits) of the
    quantized parameters, number of distinct values actually used, and the size in bits of the
    whole compressed file with the range coder (``None`` if the sweep was run without coding)."""
    C_Q: int
    accuracy: float
    entropy_bits: float
    used_buckets: int
    file_bits: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_vector(model: nn.Module) -> np.ndarray:
    """The flat parameter vector w (spec §1) as float64."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().double().numpy()


def load_vector(model: nn.Module, w: np.ndarray) -> nn.Module:
    """Write the flat vector ``w`` into ``model``'s parameters (in place) and return the model."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(w, dtype=np.float32)), model.parameters())
    return model


def quantize_model(model: nn.Module, grid: Grid) -> tuple[nn.Module, np.ndarray]:
    """A copy of ``model`` whose parameters are the bucket centres of ``grid``; also the bucket
    indices (the symbol stream that the codecs encode)."""
    idx = quantize_indices(model_vector(model), grid)
    q = copy.deepcopy(model)
    load_vector(q, dequantize(idx, grid))
    return q, idx


def sweep_cq(model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, cq_values: Iterable[int], *,
             w0: float, r: float, progress: bool = True, arch: str | None = None,
             codec: str = "range") -> list[SweepPoint]:
    """Quantize ``model`` with every ``C_Q`` in ``cq_values`` and evaluate each on the test set.
    With ``arch``, each point is also written as a compressed file (in memory) with ``codec``
    and its exact size recorded, so the sweep is an accuracy–bytes frontier."""
    from .fileformat import encode_compressed, metaq_group
    w = model_vector(model)
    work = copy.deepcopy(model)
    points = []
    cqs = list(cq_values)
    for C_Q in tqdm(cqs, desc="C_Q sweep", disable=not progress, mininterval=1.0):
        grid = Grid(w0, r, int(C_Q))
        idx = quantize_indices(w, grid)
        load_vector(work, dequantize(idx, grid))
        acc = evaluate(work, test_x, test_y, batch_size=10_000)["accuracy"]
        bits = None
        if arch is not None:
            bits = 8 * len(encode_compressed(arch, [p.detach() for p in work.parameters()], metaq_group(grid, codec)))
        points.append(SweepPoint(int(C_Q), acc, entropy_bits(idx), int(np.unique(idx).size), bits))
    return points


def select_point(points: Sequence[SweepPoint], reference_accuracy: float, tolerance: float = 0.0) -> SweepPoint:
    """Lowest entropy among points with accuracy ≥ reference − tolerance (ties: smaller C_Q).

    Raises ValueError if no point qualifies."""
    ok = [p for p in points if p.accuracy >= reference_accuracy - tolerance - 1e-12]
    if not ok:
        best = max(points, key=lambda p: p.accuracy)
        raise ValueError(f"no C_Q reaches accuracy {reference_accuracy - tolerance:.4f} "
                         f"(best: {best.accuracy:.4f} at C_Q = {best.C_Q})")
    return min(ok, key=lambda p: (p.entropy_bits, p.C_Q))
