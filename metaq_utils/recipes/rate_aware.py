"""Rate-aware quantization (issue 23; our own variant, not METaQ, reported apart): rate-distortion-
optimised quantization (RDOQ, as NNCodec's DeepCABAC encoder does it) inside the straight-through
fine-tuning of :mod:`metaq_utils.recipes.prune_quantize`, charged with the context coder's own cost.

Rate model (:func:`rate_table`). For one weight tensor with integer levels ``k`` (weight ``kΔ``)
the context codec (``metaq_utils/coding/context.py``, codec ``"context"``) codes a significance
flag ``k != z`` (``z`` the most frequent level, 0 for a pruned tensor) in a context made of
earlier flags, then the values. The table reproduces the encoder's own choices: the flag scheme,
stride and halving limit the encoder keeps (the smallest ideal flag length over the same
candidates, ``ContextCodec._encode_coded``), the causal adaptive counts of that choice
(``_flag_counts``), and the value model of value mode 0 (one adaptive categorical model over the
band of significant levels, ranks with ``z`` taken out, ``_value_count_chunks``). The cost of
level ``k`` at position ``i`` is

    R(i, k) = −log2 p_flag(k != z | ctx_i)  +  [k != z] · (−log2 p_value(rank(k) | j_i))

with the counts the coder holds when it reaches position ``i`` (``j_i`` = the number of
significant positions before ``i``). Summed over the tensor's own levels it is the ideal adaptive
code length of the payload with value mode 0; with the header varints it equals the real payload
to within the range coder's termination (tests/test_rate_aware.py encodes and compares). The
encoder may find a binarised value mode cheaper, so the real file is at most this (plus the
termination). The mask's cost is in the table: a zero costs its context's flag bits.

Assignment (:func:`rdo_levels`). Each weight takes the level of the band ``[kmin, kmax]`` of the
current levels (``z`` included) minimising ``(w/Δ − k)² + λ·R(i, k)``; a pruned weight stays at
0. Deviations from an exact RDO, named: (1) the table is the coder's state for the *current*
assignment and is held fixed while the weights are re-assigned (the effect of one weight's
choice on its neighbours' contexts and on later counts is not charged — the usual greedy RDOQ
approximation); (2) the distortion is measured in units of Δ² (``λ`` is dimensionless, so one
value serves every layer; ``λ·Δ²`` is the per-layer multiplier of the brief's ``(w − level)² +
λ·bits``); (3) the value cost is value mode 0's.

Training (:class:`RateAwareQuantizer`): :class:`~metaq_utils.recipes.prune_quantize.STEQuantizer`
whose ``q(w)`` is the RDO assignment instead of rounding; the rate table is re-computed from the
current assignment every ``refresh`` optimizer steps (and at the start), the assignment itself at
every write. The gradient is the straight-through one, as in the headline recipe (no new
gradient is added). With ``λ = 0`` it is exactly the headline's rounding quantizer.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from metaq_utils.coding import context as _ctx
from metaq_utils.coding.context import FLAG_LIMITS, candidate_strides
from metaq_utils.coding.fileformat import read_compressed, write_compressed
from metaq_utils.nn.checkpoints import load_checkpoint, save_checkpoint
from metaq_utils.nn.data import MNISTTensors
from metaq_utils.nn.networks import model_from_compressed
from metaq_utils.nn.training import TrainConfig, evaluate, train
from metaq_utils.recipes.prune_quantize import STEQuantizer, _weights, distillation_loss, file_groups
from metaq_utils.store.atomic import atomic_write_bytes

__all__ = ["RateTable", "rate_table", "rdo_levels", "RateAwareQuantizer", "RateAwareConfig", "run_rate_aware"]


def _varint_bits(v: int) -> int:
    return 8 * len(_ctx.encode_varint(int(v)))


@dataclass
class RateTable:
    """The coder's cost of each level at each position of one tensor (see the module doc)."""
    z: int                      # the most frequent level (the flag's "not significant")
    lo: int                     # band of levels considered: lo..hi (z included)
    hi: int
    cost0: np.ndarray           # (n,) bits of flag "k == z" at position i
    cost1: np.ndarray           # (n,) bits of flag "k != z"
    vcost: np.ndarray           # (k_sig + 1, hi − lo + 1) value bits of level lo + c after j significant ones
    jidx: np.ndarray            # (n,) significant positions before i
    header_bits: int            # cfg, z, stride, first, span varints
    scheme: int
    stride: int
    limit: int

    def costs(self) -> np.ndarray:
        """(n, hi − lo + 1) matrix R(i, k)."""
        r = self.cost1[:, None] + self.vcost[self.jidx]
        r[:, self.z - self.lo] = self.cost0
        return r

    def bits_of(self, levels: np.ndarray) -> float:
        """Ideal bits of ``levels`` under this table (header included)."""
        lv = np.asarray(levels, dtype=np.int64).ravel()
        if lv.min() < self.lo or lv.max() > self.hi:
            raise ValueError(f"levels outside the table's band [{self.lo}, {self.hi}]")
        sig = lv != self.z
        vb = self.vcost[self.jidx[sig], lv[sig] - self.lo]
        return float(self.header_bits + self.cost0[~sig].sum() + self.cost1[sig].sum() + vb.sum())


