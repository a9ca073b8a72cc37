"""Incremental Network Quantization (Zhou, Yao, Guo, Xu & Chen, ICLR 2017) on our networks,
measured with our compressed file format; and the encoding helpers shared by the INQ, ANA
(:mod:`.ana`) and LC-mix (:mod:`.lc_mix`) baselines.

The paper's steps, each a function or a method of :class:`INQ`:

1. ``pow2_levels``   the quantized set of a layer (INQ eq. 2–4): with ``s = max |W_l|`` of the
                     *pretrained* layer, ``n1 = floor(log2(4s/3))`` and ``n2 = n1 + 1 − 2^(b−2)``
                     for a bit width ``b`` (one bit for zero), ``P_l = {0, ±2^n2, …, ±2^n1}``:
                     ``2^(b−1) + 1`` values (``b = 2`` is ternary ``{0, ±2^n1}``).
2. ``partition``     weight partition (INQ §2.2, the pruning-inspired strategy): in every layer the
                     not-yet-quantized weights of *largest* magnitude are quantized first, so that
                     after step i the quantized fraction of every layer is ``fractions[i]``
                     (cumulative, e.g. 0.5, 0.75, 0.875, 1.0 as in the paper).
3. ``project_pow2``  group-wise quantization (INQ eq. 4): ``β·sgn(W)`` if ``(α+β)/2 ≤ |W| < 3β/2``
                     (α, β adjacent in the sorted non-negative part of P_l), else 0 — nearest level,
                     ties to the larger magnitude.
4. ``retrain``       re-training (INQ eq. 5–6): the quantized weights are frozen (their gradient is
                     zeroed before the optimizer step *and* their value re-written after every step,
                     as Adam's moments would otherwise move them), the others and the biases train
                     for ``epochs_per_step`` epochs. Steps 2–4 repeat for every fraction; after the
                     last one (1.0) every weight is on its layer's grid and nothing is retrained.
5. ``encode``        one group per weight tensor with the layer's powers-of-two table as an explicit
                     float32 codebook (exact: powers of two are float32 values), stored ``dense`` or
                     ``sparse`` (non-zeros only), whichever makes the smaller file, range codec.

Biases (the paper quantizes weights only): with ``biases='kmeans'`` (default, as the Deep
Compression baseline) all bias vectors are replaced after training by a shared k-means table of
``2**bias_bits`` values and stored as one dense group; with ``'float32'`` they are stored raw.
Either way they are in the file and in its size. The reported accuracy is that of the network
decoded from the file (checked bit-for-bit equal to the network that was encoded). Every stage is
scored on the validation split (history key ``val_accuracy``, PROTOCOL.md); the test set is
evaluated once, on the decoded network.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..coding.fileformat import GroupSpec, encode_compressed, round_trip
from ..nn.data import MNISTTensors
from ..nn.networks import count_parameters, model_from_compressed
from ..nn.training import TrainConfig, evaluate, train
from .base import (BaselineConfig, BaselineMethod, BaselineRun, bias_group_spec,
                   prunable, read_results, stage_accuracy, weight_arrays)
from .deep_compression import kmeans_1d

__all__ = ["INQConfig", "INQ", "FrozenWeights", "BaselineRun", "pow2_levels", "project_pow2", "partition",
           "quantize_biases", "layer_group_specs", "encode_and_decode", "on_levels", "read_baseline_runs",
           "schedule_of", "format_baseline_runs"]


# ------------------------------------------------------------------------------------------------
# 1, 3. the powers-of-two set and the projection onto it


def pow2_levels(max_abs: float, bits: int) -> np.ndarray:
    """``P_l`` of INQ eq. 2–3, sorted ascending, float32 (zero included): ``2^(bits−1) + 1`` values."""
    if bits < 2:
        raise ValueError(f"INQ needs bits >= 2 (one bit for zero), got {bits}")
    if not max_abs > 0:
        raise ValueError(f"the layer's max |w| must be > 0, got {max_abs}")
    n1 = math.floor(math.log2(4.0 * max_abs / 3.0))
    n2 = n1 + 1 - 2 ** (bits - 2)
    pos = np.array([2.0 ** k for k in range(n2, n1 + 1)], dtype=np.float32)
    return np.concatenate([-pos[::-1], [0.0], pos]).astype(np.float32)


def project_pow2(w: np.ndarray | torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """INQ eq. 4: each weight to the nearest value of ``levels`` (a symmetric set containing 0),
    ties to the larger magnitude; float32, same shape (weights beyond the largest level get it)."""
    a = np.abs(np.asarray(w.detach().numpy() if hasattr(w, "detach") else w, dtype=np.float64))
    pos = np.sort(np.asarray(levels, dtype=np.float64)[np.asarray(levels) > 0])
    nonneg = np.concatenate([[0.0], pos])
    mids = (nonneg[:-1] + nonneg[1:]) / 2                 # (α+β)/2
    mag = nonneg[np.searchsorted(mids, a, side="right")]  # a ≥ (α+β)/2 → β
    sign = np.sign(np.asarray(w.detach().numpy() if hasattr(w, "detach") else w, dtype=np.float64))
    return (sign * mag).astype(np.float32) + np.float32(0.0)   # + 0.0: no −0.0


def on_levels(w: torch.Tensor | np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Boolean array: which weights are exactly one of ``levels``."""
    arr = np.asarray(w.detach().numpy() if hasattr(w, "detach") else w, dtype=np.float32)
    return np.isin(arr, np.asarray(levels, dtype=np.float32))


