"""The network registry: one entry per architecture the workspace trains, stores and decodes.

An entry says everything the rest of the package needs to know about a network:

* ``id`` — the name stored in every compressed file (the format's architecture id, a UTF-8 string)
  and in every checkpoint;
* ``model`` — the ``torch.nn.Module`` class that builds it, by its name in
  :mod:`metaq_utils.nn.networks` (this layer imports no torch; :func:`metaq_utils.nn.networks.build_model`
  resolves the name);
* ``n_params`` — the number of trainable scalars (weights *and* biases) it must have;
* ``preprocessing`` — the input it expects (:class:`~metaq_utils.coding.preprocessing.Preprocessing`),
  recorded in every checkpoint and file;
* ``description`` and ``source`` — what it is and where its definition comes from.

Adding a network is one :class:`Architecture` in :data:`REGISTRY` (and its module class in
:mod:`metaq_utils.nn.networks`); ``tests/test_networks.py`` checks every entry builds, has
``n_params`` parameters and round-trips through the file format. Names are never reused: files
already written name their architecture by ``id``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .preprocessing import MNIST_PREPROCESSING, Preprocessing

__all__ = ["Architecture", "REGISTRY", "architecture", "known_architectures", "preprocessing_for"]


@dataclass(frozen=True)
class Architecture:
    """One registered network (see the module docstring for each field)."""

    id: str
    model: str
    n_params: int
    preprocessing: Preprocessing
    description: str
    source: str

    def __post_init__(self) -> None:
        if not self.id or not self.id.isascii() or not self.id.replace("_", "").isalnum() or self.id != self.id.lower():
            raise ValueError(f"an architecture id is lower-case ASCII letters, digits and '_', got {self.id!r}")
        if self.n_params < 1:
            raise ValueError(f"n_params must be >= 1, got {self.n_params}")


REGISTRY: dict[str, Architecture] = {a.id: a for a in (
    Architecture(
        id="lenet5", model="LeNet5", n_params=44_426, preprocessing=MNIST_PREPROCESSING,
        description="LeNet-5 of the METaQ thesis: conv 1→6 5×5, tanh, avg-pool 2; conv 6→16 5×5, tanh, "
                    "avg-pool 2; fc 256→120, tanh; fc 120→84, tanh; fc 84→10",
        source="METaQ thesis §3 (spec §3); 156 + 2,416 + 30,840 + 10,164 + 850 parameters"),
    Architecture(
        id="lenet300100", model="LeNet300100", n_params=266_610, preprocessing=MNIST_PREPROCESSING,
        description="LeNet-300-100: fc 784→300, ReLU; fc 300→100, ReLU; fc 100→10",
        source="LeCun et al. 1998; the fully connected network of Deep Compression (Han et al. 2016)"),
    Architecture(
        id="lenet5caffe", model="LeNet5Caffe", n_params=431_080, preprocessing=MNIST_PREPROCESSING,
        description="LeNet-5-Caffe: conv 1→20 5×5, max-pool 2; conv 20→50 5×5, max-pool 2; fc 800→500, "
                    "ReLU; fc 500→10",
        source="Caffe examples/mnist/lenet.prototxt (the network of Deep Compression, soft weight-sharing and "
               "Bayesian Compression). Input: our MNIST standardisation, not Caffe's scale 1/256 (our variant; "
               "the file records it)"),
)}


def architecture(arch: str) -> Architecture:
    """The registry entry of ``arch``; ValueError naming the known ones for any other name."""
    try:
        return REGISTRY[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(REGISTRY)}") from None


def known_architectures() -> list[str]:
    """The registered ids, sorted."""
    return sorted(REGISTRY)


def preprocessing_for(arch: str) -> Preprocessing | None:
    """The registered preprocessing of ``arch``, or None for a name not in the registry (a file may
    name an architecture this version does not know; reading it must not fail for that alone)."""
    entry = REGISTRY.get(arch) if isinstance(arch, str) else None
    return None if entry is None else entry.preprocessing
