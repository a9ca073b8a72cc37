"""A plain, fast training loop with an extension point for gradient regularizers.

The loop keeps MNIST as in-memory tensors, draws shuffled batches from a seeded
``torch.Generator`` (augmentation batched on tensors, see :mod:`metaq_utils.nn.data`), evaluates on
the **validation** split after every epoch, and returns the metrics as data.

Protocol (PROTOCOL.md): the best epoch is chosen on validation (``val_accuracy``); the test set is
not evaluated per epoch. ``select_on="test"`` is the only way to select on the test set: it
evaluates test every epoch, and marks every row, checkpoint and result ``selection: "test"``
(the default mark is ``"validation"``). Every checkpoint's configuration and the
:class:`TrainResult` record the split (``{"val_size", "val_seed", "val_indices_sha256"}``).

Extension point: a :class:`Regularizer` is called after ``loss.backward()`` and before
``optimizer.step()``; it adds its own term to the parameters' ``.grad`` (this is where the METaQ
entropy term plugs in: ``+ λ(1−α)·β``). If it has an ``after_step``, that is called after every
``optimizer.step()`` (where the baselines re-impose their masks and shared values). It also reports
per-epoch metrics and has a state that is saved in checkpoints, so an interrupted run resumes
bit-for-bit.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from ..store.progress import tqdm

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .data import MNISTTensors, iterate_batches, normalize
from .networks import build_model

__all__ = ["TrainConfig", "Regularizer", "CompositeRegularizer", "FixedMasks", "StopRule", "TrainResult", "make_model", "make_optimizer",
           "evaluate", "train", "init_uniform_", "SELECTIONS", "check_selection", "is_test_metric"]

# Where a selection (best epoch, C_Q, λ, ...) is made; "test" only through an explicit option.
SELECTIONS = ("validation", "test")


def check_selection(select_on: str) -> str:
    """Return ``select_on`` if it is one of :data:`SELECTIONS`, else raise ValueError."""
    if select_on not in SELECTIONS:
        raise ValueError(f"select_on must be one of {SELECTIONS}, got {select_on!r}")
    return select_on


def is_test_metric(name: str) -> bool:
    """True for a metric measured on the test set (``test_accuracy``, ``test_loss``, ...)."""
    return name.startswith("test_") or name.startswith("test-")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run (saved in every checkpoint)."""
    arch: str = "lenet5"            # 'lenet5' | 'lenet300100'
    epochs: int = 10                # total number of epochs
    batch_size: int = 64
    optimizer: str = "adam"         # 'adam' | 'sgd'
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)   # adam only
    momentum: float = 0.9           # sgd only
    weight_decay: float = 0.0       # coupled L2 (added to the gradient by the optimizer)
    augment: bool = True            # random rotation ±10°, translation ≤ 10 %, fresh per image
    seed: int = 0                   # seeds initialisation, shuffling and augmentation
    init: str = "default"           # 'default' (PyTorch's) | 'uniform' (U[init_low, init_high])
    init_low: float = -1.224        # thesis: w0 − r = −0.11 − 1.114
    init_high: float = 1.004        # thesis: w0 + r
    eval_batch_size: int = 5000
    lr_schedule: str = "constant"   # 'constant' | 'cosine' (per step, from lr down to 0 at the last epoch)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1 (got {self.epochs}, {self.batch_size})")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.init not in ("default", "uniform"):
            raise ValueError(f"init must be 'default' or 'uniform', got {self.init!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Regularizer(Protocol):
    """What the training loop needs from a gradient regularizer (e.g. the METaQ term).

    ``after_step(model)`` is optional: when a regularizer has it, :func:`train` calls it after every
    ``optimizer.step()``, e.g. to re-impose a constraint that the optimizer's update (Adam's moments,
    weight decay) would otherwise move (pruning masks, frozen or shared weights)."""

    def after_backward(self, model: nn.Module) -> None:
        """Add the regularizer's (sub)gradient to ``p.grad`` of the model's parameters."""

    def after_step(self, model: nn.Module) -> None:
        """Optional: called after every ``optimizer.step()``."""

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """Extra metrics recorded at the end of every epoch (entropy, dual value, ...)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CompositeRegularizer:
    """Several regularizers applied in order (e.g. a fixed pruning mask and an entropy term)."""

    def __init__(self, *parts: Regularizer) -> None:
        self.parts = parts

    def after_backward(self, model: nn.Module) -> None:
        for part in self.parts:
            part.after_backward(model)

    def after_step(self, model: nn.Module) -> None:
        """The parts' ``after_step``, in order, for the parts that have one."""
        for part in self.parts:
            hook = getattr(part, "after_step", None)
            if hook is not None:
                hook(model)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in self.parts:
            out.update(part.epoch_metrics(model))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["parts"]) != len(self.parts):
            raise ValueError(f"composite regularizer state has {len(state['parts'])} parts, expected {len(self.parts)}")
        for part, s in zip(self.parts, state["parts"]):
            part.load_state_dict(s)


