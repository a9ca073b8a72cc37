"""Additive Noise Annealing (Spallanzani, Cavigelli, Leonardi, Conti & Benini, 2019 — "Additive
noise annealing and approximation properties of quantized neural networks") on our networks, for
the weights, measured with our compressed file format.

The method's parts, each a small function or class:

1. ``weight_levels``   the quantized set of each weight tensor, fixed from the pretrained layer:
                       ``'ternary'`` {−s, 0, s} (s = mean |w| over |w| > 0.7·mean |w|, as in ternary
                       weight networks), ``'uniform'`` (2^b − 1 levels k·δ, δ = max|w| / (2^(b−1) − 1)),
                       ``'pow2'`` (INQ's set, :func:`.inq.pow2_levels`).
2. ``smoothed_quantizer``  the forward of a layer is the *expectation* of the quantizer under
                       additive noise ν ~ U[−σ, σ] on the weight: with levels q_0 < … < q_m and
                       thresholds θ_i = (q_{i−1} + q_i)/2,
                       ``E[Q(w + ν)] = q_0 + Σ_i (q_i − q_{i−1}) · clip((w − θ_i + σ) / 2σ, 0, 1)``,
                       piecewise linear and differentiable for σ > 0, and exactly the hard quantizer
                       ``Q(w) = q_0 + Σ_i (q_i − q_{i−1}) · [w ≥ θ_i]`` at σ = 0 (ties upward).
3. ``NoiseSchedule``   f_j(t): per layer, σ_l(τ) = σ0_l · shape(u), u the progress through the
                       layer's window [start_l, end_l] of training progress τ ∈ [0, 1] (per step);
                       ``shape`` 1 → 0, ``'linear'`` (1 − u) or ``'cosine'`` ((1 + cos πu)/2), σ = 0
                       exactly for u ≥ 1. ``order='lower_first'`` (the paper's: layer windows follow one
                       another from the input up, so lower layers harden first), ``'upper_first'``
                       (the reverse) or ``'simultaneous'`` (one window for all). All windows end at
                       ``anneal_end`` (default (E−1)/E: the whole last epoch is hard, so every layer
                       is exactly quantized then and only the biases still move). σ0_l =
                       ``noise_scale`` × the layer's largest gap between adjacent levels.
4. ``harden``          after training the latent weights are replaced by Q(w) in a fresh network.
5. ``encode``          as INQ (:func:`.inq.encode_and_decode`): per-layer table codebook, dense or
                       sparse, range codec; biases one shared k-means table (or float32).

Every stage is scored on the validation split (history key ``val_accuracy``, PROTOCOL.md); the
test set is evaluated once, on the network decoded from the file.

The latent full-precision weights are the trained parameters; the forward uses
``smoothed_quantizer(w, σ_l(τ))`` through :mod:`torch.nn.utils.parametrize`, and the schedule is
advanced once per optimizer step by the training loop's regularizer hook.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nn.networks import build_model, count_parameters
from ..nn.training import TrainConfig, train
from .base import BaselineConfig, BaselineMethod, BaselineRun, prunable
from .inq import encode_and_decode, pow2_levels, quantize_biases

__all__ = ["ANAConfig", "ANA", "NoiseSchedule", "SmoothedQuantizer", "weight_levels", "smoothed_quantizer",
           "hard_quantize", "harden", "SHAPES", "ORDERS", "QUANTIZERS"]

SHAPES = ("linear", "cosine")
ORDERS = ("lower_first", "upper_first", "simultaneous")
QUANTIZERS = ("ternary", "uniform", "pow2")


# ------------------------------------------------------------------------------------------------
# 1. the quantized sets


def weight_levels(w: torch.Tensor | np.ndarray, kind: str, bits: int = 3) -> np.ndarray:
    """The sorted float32 levels of one layer (see the module docstring); ``bits`` is ignored by
    ``'ternary'``."""
    a = np.abs(np.asarray(w.detach().numpy() if hasattr(w, "detach") else w, dtype=np.float64)).ravel()
    if kind == "ternary":
        delta = 0.7 * a.mean()
        s = a[a > delta].mean()
        return np.array([-s, 0.0, s], dtype=np.float32)
    if kind == "uniform":
        m = 2 ** (bits - 1) - 1
        if m < 1:
            raise ValueError(f"uniform needs bits >= 2, got {bits}")
        step = a.max() / m
        return (np.arange(-m, m + 1) * step).astype(np.float32)
    if kind == "pow2":
        return pow2_levels(float(a.max()), bits)
    raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {kind!r}")


# ------------------------------------------------------------------------------------------------
# 2. the smoothed (noisy-expectation) quantizer


def smoothed_quantizer(w: torch.Tensor, levels: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[Q(w + ν)], ν ~ U[−σ, σ]; exactly the hard quantizer :func:`hard_quantize` when σ = 0."""
    q = levels.to(w.dtype)
    theta = (q[:-1] + q[1:]) / 2
    jumps = (q[1:] - q[:-1]).view(*([1] * w.ndim), -1)
    x = w.unsqueeze(-1) - theta
    if sigma > 0:
        steps = torch.clamp((x + sigma) / (2 * sigma), 0.0, 1.0)
    else:
        steps = (x >= 0).to(w.dtype)
    return q[0] + (jumps * steps).sum(-1)


