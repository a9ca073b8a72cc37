"""Our headline recipe (issue 15), not METaQ: gradual pruning, then uniform (entropy-coded) scalar
quantization with straight-through fine-tuning, both distilled from the dense reference, then one
context-adaptive file.

Stages (each a call of :func:`metaq_utils.nn.training.train`, so both resume after an interruption):

1. **Gradual magnitude pruning** (:class:`GradualPruning`, Zhu & Gupta 2017's cubic schedule): from
   the dense reference, per weight tensor ``l`` the kept fraction goes from 1 to ``keep[l]`` along
   ``s(t) = s_f · (1 − (1 − t/T)³)`` over the first ``prune_end`` of the stage's steps, the mask
   re-drawn every ``prune_every`` steps from the magnitudes (the ``k`` largest survive; a pruned
   weight stays 0 and gets no gradient), then the stage trains on with the final mask.
2. **Quantization-aware fine-tuning** (:class:`STEQuantizer`): every surviving weight and every bias
   of layer ``l`` lies on the uniform grid ``Δ_l·ℤ`` with ``Δ_l = step · std(non-zero weights of l)``
   (an entropy-coded uniform quantizer: the step sets the rate; the index alphabet is whatever the
   weights need). The forward pass and the evaluation see the quantized network; the gradient taken
   there updates float "shadow" weights (straight-through estimator); the masks stay fixed (a
   weight may still round to 0). The best epoch is chosen on the validation split.
3. **The file**: one group per tensor, the grid ``Grid(0, (2K+1)Δ/2, 2K+1)`` (its centres are
   ``kΔ``, ``k = −K..K``), dense storage of the bucket indices with the ``codec`` (default
   ``"context"``: adaptive binary significance flags in neighbour contexts + adaptive values). The
   network reported is the one decoded from the file; the test set is evaluated once, on it.

The loss in both stages is :func:`distillation_loss` (Hinton et al. 2015): ``(1 − a)·CE(z, y) +
a·T²·KL(softmax(t/T) ‖ softmax(z/T))`` with the dense reference's logits ``t`` on the same
augmented batch.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metaq_utils.coding.fileformat import GroupSpec, read_compressed, write_compressed
from metaq_utils.core.grid import Grid
from metaq_utils.nn.checkpoints import load_checkpoint, save_checkpoint
from metaq_utils.nn.data import MNISTTensors
from metaq_utils.nn.networks import model_from_compressed
from metaq_utils.nn.training import FixedMasks, TrainConfig, evaluate, train
from metaq_utils.store.atomic import atomic_write_bytes

__all__ = ["RecipeConfig", "GradualPruning", "STEQuantizer", "distillation_loss", "cubic_sparsity",
           "layer_steps", "file_groups", "run_recipe", "DEFAULT_KEEP"]

# Kept fraction per weight tensor at density scale 1 (LeNet-5). The shape follows Deep Compression's
# protocol runs (conv1 keeps most, fc1 least); the scale is the knob.
DEFAULT_KEEP = {"conv1.weight": 0.5, "conv2.weight": 0.2, "fc1.weight": 0.1, "fc2.weight": 0.12,
                "fc3.weight": 0.3}


def cubic_sparsity(t: int, total: int, final: float) -> float:
    """Zhu & Gupta (2017) eq. 1 with s_i = 0: the sparsity after ``t`` of ``total`` steps."""
    if total <= 0 or t >= total:
        return final
    return final * (1.0 - (1.0 - t / total) ** 3)


def _weights(model: nn.Module, names) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameter(s) {missing}; it has {list(params)}")
    return {n: params[n] for n in names}


class GradualPruning(FixedMasks):
    """Training-loop regularizer (see :class:`metaq_utils.nn.training.Regularizer`): gradual
    magnitude pruning to per-tensor kept fractions ``keep`` over ``total_steps`` optimizer steps.
    It is :class:`~metaq_utils.nn.training.FixedMasks` (gradients of pruned weights zeroed, the
    mask re-applied after each step) whose masks are re-drawn on the schedule."""

    def __init__(self, model: nn.Module, keep: Mapping[str, float], total_steps: int, *, every: int = 50,
                 structure: float = 0.0, allocation: str = "fixed") -> None:
        bad = {n: k for n, k in keep.items() if not (0.0 < k <= 1.0)}
        if bad:
            raise ValueError(f"kept fractions must be in (0, 1], got {bad}")
        if every < 1 or total_steps < 0:
            raise ValueError(f"every must be >= 1 and total_steps >= 0 (got {every}, {total_steps})")
        params = _weights(model, keep)
        if not structure >= 0:
            raise ValueError(f"structure must be >= 0, got {structure}")
        if allocation not in ("fixed", "lamp"):
            raise ValueError(f"allocation must be 'fixed' or 'lamp', got {allocation!r}")
        self.allocation = allocation
        self.keep = dict(keep)
        self.structure = float(structure)
        self.total_steps = int(total_steps)
        self.every = int(every)
        self.t = 0
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}

    def kept_count(self, name: str, numel: int, t: int) -> int:
        s = cubic_sparsity(t, self.total_steps, 1.0 - self.keep[name])
        return max(1, int(round(numel * (1.0 - s))))

    def scores(self, p: torch.Tensor) -> torch.Tensor:
        """Pruning score of each weight: ``|w_ij| · (‖row_i‖/mean)^γ · (‖col_j‖/mean)^γ`` on the
        tensor viewed as (outputs, inputs·kernel) — with ``γ = structure`` > 0, weights of weak
        neurons and weak inputs go first, so whole rows and columns empty out (cheap to code
        with the context codec's row/column contexts); ``γ = 0``: plain magnitude."""
        a = p.detach().abs()
        if self.structure == 0.0 or a.dim() < 2:
            return a
        a2 = a.reshape(a.shape[0], -1)
        rows = a2.norm(dim=1, keepdim=True)
        cols = a2.norm(dim=0, keepdim=True)
        rows = rows / rows.mean().clamp_min(1e-30)
        cols = cols / cols.mean().clamp_min(1e-30)
        return (a2 * rows.pow(self.structure) * cols.pow(self.structure)).reshape(a.shape)

    @staticmethod
    def lamp_scores(score: torch.Tensor) -> torch.Tensor:
        """LAMP (Lee et al. 2021, eq. 2): ``s_u² / Σ_{v ≥ u} s_v²`` over the tensor's scores sorted
        ascending (ties in index order); comparable across layers, so one global threshold
        allocates the sparsity between them."""
        flat = score.flatten().double() ** 2
        order = torch.argsort(flat, stable=True)
        sq = flat[order]
        tail = torch.flip(torch.cumsum(torch.flip(sq, [0]), 0), [0])
        out = torch.empty_like(flat)
        out[order] = sq / tail.clamp_min(1e-300)
        return out.view_as(score)

    @torch.no_grad()
    def update_masks(self, model: nn.Module) -> None:
        if self.allocation == "lamp":
            self._update_global(model)
            return
        for n, p in _weights(model, self.keep).items():
            k = self.kept_count(n, p.numel(), self.t)
            if k >= p.numel():
                continue
            mag = self.scores(p) * self.masks[n]                # pruned weights never come back
            mag = mag.flatten()
            keep_idx = torch.topk(mag, k, sorted=False).indices
            m = torch.zeros(p.numel(), dtype=torch.bool)
            m[keep_idx] = True
            self.masks[n] = m.view_as(p) & self.masks[n]

    def _update_global(self, model: nn.Module) -> None:
        """LAMP allocation: the total kept count follows the schedule of the overall kept fraction
        ``Σ keep_l n_l / Σ n_l``; each layer keeps its weights of largest LAMP score (a weight
        already pruned scores 0 and stays pruned; every layer keeps at least one weight)."""
        params = _weights(model, self.keep)
        total = sum(p.numel() for p in params.values())
        target = sum(self.keep[n] * p.numel() for n, p in params.items()) / total
        s = cubic_sparsity(self.t, self.total_steps, 1.0 - target)
        k = max(len(params), int(round(total * (1.0 - s))))
        if k >= total:
            return
        scores = {n: self.lamp_scores(self.scores(p) * self.masks[n]) * self.masks[n] for n, p in params.items()}
        flat = torch.cat([v.flatten() for v in scores.values()])
        thr = torch.topk(flat, k, sorted=True).values[-1]
        for n, v in scores.items():
            m = (v >= thr) & self.masks[n]
            if not m.any():
                m = torch.zeros_like(m).flatten()
                m[torch.argmax(v.flatten())] = True
                m = m.view_as(v)
            self.masks[n] = m

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        self.t += 1
        if self.t % self.every == 0 or self.t >= self.total_steps:
            self.update_masks(model)
        super().after_step(model)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """The density of the masks (FixedMasks counts the non-zero weights instead)."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        return {"density": kept / sum(m.numel() for m in self.masks.values())}

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        super().load_state_dict(state)

    def config_dict(self) -> dict[str, Any]:
        return {"gradual_pruning": {"keep": self.keep, "total_steps": self.total_steps, "every": self.every,
                                    "structure": self.structure, "allocation": self.allocation}}


def layer_steps(model: nn.Module, step: float | Mapping[str, float], masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Δ per parameter: ``step · std`` of the layer's surviving weights (``step`` a number, or one
    per weight tensor); a bias uses its layer's Δ. Δ is rounded by :func:`short_float32`."""
    out: dict[str, float] = {}
    params = dict(model.named_parameters())
    for n, p in params.items():
        layer = n.rsplit(".", 1)[0]
        wname = f"{layer}.weight"
        w = params[wname].detach()
        m = masks.get(wname, torch.ones_like(w, dtype=torch.bool))
        nz = w[m & (w != 0)]
        if nz.numel() < 2:
            raise ValueError(f"{wname} has fewer than 2 surviving weights: cannot set its step")
        s = step[wname] if isinstance(step, Mapping) else step
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"the step multiplier of {wname} must be > 0 and finite, got {s}")
        out[n] = short_float32(s * float(nz.float().std()))
    return out


