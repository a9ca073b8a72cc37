"""Soft weight-sharing (Ullrich, Meeds & Welling, ICLR 2017) on our networks, measured with our
compressed file format.

Reference: the authors' tutorial ``KarenUllrich/Tutorial-SoftWeightSharingForNNCompression`` at
commit ``d1cb9025fe886f7b57b47ffc6d11370ea76a7a6c`` (``empirical_priors.py``, ``helpers.py``,
``optimizers.py``, ``tutorial.ipynb``), followed rule by rule; file:line below refer to it.

1. ``prior``     a Gaussian mixture over ALL the network's parameters, biases included (the tutorial
                 passes ``extract_weights(model)``, tutorial.ipynb cell 14): J components
                 (cell 14: ``nb_components=16``), component 0 with mean fixed at 0 and mixing
                 proportion fixed at π0 (cell 14: 0.99); learned: the J−1 other means (initialised
                 ``linspace(-0.6, 0.6, J-1)``, empirical_priors.py:35), J log-precisions γ
                 (initial std 0.25, :38-39) and J−1 mixing logits ρ (initialised
                 ``log((1-π0)/(J-1))``, :42-44; proportions ``(1-π0)·softmax(ρ)``, :57-60).
                 −log p(w) = −Σ_i log Σ_j π_j N(w_i | μ_j, 1/λ_j) (:79-89), plus Gamma hyper-priors
                 on the precisions λ_j = exp(γ_j): shape/rate (α, β) = (5e3, 2) for the zero
                 component and (250, 0.1) for the others, as ``(1-α)·γ + β·λ`` (:66-75).
2. ``retrain``   loss = cross-entropy (mean over the batch) + τ/N · complexity (cell 16:
                 ``loss_weights = {error: 1, complexity: tau/N}``, τ = 0.003, N the training-set size),
                 Adam with its own learning rate per group (cell 16 / optimizers.py:64-70):
                 network 5e-4, means 1e-4, log-precisions 3e-3, mixing logits 3e-3; batch 256
                 (cell 7), 30 epochs (cell 18), no learning-rate decay, no augmentation.
3. ``merge``     components whose KL divergence (helpers.py:60-64) is below 1e-10 in either
                 direction are merged (helpers.py:99-101, transitively, ``merger`` :41-57): the merged
                 log mixing proportion is the logsumexp, mean and precision the π-weighted means
                 (:106-112); the merged mean closest to 0 is set to 0 (:114).
4. ``quantize``  every parameter is set to the mean of the component with the highest
                 (unnormalised) responsibility π_j √λ_j exp(−λ_j (w − μ_j)²/2) (:67-77, :116-118).
5. ``encode``    the file through :mod:`metaq_utils.coding.fileformat`, exactly as Deep Compression
                 writes it (:meth:`DeepCompression.group_specs`): one sparse group per weight tensor
                 (its distinct non-zero values, here the mixture means, as the table) and all biases as
                 one dense group on their distinct values (≤ J).

Deviations (each named):

* The merge and the responsibilities use the mixing proportions the prior actually uses
  (log π0 and ``log((1-π0) softmax(ρ))``); the tutorial's ``discretesize`` takes the raw logits ρ as
  log proportions (helpers.py:86), which equal them only while Σ exp(ρ) = 1 − π0 (at the start).
* Responsibilities are compared in the log domain (same argmax; the tutorial's products,
  helpers.py:75-76, can underflow to 0 for every component, and ``argmax`` then picks the first).
* The merge is the full transitive closure (union-find) of the KL pairs; the tutorial's ``merger``
  makes 3 passes (helpers.py:43), which gives the same groups unless a chain needs more passes.
* The Gamma (and Beta) hyper-priors are computed with their normalising constants, so the complexity
  is an exact negative log density (the constants do not change any gradient).
* Optional, off by default: ``pi_zero_beta = (a, b)`` learns π0 (as a logit, learning rate of the
  mixing logits) under a Beta(a, b) hyper-prior — the tutorial's suggestion (cell 26: "learn the
  mixing proportion for the zero spike with a beta prior on it"), not what the tutorial runs.
* The paper's budgets and per-network hyper-parameters came from Spearmint searches not in the
  tutorial; the experiment script states its own budget (epochs) and the τ values it tries.
* Training uses our 55,000-image training split (N = 55,000); the tutorial trains on all 60,000.
* Epoch selection (``select='smallest'``, off by default): the tutorial quantizes after the last
  epoch (``select='last'``, the default).

Every size is the size of the whole file in bits; the reported accuracy is that of the network
decoded from the file (checked bit for bit against the quantized network). Every stage and choice is
scored on the validation split; the test set is evaluated once, on the decoded network.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from ..coding.fileformat import GroupSpec, read_compressed, round_trip
from ..nn.networks import count_parameters, model_from_compressed
from ..nn.training import TrainConfig, train
from ..store.atomic import atomic_write_bytes
from .base import BaselineConfig, BaselineMethod, BaselineRun, prunable
from .deep_compression import DeepCompression, DeepCompressionConfig

__all__ = ["SoftWeightSharingConfig", "GaussianMixturePrior", "MixturePriorTerm", "SoftWeightSharing",
           "SoftWeightSharingResult", "gaussian_kl", "merge_components", "assign_components",
           "discretize", "SELECT_MODES"]

SELECT_MODES = ("last", "smallest")


@dataclass(frozen=True)
class SoftWeightSharingConfig(BaselineConfig):
    """Knobs of the method (saved with every run); defaults: the tutorial's (file:line in the module docstring)."""
    components: int = 16                                   # J, zero component included (cell 14)
    pi_zero: float = 0.99                                  # π0, fixed (cell 14); initial value if learned
    pi_zero_beta: tuple[float, float] | None = None        # (a, b): learn π0 under Beta(a, b) (cell 26); None: fixed
    init_range: float = 0.6                                # means linspace(-r, r, J-1) (empirical_priors.py:35)
    init_std: float = 0.25                                 # every component's initial std (:38)
    zero_gamma_prior: tuple[float, float] = (5e3, 2.0)     # (α, β) on λ_0 (:68)
    gamma_prior: tuple[float, float] = (2.5e2, 0.1)        # (α, β) on λ_j, j ≥ 1 (:72)
    tau: float = 0.003                                     # complexity weight τ (cell 16)
    epochs: int = 30                                       # retraining epochs (cell 18)
    batch_size: int = 256                                  # (cell 7)
    lr: float = 5e-4                                       # network (cell 16)
    lr_means: float = 1e-4                                 # (cell 16)
    lr_gammas: float = 3e-3                                # log-precisions (cell 16)
    lr_rhos: float = 3e-3                                  # mixing logits (and π0's logit) (cell 16)
    merge_kl: float = 1e-10                                # KL threshold of the merge (helpers.py:100)
    select: str = "last"                                   # 'last' (tutorial) | 'smallest' (see SoftWeightSharing)
    max_val_drop: float = 0.005                            # select='smallest': allowed drop below the dense val accuracy
    codec: str = "range"                                   # value and index codec of the file
    augment: bool = False                                  # the tutorial retrains without augmentation
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.pi_zero_beta, list):
            object.__setattr__(self, "pi_zero_beta", tuple(self.pi_zero_beta))
        for name in ("zero_gamma_prior", "gamma_prior"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if int(self.components) != self.components or self.components < 2:
            raise ValueError(f"components must be an integer >= 2 (the zero component and at least one other), "
                             f"got {self.components}")
        if not 0.0 < self.pi_zero < 1.0:
            raise ValueError(f"pi_zero must be in (0, 1), got {self.pi_zero}")
        for name in ("zero_gamma_prior", "gamma_prior") + (("pi_zero_beta",) if self.pi_zero_beta is not None else ()):
            v = getattr(self, name)
            if len(v) != 2 or not all(np.isfinite(x) and x > 0 for x in v):
                raise ValueError(f"{name} must be two positive numbers, got {v!r}")
        for name in ("init_range", "init_std", "lr", "lr_means", "lr_gammas", "lr_rhos", "merge_kl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1 (got {self.epochs}, {self.batch_size})")
        if self.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {self.select!r}")
        if not 0 <= self.max_val_drop <= 1:
            raise ValueError(f"max_val_drop must be in [0, 1], got {self.max_val_drop}")


# ------------------------------------------------------------------------------------------------
# 1. the prior


class GaussianMixturePrior(nn.Module):
    """The mixture prior with its hyper-priors (empirical_priors.py:20-89). Parameters: ``means``
    (J−1), ``gammas`` (J log-precisions, the zero component's first), ``rhos`` (J−1 mixing logits)
    and, with ``pi_zero_beta``, ``zero_logit`` (logit of π0)."""

    def __init__(self, config: SoftWeightSharingConfig) -> None:
        super().__init__()
        J = config.components
        self.config = config
        self.means = nn.Parameter(torch.tensor(np.linspace(-config.init_range, config.init_range, J - 1)))
        self.gammas = nn.Parameter(torch.full((J,), -math.log(config.init_std ** 2), dtype=torch.float64))
        self.rhos = nn.Parameter(torch.full((J - 1,), math.log((1 - config.pi_zero) / (J - 1)), dtype=torch.float64))
        if config.pi_zero_beta is not None:
            self.zero_logit = nn.Parameter(torch.tensor(math.log(config.pi_zero / (1 - config.pi_zero)),
                                                        dtype=torch.float64))
        else:
            self.zero_logit = None
        self.float()

    def log_pi_zero(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π0, log(1 − π0))."""
        if self.zero_logit is None:
            p = self.config.pi_zero
            return (torch.tensor(math.log(p), dtype=self.gammas.dtype),
                    torch.tensor(math.log1p(-p), dtype=self.gammas.dtype))
        return torch.nn.functional.logsigmoid(self.zero_logit), torch.nn.functional.logsigmoid(-self.zero_logit)

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means, log-precisions, log mixing proportions), J each, the zero component first
        (empirical_priors.py:53-60)."""
        log_p0, log_rest = self.log_pi_zero()
        means = torch.cat([torch.zeros(1, dtype=self.means.dtype), self.means])
        log_pis = torch.cat([log_p0.reshape(1), log_rest + torch.log_softmax(self.rhos, 0)])
        return means, self.gammas, log_pis

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """log Σ_j π_j N(w_i | μ_j, 1/λ_j) for every entry of the flat ``w`` (empirical_priors.py:79-89;
        plain autograd, for checks and small inputs)."""
        means, gammas, log_pis = self.mixture()
        diff = w.reshape(-1, 1) - means.reshape(1, -1)
        log_n = -0.5 * diff ** 2 * torch.exp(gammas) + 0.5 * (gammas - math.log(2 * math.pi))
        return torch.logsumexp(log_n + log_pis, dim=1)

    def neg_log_likelihood(self, w: torch.Tensor) -> torch.Tensor:
        """−Σ_i log p(w_i) (= ``-log_prob(w).sum()``) with analytic gradients, in chunks of
        :data:`CHUNK` weights (:class:`_MixtureNLL`; about 3× faster than autograd on one core)."""
        means, gammas, log_pis = self.mixture()
        return _MixtureNLL.apply(w.reshape(-1), means, gammas, log_pis)

    def neg_log_hyperprior(self) -> torch.Tensor:
        """−log Gamma(λ_0; α0, β0) − Σ_{j≥1} log Gamma(λ_j; α, β) (empirical_priors.py:66-75, with the
        normalising constants), and −log Beta(π0; a, b) when π0 is learned."""
        g = self.gammas
        lam = torch.exp(g)
        out = g.new_zeros(())
        for sl, (a, b) in ((slice(0, 1), self.config.zero_gamma_prior), (slice(1, None), self.config.gamma_prior)):
            out = out + torch.sum((1 - a) * g[sl] + b * lam[sl] - a * math.log(b) + math.lgamma(a))
        if self.zero_logit is not None:
            a, b = self.config.pi_zero_beta
            log_p0, log_rest = self.log_pi_zero()
            out = out - (a - 1) * log_p0 - (b - 1) * log_rest + (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        return out

    def complexity(self, w: torch.Tensor) -> torch.Tensor:
        """−log p(w) − log p(hyper-parameters): the complexity loss of empirical_priors.py:48-77."""
        return self.neg_log_likelihood(w) + self.neg_log_hyperprior()

    def numpy_mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`mixture` as float64 arrays."""
        with torch.no_grad():
            return tuple(t.detach().double().numpy().copy() for t in self.mixture())

    def param_groups(self) -> list[dict[str, Any]]:
        """Adam groups with the tutorial's learning rates (cell 16)."""
        c = self.config
        groups = [{"params": [self.means], "lr": c.lr_means}, {"params": [self.gammas], "lr": c.lr_gammas},
                  {"params": [self.rhos], "lr": c.lr_rhos}]
        if self.zero_logit is not None:
            groups.append({"params": [self.zero_logit], "lr": c.lr_rhos})
        return groups


CHUNK = 8192          # weights per chunk of _MixtureNLL (the N×J temporaries stay in cache)


class _MixtureNLL(torch.autograd.Function):
    """−Σ_i log Σ_j exp(log π_j + γ_j/2 − log(2π)/2 − e^{γ_j} (w_i − μ_j)²/2) and its gradients
    (r_ij the responsibilities): ∂/∂w_i = Σ_j r_ij λ_j (w_i − μ_j), ∂/∂μ_j = −Σ_i r_ij λ_j (w_i − μ_j),
    ∂/∂γ_j = Σ_i r_ij (λ_j (w_i − μ_j)²/2 − 1/2), ∂/∂log π_j = −Σ_i r_ij. Computed in the forward
    pass, chunk by chunk; the backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, w, means, gammas, log_pis):
        lam = torch.exp(gammas)
        const = log_pis + 0.5 * gammas - 0.5 * math.log(2 * math.pi)
        gw = torch.empty_like(w)
        gmu, ggam, gpi = torch.zeros_like(means), torch.zeros_like(gammas), torch.zeros_like(log_pis)
        total = w.new_zeros(())
        for i in range(0, w.numel(), CHUNK):
            d = w[i:i + CHUNK, None] - means[None, :]
            s = d.square().mul_(-0.5 * lam).add_(const)
            m = s.amax(1, keepdim=True)
            r = s.sub_(m).exp_()
            z = r.sum(1, keepdim=True)
            r.div_(z)
            total -= z.log_().add_(m).sum()
            rsum = r.sum(0)
            rl = r.mul_(d).mul_(lam)                         # r λ (w − μ)
            gw[i:i + CHUNK] = rl.sum(1)
            gmu -= rl.sum(0)
            ggam += 0.5 * rl.mul_(d).sum(0) - 0.5 * rsum    # r λ (w − μ)² / 2 − r / 2
            gpi -= rsum
        ctx.save_for_backward(gw, gmu, ggam, gpi)
        return total

    @staticmethod
    def backward(ctx, grad):
        return tuple(grad * g for g in ctx.saved_tensors)


class MixturePriorTerm:
    """Training-loop regularizer: adds τ/N · ∂complexity/∂w to every network parameter's gradient
    (cell 16's loss weights) and takes one Adam step of the prior's parameters on the same
    gradient (the network's step follows: a simultaneous update). ``epoch_hook(model, prior)``
    returns extra per-epoch metrics (the quantized network's, see :class:`SoftWeightSharing`)."""

    def __init__(self, prior: GaussianMixturePrior, tau: float, n_train: int,
                 epoch_hook: Callable[[nn.Module, GaussianMixturePrior], dict[str, float]] | None = None) -> None:
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {n_train}")
        self.prior = prior
        self.scale = tau / n_train
        self.optimizer = torch.optim.Adam(prior.param_groups())
        self.epoch_hook = epoch_hook

    def after_backward(self, model: nn.Module) -> None:
        params = list(model.parameters())
        prior_params = list(self.prior.parameters())
        w = torch.cat([p.reshape(-1) for p in params])
        loss = self.scale * self.prior.complexity(w)
        grads = torch.autograd.grad(loss, params + prior_params)
        for p, g in zip(params, grads[:len(params)]):
            p.grad = g if p.grad is None else p.grad + g
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(prior_params, grads[len(params):]):
            p.grad = g
        self.optimizer.step()

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        means, gammas, log_pis = self.prior.numpy_mixture()
        row = {"pi_zero": float(np.exp(log_pis[0])), "zero_std": float(np.exp(-0.5 * gammas[0])),
               "min_std": float(np.exp(-0.5 * gammas[1:]).min())}
        if self.epoch_hook is not None:
            row.update(self.epoch_hook(model, self.prior))
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"prior": {k: v.detach().clone() for k, v in self.prior.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior.load_state_dict(state["prior"])
        self.optimizer.load_state_dict(state["optimizer"])


# ------------------------------------------------------------------------------------------------
# 3-4. merge and quantize (NumPy, float64)


def gaussian_kl(m0: float, lp0: float, m1: float, lp1: float) -> float:
    """KL(N(m0, 1/e^lp0) ‖ N(m1, 1/e^lp1)), as helpers.py:60-64 writes it."""
    return 0.5 * (lp0 - lp1) + math.exp(lp1) / 2.0 * (math.exp(-lp0) + (m0 - m1) ** 2) - 0.5


def _check_mixture(means, log_precisions, log_pis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrs = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (means, log_precisions, log_pis)]
    if not (arrs[0].size == arrs[1].size == arrs[2].size) or arrs[0].size == 0:
        raise ValueError(f"means, log_precisions and log_pis must be non-empty and of one length, got sizes "
                         f"{[a.size for a in arrs]}")
    if not all(np.isfinite(a).all() for a in arrs[:2]) or np.isnan(arrs[2]).any() or (arrs[2] == np.inf).any():
        raise ValueError("the mixture's parameters must be finite (log_pis may be -inf)")
    return tuple(arrs)


def merge_components(means, log_precisions, log_pis, kl_threshold: float = 1e-10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """Merge the components whose KL divergence is below ``kl_threshold`` in either direction
    (helpers.py:90-112), transitively; returns (means, log_precisions, log_pis, groups), the groups
    ordered by their smallest index, then the merged mean closest to 0 set to 0 (helpers.py:114)."""
    means, lps, lpis = _check_mixture(means, log_precisions, log_pis)
    if not kl_threshold > 0:
        raise ValueError(f"kl_threshold must be > 0, got {kl_threshold}")
    J = means.size
    parent = list(range(J))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(J):
        for j in range(J):
            if i != j and gaussian_kl(means[i], lps[i], means[j], lps[j]) < kl_threshold:
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(J):
        groups.setdefault(root(i), []).append(i)
    lists = [groups[r] for r in sorted(groups)]
    new_means, new_lps, new_lpis = [], [], []
    for l in lists:
        lp = lpis[l]
        new_lpis.append(logsumexp(lp))
        wts = np.exp(lp - np.max(lp))       # ∝ π (helpers.py subtracts the min; same ratios, no overflow)
        new_means.append(np.sum(means[l] * wts) / np.sum(wts))
        new_lps.append(np.log(np.sum(np.exp(lps[l]) * wts) / np.sum(wts)))
    new_means = np.asarray(new_means)
    new_means[np.argmin(np.abs(new_means))] = 0.0
    return new_means, np.asarray(new_lps), np.asarray(new_lpis), lists


def assign_components(w, means, log_precisions, log_pis) -> np.ndarray:
    """Index of the component with the highest responsibility π_j √λ_j exp(−λ_j (w − μ_j)²/2) for
    every entry of ``w`` (helpers.py:67-77, in the log domain; ties: the first)."""
    means, lps, lpis = _check_mixture(means, log_precisions, log_pis)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if not np.isfinite(w).all():
        raise ValueError("the weights must be finite")
    score = lpis[None, :] + 0.5 * lps[None, :] - 0.5 * np.exp(lps)[None, :] * (w[:, None] - means[None, :]) ** 2
    return np.argmax(score, axis=1)


def discretize(tensors: Sequence[np.ndarray], means, log_precisions, log_pis, kl_threshold: float = 1e-10
               ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """helpers.py:80-121: merge, then every entry of every tensor set to its component's mean (the
    zero component's is exactly 0). Returns (float32 tensors, info: the merged mixture, groups, counts)."""
    m, lp, lpi, groups = merge_components(means, log_precisions, log_pis, kl_threshold)
    arrays = [np.asarray(t) for t in tensors]
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    idx = assign_components(flat, m, lp, lpi)
    values = m.astype(np.float32)
    q = values[idx]
    out, start = [], 0
    for a in arrays:
        out.append(q[start:start + a.size].reshape(a.shape).copy())
        start += a.size
    counts = np.bincount(idx, minlength=m.size)
    info = {"means": m.tolist(), "log_precisions": lp.tolist(), "log_pis": lpi.tolist(), "groups": groups,
            "counts": counts.tolist(), "used_components": int((counts > 0).sum())}
    return out, info


# ------------------------------------------------------------------------------------------------
# the method


@dataclass(kw_only=True)
class SoftWeightSharingResult(BaselineRun):
    """One run (a :class:`~.base.BaselineRun`): the decoded network's accuracy, the file's exact
    size, the history, the density of the weight tensors and the epoch that was encoded."""
    method: str = "soft-weight-sharing"
    density: float                      # non-zero / total entries of the weight tensors (biases excluded)
    epoch: int                          # the retraining epoch whose quantized network is the file


def _density(model: nn.Module) -> float:
    params = prunable(model).values()
    return sum(int((p != 0).sum()) for p in params) / sum(p.numel() for p in params)


class SoftWeightSharing(BaselineMethod):
    """``retrain`` (network + prior) → ``quantize`` (merge, most responsible mean) → ``encode``;
    :meth:`run` does all of it.

    After every epoch the network is quantized with the current prior, written as a file
    (``epochs/e<k>.mtq`` in the run folder when one is given) and scored on validation (history
    keys ``q_val_accuracy``, ``q_file_bits``, ``q_density``, ``q_components``). The file of the run
    is the last epoch's (``select='last'``, the tutorial) or (``select='smallest'``) the smallest
    epoch file whose validation accuracy is at least the dense network's minus ``max_val_drop``
    (the most accurate one when none is). The test set is evaluated once, on the chosen file."""

    config: SoftWeightSharingConfig

    def _coder(self) -> DeepCompression:
        return DeepCompression(DeepCompressionConfig(codec=self.config.codec, biases="kmeans"), self.data)

    def group_specs(self, model: nn.Module) -> list[GroupSpec]:
        """Deep Compression's groups (:meth:`DeepCompression.group_specs`) for the quantized model."""
        return self._coder().group_specs(model)

    def quantize(self, model: nn.Module, prior: GaussianMixturePrior) -> tuple[nn.Module, dict[str, Any]]:
        """A copy of ``model`` with every parameter set to its component's mean (steps 3-4)."""
        q = copy.deepcopy(model)
        params = list(q.parameters())
        tensors, info = discretize([p.detach().numpy() for p in params], *prior.numpy_mixture(),
                                   kl_threshold=self.config.merge_kl)
        with torch.no_grad():
            for p, t in zip(params, tensors):
                p.copy_(torch.from_numpy(t))
        return q, info

    def encode(self, model: nn.Module, arch: str) -> tuple[bytes, Any]:
        """(file bytes, decoded CompressedModel) of a quantized model, read back bit for bit."""
        names = [n for n, _ in model.named_parameters()]
        rt = round_trip(arch, [p.detach() for p in model.parameters()], self.group_specs(model)).check(names)
        return rt.data, rt.decoded

    def retrain(self, dense: nn.Module, arch: str, out_dir: Path | None = None
                ) -> tuple[nn.Module, GaussianMixturePrior, list[dict], dict[int, bytes]]:
        """Step 2 on a copy of ``dense``; resumable from ``out_dir/last.pt``. Returns (model,
        prior, history, {epoch: file bytes}); epoch 0 is the dense network quantized with the
        initial prior."""
        c = self.config
        model = copy.deepcopy(dense)
        prior = GaussianMixturePrior(c)
        files: dict[int, bytes] = {}
        epoch_no = [0]

        def hook(m: nn.Module, p: GaussianMixturePrior) -> dict[str, float]:
            epoch_no[0] += 1
            return self._score_epoch(m, p, arch, epoch_no[0], files, out_dir)

        term = MixturePriorTerm(prior, c.tau, int(self.data.train_x.shape[0]), epoch_hook=hook)
        ckpt = None if out_dir is None else Path(out_dir) / "last.pt"
        if ckpt is not None and ckpt.exists():
            from ..nn.checkpoints import load_checkpoint
            epoch_no[0] = load_checkpoint(ckpt, expected_arch=arch).training_state["epoch"]
        start = self._score_epoch(model, prior, arch, 0, files, out_dir)
        tc = TrainConfig(arch=arch, epochs=c.epochs, batch_size=c.batch_size, optimizer="adam", lr=c.lr,
                         weight_decay=0.0, augment=c.augment, seed=c.seed, lr_schedule="constant")
        result = train(model, self.data, tc, regularizer=term, checkpoint_path=ckpt, resume=ckpt is not None,
                       progress=self.progress)
        history = [{"epoch": 0, "val_accuracy": self._accuracy(dense), **start}] + result.history
        if out_dir is not None:          # epochs before a resume: their files were written then
            for h in history:
                if h["epoch"] not in files:
                    files[h["epoch"]] = (Path(out_dir) / "epochs" / f"e{h['epoch']}.mtq").read_bytes()
        return model, prior, history, files

    def _score_epoch(self, model, prior, arch, epoch, files, out_dir) -> dict[str, float]:
        q, info = self.quantize(model, prior)
        data, _ = self.encode(q, arch)
        files[epoch] = data
        if out_dir is not None:
            path = Path(out_dir) / "epochs" / f"e{epoch}.mtq"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        return {"q_val_accuracy": self._accuracy(q), "q_file_bits": 8 * len(data), "q_density": _density(q),
                "q_components": info["used_components"]}

    def select_epoch(self, history: list[dict]) -> int:
        """The epoch whose file is the run's (see the class docstring); validation numbers only."""
        c = self.config
        if c.select == "last":
            return history[-1]["epoch"]
        level = history[0]["val_accuracy"] - c.max_val_drop
        ok = [h for h in history if h["q_val_accuracy"] >= level]
        if ok:
            return min(ok, key=lambda h: (h["q_file_bits"], -h["q_val_accuracy"], h["epoch"]))["epoch"]
        return max(history, key=lambda h: (h["q_val_accuracy"], -h["q_file_bits"], -h["epoch"]))["epoch"]

    def run(self, dense: nn.Module, arch: str, out_dir: str | Path | None = None
            ) -> tuple[SoftWeightSharingResult, nn.Module]:
        """The whole method on a trained dense network (left unchanged). Returns (result, decoded model)."""
        out_dir = None if out_dir is None else Path(out_dir)
        model, prior, history, files = self.retrain(dense, arch, out_dir)
        epoch = self.select_epoch(history)
        data = files[epoch]
        cm = read_compressed(data, expected_arch=arch)
        decoded = model_from_compressed(cm)
        val = self._accuracy(decoded)
        row = next(h for h in history if h["epoch"] == epoch)
        if val != row["q_val_accuracy"]:
            raise AssertionError(f"epoch {epoch}: the decoded file scores {val} on validation, the quantized "
                                 f"network {row['q_val_accuracy']}")
        acc = self._test_accuracy(decoded)          # the test set, once, on the decoded network
        names = [n for n, _ in decoded.named_parameters()]
        layers = [{"tensors": [names[i] for i in g.tensors], "mode": g.mode,
                   "n": sum(int(np.prod(cm.shapes[i])) for i in g.tensors),
                   "values": None if g.codebook is None else int(np.asarray(g.codebook).size),
                   "codec": g.codec, "max_gap": g.max_gap, "n_entries": g.n_entries,
                   "payload_bytes": g.payload_bytes, "group_bytes": g.group_bytes} for g in cm.groups]
        means, gammas, log_pis = prior.numpy_mixture()
        _, info = discretize([p.detach().numpy() for p in model.parameters()], means, gammas, log_pis,
                             self.config.merge_kl) if epoch == history[-1]["epoch"] else (None, None)
        extra = {"final_prior": {"means": means.tolist(), "log_precisions": gammas.tolist(),
                                 "log_pis": log_pis.tolist()}}
        if info is not None:
            extra["merged"] = info
        result = SoftWeightSharingResult(arch=arch, config=self.config.to_dict(), n_params=count_parameters(decoded),
                                         file_bits=cm.file_bits, accuracy=acc, accuracy_before_coding=val,
                                         val_accuracy=val, density=_density(decoded), epoch=epoch,
                                         history=history, layers=layers, extra=extra, file_bytes=data)
        return result, decoded