class FixedMasks:
    """Training-loop regularizer that keeps pruned weights at exactly 0 (Han 2015 §3).

    ``after_backward``: zero the gradients of pruned weights (called by :func:`train` before
    ``optimizer.step()``); ``after_step``: re-apply the mask (called by :func:`train` after every
    optimizer step). Deep Compression's retraining uses it as is; the headline recipe's gradual
    pruning (:class:`metaq_utils.recipes.prune_quantize.GradualPruning`) re-draws the masks."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = {n: m.to(torch.bool) for n, m in masks.items()}

    def after_backward(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks and p.grad is not None:
                p.grad.masked_fill_(~self.masks[name], 0.0)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks:
                p.masked_fill_(~self.masks[name], 0.0)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        params = dict(model.named_parameters())
        nonzero = sum(int((params[n] != 0).sum()) for n in self.masks)
        return {"density": nonzero / sum(params[n].numel() for n in self.masks)}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {n: m.to(torch.bool) for n, m in state["masks"].items()}


@dataclass(frozen=True)
class StopRule:
    """Abandon a run when, at the end of epoch ``epoch``, ``metric`` is below ``minimum`` or above
    ``maximum`` (the thesis' rules for hopeless runs, e.g. accuracy < 0.97 at epoch 5)."""
    epoch: int
    metric: str
    minimum: float | None = None
    maximum: float | None = None

    def triggered(self, row: dict[str, Any]) -> str | None:
        if row["epoch"] != self.epoch or self.metric not in row:
            return None
        x = row[self.metric]
        if self.minimum is not None and x < self.minimum:
            return f"{self.metric}={x:.6g} < {self.minimum} at epoch {self.epoch}"
        if self.maximum is not None and x > self.maximum:
            return f"{self.metric}={x:.6g} > {self.maximum} at epoch {self.epoch}"
        return None


@dataclass
class TrainResult:
    """What a run returns: one dict per epoch, the reason it stopped early (if it did), the best
    epoch (by ``best_metric``), where it was selected (``selection``: ``"validation"`` or
    ``"test"``) and the data split it used (``split``, with the validation indices' hash)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None
    best_epoch: int | None = None
    selection: str = "validation"
    split: dict[str, Any] | None = None
    best_metric: str | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def init_uniform_(model: nn.Module, low: float, high: float, generator: torch.Generator | None = None) -> None:
    """Initialise every parameter (weights and biases) uniformly in [low, high] (thesis §3)."""
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(low, high, generator=generator)


def make_model(config: TrainConfig) -> nn.Module:
    """Build ``config.arch`` with a seeded initialisation."""
    torch.manual_seed(config.seed)
    model = build_model(config.arch)
    if config.init == "uniform":
        init_uniform_(model, config.init_low, config.init_high)
    return model


def _lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return config.lr


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas),
                                weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 5000) -> dict[str, float]:
    """Accuracy (fraction in [0, 1]) and mean cross-entropy on images ``x`` in [0, 1]."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch_size):
        logits = model(normalize(x[i:i + batch_size]))
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return {"accuracy": correct / x.shape[0], "loss": loss / x.shape[0]}


def _training_state(optimizer, generator, epoch, history, regularizer, stopped_by, best) -> dict[str, Any]:
    return {"optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history,
            "regularizer": regularizer.state_dict() if regularizer is not None else None,
            "stopped_by": stopped_by, "best": best}


def train(model: nn.Module, data: MNISTTensors, config: TrainConfig, *,
          regularizer: Regularizer | None = None,
          stop_rules: Sequence[StopRule] = (),
          checkpoint_path: str | Path | None = None,
          resume: bool = False,
          best_path: str | Path | None = None,
          best_metric: str | None = None,
          select_on: str = "validation",
          epoch_callbacks: Iterable[Callable[[int, dict[str, Any]], None]] = (),
          loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs.

    * Every epoch the model is evaluated on ``data.val_x/val_y`` (row keys ``val_accuracy``,
      ``val_loss``); the test set is not looked at (PROTOCOL.md).
    * ``best_metric``: the row key whose maximum picks the best epoch; default ``"val_accuracy"``
      (``"test_accuracy"`` under ``select_on="test"``). A test metric (``test_*``), for the best
      epoch or in a stop rule, is refused unless ``select_on="test"``.
    * ``select_on="test"``: the explicit, marked way to select on the test set: the test set is
      evaluated every epoch (``test_accuracy``, ``test_loss``) and every row, checkpoint and the
      result carry ``selection: "test"``. Default ``"validation"``.
    * ``checkpoint_path``: the run's last state is saved there after every epoch (atomically);
      with ``resume=True`` and an existing file, training continues from it and ends with the
      same weights as an uninterrupted run (the configuration, split and selection must match).
    * ``best_path``: the model with the highest ``best_metric`` so far is saved there (e.g. in
      ``BestModelsBeforeQuantization/``) with its configuration (including ``split`` and
      ``selection``) and metrics.
    * ``stop_rules``: checked after every epoch; the reason is recorded in the result.
    * ``loss_fn(logits, xb, yb)``: the training loss of a batch (default: cross-entropy of the
      logits); e.g. :func:`metaq_utils.recipes.prune_quantize.distillation_loss`, which also sees the
      (augmented, normalised) inputs ``xb`` so that a teacher can be run on them.

    ``data`` without a validation split (``load_mnist(val_size=0)``, or built by hand) can still
    be trained on, but then nothing is evaluated per epoch and nothing can be selected: a
    ``best_path`` or a stop rule on an accuracy/loss metric raises ValueError (use
    ``select_on="test"`` for legacy, test-selected runs).
    """
    selection = check_selection(select_on)
    if best_metric is None:
        best_metric = "val_accuracy" if selection == "validation" else "test_accuracy"
    if selection == "validation":
        bad = [m for m in [best_metric, *(r.metric for r in stop_rules)] if is_test_metric(m)]
        if bad:
            raise ValueError(f"{bad[0]!r} is a test-set metric: selecting or stopping on the test set "
                             f"needs select_on='test' (which marks the results as test-selected)")
    has_val = bool(getattr(data, "has_validation", False))
    if selection == "validation" and not has_val:
        if best_path is not None or any(r.metric.startswith("val_") for r in stop_rules):
            raise ValueError("data has no validation split (load_mnist(val_size=0) or hand-built MNISTTensors): "
                             "cannot select a best epoch or apply validation stop rules; load the split "
                             "(load_mnist() default) or pass select_on='test' explicitly")
        warnings.warn("train(): data has no validation split; no per-epoch evaluation and no best epoch",
                      stacklevel=2)
    split = dict(getattr(data, "split", None) or {"val_size": 0, "val_seed": None, "val_indices_sha256": None})
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    history: list[dict[str, Any]] = []
    start_epoch, stopped_by, best = 0, None, {"epoch": None, "value": None}
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        ckpt = load_checkpoint(checkpoint_path, expected_arch=config.arch)
        if ckpt.training_state is None:
            raise CheckpointError(f"{checkpoint_path} has no training state to resume from")
        saved = TrainConfig.from_dict(ckpt.config.get("train", {}))
        if saved != config:
            raise CheckpointError(f"{checkpoint_path}: cannot resume, the configuration differs "
                                  f"(saved {saved}, given {config})")
        saved_split = ckpt.config.get("split") or {"val_size": 0, "val_seed": None, "val_indices_sha256": None}
        if saved_split.get("val_indices_sha256") != split.get("val_indices_sha256"):
            raise CheckpointError(f"{checkpoint_path}: cannot resume, the data split differs "
                                  f"(saved {saved_split}, given {split})")
        if ckpt.config.get("selection", "test") != selection:
            raise CheckpointError(f"{checkpoint_path}: cannot resume, it was selected on "
                                  f"{ckpt.config.get('selection', 'test')!r}, not {selection!r}")
        ts = ckpt.training_state
        model.load_state_dict(ckpt.state_dict)
        optimizer.load_state_dict(ts["optimizer"])
        generator.set_state(ts["generator"])
        torch.set_rng_state(ts["torch_rng"])
        if regularizer is not None and ts.get("regularizer") is not None:
            regularizer.load_state_dict(ts["regularizer"])
        start_epoch, history, stopped_by, best = ts["epoch"], list(ts["history"]), ts["stopped_by"], ts["best"]
        if stopped_by is not None:
            return TrainResult(history, stopped_by, best["epoch"], selection, split, best_metric)

    steps_per_epoch = -(-data.train_x.shape[0] // config.batch_size)
    after_step = getattr(regularizer, "after_step", None)      # optional (see Regularizer)
    model.train()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        total_loss, seen = 0.0, 0
        batches = iterate_batches(data.train_x, data.train_y, config.batch_size, generator,
                                  augment=config.augment)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}",
                   disable=not progress, leave=False, mininterval=1.0)
        for step, (xb, yb) in enumerate(bar, start=(epoch - 1) * steps_per_epoch):
            if config.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(config, step, config.epochs * steps_per_epoch)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, xb, yb)
            loss.backward()
            if regularizer is not None:
                regularizer.after_backward(model)          # extension point: adds to p.grad
            optimizer.step()
            if after_step is not None:
                after_step(model)                          # extension point: re-imposes a constraint
            total_loss += loss.item() * yb.shape[0]
            seen += yb.shape[0]
        train_seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total_loss / seen}
        if has_val:
            val = evaluate(model, data.val_x, data.val_y, config.eval_batch_size)
            row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        if selection == "test":          # only under the explicit option: marked below
            test = evaluate(model, data.test_x, data.test_y, config.eval_batch_size)
            row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        row["epoch_seconds"] = train_seconds
        row["selection"] = selection
        if regularizer is not None:
            row.update(regularizer.epoch_metrics(model))
        history.append(row)
        if progress:
            shown = ("epoch", "train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "epoch_seconds")
            extra = "".join(f" {k}={v:.6g}" for k, v in row.items()
                            if k not in shown and isinstance(v, (int, float)))
            accs = "".join(f"  {name} acc {100 * row[key]:.2f} %" for name, key in
                           (("val", "val_accuracy"), ("test", "test_accuracy")) if key in row)
            tqdm.write(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}{accs}"
                       f"  ({train_seconds:.1f} s){extra}")
        for rule in stop_rules:
            reason = rule.triggered(row)
            if reason is not None:
                stopped_by = reason
        ckpt_config = {"train": config.to_dict(), **_reg_config(regularizer), "split": split,
                       "selection": selection, "best_metric": best_metric}
        value = row.get(best_metric)
        if value is not None and (best["value"] is None or value > best["value"]):
            best = {"epoch": epoch, "value": value}
            if best_path is not None:
                save_checkpoint(best_path, model, config.arch, config=ckpt_config, metrics=row,
                                grid=_reg_grid(regularizer))
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, config.arch, config=ckpt_config,
                            metrics=row, grid=_reg_grid(regularizer),
                            training_state=_training_state(optimizer, generator, epoch, history,
                                                           regularizer, stopped_by, best))
        for cb in epoch_callbacks:
            cb(epoch, row)
        if stopped_by is not None:
            if progress:
                tqdm.write(f"stopping: {stopped_by}")
            break
    return TrainResult(history, stopped_by, best["epoch"], selection, split, best_metric)


def _reg_config(regularizer) -> dict[str, Any]:
    cfg = getattr(regularizer, "config_dict", None)
    return {"regularizer": cfg()} if callable(cfg) else {}


def _reg_grid(regularizer) -> dict[str, Any] | None:
    g = getattr(regularizer, "grid_dict", None)
    return g() if callable(g) else None