# ------------------------------------------------------------------------------------------------
# 2. the partition


def partition(w: torch.Tensor, frozen: torch.Tensor, fraction: float) -> torch.Tensor:
    """The new frozen mask: ``frozen`` plus the largest-|w| unfrozen weights, so that
    ``round(fraction · n)`` weights of the layer are frozen (never fewer than already are)."""
    n = w.numel()
    target = max(int(frozen.sum()), min(n, int(round(fraction * n))))
    new = frozen.clone().reshape(-1)
    extra = target - int(new.sum())
    if extra > 0:
        score = w.detach().abs().reshape(-1).clone()
        score[new] = -1.0                                  # already frozen: never chosen again
        idx = torch.argsort(score, descending=True, stable=True)[:extra]
        new[idx] = True
    return new.view_as(frozen)


class FrozenWeights:
    """Training-loop regularizer that keeps the quantized weights fixed at their grid values.

    ``after_backward``: zero their gradients (before ``optimizer.step()``); ``after_step``: re-write
    their values (called by :func:`train` after every step)."""

    def __init__(self, masks: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]) -> None:
        self.masks = {n: m.to(torch.bool) for n, m in masks.items()}
        self.values = {n: v.detach().clone() for n, v in values.items()}

    def after_backward(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks and p.grad is not None:
                p.grad.masked_fill_(self.masks[name], 0.0)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.masks:
                p.copy_(torch.where(self.masks[name], self.values[name], p))

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        frozen = sum(int(m.sum()) for m in self.masks.values())
        return {"frozen_fraction": frozen / max(1, sum(m.numel() for m in self.masks.values()))}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks), "values": dict(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {n: m.to(torch.bool) for n, m in state["masks"].items()}
        self.values = dict(state["values"])


# ------------------------------------------------------------------------------------------------
# 5. encoding, shared by INQ, ANA and LC-mix


@torch.no_grad()
def quantize_biases(model: nn.Module, bits: int = 5) -> np.ndarray:
    """Replace all bias vectors (parameters with ndim < 2) by one shared k-means table of at most
    ``2**bits`` values (linear init, Deep Compression §3.2); returns the table (float32)."""
    params = [p for p in model.parameters() if p.ndim < 2]
    b = torch.cat([p.reshape(-1) for p in params]).numpy().astype(np.float64)
    centroids, labels = kmeans_1d(b, 2 ** bits, "linear")
    values = torch.from_numpy(centroids.astype(np.float32))[torch.from_numpy(labels)]
    start = 0
    for p in params:
        p.copy_(values[start:start + p.numel()].view_as(p))
        start += p.numel()
    return centroids.astype(np.float32)


def layer_group_specs(model: nn.Module, tables: Mapping[str, np.ndarray], *, codec: str = "range",
                      biases: str = "kmeans", arch: str = "probe") -> list[GroupSpec]:
    """One group per weight tensor in ``tables`` (its values must all be in the table; ``'dense'``
    or ``'sparse'`` per tensor, whichever is smaller; the sparse table drops 0), weight tensors not
    in ``tables`` stored exactly with their distinct values as table (sparse if it has zeros and is
    smaller), and the biases as one dense group on their distinct values (``'kmeans'``: after
    :func:`quantize_biases`) or one float32 group."""
    specs = []
    for i, name, w in weight_arrays(model):
        table = np.asarray(tables[name], np.float32) if name in tables else np.unique(w)
        if not on_levels(w, table).all():
            raise ValueError(f"{name}: some weights are not on the given table")
        candidates = [GroupSpec(tensors=(i,), codebook=table, mode="dense", codec=codec)]
        nz = table[table != 0]
        if (w == 0).any() and nz.size:
            for gap in (2 ** k for k in range(1, 11)):
                candidates.append(GroupSpec(tensors=(i,), codebook=nz, mode="sparse", codec=codec,
                                            index_codec=codec, max_gap=gap))
        sizes = [len(encode_compressed(arch, [w], [GroupSpec(tensors=(0,), codebook=c.codebook, mode=c.mode,
                                                               codec=c.codec, index_codec=c.index_codec,
                                                               max_gap=c.max_gap)]))
                 for c in candidates]
        specs.append(candidates[int(np.argmin(sizes))])
    bias = bias_group_spec(model, biases, codec)
    return specs if bias is None else specs + [bias]


def encode_and_decode(model: nn.Module, arch: str, tables: Mapping[str, np.ndarray], data: MNISTTensors | None, *,
                      codec: str = "range", biases: str = "kmeans"
                      ) -> tuple[bytes, nn.Module, list[dict], dict[str, float] | None]:
    """Encode ``model`` (its weights already on ``tables``), decode the file, check every tensor is
    bit-for-bit the encoded one, and evaluate the decoded network on ``data``'s validation split
    and, once, on its test set. Returns (file bytes, decoded model, per-group layer rows,
    ``{"val_accuracy", "test_accuracy"}`` or None without data; ``val_accuracy`` is None when the
    data has no validation split)."""
    specs = layer_group_specs(model, tables, codec=codec, biases=biases, arch=arch)
    names = [n for n, _ in model.named_parameters()]
    rt = round_trip(arch, [p.detach() for p in model.parameters()], specs).check(names)
    blob, cm = rt.data, rt.decoded
    decoded = model_from_compressed(cm)
    layers = [{"tensors": [names[i] for i in g.tensors], "mode": g.mode,
               "values": None if g.codebook is None else int(np.asarray(g.codebook).size),
               "nonzero": int(sum(int(np.count_nonzero(cm.tensors[i])) for i in g.tensors)),
               "n": int(sum(cm.tensors[i].size for i in g.tensors)), "max_gap": g.max_gap,
               "group_bits": 8 * g.group_bytes} for g in cm.groups]
    accs = None
    if data is not None:
        val = evaluate(decoded, data.val_x, data.val_y)["accuracy"] if getattr(data, "has_validation", False) else None
        accs = {"val_accuracy": val, "test_accuracy": evaluate(decoded, data.test_x, data.test_y)["accuracy"]}
    return blob, decoded, layers, accs


# ------------------------------------------------------------------------------------------------
# the algorithm


@dataclass(frozen=True)
class INQConfig(BaselineConfig):
    """Knobs of INQ (saved with every run). The schedule is the pair (fractions, epochs_per_step)."""
    fractions: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)   # cumulative quantized fraction after each step
    epochs_per_step: int = 1            # re-training epochs after each step but the last
    bits: int = 5                       # b: 2^(b-1) non-zero powers of two + zero (paper: 5)
    lr: float = 2e-4                    # Adam, cosine decay to 0 within each re-training step
    weight_decay: float = 0.0           # coupled L2 during re-training
    batch_size: int = 64
    augment: bool = False
    biases: str = "kmeans"              # 'kmeans' (one shared table, after training) | 'float32'
    bias_bits: int = 5
    codec: str = "range"
    seed: int = 0

    def __post_init__(self) -> None:
        f = tuple(float(x) for x in self.fractions)
        if not f or any(not 0 < x <= 1 for x in f) or any(b <= a for a, b in zip(f, f[1:])) or f[-1] != 1.0:
            raise ValueError(f"fractions must increase strictly in (0, 1] and end at 1.0, got {self.fractions}")
        if self.bits < 2 or self.epochs_per_step < 0:
            raise ValueError(f"need bits >= 2 and epochs_per_step >= 0 (got {self.bits}, {self.epochs_per_step})")
        object.__setattr__(self, "fractions", f)


