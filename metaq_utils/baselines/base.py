"""What every baseline shares: its config type, its runner type, its one result type (and so one
shape of the ``result.json`` entries the notebooks read), the test evaluation of the decoded
network and the bias group. The encode → decode → bit-exact check is
:func:`metaq_utils.coding.fileformat.round_trip`, as for the pipeline. A constraint that must hold
after every optimizer step (masks, frozen or shared weights) is a regularizer's ``after_step``,
which :func:`metaq_utils.nn.training.train` calls.

The baselines (:mod:`.deep_compression`, :mod:`.inq`, :mod:`.ana`, :mod:`.lc_mix`) build on this
module and on the layers below the pipeline: networks, training, the file format, paths — never on
:mod:`metaq_utils.pipeline` or :mod:`metaq_utils.frontier`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch import nn

from ..coding.fileformat import GroupSpec
from ..nn.data import MNISTTensors
from ..nn.training import evaluate
from ..store.paths import resolve

__all__ = ["BaselineConfig", "BaselineMethod", "BaselineRun", "prunable", "weight_arrays",
           "bias_group_spec", "read_results", "stage_accuracy"]


class BaselineConfig:
    """``to_dict``/``from_dict`` of the baselines' frozen dataclass configs: JSON-safe (tuples become
    lists; ``__post_init__`` turns them back), unknown keys ignored on the way in."""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class BaselineMethod:
    """What every baseline runner holds (its config, the data, whether to show progress) and how it
    measures a model.

    PROTOCOL.md: every stage of a baseline (pruned, retrained, shared, quantized, ...) is scored on
    the **validation** split (:meth:`_accuracy`, history key ``val_accuracy``), so an experiment
    script that picks a quality, bit width or schedule from those numbers selects on validation.
    The test set is evaluated once per run, on the network decoded from the file
    (:meth:`_test_accuracy`), after every stage."""

    def __init__(self, config: Any, data: MNISTTensors, *, progress: bool = False) -> None:
        self.config = config
        self.data = data
        self.progress = progress

    def _accuracy(self, model: nn.Module) -> float:
        """Validation accuracy (what the stages are scored on); ValueError without a validation split."""
        if not getattr(self.data, "has_validation", False):
            raise ValueError("the baselines score their stages on the validation split; the data has none "
                             "(load_mnist() holds it out by default)")
        return evaluate(model, self.data.val_x, self.data.val_y)["accuracy"]

    def _test_accuracy(self, model: nn.Module) -> float:
        """Test accuracy: only for the network decoded from the file, once, after every stage."""
        return evaluate(model, self.data.test_x, self.data.test_y)["accuracy"]


@dataclass
class BaselineRun:
    """One compressed network: the decoded file's test accuracy, the file's exact size, history.

    The one result type of the baselines (Deep Compression's adds its density); ``to_json_dict``
    is the entry every ``runs/<method>/<run>/result.json`` holds. Its history rows score every
    stage on validation (``val_accuracy``); entries older than the protocol have ``accuracy``
    there, measured on test, and no ``selection`` (read them with :func:`stage_accuracy`)."""
    method: str
    arch: str
    config: dict[str, Any]
    n_params: int
    file_bits: int
    accuracy: float                     # test accuracy of the network decoded from the file (measured once)
    accuracy_before_coding: float       # validation accuracy of the network that was encoded (= val_accuracy:
                                        # the coding is lossless); test in entries older than the protocol
    history: list[dict[str, Any]]
    layers: list[dict[str, Any]]        # per group: tensors, mode, values, bits
    val_accuracy: float | None = None   # validation accuracy of the network decoded from the file
    selection: str = "validation"       # where the stages were scored (PROTOCOL.md)
    extra: dict[str, Any] = field(default_factory=dict)
    file_bytes: bytes = field(default=b"", repr=False)

    @property
    def bits_per_weight(self) -> float:
        return self.file_bits / self.n_params

    @property
    def compression_ratio(self) -> float:
        """32·n / file_bits."""
        return 32 * self.n_params / self.file_bits

    def to_json_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "file_bytes"}
        d.update(bits_per_weight=self.bits_per_weight, compression_ratio=self.compression_ratio)
        return json.loads(json.dumps(d))


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors (conv kernels and fc matrices, ndim ≥ 2) by name; biases are not pruned."""
    return {n: p for n, p in model.named_parameters() if p.ndim >= 2}


def weight_arrays(model: nn.Module) -> Iterator[tuple[int, str, np.ndarray]]:
    """(index in ``model.parameters()``, name, flat NumPy view) of every weight tensor (ndim ≥ 2),
    in parameter order: what the per-layer groups of a file are built from."""
    for i, (name, p) in enumerate(model.named_parameters()):
        if p.ndim >= 2:
            yield i, name, p.detach().numpy().ravel()


def bias_group_spec(model: nn.Module, biases: str, codec: str) -> GroupSpec | None:
    """All bias vectors (parameters with ndim < 2) as one group: ``'kmeans'`` one dense group on
    their distinct values (after sharing they are a k-means table), ``'float32'`` one float32 group.
    None when the model has no biases."""
    named = list(model.named_parameters())
    idx = tuple(i for i, (_, p) in enumerate(named) if p.ndim < 2)
    if not idx:
        return None
    if biases == "kmeans":
        b = np.concatenate([named[i][1].detach().numpy().ravel() for i in idx])
        return GroupSpec(tensors=idx, codebook=np.unique(b), mode="dense", codec=codec)
    if biases == "float32":
        return GroupSpec(tensors=idx, mode="float32")
    raise ValueError(f"biases must be 'kmeans' or 'float32', got {biases!r}")


def read_results(directories: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The ``result.json`` entry of every run under each directory (relative paths: from the
    repository root), in directory order, then by run folder name."""
    runs = []
    for directory in directories:
        root = resolve(directory, Path(directory))
        runs += [json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))]
    return runs


def stage_accuracy(row: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """(accuracy, split) of one history row of a baseline run: ``(val_accuracy, "validation")`` for
    runs under the protocol, ``(accuracy, "test")`` for entries older than it, ``(None, None)``
    for a row that scored nothing."""
    if row.get("val_accuracy") is not None:
        return float(row["val_accuracy"]), "validation"
    if row.get("accuracy") is not None:
        return float(row["accuracy"]), "test"
    return None, None