def short_float32(x: float, bits: int = 12) -> float:
    """``x`` rounded to a float32 with a ``bits``-bit significand, so that ``C·x/2`` is exactly
    representable in float32 for every ``C < 2**(24 − bits)``: the file then stores the grid's
    ``r`` as float32 (8 bytes for w0 and r, instead of 16 as float64)."""
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"a step must be > 0 and finite, got {x}")
    m, e = math.frexp(x)                       # x = m · 2**e, 0.5 <= m < 1
    return float(np.float32(round(m * 2 ** bits) * 2.0 ** (e - bits)))


class STEQuantizer:
    """Training-loop regularizer: quantization-aware training with a straight-through estimator.

    The model's parameters hold ``q(w) = mask · Δ·round(w/Δ)`` at every forward pass and every
    evaluation; ``after_backward`` puts the float shadow weights ``w`` back under the gradient
    taken at ``q(w)`` (and zeroes the gradient of pruned weights), the optimizer steps ``w``, and
    ``after_step`` stores ``w`` and writes ``q(w)`` again."""

    def __init__(self, model: nn.Module, steps: Mapping[str, float], masks: Mapping[str, torch.Tensor]) -> None:
        bad = {n: d for n, d in steps.items() if not (d > 0 and math.isfinite(d))}
        if bad:
            raise ValueError(f"quantization steps must be > 0 and finite, got {bad}")
        params = _weights(model, steps)
        self.steps = {n: float(d) for n, d in steps.items()}
        self.masks = {n: masks[n].to(torch.bool).clone() for n in masks if n in params}
        self.shadow = {n: p.detach().clone() for n, p in params.items()}
        for n, m in self.masks.items():
            self.shadow[n].masked_fill_(~m, 0.0)
        self._write(model)

    def quantized(self, name: str, w: torch.Tensor) -> torch.Tensor:
        q = torch.round(w / self.steps[name]) * self.steps[name]
        if name in self.masks:
            q = q * self.masks[name]
        return q

    @torch.no_grad()
    def _write(self, model: nn.Module) -> None:
        for n, p in _weights(model, self.steps).items():
            p.copy_(self.quantized(n, self.shadow[n]))

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for n, p in _weights(model, self.steps).items():
            p.copy_(self.shadow[n])
            if n in self.masks and p.grad is not None:
                p.grad.masked_fill_(~self.masks[n], 0.0)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, p in _weights(model, self.steps).items():
            self.shadow[n].copy_(p)
            if n in self.masks:
                self.shadow[n].masked_fill_(~self.masks[n], 0.0)
        self._write(model)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        params = _weights(model, self.steps)
        nz = sum(int((p != 0).sum()) for p in params.values())
        return {"nonzero": float(nz)}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": dict(self.steps), "masks": {n: m.clone() for n, m in self.masks.items()},
                "shadow": {n: w.clone() for n, w in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = {n: float(d) for n, d in state["steps"].items()}
        self.masks = {n: m.to(torch.bool) for n, m in state["masks"].items()}
        self.shadow = {n: w.clone() for n, w in state["shadow"].items()}

    def config_dict(self) -> dict[str, Any]:
        return {"ste_quantizer": {"steps": self.steps}}


def distillation_loss(teacher: nn.Module, *, temperature: float = 4.0,
                      alpha: float = 0.5) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss_fn`` for :func:`train`: ``(1 − a)·CE(z, y) + a·T²·KL(softmax(t/T) ‖ softmax(z/T))``,
    batch mean, with the teacher's logits ``t`` on the same inputs (no gradient to the teacher).
    Its gradient in the logits is ``[(1 − a)(softmax(z) − onehot(y)) + a·T·(softmax(z/T) −
    softmax(t/T))] / batch`` (checked by finite differences in the tests)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, yb)
        if alpha == 0.0:
            return ce
        with torch.no_grad():
            t = teacher(xb).to(logits.dtype)
        kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(t / temperature, dim=1),
                      reduction="batchmean", log_target=True) * temperature ** 2
        return (1.0 - alpha) * ce + alpha * kd

    return loss