class INQ(BaselineMethod):
    """INQ on one dataset: :meth:`levels` once, then per fraction :meth:`quantize_step` and
    :meth:`retrain`, then :meth:`encode`. :meth:`run` does all of it on a copy of the model."""

    config: INQConfig

    def levels(self, model: nn.Module) -> dict[str, np.ndarray]:
        """1. P_l of every weight tensor, from the pretrained layer's max |w|."""
        return {n: pow2_levels(float(p.detach().abs().max()), self.config.bits) for n, p in prunable(model).items()}

    @torch.no_grad()
    def quantize_step(self, model: nn.Module, levels: Mapping[str, np.ndarray], masks: dict[str, torch.Tensor],
                      fraction: float) -> dict[str, torch.Tensor]:
        """2–3. Extend every layer's partition to ``fraction`` and project the newly frozen weights
        onto P_l (frozen ones keep their values). Returns the new masks."""
        new = {}
        for name, p in prunable(model).items():
            old = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
            m = partition(p, old, fraction)
            q = torch.from_numpy(project_pow2(p, levels[name]))
            p.copy_(torch.where(m & ~old, q, p))
            new[name] = m
        return new

    def retrain(self, model: nn.Module, arch: str, masks: Mapping[str, torch.Tensor], step: int) -> list[dict]:
        """4. Train the unfrozen weights and the biases with the frozen ones fixed."""
        c = self.config
        if c.epochs_per_step == 0:
            return []
        params = dict(model.named_parameters())
        reg = FrozenWeights(masks, {n: params[n] for n in masks})
        cfg = TrainConfig(arch=arch, epochs=c.epochs_per_step, batch_size=c.batch_size, optimizer="adam", lr=c.lr,
                          weight_decay=c.weight_decay, augment=c.augment, seed=c.seed + step, lr_schedule="cosine")
        return train(model, self.data, cfg, regularizer=reg, progress=self.progress).history

    def run(self, pretrained: nn.Module, arch: str) -> tuple[BaselineRun, nn.Module]:
        """The whole algorithm on a copy of ``pretrained``; returns (run, decoded model)."""
        c = self.config
        model = copy.deepcopy(pretrained)
        levels = self.levels(model)
        history = [{"stage": "pretrained", "val_accuracy": self._accuracy(model)}]
        masks: dict[str, torch.Tensor] = {}
        for i, fraction in enumerate(c.fractions, start=1):
            masks = self.quantize_step(model, levels, masks, fraction)
            history.append({"stage": "quantize", "step": i, "fraction": fraction, "val_accuracy": self._accuracy(model)})
            if fraction < 1.0:
                epochs = self.retrain(model, arch, masks, i)
                history.append({"stage": "retrain", "step": i, "val_accuracy": self._accuracy(model), "epochs": epochs})
        for name, p in prunable(model).items():         # the invariant the file relies on
            if not on_levels(p, levels[name]).all():
                raise AssertionError(f"{name}: a weight left the powers-of-two grid")
        if c.biases == "kmeans":
            quantize_biases(model, c.bias_bits)
            history.append({"stage": "biases", "val_accuracy": self._accuracy(model)})
        acc_model = history[-1]["val_accuracy"]
        blob, decoded, layers, accs = encode_and_decode(model, arch, levels, self.data, codec=c.codec, biases=c.biases)
        history.append({"stage": "encode", **accs, "file_bits": 8 * len(blob)})
        zeros = sum(int((p == 0).sum()) for p in prunable(model).values())
        run = BaselineRun(method="inq", arch=arch, config=c.to_dict(), n_params=count_parameters(model),
                          file_bits=8 * len(blob), accuracy=accs["test_accuracy"], accuracy_before_coding=acc_model,
                          val_accuracy=accs["val_accuracy"], history=history, layers=layers, file_bytes=blob,
                          extra={"levels": {n: v.tolist() for n, v in levels.items()},
                                 "zero_fraction": zeros / sum(p.numel() for p in prunable(model).values()),
                                 "total_epochs": c.epochs_per_step * (len(c.fractions) - 1)})
        return run, decoded


