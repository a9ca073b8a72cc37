"""Post-training quantization (thesis §3, Table 7): replace every parameter by the centre of its
bucket on a grid of ``C_Q`` buckets over ``[w0 − r, w0 + r]``, sweep ``C_Q``, select one.

Selection rule (:func:`select_point`): among the swept points whose accuracy is at least
``reference_accuracy − tolerance``, the one with the lowest zero-order entropy (ties: fewer
buckets). The thesis swept ``C_Q ∈ [1, 1024]``; here ``C_Q ≥ 2`` (with one bucket every weight is
``w0``: a constant network, 9.8 % accuracy on MNIST).

Protocol (PROTOCOL.md): the sweep is scored on the **validation** split and the selection is made
there; every :class:`SweepPoint` says which split scored it (``evaluated_on``), and
:func:`select_point` refuses test-scored points unless called with ``select_on="test"`` (the
explicit, marked way). The test set is evaluated once, after selection, by the caller
(:func:`metaq_utils.pipeline.run_pipeline`, the ``quantize`` command).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from ..store.progress import tqdm

from ..core.grid import Grid
from ..core.params import flatten, parameter_tensors
from ..quant.quantization import dequantize, entropy_bits, quantize_indices
from .training import check_selection, evaluate

__all__ = ["SweepPoint", "quantize_model", "sweep_cq", "select_point", "model_vector", "load_vector",
           "check_clean_validation"]


@dataclass(frozen=True)
class SweepPoint:
    """One post-training quantization: C_Q, accuracy on the split named by ``evaluated_on``
    (``"validation"`` or ``"test"``), zero-order entropy (bits) of the quantized parameters,
    number of distinct values actually used, and the size in bits of the whole compressed file
    with the range coder (``None`` if the sweep was run without coding)."""
    C_Q: int
    accuracy: float
    entropy_bits: float
    used_buckets: int
    file_bits: int | None = None
    evaluated_on: str = "validation"

    def to_dict(self) -> dict:
        return asdict(self)


def model_vector(model: nn.Module) -> np.ndarray:
    """The flat parameter vector w (spec §1) as float64: :func:`metaq_utils.core.params.flatten`."""
    return flatten(model, np.float64)


def load_vector(model: nn.Module, w: np.ndarray) -> nn.Module:
    """Write the flat vector ``w`` into ``model``'s parameters (the tensors of :func:`model_vector`,
    in place) and return the model."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(w, dtype=np.float32)),
                                            parameter_tensors(model))
    return model


def quantize_model(model: nn.Module, grid: Grid) -> tuple[nn.Module, np.ndarray]:
    """A copy of ``model`` whose parameters are the bucket centres of ``grid``; also the bucket
    indices (the symbol stream that the codecs encode)."""
    idx = quantize_indices(model_vector(model), grid)
    q = copy.deepcopy(model)
    load_vector(q, dequantize(idx, grid))
    return q, idx


def sweep_cq(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cq_values: Iterable[int], *,
             evaluated_on: str, w0: float, r: float, progress: bool = True, arch: str | None = None,
             codec: str = "range") -> list[SweepPoint]:
    """Quantize ``model`` with every ``C_Q`` in ``cq_values`` and evaluate each on ``x, y``.

    ``evaluated_on`` (required) names the split ``x, y`` come from: ``"validation"`` (the
    protocol: ``data.val_x, data.val_y``) or ``"test"`` (only for an explicitly test-selected,
    marked result); every point records it. With ``arch``, each point is also written as a
    compressed file (in memory) with ``codec`` and its exact size recorded, so the sweep is an
    accuracy–bytes frontier."""
    from ..coding.fileformat import encode_compressed, metaq_group
    evaluated_on = check_selection(evaluated_on)
    w = model_vector(model)
    work = copy.deepcopy(model)
    points = []
    cqs = list(cq_values)
    for C_Q in tqdm(cqs, desc="C_Q sweep", disable=not progress, mininterval=1.0):
        grid = Grid(w0, r, int(C_Q))
        idx = quantize_indices(w, grid)
        load_vector(work, dequantize(idx, grid))
        acc = evaluate(work, x, y, batch_size=10_000)["accuracy"]
        bits = None
        if arch is not None:
            bits = 8 * len(encode_compressed(arch, [p.detach() for p in work.parameters()], metaq_group(grid, codec)))
        points.append(SweepPoint(int(C_Q), acc, entropy_bits(idx), int(np.unique(idx).size), bits, evaluated_on))
    return points


def select_point(points: Sequence[SweepPoint], reference_accuracy: float, tolerance: float = 0.0, *,
                 select_on: str = "validation") -> SweepPoint:
    """Lowest entropy among points with accuracy ≥ reference − tolerance (ties: smaller C_Q).

    ``reference_accuracy`` is the unquantized model's accuracy on the same split. Every point must
    have been scored on the ``select_on`` split: test-scored points are refused unless
    ``select_on="test"`` (and the caller marks its result test-selected). Raises ValueError if a
    point comes from another split or if no point qualifies."""
    select_on = check_selection(select_on)
    other = [p for p in points if p.evaluated_on != select_on]
    if other:
        hint = " (selecting on the test set needs select_on='test')" if other[0].evaluated_on == "test" else ""
        raise ValueError(f"select_point(select_on={select_on!r}) was given points scored on "
                         f"{other[0].evaluated_on!r} (C_Q = {other[0].C_Q}){hint}")
    ok = [p for p in points if p.accuracy >= reference_accuracy - tolerance - 1e-12]
    if not ok:
        best = max(points, key=lambda p: p.accuracy)
        raise ValueError(f"no C_Q reaches accuracy {reference_accuracy - tolerance:.4f} "
                         f"(best: {best.accuracy:.4f} at C_Q = {best.C_Q})")
    return min(ok, key=lambda p: (p.entropy_bits, p.C_Q))


def check_clean_validation(config: Mapping[str, Any], split: Mapping[str, Any] | None) -> None:
    """Raise ValueError unless a checkpoint (its ``config``) was trained with the validation split
    ``split`` held out: a checkpoint without a recorded split (a legacy run, trained on all 60,000
    training images) or with another split has seen the validation images, so selecting on them
    would be contaminated. Such checkpoints can only be selected on test (marked)."""
    if not split or not split.get("val_indices_sha256"):
        raise ValueError("the data has no validation split (load_mnist(val_size=0)?): cannot select on validation")
    saved = (config or {}).get("split") or {}
    if saved.get("val_indices_sha256") != split["val_indices_sha256"]:
        what = "no recorded split (a legacy run trained on all 60,000 training images)" if not saved \
            else f"another split ({saved.get('val_indices_sha256')})"
        raise ValueError(f"the checkpoint has {what}: its validation accuracy is contaminated; retrain it "
                         f"under the protocol, or select on test explicitly (select_on='test', marked)")
