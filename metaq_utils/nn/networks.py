"""The networks of the workspace: their ``nn.Module`` classes, built through the registry.

Which networks exist, their file-format ids, parameter counts and input preprocessing are one
registry, :data:`metaq_utils.coding.architectures.REGISTRY` (torch-free, so the file format reads it
too); this module holds the classes the registry names and :func:`build_model`, which checks each
built network against its entry.

* ``lenet5`` — LeNet-5 exactly as the METaQ thesis uses it (spec §3), 44,426 parameters;
* ``lenet300100`` — LeNet-300-100 (784→300→100→10, ReLU), 266,610 parameters;
* ``lenet5caffe`` — LeNet-5-Caffe (Caffe's ``examples/mnist/lenet.prototxt``), 431,080 parameters.

Every parameter (weights *and* biases) counts; the flat vector ``w`` of spec §1 is
``parameters_to_vector(model.parameters())`` (:func:`metaq_utils.core.params.flatten`).

:func:`model_from_compressed` with ``raw_input=True`` rebuilds a decoded model that applies the
file's recorded preprocessing itself (:class:`Normalize`): it takes images in [0, 1].
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..coding.architectures import REGISTRY, Architecture, architecture, preprocessing_for
from ..coding.preprocessing import Preprocessing

__all__ = ["LeNet5", "LeNet300100", "LeNet5Caffe", "REGISTRY", "Architecture", "architecture", "ARCHITECTURES",
           "build_model", "count_parameters", "parameter_shapes", "EXPECTED_PARAMETERS", "PREPROCESSING",
           "preprocessing_for", "Normalize", "with_preprocessing", "load_parameters", "model_from_compressed"]


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


class LeNet5Caffe(nn.Module):
    """LeNet-5-Caffe (Caffe ``examples/mnist/lenet.prototxt``): conv 1→20 5×5, max-pool 2 (stride 2);
    conv 20→50 5×5, max-pool 2; fc 800→500, ReLU; fc 500→10. 520 + 25,050 + 400,500 + 5,010 =
    431,080 parameters. Caffe's prototxt has no non-linearity after the convolutions (only the
    ``relu1`` after ``ip1``); this follows it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)     # 28 -> 24
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)    # 12 -> 8
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))                     # 24 -> 12
        x = self.pool(self.conv2(x))                     # 8 -> 4
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


def _model_class(entry: Architecture) -> Callable[[], nn.Module]:
    cls = getattr(sys.modules[__name__], entry.model, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"registry entry {entry.id!r} names {entry.model!r}, which is no nn.Module class of {__name__}")
    return cls


# Views of the registry, by id (kept for the callers that read one field).
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {k: _model_class(a) for k, a in REGISTRY.items()}
EXPECTED_PARAMETERS: dict[str, int] = {k: a.n_params for k, a in REGISTRY.items()}
PREPROCESSING: dict[str, Preprocessing] = {k: a.preprocessing for k, a in REGISTRY.items()}


def build_model(name: str) -> nn.Module:
    """Instantiate a registered architecture by id; ValueError for an unknown id, RuntimeError if
    the built network does not have the registry's parameter count."""
    entry = architecture(name)
    model = ARCHITECTURES[entry.id]()
    n = count_parameters(model)
    if n != entry.n_params:
        raise RuntimeError(f"{entry.model}() has {n:,} parameters, the registry says {entry.n_params:,} for {name!r}")
    return model


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
    file — or, for a version-1 file that records none, the architecture's (its registry entry)
    — in eval mode: it takes images in [0, 1] and needs nothing from :mod:`metaq_utils.nn.data`.
    """
    model = load_parameters(build_model(cm.arch), cm.tensors)
    if not raw_input:
        return model
    pre = getattr(cm, "preprocessing", None) or preprocessing_for(cm.arch)
    return with_preprocessing(model, pre).eval()
