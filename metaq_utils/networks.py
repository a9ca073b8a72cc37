"""The networks of the workspace.

* ``lenet5`` — LeNet-5 exactly as the METaQ thesis uses it (spec §3): 28×28 input,
  conv 1→6 5×5 (no padding), tanh, avg-pool 2; conv 6→16 5×5, tanh, avg-pool 2;
  flatten 256; fc 256→120, tanh; fc 120→84, tanh; fc 84→10.  44,426 parameters
  (156 + 2,416 + 30,840 + 10,164 + 850).
* ``lenet300100`` — the fully connected LeNet-300-100 of the Deep Compression baseline
  (784→300→100→10, ReLU), 266,610 parameters.

Every parameter (weights *and* biases) counts; the flat vector ``w`` of spec §1 is
``parameters_to_vector(model.parameters())``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["LeNet5", "LeNet300100", "ARCHITECTURES", "build_model", "count_parameters",
           "parameter_shapes", "EXPECTED_PARAMETERS"]


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