def rate_table(levels: np.ndarray, shape: tuple[int, ...] | None = None) -> RateTable:
    """The context coder's cost table for the integer ``levels`` of one tensor (``shape`` gives the
    row strides the file format proposes to the encoder: ``shapes=[shape]``)."""
    lv = np.asarray(levels, dtype=np.int64).ravel()
    n = lv.size
    if n == 0:
        raise ValueError("rate_table: empty tensor")
    shape = tuple(int(d) for d in (shape if shape is not None else (n,)))
    if int(np.prod(shape, dtype=np.int64)) != n:
        raise ValueError(f"rate_table: shape {shape} does not hold {n} levels")
    lo0 = int(lv.min())
    z = lo0 + int(np.argmax(np.bincount(lv - lo0)))        # ties: the lowest, as the encoder's argmax
    sig = lv != z
    flags = sig.astype(np.int64)
    lo, hi = min(lo0, z), max(int(lv.max()), z)
    width = hi - lo + 1
    if not sig.any():
        zero = np.zeros(n)
        return RateTable(z, lo, hi, zero, np.full(n, np.inf), np.zeros((1, width)), np.zeros(n, dtype=np.int64),
                         _varint_bits(0) + _varint_bits(0), 0, 0, FLAG_LIMITS[0])
    # the encoder's flag configuration: the same candidates and criterion as ContextCodec._encode_coded
    best = None
    configs = [(0, 0), (1, 0)] + [(sc, st) for st in candidate_strides([shape]) for sc in _ctx._STRIDED]
    for scheme, stride in configs:
        if stride > min(n, _ctx._MAX_STRIDE):
            continue
        ctx = _ctx._contexts(flags, scheme, stride)
        for li, limit in enumerate(FLAG_LIMITS):
            counts = _ctx._flag_counts(flags, ctx, _ctx._N_CTX[scheme], limit)
            bits = _ctx._bits(counts, flags) + 8 * (li > 1)
            if best is None or bits < best[0]:
                best = (bits, scheme, stride, counts, li)
    _, scheme, stride, fc, li = best
    p = fc / fc.sum(axis=1, keepdims=True)
    cost0, cost1 = -np.log2(p[:, 0]), -np.log2(p[:, 1])
    # value mode 0: ranks over the band of significant levels with z taken out
    vals = lv[sig]
    first, last = int(vals.min()), int(vals.max())
    ranks, m = _ctx.ContextCodec._ranks(vals - lo0, z - lo0, first - lo0, last - first)
    k_sig = vals.size
    snaps = np.empty((k_sig + 1, m), dtype=np.float64)
    cnt = np.full(m, _ctx.INIT, dtype=np.int64)
    total = _ctx.INIT * m
    for j, r in enumerate(ranks.tolist()):
        snaps[j] = cnt
        cnt, total = _ctx._adapt_value(cnt, total, r)
    snaps[k_sig] = cnt
    rank_bits = -np.log2(snaps / snaps.sum(axis=1, keepdims=True)) if m > 1 else np.zeros((k_sig + 1, 1))
    vcost = np.full((k_sig + 1, width), np.inf)
    for c in range(width):
        k = lo + c
        if k == z:
            vcost[:, c] = 0.0
        elif first <= k <= last:
            off = k - first
            r = off - (1 if first <= z <= last and off > z - first else 0)
            vcost[:, c] = rank_bits[:, r]
    jidx = np.concatenate([[0], np.cumsum(flags)[:-1]]).astype(np.int64)
    cfg = 1 + scheme + _ctx._N_CFG * (0 + _ctx._N_VM * li)
    K = int(np.abs(lv).max())                               # the file's symbol of level k is k + K
    header = (_varint_bits(cfg) + _varint_bits(z + K) + (_varint_bits(stride) if scheme in _ctx._STRIDED else 0)
              + _varint_bits(first + K) + _varint_bits(last - first))
    return RateTable(z, lo, hi, cost0, cost1, vcost, jidx, header, scheme, stride, FLAG_LIMITS[li])