def tensor_grid(values: np.ndarray, delta: float) -> Grid:
    """The smallest zero-centred grid with centres ``kΔ`` that holds every value of ``values``
    (already multiples of ``delta``): ``C = 2K + 1``, ``r = CΔ/2``."""
    K = int(np.max(np.abs(np.rint(values.astype(np.float64) / delta)))) if values.size else 0
    C = 2 * K + 1
    return Grid(0.0, C * float(delta) / 2.0, C)


def file_groups(model: nn.Module, steps: Mapping[str, float], codec: str = "context") -> list[GroupSpec]:
    """One dense group per parameter tensor, each on its zero-centred grid of step Δ."""
    groups = []
    for i, (n, p) in enumerate(model.named_parameters()):
        if n not in steps:
            raise ValueError(f"no quantization step for {n}")
        groups.append(GroupSpec(tensors=(i,), codebook=tensor_grid(p.detach().numpy(), steps[n]),
                                mode="dense", codec=codec))
    return groups


@dataclass(frozen=True)
class RecipeConfig:
    """Every knob of the recipe (saved with each run)."""
    density_scale: float = 1.0           # kept fraction of tensor l = min(1, DEFAULT_KEEP[l] · scale)
    keep: tuple[tuple[str, float], ...] = tuple(DEFAULT_KEEP.items())
    prune_epochs: int = 12
    prune_end: float = 0.6               # fraction of stage 1's steps by which the final sparsity is reached
    prune_every: int = 50
    prune_lr: float = 5e-4
    structure: float = 0.0               # γ of GradualPruning.scores (0: plain magnitude pruning)
    allocation: str = "fixed"            # 'fixed': keep[l]·scale per layer; 'lamp': the same total, LAMP-allocated
    step: float = 0.5                    # Δ_l = step · std(surviving weights of l)
    quant_epochs: int = 6
    quant_lr: float = 1e-4
    temperature: float = 4.0
    alpha: float = 0.5                   # weight of the distillation term (0: plain cross-entropy)
    batch_size: int = 64
    augment: bool = True
    codec: str = "context"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.density_scale > 0:
            raise ValueError(f"density_scale must be > 0, got {self.density_scale}")
        if self.prune_epochs < 1 or self.quant_epochs < 1:
            raise ValueError("prune_epochs and quant_epochs must be >= 1")
        if not 0.0 < self.prune_end <= 1.0:
            raise ValueError(f"prune_end must be in (0, 1], got {self.prune_end}")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")

    def kept_fractions(self) -> dict[str, float]:
        return {n: min(1.0, k * self.density_scale) for n, k in self.keep}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep"] = dict(self.keep)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RecipeConfig":
        d = dict(d)
        if "keep" in d and isinstance(d["keep"], Mapping):
            d["keep"] = tuple(d["keep"].items())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def run_recipe(dense_checkpoint: str | Path, data: MNISTTensors, config: RecipeConfig, out_dir: str | Path, *,
               evaluate_test: bool = True, progress: bool = False, log: Callable[[str], None] = print,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the three stages from a dense LeNet-5 checkpoint into ``out_dir`` (resumable) and return
    the result (also written, atomically, to ``out_dir/result.json``, with the caller's ``extra``
    entries such as the command): validation accuracy of the decoded file, its size, and
    (``evaluate_test``) its test accuracy, evaluated once."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if not getattr(data, "has_validation", False):
        raise ValueError("run_recipe needs data with the validation split (load_mnist() default)")
    ck = load_checkpoint(dense_checkpoint)
    arch = ck.arch
    teacher = ck.build_model()
    loss_fn = distillation_loss(teacher, temperature=config.temperature, alpha=config.alpha)
    steps_per_epoch = -(-data.train_x.shape[0] // config.batch_size)

    # 1. gradual pruning
    model = ck.build_model()
    keep = config.kept_fractions()
    pruner = GradualPruning(model, keep, int(config.prune_end * config.prune_epochs * steps_per_epoch),
                            every=config.prune_every, structure=config.structure,
                            allocation=config.allocation)
    cfg1 = TrainConfig(arch=arch, epochs=config.prune_epochs, batch_size=config.batch_size, lr=config.prune_lr,
                       betas=(0.9, 0.999), augment=config.augment, seed=config.seed, lr_schedule="cosine")
    res1 = train(model, data, cfg1, regularizer=pruner, loss_fn=loss_fn, checkpoint_path=out / "prune_last.pt",
                 resume=True, progress=progress)
    masks = {n: m.clone() for n, m in pruner.masks.items()}
    log(f"  pruning: density {res1.final.get('density', float('nan')):.4f}, "
        f"val {100 * res1.final.get('val_accuracy', float('nan')):.2f} %")

    # 2. quantization-aware fine-tuning (the best epoch on validation)
    steps = layer_steps(model, config.step, masks)
    quantizer = STEQuantizer(model, steps, masks)
    cfg2 = TrainConfig(arch=arch, epochs=config.quant_epochs, batch_size=config.batch_size, lr=config.quant_lr,
                       betas=(0.9, 0.999), augment=config.augment, seed=config.seed + 1000, lr_schedule="cosine")
    res2 = train(model, data, cfg2, regularizer=quantizer, loss_fn=loss_fn, checkpoint_path=out / "quant_last.pt",
                 resume=True, best_path=out / "quant_best.pt", progress=progress)
    best = load_checkpoint(out / "quant_best.pt")
    model.load_state_dict(best.state_dict)

    # 3. the file, and the network decoded from it
    tensors = [p.detach().numpy() for p in model.parameters()]
    groups = file_groups(model, steps, config.codec)
    path = out / "model.mtq"
    file_bits = write_compressed(path, arch, tensors, groups)
    dec_model = model_from_compressed(read_compressed(path))
    val = evaluate(dec_model, data.val_x, data.val_y)["accuracy"]
    n_params = sum(p.numel() for p in dec_model.parameters())
    weights = {n: p for n, p in dec_model.named_parameters() if n.endswith("weight")}
    nonzero = sum(int((p != 0).sum()) for p in weights.values())
    result: dict[str, Any] = {
        "method": "ours-prune-ste", "arch": arch, "recipe": config.to_dict(), "dense_reference": str(dense_checkpoint),
        "split": data.split, "selection": "validation", "file": path.name, "file_bits": file_bits,
        "n_params": n_params, "bits_per_weight": file_bits / n_params,
        "compression_ratio": 32 * n_params / file_bits,
        "weight_density": nonzero / sum(p.numel() for p in weights.values()),
        "steps": steps, "kept_fractions": keep, "val_accuracy": val,
        "best_quant_epoch": res2.best_epoch, "history": [{**r, "stage": "prune"} for r in res1.history]
        + [{**r, "stage": "quantize"} for r in res2.history]}
    if evaluate_test:
        result["test_accuracy"] = evaluate(dec_model, data.test_x, data.test_y)["accuracy"]
        result["accuracy"] = result["test_accuracy"]
    result["seconds"] = time.time() - t_start
    result.update(extra or {})
    atomic_write_bytes(out / "result.json", (json.dumps(result, indent=1) + "\n").encode())
    save_checkpoint(out / "decoded.pt", dec_model, arch,
                    config={"recipe": config.to_dict(), "split": data.split, "selection": "validation",
                            "from_file": path.name, "dense_reference": str(dense_checkpoint)},
                    metrics={k: result[k] for k in ("val_accuracy", "file_bits") if k in result}
                    | ({"test_accuracy": result["test_accuracy"]} if evaluate_test else {}))
    return result
