"""The flat parameter vector ``w`` of spec §1: every trainable tensor of a network, flattened (C
order) and concatenated in ``model.parameters()`` order — the one flattener of the package.

NumPy only: PyTorch tensors and modules are handled by duck typing (``.detach()``,
``.parameters()``), so the maths core and the coding layer can use it without importing torch.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["to_numpy", "parameter_tensors", "flatten", "unflatten"]


def to_numpy(t) -> np.ndarray:
    """A NumPy view of a (CPU) torch tensor, detached; any array-like through ``np.asarray``."""
    if hasattr(t, "detach"):  # torch.Tensor
        return t.detach().cpu().numpy()
    return np.asarray(t)


def parameter_tensors(model_or_tensors) -> list:
    """The tensors that make up ``w``: a module's trainable parameters (``requires_grad``, in
    ``parameters()`` order, as :func:`metaq_utils.nn.networks.count_parameters` counts them), or the
    given sequence of tensors/arrays unchanged."""
    if callable(getattr(model_or_tensors, "parameters", None)):
        return [p for p in model_or_tensors.parameters() if p.requires_grad]
    return list(model_or_tensors)


def flatten(model_or_tensors: Iterable, dtype=np.float32) -> np.ndarray:
    """``w`` as one NumPy vector of ``dtype`` (float32 by default: the parameters' own values;
    float64 for the METaQ maths, exact; None keeps the parameters' own dtype). Accepts a module or
    a sequence of tensors/arrays."""
    parts = [np.asarray(to_numpy(t), dtype=dtype).ravel() for t in parameter_tensors(model_or_tensors)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def unflatten(flat: np.ndarray, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Split a flat vector back into arrays of the given shapes (views where possible)."""
    flat = np.asarray(flat)
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if sum(sizes) != flat.size:
        raise ValueError(f"flat vector has {flat.size} elements, shapes need {sum(sizes)}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start : start + size].reshape(tuple(shape)))
        start += size
    return out
