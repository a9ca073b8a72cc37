"""Deep Compression (Han, Mao & Dally, ICLR 2016; pruning from Han, Pool, Tran & Dally, NeurIPS
2015) on our networks, measured with our compressed file format.

The paper's steps, each a method of :class:`DeepCompression`:

1. ``prune``     magnitude pruning (Han 2015 §3): in round r, layer l loses every weight with
                 ``|w| < q_r · σ_l``, where σ_l is the standard deviation (population, ddof = 0)
                 of layer l's weights in the *dense* network, computed once before the first
                 round (as Distiller's sensitivity pruner does), and q_r the quality parameter
                 of round r: ``quality · r / rounds`` (schedule ``'ramp'``, sparsity grows
                 gradually as in Han's iterative pruning) or ``quality`` (``'constant'``: later
                 rounds only remove what retraining pushed below the same threshold). A pruned
                 weight stays pruned (masks only shrink). Only weight tensors (conv kernels,
                 fc matrices) are pruned, never biases.
2. ``retrain``   train the survivors with the masks FIXED (Han 2015 §3): the gradient of a
                 pruned weight is zeroed before the optimizer step *and* the mask is re-applied
                 after every step (Adam's moment estimates would otherwise move a zeroed weight),
                 with L2 regularization (``weight_decay``). Steps 1–2 repeat ``rounds`` times.
3. ``share``     weight sharing by per-layer k-means (Han 2016 §3) on the surviving weights,
                 ``2**bits`` clusters (``conv_bits`` for conv kernels, ``fc_bits`` for fc
                 matrices; fewer when a layer has fewer distinct survivors; clusters left empty
                 are dropped). Initialisation (Han 2016 §3.2): ``'forgy'`` (k distinct weights
                 drawn at random), ``'density'`` (the weights' empirical CDF inverted at
                 equally spaced levels (i + ½)/k), ``'linear'`` (k values equally spaced in
                 [min, max] of the weights; the paper's best).
4. ``fine_tune`` centroid fine-tuning (Han 2016 §3.3): every weight of a cluster receives the
                 *sum* of the gradients of the cluster's weights — the gradient of the shared
                 centroid — so an element-wise optimizer (Adam, SGD) moves them identically,
                 which is exactly the optimizer run on the centroids; after each step every weight
                 is re-set to its cluster's value (a no-op up to float rounding) and pruned
                 weights to 0. Each layer keeps at most ``2**bits`` distinct non-zero values.
5. ``encode``    coding with :mod:`metaq_utils.coding.fileformat` (Han 2016 §2 / §4): one ``sparse``
                 group per weight tensor — entries (index difference, codebook index), filler
                 zeros for gaps above ``max_gap``, both streams entropy-coded (``codec``,
                 Huffman by default as in the paper) — with the layer's k-means table (float32)
                 as its codebook.

Biases (our choice; the paper does not say how it stores them): with ``biases='kmeans'`` (the
default) all bias vectors form ONE dense group with their own k-means table of ``2**bias_bits``
values, shared and fine-tuned like the weights (one small table instead of one per layer);
with ``biases='float32'`` they are stored unquantized (32 bits each). Either way they are in the
file and counted in its size, like every header byte, codebook, codec table and the checksum.

Every size is the size of the whole file in bits; the reported accuracy is that of the network
decoded from the file (checked bit-for-bit equal to the fine-tuned network). Every stage is scored
on the validation split (history key ``val_accuracy``, PROTOCOL.md); the test set is evaluated
once, on the decoded network.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..coding.fileformat import GroupSpec, encode_compressed, round_trip
from ..nn.networks import count_parameters, model_from_compressed
from ..nn.training import FixedMasks, TrainConfig, train  # FixedMasks: re-exported (Han 2015 §3)
from ..store.paths import RUNS_DIR, resolve
from .base import (BaselineConfig, BaselineMethod, BaselineRun, bias_group_spec,
                   prunable, read_results, stage_accuracy, weight_arrays)

__all__ = ["DeepCompressionConfig", "DeepCompression", "DeepCompressionResult", "FixedMasks", "SharedGroup",
           "SharedWeights", "INIT_MODES", "layer_stds", "prunable", "masks_from_zeros", "prune",
           "init_centroids", "kmeans_1d", "read_runs", "format_runs", "format_layers"]

INIT_MODES = ("forgy", "density", "linear")


@dataclass(frozen=True)
class DeepCompressionConfig(BaselineConfig):
    """Knobs of the pipeline (saved with every run)."""
    # 1-2. prune and retrain
    quality: float = 1.0                # q: threshold = q_r · σ_l (σ_l of the dense layer)
    layer_quality: tuple[tuple[str, float], ...] = ()   # per-layer override of q, e.g. (("conv1.weight", 0.5),)
    rounds: int = 3                     # prune → retrain rounds
    quality_schedule: str = "ramp"      # 'ramp' (q·r/rounds in round r) | 'constant' (q every round)
    retrain_epochs: int = 2             # epochs of retraining per round
    retrain_lr: float = 5e-4            # Adam, cosine decay to 0 within each round
    weight_decay: float = 1e-4          # L2 during retraining (coupled: added to the gradient)
    # 3-4. share and fine-tune
    conv_bits: int = 8                  # k-means clusters 2**bits per conv kernel (paper: 8)
    fc_bits: int = 5                    # per fc matrix (paper: 5)
    layer_bits: tuple[tuple[str, int], ...] = ()        # per-layer override, e.g. (("fc3.weight", 6),)
    init: str = "linear"                # 'forgy' | 'density' | 'linear' (k-means initialisation)
    kmeans_iters: int = 100             # Lloyd iterations at most
    biases: str = "kmeans"              # 'kmeans' (one shared table for all biases) | 'float32'
    bias_bits: int = 5                  # 2**bits values for all biases together
    finetune_epochs: int = 1            # centroid fine-tuning epochs
    finetune_lr: float = 1e-4           # Adam on the centroids (shared gradients), cosine decay
    # 5. encode
    codec: str = "huffman"              # value and index codec: 'huffman' (paper) | 'range' | ...
    max_gap: int | None = None          # largest stored index gap; None: per layer the power of two
                                        # in [2, 1024] giving the smallest group (paper: 256 conv, 32 fc)
    # training details shared by all stages
    batch_size: int = 64
    augment: bool = False               # the paper trains LeNets without augmentation
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.quality >= 0 or self.rounds < 1:
            raise ValueError(f"need quality >= 0 and rounds >= 1 (got {self.quality}, {self.rounds})")
        if self.quality_schedule not in ("ramp", "constant"):
            raise ValueError(f"quality_schedule must be 'ramp' or 'constant', got {self.quality_schedule!r}")
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")
        if self.biases not in ("kmeans", "float32"):
            raise ValueError(f"biases must be 'kmeans' or 'float32', got {self.biases!r}")
        bits = [self.conv_bits, self.fc_bits, self.bias_bits, *(b for _, b in self.layer_bits)]
        if any(not 1 <= int(b) <= 16 for b in bits):
            raise ValueError(f"bits must be in [1, 16], got {bits}")
        if self.max_gap is not None and self.max_gap < 1:
            raise ValueError(f"max_gap must be >= 1 or None, got {self.max_gap}")
        # tuples of pairs (hashable, JSON round trip gives lists)
        object.__setattr__(self, "layer_quality", tuple((str(k), float(v)) for k, v in self.layer_quality))
        object.__setattr__(self, "layer_bits", tuple((str(k), int(v)) for k, v in self.layer_bits))

    def quality_at(self, name: str, round_: int) -> float:
        """q_r of layer ``name`` in round ``round_`` (1-based)."""
        q = dict(self.layer_quality).get(name, self.quality)
        return q * round_ / self.rounds if self.quality_schedule == "ramp" else q

    def bits_of(self, name: str, param: torch.Tensor) -> int:
        return dict(self.layer_bits).get(name, self.conv_bits if param.ndim == 4 else self.fc_bits)


# ------------------------------------------------------------------------------------------------
# 1-2. prune, retrain with fixed masks


def layer_stds(model: nn.Module) -> dict[str, float]:
    """σ_l: population standard deviation (ddof = 0) of every prunable layer's weights."""
    return {n: float(p.detach().double().std(unbiased=False)) for n, p in prunable(model).items()}


