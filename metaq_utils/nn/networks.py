"""The networks of the workspace.

* ``lenet5`` — LeNet-5 exactly as the METaQ thesis uses it (spec §3): 28×28 input,
  conv 1→6 5×5 (no padding), tanh, avg-pool 2; conv 6→16 5×5, tanh, avg-pool 2;
  flatten 256; fc 256→120, tanh; fc 120→84, tanh; fc 84→10.  44,426 parameters
  (156 + 2,416 + 30,840 + 10,164 + 850).
* ``lenet300100`` — the fully connected LeNet-300-100 of the Deep Compression baseline
  (784→300→100→10, ReLU), 266,610 parameters.

Every parameter (weights *and* biases) counts; the flat vector ``w`` of spec §1 is
``parameters_to_vector(model.parameters())`` (:func:`metaq_utils.core.params.flatten`).

Both networks take MNIST images normalised with the training set's mean and std: the input
preprocessing of each architecture is :data:`PREPROCESSING` (from
:mod:`metaq_utils.coding.preprocessing`, torch-free so the file format can record it too), stored in
every checkpoint and compressed file. :func:`model_from_compressed` with ``raw_input=True``
rebuilds a decoded model that applies it itself (:class:`Normalize`): it takes images in [0, 1].
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..coding.preprocessing import ARCH_PREPROCESSING, Preprocessing, preprocessing_for

__all__ = ["LeNet5", "LeNet300100", "ARCHITECTURES", "build_model", "count_parameters",
           "parameter_shapes", "EXPECTED_PARAMETERS", "PREPROCESSING", "preprocessing_for", "Normalize",
           "with_preprocessing", "load_parameters", "model_from_compressed"]


class LeNet5(nn.Module):
    """LeNet-5 with tanh and average pooling (spec §3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)      # 28 -> 24
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)     # 12 -> 8
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.tanh(self.conv1(x)))         # 24 -> 12
        x = self.pool(torch.tanh(self.conv2(x)))         # 8 -> 4
        x = torch.flatten(x, 1)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


class LeNet300100(nn.Module):
    """LeNet-300-100: 784 → 300 → 100 → 10 with ReLU (Deep Compression baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "lenet5": LeNet5,
    "lenet300100": LeNet300100,
}

EXPECTED_PARAMETERS = {"lenet5": 44_426, "lenet300100": 266_610}

# The input each architecture expects: {"input": "MNIST 28x28 grayscale in [0,1]", "normalize":
# {"mean": [0.1307], "std": [0.3081]}} for both (Preprocessing.to_dict()).
PREPROCESSING: dict[str, Preprocessing] = ARCH_PREPROCESSING


def build_model(name: str) -> nn.Module:
    """Instantiate an architecture by name (``'lenet5'`` or ``'lenet300100'``)."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None
    return factory()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (weights and biases): the n of spec §1."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each parameter of architecture ``name`` in ``model.parameters()`` order."""
    return [(k, tuple(p.shape)) for k, p in build_model(name).named_parameters()]


class Normalize(nn.Module):
    """``(x − mean_c) / std_c`` per channel, on float32 images (N, C, ...) in [0, 1]: the same
    float32 arithmetic as :func:`metaq_utils.nn.data.normalize`, so the logits are identical."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        shape = (1, preprocessing.channels, 1, 1)
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def with_preprocessing(net: nn.Module, preprocessing: Preprocessing | None) -> nn.Module:
    """``nn.Sequential(Normalize(preprocessing), net)``: a model that takes raw images in [0, 1]
    (``net`` itself when there is no preprocessing)."""
    return net if preprocessing is None else nn.Sequential(Normalize(preprocessing), net)


def load_parameters(model: nn.Module, tensors: Sequence) -> nn.Module:
    """Copy ``tensors`` (arrays or tensors, in ``model.parameters()`` order) into ``model``'s
    parameters, in place; ValueError on a count or shape mismatch. Returns the model."""
    params = list(model.parameters())
    if len(params) != len(tensors):
        raise ValueError(f"the model has {len(params)} parameters, {len(tensors)} tensors given")
    with torch.no_grad():
        for p, t in zip(params, tensors):
            if tuple(p.shape) != tuple(t.shape):
                raise ValueError(f"shape mismatch: {tuple(p.shape)} vs {tuple(t.shape)} in the file")
            p.copy_(torch.as_tensor(np.asarray(t, dtype=np.float32)))
    return model


def model_from_compressed(cm, *, raw_input: bool = False) -> nn.Module:
    """Rebuild the architecture of a decoded file (:class:`metaq_utils.coding.fileformat.CompressedModel`)
    and load its tensors.

    ``raw_input=False``: the bare network, fed normalised images like during training.
    ``raw_input=True``: the network behind :class:`Normalize` with the preprocessing recorded in the
    file — or, for a version-1 file that records none, the architecture's (:data:`PREPROCESSING`)
    — in eval mode: it takes images in [0, 1] and needs nothing from :mod:`metaq_utils.nn.data`.
    """
    model = load_parameters(build_model(cm.arch), cm.tensors)
    if not raw_input:
        return model
    pre = getattr(cm, "preprocessing", None) or preprocessing_for(cm.arch)
    return with_preprocessing(model, pre).eval()