def hard_quantize(w: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Q(w): each weight to the nearest level, ties upward — returns exact level values."""
    q = levels.to(w.dtype)
    theta = (q[:-1] + q[1:]) / 2
    return q[torch.searchsorted(theta, w.detach().contiguous(), right=True)]


class SmoothedQuantizer(nn.Module):
    """Parametrization ``w ↦ E[Q(w + ν)]`` with a settable noise level ``sigma``."""

    def __init__(self, levels: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("levels", torch.as_tensor(np.asarray(levels, np.float32)))
        self.sigma = 0.0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            # σ = 0: the hard quantizer exactly (gradient 0, the layer is frozen)
            return hard_quantize(w, self.levels) + 0.0 * w
        return smoothed_quantizer(w, self.levels, self.sigma)


# ------------------------------------------------------------------------------------------------
# 3. the annealing schedule


class NoiseSchedule:
    """σ_l(τ) for the layers ``names`` (in network order, input first); see the module docstring.

    Used as the training loop's regularizer: ``after_backward`` advances the step counter and
    sets the next step's σ on the model's parametrizations."""

    def __init__(self, names: list[str], sigma0: Mapping[str, float], total_steps: int, *, shape: str = "linear",
                 order: str = "lower_first", anneal_end: float = 1.0) -> None:
        if shape not in SHAPES or order not in ORDERS:
            raise ValueError(f"shape in {SHAPES}, order in {ORDERS} (got {shape!r}, {order!r})")
        if not 0 < anneal_end <= 1 or total_steps < 1:
            raise ValueError(f"need 0 < anneal_end <= 1 and total_steps >= 1 (got {anneal_end}, {total_steps})")
        self.names, self.sigma0 = list(names), dict(sigma0)
        self.total_steps, self.shape, self.order, self.anneal_end = total_steps, shape, order, anneal_end
        self.step = 0

    def window(self, name: str) -> tuple[float, float]:
        """[start, end] of layer ``name``'s annealing, as fractions of training."""
        L = len(self.names)
        if self.order == "simultaneous":
            return 0.0, self.anneal_end
        rank = self.names.index(name) if self.order == "lower_first" else L - 1 - self.names.index(name)
        return rank * self.anneal_end / L, (rank + 1) * self.anneal_end / L

    def sigma(self, name: str, tau: float) -> float:
        """f_l(τ): σ0_l at the window's start, decreasing, exactly 0 from its end on."""
        start, end = self.window(name)
        u = min(max((tau - start) / (end - start), 0.0), 1.0)
        if u >= 1.0:
            return 0.0
        f = 1.0 - u if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
        return self.sigma0[name] * f

    def tau(self) -> float:
        return self.step / self.total_steps

    def apply(self, model: nn.Module) -> None:
        """Set σ_l(τ) of the current step on every parametrized layer."""
        for name, mod in _quantizers(model).items():
            mod.sigma = self.sigma(name, self.tau())

    def after_backward(self, model: nn.Module) -> None:
        self.step += 1
        self.apply(model)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        return {f"sigma/{n}": self.sigma(n, self.tau()) for n in self.names}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def _quantizers(model: nn.Module) -> dict[str, SmoothedQuantizer]:
    """The parametrizations by the parameter's plain name (e.g. ``'conv1.weight'``)."""
    out = {}
    for mname, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            out[f"{mname}.weight"] = mod.parametrizations.weight[0]
    return out


# ------------------------------------------------------------------------------------------------
# 4. hardening


@torch.no_grad()
def harden(model: nn.Module, arch: str) -> nn.Module:
    """A fresh ``arch`` network with every parametrized weight set to Q(latent) and every other
    parameter copied (the parameter order of ``build_model(arch)``, which the file relies on)."""
    fresh = build_model(arch)
    quantizers = _quantizers(model)
    for name, p in fresh.named_parameters():
        mod_name, attr = name.rsplit(".", 1)
        mod = model.get_submodule(mod_name)
        if name in quantizers:
            latent = mod.parametrizations.weight.original
            p.copy_(hard_quantize(latent, quantizers[name].levels))
        else:
            p.copy_(getattr(mod, attr))
    return fresh


# ------------------------------------------------------------------------------------------------
# the algorithm


@dataclass(frozen=True)
class ANAConfig(BaselineConfig):
    """Knobs of ANA (saved with every run); the schedule is (shape, order, noise_scale, anneal_end)."""
    epochs: int = 4
    quantizer: str = "ternary"          # 'ternary' | 'uniform' | 'pow2'
    bits: int = 3                       # 'uniform': 2^bits − 1 levels; 'pow2': INQ's b
    shape: str = "linear"               # 'linear' | 'cosine'
    order: str = "lower_first"          # 'lower_first' (paper) | 'upper_first' | 'simultaneous'
    noise_scale: float = 1.0            # σ0_l = noise_scale × largest gap between the layer's levels
    anneal_end: float | None = None     # fraction of training when all noise is 0; None: (E − 1)/E
    lr: float = 5e-4                    # Adam, cosine decay to 0
    weight_decay: float = 0.0
    batch_size: int = 64
    augment: bool = False
    biases: str = "kmeans"              # 'kmeans' (one shared table, after training) | 'float32'
    bias_bits: int = 5
    codec: str = "range"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS or self.shape not in SHAPES or self.order not in ORDERS:
            raise ValueError(f"bad quantizer/shape/order: {self.quantizer!r}, {self.shape!r}, {self.order!r}")
        if self.epochs < 1 or not self.noise_scale > 0:
            raise ValueError(f"need epochs >= 1 and noise_scale > 0 (got {self.epochs}, {self.noise_scale})")

    @property
    def end(self) -> float:
        return self.anneal_end if self.anneal_end is not None else max(self.epochs - 1, 1) / self.epochs


class ANA(BaselineMethod):
    """ANA on one dataset: :meth:`prepare` (levels, parametrizations, schedule), :meth:`anneal`
    (training), then :func:`harden` and encode. :meth:`run` does all of it on a copy."""

    config: ANAConfig

    def prepare(self, model: nn.Module) -> tuple[dict[str, np.ndarray], NoiseSchedule]:
        """Levels from the pretrained weights, a :class:`SmoothedQuantizer` on every weight tensor
        (in place), and the schedule, set to τ = 0."""
        c = self.config
        names = list(prunable(model))
        levels = {n: weight_levels(p, c.quantizer, c.bits) for n, p in prunable(model).items()}
        for n in names:
            parametrize.register_parametrization(model.get_submodule(n.rsplit(".", 1)[0]), "weight",
                                                 SmoothedQuantizer(levels[n]))
        sigma0 = {n: c.noise_scale * float(np.diff(levels[n].astype(np.float64)).max()) for n in names}
        steps = c.epochs * -(-self.data.train_x.shape[0] // c.batch_size)
        schedule = NoiseSchedule(names, sigma0, steps, shape=c.shape, order=c.order, anneal_end=c.end)
        schedule.apply(model)
        return levels, schedule

    def anneal(self, model: nn.Module, arch: str, schedule: NoiseSchedule) -> list[dict]:
        c = self.config
        cfg = TrainConfig(arch=arch, epochs=c.epochs, batch_size=c.batch_size, optimizer="adam", lr=c.lr,
                          weight_decay=c.weight_decay, augment=c.augment, seed=c.seed, lr_schedule="cosine")
        return train(model, self.data, cfg, regularizer=schedule, progress=self.progress).history

    def run(self, pretrained: nn.Module, arch: str) -> tuple[BaselineRun, nn.Module]:
        c = self.config
        model = copy.deepcopy(pretrained)
        history = [{"stage": "pretrained", "val_accuracy": self._accuracy(model)}]
        levels, schedule = self.prepare(model)
        hard0 = harden(model, arch)
        history.append({"stage": "hard_at_start", "val_accuracy": self._accuracy(hard0)})
        epochs = self.anneal(model, arch, schedule)
        history.append({"stage": "anneal", "val_accuracy": self._accuracy(model), "epochs": epochs})
        harden_copy = harden(model, arch)
        history.append({"stage": "harden", "val_accuracy": self._accuracy(harden_copy)})
        if c.biases == "kmeans":
            quantize_biases(harden_copy, c.bias_bits)
            history.append({"stage": "biases", "val_accuracy": self._accuracy(harden_copy)})
        blob, decoded, layers, accs = encode_and_decode(harden_copy, arch, levels, self.data, codec=c.codec,
                                                        biases=c.biases)
        history.append({"stage": "encode", **accs, "file_bits": 8 * len(blob)})
        zeros = sum(int((p == 0).sum()) for p in prunable(harden_copy).values())
        run = BaselineRun(method="ana", arch=arch, config=c.to_dict(), n_params=count_parameters(harden_copy),
                          file_bits=8 * len(blob), accuracy=accs["test_accuracy"],
                          accuracy_before_coding=history[-2]["val_accuracy"], val_accuracy=accs["val_accuracy"],
                          history=history, layers=layers, file_bytes=blob,
                          extra={"levels": {n: v.tolist() for n, v in levels.items()},
                                 "windows": {n: schedule.window(n) for n in schedule.names},
                                 "sigma0": schedule.sigma0,
                                 "zero_fraction": zeros / sum(p.numel() for p in prunable(harden_copy).values())})
        return run, decoded