def masks_from_zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks of a pruned model read back from its weights: survivors are the non-zero weights."""
    return {n: p.detach() != 0 for n, p in prunable(model).items()}


@torch.no_grad()
def prune(model: nn.Module, thresholds: Mapping[str, float],
          masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Remove every weight with ``|w| < threshold`` of its layer (and every weight already pruned):
    sets them to +0.0 in place and returns the new boolean masks (True = kept)."""
    out = {}
    for name, p in prunable(model).items():
        keep = p.abs() >= thresholds[name]
        if masks is not None and name in masks:
            keep &= masks[name].to(torch.bool)
        p.masked_fill_(~keep, 0.0)          # +0.0 (a multiply by 0 would leave −0.0)
        out[name] = keep
    return out


# ------------------------------------------------------------------------------------------------
# 3-4. k-means weight sharing, centroid fine-tuning


def init_centroids(w: np.ndarray, k: int, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """k initial centroids for the 1-D data ``w`` (Han 2016 §3.2), sorted ascending, float64.

    ``'forgy'``: k weights drawn at random without replacement (k ≤ len(w));
    ``'density'``: the empirical quantiles at levels (i + ½)/k, i = 0..k−1 (equally spaced on the
    y-axis of the CDF, inverted with linear interpolation);
    ``'linear'``: k values equally spaced in [min(w), max(w)] (both ends included).
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size == 0 or k < 1:
        raise ValueError(f"need at least one weight and k >= 1 (got {w.size} weights, k = {k})")
    if mode == "forgy":
        if k > w.size:
            raise ValueError(f"forgy needs k <= number of weights ({k} > {w.size})")
        rng = np.random.default_rng(0) if rng is None else rng
        return np.sort(rng.choice(w, size=k, replace=False))
    if mode == "density":
        return np.quantile(w, (np.arange(k) + 0.5) / k)
    if mode == "linear":
        return np.linspace(w.min(), w.max(), k)
    raise ValueError(f"init must be one of {INIT_MODES}, got {mode!r}")


def _assign(w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted centroids ``c`` (ties to the lower one)."""
    if c.size == 1:
        return np.zeros(w.size, dtype=np.int64)
    return np.searchsorted((c[:-1] + c[1:]) / 2, w, side="left").astype(np.int64)


def kmeans_1d(w: np.ndarray, k: int, init: str = "linear", rng: np.random.Generator | None = None,
              max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on 1-D data: returns ``(centroids, labels)``, centroids sorted ascending
    (float64), no empty cluster (empty ones are dropped, so there may be fewer than k), every
    weight labelled with its nearest centroid and every centroid the mean of its weights. With
    at most k distinct values, the centroids are those values (no error at all)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    distinct = np.unique(w)
    if distinct.size <= k:
        return distinct, np.searchsorted(distinct, w).astype(np.int64)
    c = np.sort(init_centroids(w, k, init, rng))
    for _ in range(max_iter):
        labels = _assign(w, c)
        counts = np.bincount(labels, minlength=c.size)
        sums = np.bincount(labels, weights=w, minlength=c.size)
        new = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
        if np.array_equal(new, c):
            break
        c = new
    labels = _assign(w, c)
    used, labels = np.unique(labels, return_inverse=True)
    counts = np.bincount(labels)
    c = np.bincount(labels, weights=w) / counts
    return c, labels.astype(np.int64)


@dataclass
class SharedGroup:
    """Parameters that share one codebook: one weight tensor, or all the biases.

    ``labels``: int64 over the parameters flattened and concatenated in order; −1 = pruned (the
    weight is 0 and stays 0). ``centroids``: float32 k-means values after :meth:`apply`."""
    names: tuple[str, ...]
    labels: torch.Tensor
    centroids: np.ndarray
    bits: int
    rep: torch.Tensor = field(init=False, repr=False)     # first position of each cluster
    keep: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lab = self.labels.numpy()
        pos = np.flatnonzero(lab >= 0)
        _, first = np.unique(lab[pos], return_index=True)
        self.rep = torch.from_numpy(pos[first])
        self.keep = self.labels >= 0

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.size)

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def _write(self, params: list[nn.Parameter], flat: torch.Tensor) -> None:
        start = 0
        for p in params:
            p.copy_(flat[start:start + p.numel()].view_as(p))
            start += p.numel()

    @torch.no_grad()
    def apply(self, model: nn.Module, values: torch.Tensor | None = None) -> None:
        """Set every weight to its cluster's value (default: the k-means centroids), pruned to +0.0."""
        if values is None:
            values = torch.from_numpy(self.centroids.astype(np.float32))
        params = self._params(model)
        flat = torch.zeros(self.labels.numel(), dtype=params[0].dtype)
        flat[self.keep] = values[self.labels[self.keep]]
        self._write(params, flat)

    def share_gradients(self, model: nn.Module) -> None:
        """∂L/∂c_k = Σ_{i: label_i = k} ∂L/∂w_i (Han 2016 eq. 3), written into every w_i's grad."""
        params = self._params(model)
        g = torch.cat([p.grad.reshape(-1) for p in params])
        idx = self.labels[self.keep]
        gc = torch.zeros(self.n_clusters, dtype=g.dtype).index_add_(0, idx, g[self.keep])
        shared = torch.zeros_like(g)
        shared[self.keep] = gc[idx]
        start = 0
        for p in params:
            p.grad.copy_(shared[start:start + p.numel()].view_as(p.grad))
            start += p.numel()

    @torch.no_grad()
    def current_values(self, model: nn.Module) -> torch.Tensor:
        """The cluster values now (the value of each cluster's first weight)."""
        return torch.cat([p.reshape(-1) for p in self._params(model)])[self.rep]


class SharedWeights:
    """Training-loop regularizer for centroid fine-tuning: shared gradients before the step,
    weights re-set to their cluster's value (and pruned ones to 0) after it."""

    def __init__(self, groups: list[SharedGroup]) -> None:
        self.groups = groups

    def after_backward(self, model: nn.Module) -> None:
        for g in self.groups:
            g.share_gradients(model)

    def after_step(self, model: nn.Module) -> None:
        for g in self.groups:
            g.apply(model, g.current_values(model))

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        params = dict(model.named_parameters())
        most = max(int(torch.unique(torch.cat([params[n].detach().reshape(-1) for n in g.names])).numel())
                   for g in self.groups)
        return {"max_distinct_values": float(most)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# the pipeline


@dataclass(kw_only=True)
class DeepCompressionResult(BaselineRun):
    """One run (a :class:`~.base.BaselineRun`): the decoded network's accuracy and the file's exact
    size, with the history, and the density of the pruned tensors."""
    method: str = "deep-compression"
    density: float                      # kept / total weights of the pruned tensors (biases excluded)


def _density(model: nn.Module) -> float:
    params = prunable(model).values()
    return sum(int((p != 0).sum()) for p in params) / sum(p.numel() for p in params)


class DeepCompression(BaselineMethod):
    """The pipeline on one dataset: ``prune`` → ``retrain`` (× rounds) → ``share`` → ``fine_tune``
    → ``encode``. :meth:`run` does all of it; :meth:`prune_and_retrain` and :meth:`compress` are
    its two halves (a pruned model can be compressed with several bit settings)."""

    config: DeepCompressionConfig

    def _train_config(self, arch: str, epochs: int, lr: float, weight_decay: float, seed: int) -> TrainConfig:
        c = self.config
        return TrainConfig(arch=arch, epochs=epochs, batch_size=c.batch_size, optimizer="adam", lr=lr,
                           weight_decay=weight_decay, augment=c.augment, seed=seed, lr_schedule="cosine")

    # 1. prune
    def prune(self, model: nn.Module, stds: Mapping[str, float], round_: int,
              masks: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Round ``round_`` (1-based): thresholds q_r·σ_l, prune in place; returns (masks, thresholds)."""
        thresholds = {n: self.config.quality_at(n, round_) * s for n, s in stds.items()}
        return prune(model, thresholds, masks), thresholds

    # 2. retrain
    def retrain(self, model: nn.Module, arch: str, masks: Mapping[str, torch.Tensor], round_: int) -> list[dict]:
        """Retrain the survivors with the masks fixed (L2 = ``weight_decay``)."""
        c = self.config
        result = train(model, self.data, self._train_config(arch, c.retrain_epochs, c.retrain_lr,
                                                            c.weight_decay, c.seed + round_),
                       regularizer=FixedMasks(masks), progress=self.progress)
        return result.history

    def prune_and_retrain(self, dense: nn.Module, arch: str) -> tuple[nn.Module, dict[str, torch.Tensor], list[dict]]:
        """Steps 1–2, ``rounds`` times, on a copy of ``dense``; returns (model, masks, history)."""
        model = copy.deepcopy(dense)
        stds = layer_stds(model)           # σ_l of the dense layers, fixed for every round
        history = [{"stage": "dense", "round": 0, "val_accuracy": self._accuracy(model), "density": _density(model)}]
        masks = None
        for r in range(1, self.config.rounds + 1):
            masks, thresholds = self.prune(model, stds, r, masks)
            history.append({"stage": "prune", "round": r, "val_accuracy": self._accuracy(model),
                            "density": _density(model), "thresholds": thresholds,
                            "kept": {n: int(m.sum()) for n, m in masks.items()}})
            epochs = self.retrain(model, arch, masks, r)
            history.append({"stage": "retrain", "round": r, "val_accuracy": self._accuracy(model),
                            "density": _density(model), "epochs": epochs})
        return model, masks, history

    # 3. share
    def share(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[SharedGroup]:
        """Per-layer k-means on the survivors (and one table for all biases with ``biases='kmeans'``);
        the model's weights are replaced by their centroids in place."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        groups = []
        for name, p in prunable(model).items():
            w = p.detach().numpy().ravel().astype(np.float64)
            keep = masks[name].numpy().ravel() if name in masks else np.ones(w.size, bool)
            labels = np.full(w.size, -1, dtype=np.int64)
            bits = c.bits_of(name, p)
            if keep.any():
                centroids, labels[keep] = kmeans_1d(w[keep], 2 ** bits, c.init, rng, c.kmeans_iters)
            else:
                centroids = np.zeros(0)
            groups.append(SharedGroup((name,), torch.from_numpy(labels), centroids.astype(np.float32), bits))
        if c.biases == "kmeans":
            names = tuple(n for n, p in model.named_parameters() if p.ndim < 2)
            if names:
                params = dict(model.named_parameters())
                b = torch.cat([params[n].detach().reshape(-1) for n in names]).numpy().astype(np.float64)
                centroids, labels = kmeans_1d(b, 2 ** c.bias_bits, c.init, rng, c.kmeans_iters)
                groups.append(SharedGroup(names, torch.from_numpy(labels), centroids.astype(np.float32), c.bias_bits))
        for g in groups:
            g.apply(model)
        return groups

    # 4. fine-tune
    def fine_tune(self, model: nn.Module, arch: str, groups: list[SharedGroup]) -> list[dict]:
        """Centroid fine-tuning with shared gradients; the sharing and the zeros are kept."""
        c = self.config
        if c.finetune_epochs == 0:
            return []
        # the biases are trained freely when they are not shared (biases='float32')
        result = train(model, self.data, self._train_config(arch, c.finetune_epochs, c.finetune_lr, 0.0,
                                                            c.seed + 1000),
                       regularizer=SharedWeights(groups), progress=self.progress)
        return result.history

    # 5. encode
    def group_specs(self, model: nn.Module) -> list[GroupSpec]:
        """One sparse group per weight tensor (its distinct non-zero values as the table), and the
        biases as one dense k-means group or one float32 group."""
        c = self.config
        specs = []
        for i, _, w in weight_arrays(model):
            table = np.unique(w[w != 0])
            if table.size == 0:
                table = np.zeros(1, np.float32)      # all pruned: no entry refers to the table
            gap = c.max_gap or self.best_max_gap(w, table)
            specs.append(GroupSpec(tensors=(i,), codebook=table, mode="sparse", codec=c.codec,
                                   index_codec=c.codec, max_gap=gap))
        bias = bias_group_spec(model, c.biases, c.codec)
        return specs if bias is None else specs + [bias]

    def best_max_gap(self, w: np.ndarray, table: np.ndarray) -> int:
        """The power of two in [2, 1024] for which this tensor's sparse group is smallest."""
        sizes = {}
        for gap in (2 ** k for k in range(1, 11)):
            spec = GroupSpec(tensors=(0,), codebook=table, mode="sparse", codec=self.config.codec, max_gap=gap)
            sizes[gap] = len(encode_compressed("probe", [w], [spec]))
        return min(sizes, key=lambda g: (sizes[g], g))

    def encode(self, model: nn.Module, arch: str) -> bytes:
        """The compressed file of the (shared, fine-tuned) model."""
        return encode_compressed(arch, [p.detach() for p in model.parameters()], self.group_specs(model))

    # all steps
    def compress(self, pruned: nn.Module, arch: str, masks: Mapping[str, torch.Tensor] | None = None,
                 history: list[dict] | None = None) -> tuple[DeepCompressionResult, nn.Module]:
        """Steps 3–5 on a copy of a pruned model: share, fine-tune, encode; decode and evaluate.
        ``masks`` default to the non-zero weights. Returns (result, decoded model)."""
        model = copy.deepcopy(pruned)
        masks = masks_from_zeros(model) if masks is None else masks
        history = list(history or [])
        groups = self.share(model, masks)
        history.append({"stage": "share", "val_accuracy": self._accuracy(model), "density": _density(model),
                        "clusters": {",".join(g.names): g.n_clusters for g in groups}})
        epochs = self.fine_tune(model, arch, groups)
        acc_model = self._accuracy(model)
        history.append({"stage": "fine_tune", "val_accuracy": acc_model, "density": _density(model), "epochs": epochs})
        names = [n for n, _ in model.named_parameters()]
        rt = round_trip(arch, [p.detach() for p in model.parameters()], self.group_specs(model)).check(names)
        data, cm = rt.data, rt.decoded         # the file of :meth:`encode`, read back bit-exact
        decoded = model_from_compressed(cm)
        val = self._accuracy(decoded)
        acc = self._test_accuracy(decoded)          # the test set, once, on the decoded network
        history.append({"stage": "encode", "val_accuracy": val, "test_accuracy": acc, "file_bits": cm.file_bits})
        kept = {n: int((p != 0).sum()) for n, p in prunable(model).items()}
        layers = []
        for g in cm.groups:
            tnames = [names[i] for i in g.tensors]
            n = sum(int(np.prod(cm.shapes[i])) for i in g.tensors)
            layers.append({"tensors": tnames, "mode": g.mode, "n": n,
                           "kept": kept.get(tnames[0], n) if g.mode == "sparse" else n,
                           "values": None if g.codebook is None else int(np.asarray(g.codebook).size),
                           "codec": g.codec, "max_gap": g.max_gap, "n_entries": g.n_entries,
                           "payload_bytes": g.payload_bytes, "group_bytes": g.group_bytes})
        result = DeepCompressionResult(arch=arch, config=self.config.to_dict(), n_params=count_parameters(model),
                                       file_bits=cm.file_bits, accuracy=acc, accuracy_before_coding=acc_model,
                                       val_accuracy=val, density=_density(model), history=history, layers=layers,
                                       file_bytes=data)
        return result, decoded

    def run(self, dense: nn.Module, arch: str) -> tuple[DeepCompressionResult, nn.Module]:
        """The whole pipeline on a trained dense network (left unchanged)."""
        pruned, masks, history = self.prune_and_retrain(dense, arch)
        return self.compress(pruned, arch, masks, history)


# ------------------------------------------------------------------------------------------------
# saved runs (what the notebook reads)


def read_runs(directory: str | Path = "runs/deep_compression") -> list[dict[str, Any]]:
    """The ``result.json`` of every run under ``directory`` (relative paths: from the repository
    root), sorted by network, pruning quality and bits."""
    runs = read_results([resolve(directory, RUNS_DIR / "deep_compression")])
    return sorted(runs, key=lambda d: (d["arch"], d["config"]["retrain_epochs"], d["config"]["quality"],
                                       -d["config"]["conv_bits"], -d["config"]["fc_bits"]))


def _stage(run: Mapping[str, Any], stage: str, round_: int | None = None) -> dict[str, Any]:
    rows = [h for h in run["history"] if h["stage"] == stage and (round_ is None or h.get("round") == round_)]
    return rows[-1]


def format_runs(runs: list[Mapping[str, Any]]) -> str:
    """A Markdown table: per run the knobs, the density, the accuracy after each stage (validation
    under the protocol; test in runs older than it, marked in the "stages on" column), the decoded
    file's test accuracy and the file size (Huffman, the reported one, and the other codec for
    reference)."""
    lines = ["| run | q | rounds × epochs | bits (conv/fc) | density (%) | stages on | dense | pruned+retrained | shared "
             "| fine-tuned | decoded file, test (%) | file bits | ratio | other codec bits |",
             "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in runs:
        c = d["config"]
        bits = f"{c['conv_bits']}/{c['fc_bits']}" if d["arch"] == "lenet5" else f"–/{c['fc_bits']}"
        other = ", ".join(f"{k} {v:,}" for k, v in d.get("file_bits_other_codec", {}).items())
        acc = lambda row: f"{100 * stage_accuracy(row)[0]:.2f}"  # noqa: E731
        split = stage_accuracy(_stage(d, "dense"))[1]
        lines.append(f"| {d['run']} | {c['quality']:g} | {c['rounds']} × {c['retrain_epochs']} | {bits} | {100 * d['density']:.2f} "
                     f"| {split} | {acc(_stage(d, 'dense'))} "
                     f"| {acc(_stage(d, 'retrain'))} | {acc(_stage(d, 'share'))} | {acc(_stage(d, 'fine_tune'))} "
                     f"| {100 * d['accuracy']:.2f} | {d['file_bits']:,} | {d['compression_ratio']:.1f}× | {other} |")
    return "\n".join(lines)


def format_layers(run: Mapping[str, Any]) -> str:
    """A Markdown table of one run's file, group by group: what each layer costs."""
    lines = [f"**{run['run']}** — {run['file_bits']:,} bits in all",
             "", "| tensors | mode | weights | kept | table values | max gap | entries | group bits | bits/kept |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in run["layers"]:
        per = f"{8 * g['group_bytes'] / g['kept']:.2f}" if g["kept"] else ""
        lines.append(f"| {', '.join(g['tensors'])} | {g['mode']} | {g['n']:,} | {g['kept']:,} | {g['values'] or ''} "
                     f"| {g['max_gap'] or ''} | {g['n_entries'] or ''} | {8 * g['group_bytes']:,} | {per} |")
    overhead = run["file_bits"] - sum(8 * g["group_bytes"] for g in run["layers"])
    lines.append(f"| (header, shapes, checksum) | | | | | | | {overhead:,} | |")
    return "\n".join(lines)