def rdo_levels(w: np.ndarray, delta: float, table: RateTable, lam: float,
               mask: np.ndarray | None = None) -> np.ndarray:
    """argmin over ``k`` in the table's band of ``(w/Δ − k)² + λ·R(i, k)`` per weight (ties: the
    lowest level); pruned weights (``mask`` false) at 0."""
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be > 0 and finite, got {delta}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be >= 0 and finite, got {lam}")
    x = np.asarray(w, dtype=np.float64).ravel() / delta
    if x.size != table.cost0.size:
        raise ValueError(f"{x.size} weights for a table of {table.cost0.size} positions")
    ks = np.arange(table.lo, table.hi + 1)
    d = (x[:, None] - ks[None, :]) ** 2
    cost = d if lam == 0 else d + lam * table.costs()
    out = ks[np.argmin(cost, axis=1)]
    if mask is not None:
        out = np.where(np.asarray(mask).ravel().astype(bool), out, 0)
    return out.astype(np.int64)


class RateAwareQuantizer(STEQuantizer):
    """:class:`STEQuantizer` whose weight tensors (those with a mask) take the RDO levels of
    :func:`rdo_levels` under the rate table of their current assignment, refreshed every
    ``refresh`` optimizer steps; biases keep plain rounding."""

    def __init__(self, model: nn.Module, steps: Mapping[str, float], masks: Mapping[str, torch.Tensor], *,
                 lam: float, refresh: int = 200) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lambda must be >= 0 and finite, got {lam}")
        if refresh < 1:
            raise ValueError(f"refresh must be >= 1, got {refresh}")
        self.lam = float(lam)
        self.refresh = int(refresh)
        self.t = 0
        self.tables: dict[str, RateTable] = {}
        self._ready = False
        super().__init__(model, steps, masks)
        self.refresh_tables()
        self._write(model)

    def round_levels(self, name: str, w: torch.Tensor) -> np.ndarray:
        lv = np.rint(w.detach().double().numpy().ravel() / self.steps[name]).astype(np.int64)
        if name in self.masks:
            lv = np.where(self.masks[name].numpy().ravel(), lv, 0)
        return lv

    def refresh_tables(self) -> None:
        """Rate tables from the current assignment (rounding before the first table exists)."""
        self.table_levels = {n: self.levels(n, self.shadow[n]) if self._ready else self.round_levels(n, self.shadow[n])
                             for n in self.masks}
        self._tables_from_levels()

    def _tables_from_levels(self) -> None:
        self.tables = {n: rate_table(lv, tuple(self.shadow[n].shape)) for n, lv in self.table_levels.items()}
        self._ready = True

    def levels(self, name: str, w: torch.Tensor) -> np.ndarray:
        if not self._ready or name not in self.tables or self.lam == 0:
            return self.round_levels(name, w)
        return rdo_levels(w.detach().numpy(), self.steps[name], self.tables[name], self.lam,
                          self.masks[name].numpy())

    def quantized(self, name: str, w: torch.Tensor) -> torch.Tensor:
        if name not in self.masks:
            return super().quantized(name, w)
        lv = torch.from_numpy(self.levels(name, w)).view_as(w).to(w.dtype)
        return lv * self.steps[name]

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        self.t += 1
        if self.t % self.refresh == 0:
            for n, p in _weights(model, self.steps).items():     # the table of the new shadow weights
                self.shadow[n].copy_(p)
                if n in self.masks:
                    self.shadow[n].masked_fill_(~self.masks[n], 0.0)
            self.refresh_tables()
        super().after_step(model)

    def model_bits(self) -> float:
        """The rate model's bits of the current assignment (weight tensors, payloads only)."""
        return sum(rate_table(self.levels(n, self.shadow[n]), tuple(self.shadow[n].shape)).bits_of(
            self.levels(n, self.shadow[n])) for n in self.masks)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        return {**super().epoch_metrics(model), "rate_model_bits": self.model_bits()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "t": self.t, "lam": self.lam,
                "table_levels": {n: torch.from_numpy(v.copy()) for n, v in self.table_levels.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.t = int(state["t"])
        self.lam = float(state["lam"])
        self.table_levels = {n: v.numpy().astype(np.int64) for n, v in state["table_levels"].items()}
        self._tables_from_levels()

    def config_dict(self) -> dict[str, Any]:
        return {"rate_aware_quantizer": {"steps": self.steps, "lam": self.lam, "refresh": self.refresh}}


@dataclass(frozen=True)
class RateAwareConfig:
    """Knobs of the rate-aware fine-tuning (saved with each run)."""
    lam: float = 0.1
    refresh: int = 200
    epochs: int = 4
    lr: float = 6e-5
    temperature: float = 4.0
    alpha: float = 0.3
    batch_size: int = 64
    augment: bool = True
    codec: str = "context"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be >= 0 and finite, got {self.lam}")
        if self.epochs < 1 or self.refresh < 1:
            raise ValueError("epochs and refresh must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_rate_aware(start_checkpoint: str | Path, teacher_checkpoint: str | Path, steps: Mapping[str, float],
                   data: MNISTTensors, config: RateAwareConfig, out_dir: str | Path, *, evaluate_test: bool = True,
                   progress: bool = False, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rate-aware straight-through fine-tuning of ``start_checkpoint`` (a pruned or quantized
    network; its masks are its non-zero weights) on the grids ``steps`` (Δ per parameter),
    distilled from ``teacher_checkpoint``; the best epoch on validation is written as one context
    file; the network reported is decoded from it (test evaluated once). Resumable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not getattr(data, "has_validation", False):
        raise ValueError("run_rate_aware needs data with the validation split (load_mnist() default)")
    start = load_checkpoint(start_checkpoint)
    arch = start.arch
    teacher = load_checkpoint(teacher_checkpoint).build_model()
    loss_fn = distillation_loss(teacher, temperature=config.temperature, alpha=config.alpha)
    model = start.build_model()
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in steps]
    if missing:
        raise ValueError(f"no quantization step for {missing}")
    masks = {n: (p.detach() != 0) for n, p in params.items() if n.endswith("weight")}
    quantizer = RateAwareQuantizer(model, {n: float(steps[n]) for n in params}, masks, lam=config.lam,
                                   refresh=config.refresh)
    cfg = TrainConfig(arch=arch, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                      betas=(0.9, 0.999), augment=config.augment, seed=config.seed + 2000, lr_schedule="cosine")
    res = train(model, data, cfg, regularizer=quantizer, loss_fn=loss_fn, checkpoint_path=out / "rate_last.pt",
                resume=True, best_path=out / "rate_best.pt", progress=progress)
    model.load_state_dict(load_checkpoint(out / "rate_best.pt").state_dict)
    tensors = [p.detach().numpy() for p in model.parameters()]
    path = out / "model.mtq"
    file_bits = write_compressed(path, arch, tensors, file_groups(model, steps, config.codec))
    dec = model_from_compressed(read_compressed(path))
    for a, b in zip(tensors, (p.detach().numpy() for p in dec.parameters())):
        if not np.array_equal(a, b):
            raise RuntimeError("the decoded network differs from the one written")
    n_params = sum(p.numel() for p in dec.parameters())
    weights = {n: p for n, p in dec.named_parameters() if n.endswith("weight")}
    nonzero = sum(int((p != 0).sum()) for p in weights.values())
    result: dict[str, Any] = {
        "method": "ours-rate-aware", "arch": arch, "rate_aware": config.to_dict(),
        "start_checkpoint": str(start_checkpoint), "teacher": str(teacher_checkpoint), "split": data.split,
        "selection": "validation", "file": path.name, "file_bits": file_bits, "n_params": n_params,
        "bits_per_weight": file_bits / n_params, "compression_ratio": 32 * n_params / file_bits,
        "weight_density": nonzero / sum(p.numel() for p in weights.values()), "nonzero": nonzero,
        "steps": dict(steps), "val_accuracy": evaluate(dec, data.val_x, data.val_y)["accuracy"],
        "best_epoch": res.best_epoch, "history": res.history}
    if evaluate_test:
        result["test_accuracy"] = evaluate(dec, data.test_x, data.test_y)["accuracy"]
        result["accuracy"] = result["test_accuracy"]
    result["seconds"] = time.time() - t0
    result.update(extra or {})
    atomic_write_bytes(out / "result.json", (json.dumps(result, indent=1) + "\n").encode())
    save_checkpoint(out / "decoded.pt", dec, arch,
                    config={"rate_aware": config.to_dict(), "split": data.split, "selection": "validation",
                            "from_file": path.name, "start_checkpoint": str(start_checkpoint)},
                    metrics={k: result[k] for k in ("val_accuracy", "file_bits", "test_accuracy") if k in result})
    return result
