"""What a network expects as input: the preprocessing recorded with every architecture, in every
checkpoint and in every compressed file (format version 2), so that a decoded model can be used
without reading :mod:`metaq_utils.nn.data`.

The convention is one for the whole workspace: an *input image* has values in ``[0, 1]`` (pixel
/ 255), channels first; the network sees ``(x − mean_c) / std_c`` per channel ``c``.

NumPy only (the coding layer reads and writes it); :class:`metaq_utils.nn.networks.Normalize` is the
torch module that applies it. Which preprocessing each network expects is its entry in the registry,
:mod:`metaq_utils.coding.architectures`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocessing", "MNIST_MEAN", "MNIST_STD", "MNIST_PREPROCESSING"]

# The MNIST training-set pixel mean and standard deviation (of values in [0, 1]): the numbers
# metaq_utils.nn.data normalises with (it imports them from here).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Preprocessing:
    """``x ↦ (x − mean_c) / std_c`` per channel, for inputs described by ``input``."""

    input: str                   # what the input is, e.g. "MNIST 28x28 grayscale in [0,1]"
    mean: tuple[float, ...]      # per channel
    std: tuple[float, ...]       # per channel, > 0

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in np.atleast_1d(self.mean))
        std = tuple(float(s) for s in np.atleast_1d(self.std))
        if not mean or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel (got {len(mean)} and {len(std)})")
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
            raise ValueError(f"mean must be finite and std finite and > 0 (got {mean}, {std})")
        object.__setattr__(self, "input", str(self.input))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a batch of images ``x`` of shape (N, C, ...) in [0, 1] (NumPy, float32)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (N, {self.channels}, ...), got {x.shape}")
        shape = (1, self.channels) + (1,) * (x.ndim - 2)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.std, dtype=np.float32).reshape(shape)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """``{"input": str, "normalize": {"mean": [..], "std": [..]}}`` (JSON-safe, per channel)."""
        return {"input": self.input, "normalize": {"mean": list(self.mean), "std": list(self.std)}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        """The inverse of :meth:`to_dict` (a scalar mean/std is read as one channel); ValueError
        if the shape is wrong."""
        try:
            norm = d["normalize"]
            return cls(str(d.get("input", "")), norm["mean"], norm["std"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a preprocessing description: {d!r} ({type(e).__name__}: {e})") from None


MNIST_PREPROCESSING = Preprocessing("MNIST 28x28 grayscale in [0,1]", (MNIST_MEAN,), (MNIST_STD,))