# ------------------------------------------------------------------------------------------------
# saved runs (what the notebook reads)


def read_baseline_runs(*directories: str) -> list[dict[str, Any]]:
    """The ``result.json`` of every run under each directory (relative paths: from the repository
    root), in directory order, then by run name."""
    return read_results(directories)


def schedule_of(run: Mapping[str, Any]) -> str:
    """A one-line description of a run's schedule / mix."""
    c = run["config"]
    if run["method"] == "inq":
        return f"b={c['bits']}, fractions {'/'.join(f'{x:g}' for x in c['fractions'])}, {c['epochs_per_step']} ep/step"
    if run["method"] == "ana":
        return f"{c['quantizer']}, {c['epochs']} ep, {c['shape']}, {c['order']}"
    return "; ".join(f"{n.split('.')[0]}: {d}" for n, d in run["extra"]["describe"].items())


def format_baseline_runs(runs: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table: per run its schedule, the accuracy of the network *before* any retraining
    (INQ: every weight projected at once is the one-shot run; ANA: hard quantizer at the start; LC:
    direct compression) — validation under the protocol, test in runs older than it (the "stages
    on" column) —, the decoded file's test accuracy, the file size and the compression ratio."""
    first = {"inq": "quantize", "ana": "hard_at_start", "lc-mix": "direct_compression"}
    lines = ["| run | method | schedule / mix | stages on | pretrained (%) | first quantized (%) | decoded file, test (%) "
             "| file bits | ratio | zero weights (%) |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in runs:
        h = {row["stage"]: row for row in d["history"]}
        f0 = next(row for row in d["history"] if row["stage"] == first[d["method"]])
        zeros = d["extra"].get("zero_fraction")
        if zeros is None:
            n = sum(g["n"] for g in d["layers"] if not g["tensors"][0].endswith("bias"))
            zeros = 1 - sum(g["nonzero"] for g in d["layers"] if not g["tensors"][0].endswith("bias")) / n
        pre, split = stage_accuracy(h["pretrained"])
        lines.append(f"| {d['run']} | {d['method']} | {schedule_of(d)} | {split} | {100 * pre:.2f} "
                     f"| {100 * stage_accuracy(f0)[0]:.2f} | {100 * d['accuracy']:.2f} | {d['file_bits']:,} "
                     f"| {d['compression_ratio']:.1f}× | {100 * zeros:.1f} |")
    return "\n".join(lines)
