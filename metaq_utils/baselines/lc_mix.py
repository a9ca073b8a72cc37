"""Mixed per-layer compression with the LC (learning-compression) algorithm (Carreira-Perpiñán &
Idelbayev, "Model compression as constrained optimization, with application to neural nets",
2017–2018; seed 003 mixes pruning, quantization and low-rank per layer type), on our networks,
measured with our compressed file format.

Per weight tensor one *compression* (a class with ``compress``), chosen per layer:

* :class:`Pruning` (κ)          Δ(Θ) = the κ largest-magnitude entries of v, the others 0
                                (the exact ℓ0-constrained projection).
* :class:`Quantization` (K)     Δ(Θ) = each entry replaced by its k-means centroid, K centroids
                                learned (Lloyd, 1-D, :func:`.deep_compression.kmeans_1d`).
* :class:`LowRank` (r or α)     Δ(Θ) = the truncated SVD of v as a matrix (out × in·k·k); the
                                rank is the target ``rank``, or, with a penalty ``alpha``, the r ≤
                                ``max_rank`` minimizing  μ/2 · Σ_{i>r} s_i² + α · r·(m + n)
                                (approximation error vs. storage of the factors, LC's rank selection).

The algorithm (:class:`LCMix`), each step its own method, with μ_k = μ0 · a^k:

0. ``direct_compression``   Θ = Π(w) (the compressions of the pretrained weights), λ = 0.
1. ``l_step``               min_w  L(w) + μ/2 ‖w − Δ(Θ) − λ/μ‖²  (SGD for ``epochs_per_step``
                            epochs; the penalty's gradient μ(w − Δ(Θ)) − λ is added to ∂L/∂w by
                            the training loop's regularizer hook).
2. ``c_step``               Θ = argmin ‖w − λ/μ − Δ(Θ)‖²  per layer (the compressions above).
3. ``multiplier_step``      λ ← λ − μ (w − Δ(Θ)).
   Steps 1–3 for k = 0 … steps − 1; the final network is Δ(Θ) (exactly compressed).

μ's scale. Seed 003 writes μ0 = 5·10⁵, ×1.15 per step, 30 steps. Our loss is the *mean*
cross-entropy of a batch, as in the LC reference code, whose LeNet-5 scripts start at μ0 = 10⁻⁴
(×1.1, 30 steps, SGD lr 0.1, momentum 0.9, lr × 0.98 per step). At μ = 5·10⁵ the penalty's gradient
μ(w − Δ) is ~10⁸ times the loss gradient and the L step degenerates to a projection: no learning
at all. We read the seed's value as 5·10⁻⁵ in these units. Our budget allows 10 LC steps of 1 epoch
(the seed: 30 steps × 10 epochs), so the defaults are μ0 = 10⁻³, a = 1.35 (μ: 10⁻³ → 1.5·10⁻²):
with μ0 = 2·10⁻⁴ one epoch of SGD pulled w *away* from Δ(Θ) (‖w − Δ‖² 295 → 365 in a probe on
LeNet-5, quantization mix), i.e. too few penalty steps for the reference's μ scale.

Encoding (:mod:`metaq_utils.coding.fileformat` stores tensors of the model's parameter shapes):
pruned layers as ``sparse`` groups whose table is the exact set of surviving values (float32);
quantized layers as ``dense`` groups with the K-centroid table; low-rank layers — whose factors
U (m × r), V (r × n) the reader cannot hold — as the *reconstructed* matrix UVᵀ, quantized after
the LC steps with a k-means table of ``2**lowrank_bits`` values (dense group). This last
quantization is not part of LC; its accuracy is the measured one (``accuracy``), the exact
low-rank network's validation accuracy is recorded too (``val_accuracy_exact_lowrank``; runs
older than the protocol: ``accuracy_exact_lowrank``, on test), and so is the *theoretical* size
of the same file with the factors stored instead (float32, r(m+n) values per layer:
``file_bits_factors_float32``). Biases are not compressed by LC; here they are one shared k-means
table (``biases='kmeans'``, after training) or float32.

Every stage (direct compression, each LC step's Δ(Θ) and w) is scored on the validation split
(history keys ``val_accuracy``, ``val_accuracy_w``; PROTOCOL.md); the test set is evaluated once,
on the decoded network.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..nn.data import MNISTTensors
from ..nn.networks import count_parameters
from ..nn.training import TrainConfig, train
from .base import BaselineConfig, BaselineMethod, BaselineRun
from .deep_compression import kmeans_1d
from .inq import encode_and_decode, quantize_biases

__all__ = ["Pruning", "Quantization", "LowRank", "LCConfig", "LCMix", "LCPenalty", "compression_from_spec",
           "MIXES", "mu_schedule", "numerical_rank"]


# ------------------------------------------------------------------------------------------------
# the compressions (C step of one layer)


@dataclass(frozen=True)
class Pruning:
    """Keep the κ largest-magnitude entries (ties: the first in C order)."""
    kappa: int

    def compress(self, v: np.ndarray, mu: float = 0.0) -> np.ndarray:
        flat = v.ravel()
        if not 0 <= self.kappa <= flat.size:
            raise ValueError(f"kappa must be in [0, {flat.size}], got {self.kappa}")
        keep = np.argsort(-np.abs(flat), kind="stable")[:self.kappa]
        out = np.zeros_like(flat)
        out[keep] = flat[keep]
        return out.reshape(v.shape)

    def describe(self) -> str:
        return f"prune κ={self.kappa}"


@dataclass(frozen=True)
class Quantization:
    """k-means with K centroids (linear initialisation)."""
    k: int

    def compress(self, v: np.ndarray, mu: float = 0.0) -> np.ndarray:
        c, labels = kmeans_1d(v.ravel(), self.k, "linear")
        return c[labels].reshape(v.shape)

    def describe(self) -> str:
        return f"quantize K={self.k}"


@dataclass(frozen=True)
class LowRank:
    """Truncated SVD of v viewed as (out × rest): target ``rank``, or the penalty ``alpha`` with
    ``max_rank`` (see the module docstring)."""
    rank: int | None = None
    alpha: float | None = None
    max_rank: int | None = None

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.alpha is None):
            raise ValueError("give exactly one of rank and alpha")

    def select_rank(self, s: np.ndarray, shape: tuple[int, int], mu: float) -> int:
        cap = min(len(s), self.max_rank if self.max_rank is not None else len(s))
        if self.rank is not None:
            return min(self.rank, cap)
        tail = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])   # tail[r] = Σ_{i≥r} s_i²
        r = np.arange(cap + 1)
        cost = mu / 2 * tail[:cap + 1] + self.alpha * r * (shape[0] + shape[1])
        return int(np.argmin(cost))

    def compress(self, v: np.ndarray, mu: float = 0.0) -> np.ndarray:
        m = v.reshape(v.shape[0], -1).astype(np.float64)
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        r = self.select_rank(s, m.shape, mu)
        return ((u[:, :r] * s[:r]) @ vt[:r]).reshape(v.shape).astype(v.dtype)

    def describe(self) -> str:
        return f"low-rank r={self.rank}" if self.rank is not None else f"low-rank α={self.alpha:g}"


Compression = Pruning | Quantization | LowRank


def compression_from_spec(spec: Sequence) -> Compression:
    """``('prune', κ)`` | ``('quantize', K)`` | ``('lowrank', r)`` | ``('lowrank_alpha', α, max_rank)``."""
    kind, *args = spec
    if kind == "prune":
        return Pruning(int(args[0]))
    if kind == "quantize":
        return Quantization(int(args[0]))
    if kind == "lowrank":
        return LowRank(rank=int(args[0]))
    if kind == "lowrank_alpha":
        return LowRank(alpha=float(args[0]), max_rank=int(args[1]) if len(args) > 1 else None)
    raise ValueError(f"unknown compression {spec!r}")


# Seed 003's two best LeNet-5 mixes, on our LeNet-5 (conv1 150, conv2 2,400, fc1 30,720, fc2 10,080,
# fc3 840 weights). conv1 keeps the seed's κ = 104; the seed's κ = 2,505 for conv2 is more than our
# conv2 has, so conv2 keeps 30 % (720). The seed quantized both its linear layers with K = 2; ours
# has three. Low ranks are targets (the seed's α = 2.5e-9 selects ranks in its own μ units).
MIXES: dict[str, dict[str, tuple]] = {
    "conv-prune_fc-lowrank": {"conv1.weight": ("prune", 104), "conv2.weight": ("prune", 720),
                              "fc1.weight": ("lowrank", 16), "fc2.weight": ("lowrank", 16),
                              "fc3.weight": ("lowrank", 8)},
    "conv-prune_fc-quant": {"conv1.weight": ("prune", 104), "conv2.weight": ("prune", 720),
                            "fc1.weight": ("quantize", 2), "fc2.weight": ("quantize", 2),
                            "fc3.weight": ("quantize", 2)},
}


def numerical_rank(w: torch.Tensor | np.ndarray) -> int:
    """Rank of ``w`` as (out × rest), singular values below s_max · max(m, n) · eps(float32)
    counting as 0 (the float32 rounding of a low-rank product is not more rank)."""
    m = np.asarray(w.detach().numpy() if hasattr(w, "detach") else w, dtype=np.float64)
    m = m.reshape(m.shape[0], -1)
    s = np.linalg.svd(m, compute_uv=False)
    return int((s > s.max(initial=0.0) * max(m.shape) * np.finfo(np.float32).eps).sum()) if s.size else 0


def mu_schedule(mu0: float, a: float, steps: int) -> list[float]:
    """μ_k = μ0 · a^k, k = 0 … steps − 1."""
    return [mu0 * a ** k for k in range(steps)]


# ------------------------------------------------------------------------------------------------
# the L step's penalty


class LCPenalty:
    """Adds ∂/∂w of μ/2 ‖w − Δ(Θ) − λ/μ‖² = μ(w − Δ(Θ)) − λ to the gradients of the compressed
    weights (the training loop calls it after backward, before the optimizer step)."""

    def __init__(self, mu: float, delta: Mapping[str, torch.Tensor], lam: Mapping[str, torch.Tensor]) -> None:
        self.mu, self.delta, self.lam = mu, dict(delta), dict(lam)

    def after_backward(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.delta:
                p.grad.add_(self.mu * (p.detach() - self.delta[name]) - self.lam[name])

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        params = dict(model.named_parameters())
        gap = sum(float(((params[n].detach() - d) ** 2).sum()) for n, d in self.delta.items())
        return {"mu": self.mu, "sq_distance": gap}

    def state_dict(self) -> dict[str, Any]:
        return {"mu": self.mu, "delta": self.delta, "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu, self.delta, self.lam = state["mu"], dict(state["delta"]), dict(state["lam"])


# ------------------------------------------------------------------------------------------------
# the algorithm


@dataclass(frozen=True)
class LCConfig(BaselineConfig):
    """Knobs of the LC run (saved with every run)."""
    mix: tuple[tuple[str, tuple], ...] = tuple(MIXES["conv-prune_fc-quant"].items())   # (layer, spec)
    steps: int = 10                     # LC steps (seed: 30)
    mu0: float = 1e-3                   # μ_k = μ0 · a^k (units: our mean cross-entropy, see the docstring)
    a: float = 1.35
    epochs_per_step: int = 1            # L-step epochs (seed: 10)
    lr: float = 0.05                    # SGD, Nesterov momentum; lr · lr_decay^k in L step k
    lr_decay: float = 0.98
    momentum: float = 0.9
    batch_size: int = 64
    augment: bool = False
    lowrank_bits: int = 5               # k-means table for the stored low-rank reconstructions
    biases: str = "kmeans"              # 'kmeans' (one shared table, after training) | 'float32'
    bias_bits: int = 5
    codec: str = "range"
    seed: int = 0

    def __post_init__(self) -> None:
        mix = tuple((str(n), tuple(s)) for n, s in (self.mix.items() if isinstance(self.mix, Mapping) else self.mix))
        for _, s in mix:
            compression_from_spec(s)
        object.__setattr__(self, "mix", mix)
        if self.steps < 0 or not self.mu0 > 0 or not self.a >= 1:
            raise ValueError(f"need steps >= 0, mu0 > 0, a >= 1 (got {self.steps}, {self.mu0}, {self.a})")

    @property
    def compressions(self) -> dict[str, Compression]:
        return {n: compression_from_spec(s) for n, s in self.mix}


class LCMix(BaselineMethod):
    """The LC algorithm with one compression per layer (``config.mix``)."""

    config: LCConfig

    def __init__(self, config: LCConfig, data: MNISTTensors, *, progress: bool = False) -> None:
        super().__init__(config, data, progress=progress)
        self.compressions = config.compressions

    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        return {n: params[n] for n in self.compressions}

    def direct_compression(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """0. Θ = Π(w), λ = 0."""
        lam = {n: torch.zeros_like(p) for n, p in self._weights(model).items()}
        return self.c_step(model, lam, mu=self.config.mu0), lam

    def c_step(self, model: nn.Module, lam: Mapping[str, torch.Tensor], mu: float) -> dict[str, torch.Tensor]:
        """2. Θ = argmin ‖w − λ/μ − Δ(Θ)‖² per layer; returns Δ(Θ) per layer."""
        out = {}
        for n, p in self._weights(model).items():
            v = (p.detach() - lam[n] / mu).numpy()
            out[n] = torch.from_numpy(np.ascontiguousarray(self.compressions[n].compress(v, mu)).astype(np.float32))
        return out

    def l_step(self, model: nn.Module, arch: str, mu: float, delta, lam, k: int) -> list[dict]:
        """1. min_w L(w) + μ/2 ‖w − Δ(Θ) − λ/μ‖²."""
        c = self.config
        cfg = TrainConfig(arch=arch, epochs=c.epochs_per_step, batch_size=c.batch_size, optimizer="sgd",
                          lr=c.lr * c.lr_decay ** k, momentum=c.momentum, augment=c.augment, seed=c.seed + k,
                          lr_schedule="constant")
        reg = LCPenalty(mu, delta, lam)
        return train(model, self.data, cfg, regularizer=reg, progress=self.progress).history

    @torch.no_grad()
    def multiplier_step(self, model: nn.Module, mu: float, delta, lam) -> dict[str, torch.Tensor]:
        """3. λ ← λ − μ (w − Δ(Θ))."""
        return {n: lam[n] - mu * (p.detach() - delta[n]) for n, p in self._weights(model).items()}

    @torch.no_grad()
    def compressed_model(self, model: nn.Module, delta) -> nn.Module:
        """The network with every compressed layer replaced by Δ(Θ) (biases as trained)."""
        out = copy.deepcopy(model)
        for n, p in self._weights(out).items():
            p.copy_(delta[n])
        return out

    def run(self, pretrained: nn.Module, arch: str) -> tuple[BaselineRun, nn.Module]:
        c = self.config
        model = copy.deepcopy(pretrained)
        delta, lam = self.direct_compression(model)
        history = [{"stage": "pretrained", "val_accuracy": self._accuracy(model)},
                   {"stage": "direct_compression", "val_accuracy": self._accuracy(self.compressed_model(model, delta))}]
        for k, mu in enumerate(mu_schedule(c.mu0, c.a, c.steps)):
            epochs = self.l_step(model, arch, mu, delta, lam, k)
            delta = self.c_step(model, lam, mu)
            lam = self.multiplier_step(model, mu, delta, lam)
            dist = sum(float(((p.detach() - delta[n]) ** 2).sum()) for n, p in self._weights(model).items())
            history.append({"stage": "lc_step", "step": k, "mu": mu, "val_accuracy_w": self._accuracy(model),
                            "val_accuracy": self._accuracy(self.compressed_model(model, delta)), "sq_distance": dist})
        final = self.compressed_model(model, delta)
        ranks = {n: numerical_rank(delta[n]) for n, comp in self.compressions.items() if isinstance(comp, LowRank)}
        acc_exact = self._accuracy(final)
        # the file: pruned layers exact, quantized on their centroids, low-rank reconstructions on k-means
        tables = {}
        params = dict(final.named_parameters())
        for n, comp in self.compressions.items():
            w = params[n].detach().numpy()
            if isinstance(comp, LowRank):
                cents, labels = kmeans_1d(w.ravel(), 2 ** c.lowrank_bits, "linear")
                with torch.no_grad():
                    params[n].copy_(torch.from_numpy(cents.astype(np.float32)[labels].reshape(w.shape)))
                tables[n] = cents.astype(np.float32)
            else:
                tables[n] = np.unique(w)
        history.append({"stage": "lowrank_quantized", "val_accuracy": self._accuracy(final)})
        if c.biases == "kmeans":
            quantize_biases(final, c.bias_bits)
            history.append({"stage": "biases", "val_accuracy": self._accuracy(final)})
        blob, decoded, layers, accs = encode_and_decode(final, arch, tables, self.data, codec=c.codec, biases=c.biases)
        history.append({"stage": "encode", **accs, "file_bits": 8 * len(blob)})
        lowrank_group_bits = sum(g["group_bits"] for g in layers if g["tensors"][0] in ranks)
        factor_bits = sum(32 * r * (params[n].shape[0] + int(np.prod(params[n].shape[1:]))) for n, r in ranks.items())
        nonzeros = {n: int((params[n] != 0).sum()) for n, comp in self.compressions.items() if isinstance(comp, Pruning)}
        run = BaselineRun(method="lc-mix", arch=arch, config=c.to_dict(), n_params=count_parameters(final),
                          file_bits=8 * len(blob), accuracy=accs["test_accuracy"],
                          accuracy_before_coding=history[-2]["val_accuracy"], val_accuracy=accs["val_accuracy"],
                          history=history, layers=layers, file_bytes=blob,
                          extra={"val_accuracy_exact_lowrank": acc_exact, "ranks": ranks, "nonzeros": nonzeros,
                                 "describe": {n: comp.describe() for n, comp in self.compressions.items()},
                                 "file_bits_factors_float32": (8 * len(blob) - lowrank_group_bits + factor_bits)
                                 if ranks else None})
        return run, decoded
