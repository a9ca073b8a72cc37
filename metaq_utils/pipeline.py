"""The METaQ pipeline end to end: train with the entropy term → post-training quantization →
entropy coding into real files → decode → re-evaluate. Every size is the size of a whole
compressed file (:mod:`metaq_utils.coding.fileformat`), in bits; ratios are against 32 bits × n.

Protocol (PROTOCOL.md): the best epoch and C_Q are selected on the validation split; after
selection the test set is evaluated once for the selected unquantized model, the selected
quantized model and each decoded file; results carry ``selection``, validation and test
accuracy side by side. ``select_on="test"`` (explicit) selects on test and marks the result.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from .coding.fileformat import MAGIC, encode_compressed, metaq_group, read_compressed, round_trip
from .core.grid import THESIS_GRID_R, THESIS_GRID_W0, Grid
from .nn.checkpoints import AFTER_DIR, BEFORE_DIR, load_checkpoint, save_checkpoint
from .nn.data import MNISTTensors
from .nn.networks import count_parameters, model_from_compressed
from .nn.ptq import SweepPoint, quantize_model, select_point, sweep_cq
from .nn.regularizer import METaQConfig, METaQRegularizer
from .nn.training import StopRule, TrainConfig, TrainResult, check_selection, evaluate, make_model, train
from .quant.quant_range import posttraining_range
from .quant.quantization import entropy_bits
from .store.atomic import atomic_write_bytes
from .store.paths import REPO_ROOT

__all__ = ["CODEC_NAMES", "THESIS_TRAIN_CONFIG", "default_cq_values", "compress_model", "model_from_compressed",
           "load_any", "CodecRow", "code_with_every_codec", "QuantizedModel", "PipelineOptions", "PipelineResult",
           "run_pipeline", "format_table"]

CODEC_NAMES = ("huffman", "range", "gzip9", "zstd22", "raw")

# Spec §3: Adam, lr 7e-4, betas (0.9, 0.99) (Appendix table), batch 64, uniform init in
# [w0 − r, w0 + r], augmentation (rotation ±10°, translation ≤ 10 %), 144 epochs.
THESIS_TRAIN_CONFIG = TrainConfig(arch="lenet5", epochs=144, batch_size=64, optimizer="adam", lr=7e-4,
                                  betas=(0.9, 0.99), augment=True, init="uniform",
                                  init_low=THESIS_GRID_W0 - THESIS_GRID_R, init_high=THESIS_GRID_W0 + THESIS_GRID_R)


def default_cq_values(max_cq: int = 1024) -> list[int]:
    """Every C_Q in [2, 64], then about 40 geometrically spaced values up to ``max_cq``.

    (The thesis swept every C_Q in [1, 1024]: pass ``range(2, 1025)``; it costs one evaluation
    of the selection split per value.)"""
    dense = list(range(2, min(64, max_cq) + 1))
    if max_cq <= 64:
        return dense
    geo = np.unique(np.round(np.geomspace(65, max_cq, 40)).astype(int)).tolist()
    return dense + [int(c) for c in geo if c > 64]


def compress_model(model: nn.Module, arch: str, grid: Grid, codec: str = "range") -> bytes:
    """The compressed file (bytes) of ``model``'s parameters quantized on ``grid``."""
    return encode_compressed(arch, [p.detach() for p in model.parameters()], metaq_group(grid, codec))


def load_any(path: str | Path) -> tuple[nn.Module, str, int, int]:
    """A checkpoint or a compressed file → (model, arch, file_bits, n_params)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        cm = read_compressed(path)
        return model_from_compressed(cm), cm.arch, cm.file_bits, cm.n_params
    ck = load_checkpoint(path)
    return ck.build_model(), ck.arch, path.stat().st_size * 8, ck.n_params


@dataclass(frozen=True)
class CodecRow:
    codec: str
    file_bits: int
    bits_per_weight: float
    compression_ratio: float
    decoded_exact: bool          # decoded tensors equal the quantized ones bit for bit
    decoded_accuracy: float      # TEST accuracy of the network rebuilt from the file (once, after selection)
    path: str | None = None
    decoded_val_accuracy: float | None = None   # its validation accuracy (None without a validation split)


def code_with_every_codec(qmodel: nn.Module, arch: str, grid: Grid, data: MNISTTensors, *,
                          codecs: Sequence[str] = CODEC_NAMES, out_dir: str | Path | None = None,
                          stem: str = "model") -> list[CodecRow]:
    """Write ``qmodel`` (already quantized on ``grid``, i.e. after selection) with every codec,
    read each file back, check it is bit-exact (:func:`metaq_utils.coding.fileformat.round_trip`),
    and evaluate the decoded network on the test set (``decoded_accuracy``) and, if ``data`` has
    one, on the validation split (``decoded_val_accuracy``)."""
    tensors = [p.detach() for p in qmodel.parameters()]
    n = sum(t.numel() for t in tensors)
    rows = []
    for codec in codecs:
        rt = round_trip(arch, tensors, metaq_group(grid, codec))
        path = None
        if out_dir is not None:
            path = Path(out_dir) / f"{stem}.{codec}.mtq"
            atomic_write_bytes(path, rt.data)
        decoded = model_from_compressed(rt.decoded)
        acc = evaluate(decoded, data.test_x, data.test_y)["accuracy"]
        val_acc = evaluate(decoded, data.val_x, data.val_y)["accuracy"] if getattr(data, "has_validation", False) else None
        bits = rt.file_bits
        rows.append(CodecRow(codec, bits, bits / n, 32 * n / bits, rt.exact, acc,
                             str(path.relative_to(REPO_ROOT)) if path is not None and path.is_relative_to(REPO_ROOT) else (str(path) if path else None),
                             val_acc))
    return rows


@dataclass
class QuantizedModel:
    """A network quantized on one grid, and the two things done with it after selection: saved as a
    checkpoint with its grid (:meth:`save`), written with every codec and read back (:meth:`code`).
    The one "quantize → save → code" of the pipeline, the ``quantize`` command and the
    LoadAndCompression notebook."""
    model: nn.Module          # the quantized copy: every parameter a bucket centre (float32)
    arch: str
    grid: Grid
    indices: np.ndarray       # the bucket of every weight: the symbols the codecs code

    @classmethod
    def of(cls, model: nn.Module, arch: str, grid: Grid) -> "QuantizedModel":
        """Quantize a copy of ``model`` on ``grid`` (:func:`metaq_utils.nn.ptq.quantize_model`)."""
        qmodel, indices = quantize_model(model, grid)
        return cls(qmodel, arch, grid, indices)

    @property
    def entropy_bits(self) -> float:
        """Zero-order entropy of the quantized parameters, in bits (n·H)."""
        return entropy_bits(self.indices)

    def save(self, path: str | Path, *, config: dict[str, Any], metrics: dict[str, Any]) -> Path:
        """A verified checkpoint of the quantized network with its grid; ``metrics`` gain
        ``entropy_bits`` and ``C_Q``."""
        return save_checkpoint(path, self.model, self.arch, config=config, grid=self.grid,
                               metrics={**metrics, "entropy_bits": self.entropy_bits, "C_Q": self.grid.C})

    def code(self, data: MNISTTensors, *, codecs: Sequence[str] = CODEC_NAMES, out_dir: str | Path | None = None,
             stem: str = "model") -> list[CodecRow]:
        """:func:`code_with_every_codec` of the quantized network."""
        return code_with_every_codec(self.model, self.arch, self.grid, data, codecs=codecs, out_dir=out_dir,
                                     stem=stem)


@dataclass(frozen=True)
class PipelineOptions:
    """How :func:`run_pipeline` runs, beyond the data and the two configurations. Every field is
    also a keyword of :func:`run_pipeline` (``run_pipeline(data, cfg, metaq, tolerance=0.01)``)."""
    # where the models go: NAME.pt in before_dir, NAME_CQ<C_Q>.pt and its files in after_dir
    name: str = "metaq_lenet5"
    before_dir: str | Path = BEFORE_DIR
    after_dir: str | Path = AFTER_DIR
    # training
    stop_rules: Sequence[StopRule] = ()
    checkpoint_path: str | Path | None = None   # last-epoch state, for resume
    resume: bool = False
    use_best: bool = True           # quantize the best epoch (by the selection split), else the final one
    progress: bool = True
    # selection (PROTOCOL.md): best epoch and C_Q on validation unless select_on="test" (marked)
    select_on: str = "validation"
    cq_values: Sequence[int] | None = None      # None: default_cq_values()
    tolerance: float = 0.001        # accuracy drop allowed by the C_Q selection
    # coding
    codecs: Sequence[str] = CODEC_NAMES


@dataclass
class PipelineResult:
    """The pipeline's results. ``selection`` is where the best epoch and C_Q were selected
    (``"validation"``, or ``"test"`` under the explicit option); ``selection_rule`` says how C_Q
    was chosen. Accuracies come in pairs: ``*_val_accuracy`` (None without a validation split)
    and ``*_test_accuracy`` (measured once, after selection). ``val_accuracy``/``test_accuracy``
    are those of the selected quantized model (the reported one); ``selected.accuracy`` is its
    accuracy on the selection split."""
    train_history: list[dict[str, Any]]
    unquantized_val_accuracy: float | None
    unquantized_test_accuracy: float
    sweep: list[SweepPoint]
    selected: SweepPoint
    codec_rows: list[CodecRow]
    n_params: int
    before_path: str | None = None
    after_path: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    selection_rule: str = ""
    selection: str = "validation"
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    split: dict[str, Any] | None = None
    best_epoch: int | None = None
    tolerance: float | None = None

    @property
    def unquantized_accuracy(self) -> float:
        """The unquantized model's test accuracy (the name older code used)."""
        return self.unquantized_test_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"train_history": self.train_history, "selection": self.selection, "split": self.split,
                "best_epoch": self.best_epoch,
                "unquantized_val_accuracy": self.unquantized_val_accuracy,
                "unquantized_test_accuracy": self.unquantized_test_accuracy,
                "unquantized_accuracy": self.unquantized_test_accuracy,
                "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy,
                "sweep": [p.to_dict() for p in self.sweep], "selected": self.selected.to_dict(),
                "codecs": [asdict(r) for r in self.codec_rows], "n_params": self.n_params,
                "before_path": self.before_path, "after_path": self.after_path, "seconds": self.seconds,
                "selection_rule": self.selection_rule, "tolerance": self.tolerance}


def run_pipeline(data: MNISTTensors, train_config: TrainConfig, metaq: METaQConfig | None,
                 options: PipelineOptions | None = None, *, model: nn.Module | None = None,
                 **overrides: Any) -> PipelineResult:
    """Train (unless ``model`` is given and ``train_config.epochs == 0``), sweep C_Q on the
    post-training range (:func:`metaq_utils.quant.quant_range.posttraining_range`: the METaQ
    grid's, the thesis range for plain training), select by :func:`select_point` (lowest entropy
    within ``tolerance`` of the unquantized accuracy), code with every codec, decode and re-evaluate.

    ``options`` (:class:`PipelineOptions`), and any of its fields given as keywords
    (``name=``, ``tolerance=``, ...; they override ``options``'), say where the models go and how
    training, selection and coding run.

    Selection (best epoch, C_Q) is made on ``data``'s validation split; then the test set is
    evaluated once for the selected unquantized model, the selected quantized model and each
    decoded file. ``select_on="test"`` selects on the test set instead (the thesis' protocol)
    and marks every checkpoint and the result ``selection: "test"``.

    ``use_best``: quantize the best epoch (by validation accuracy; the checkpoint in
    ``before_dir``) or, if False, the final epoch."""
    opts = replace(options or PipelineOptions(), **overrides)
    name, before_dir, after_dir, codecs = opts.name, opts.before_dir, opts.after_dir, opts.codecs
    progress, tolerance, use_best = opts.progress, opts.tolerance, opts.use_best
    select_on = check_selection(opts.select_on)
    has_val = bool(getattr(data, "has_validation", False))
    if select_on == "validation" and not has_val:
        raise ValueError("run_pipeline: data has no validation split (load_mnist(val_size=0)?); "
                         "load the split or pass select_on='test' explicitly")
    split = dict(getattr(data, "split", None) or {"val_size": 0, "val_seed": None, "val_indices_sha256": None})
    seconds = {}
    t0 = time.perf_counter()
    rng = posttraining_range(metaq)     # the training grid's range; the thesis range (and it says so) for plain training
    before_path = Path(before_dir) / f"{name}.pt"
    history: list[dict[str, Any]] = []
    best_epoch = None
    if model is None:
        model = make_model(train_config)
    if train_config.epochs > 0:
        reg = METaQRegularizer(model, metaq) if metaq is not None else None
        result: TrainResult = train(model, data, train_config, regularizer=reg, stop_rules=opts.stop_rules,
                                    best_path=before_path, checkpoint_path=opts.checkpoint_path,
                                    resume=opts.resume, progress=progress, select_on=select_on)
        history = result.history
        best_epoch = result.best_epoch if use_best else (history[-1]["epoch"] if history else None)
        if use_best:   # the best epoch's weights (the checkpoint in BestModelsBeforeQuantization)
            model = load_checkpoint(before_path).build_model()
    seconds["train"] = time.perf_counter() - t0
    sel_x, sel_y = (data.val_x, data.val_y) if select_on == "validation" else (data.test_x, data.test_y)
    unq_sel = evaluate(model, sel_x, sel_y)["accuracy"]
    t1 = time.perf_counter()
    sweep = sweep_cq(model, sel_x, sel_y, opts.cq_values or default_cq_values(), evaluated_on=select_on,
                     w0=rng.w0, r=rng.r, progress=progress, arch=train_config.arch)
    seconds["sweep"] = time.perf_counter() - t1
    try:
        selected = select_point(sweep, unq_sel, tolerance, select_on=select_on)
        rule = f"lowest entropy with {select_on} accuracy >= unquantized - tolerance"
    except ValueError:      # no C_Q is within the tolerance: keep the most accurate one, and say so
        selected = max(sweep, key=lambda p: (p.accuracy, -p.entropy_bits))
        rule = f"most accurate C_Q on {select_on} (no C_Q within the tolerance of the unquantized accuracy)"
    quantized = QuantizedModel.of(model, train_config.arch, rng.grid(selected.C_Q))
    qmodel = quantized.model
    # after selection: validation and test accuracy of the selected models (test: once per model)
    unq_val = (unq_sel if select_on == "validation" else evaluate(model, data.val_x, data.val_y)["accuracy"]) \
        if has_val else None
    unq_test = unq_sel if select_on == "test" else evaluate(model, data.test_x, data.test_y)["accuracy"]
    q_val = (selected.accuracy if select_on == "validation" else evaluate(qmodel, data.val_x, data.val_y)["accuracy"]) \
        if has_val else None
    q_test = selected.accuracy if select_on == "test" else evaluate(qmodel, data.test_x, data.test_y)["accuracy"]
    after_path = Path(after_dir) / f"{name}_CQ{selected.C_Q}.pt"
    quantized.save(after_path,
                   config={"train": train_config.to_dict(), "metaq": metaq.to_dict() if metaq is not None else None,
                           "quantization_range": rng.source, "split": split, "selection": select_on,
                           "selection_rule": {"rule": rule, "tolerance": tolerance}},
                   metrics={"accuracy": q_test, "val_accuracy": q_val, "test_accuracy": q_test,
                            "selection": select_on, "unquantized_val_accuracy": unq_val,
                            "unquantized_test_accuracy": unq_test, "unquantized_accuracy": unq_test,
                            "best_epoch": best_epoch})
    t2 = time.perf_counter()
    rows = quantized.code(data, codecs=codecs, out_dir=after_dir, stem=f"{name}_CQ{selected.C_Q}")
    seconds["coding"] = time.perf_counter() - t2
    return PipelineResult(history, unq_val, unq_test, sweep, selected, rows, count_parameters(model),
                          str(before_path), str(after_path), seconds, rule, select_on, q_val, q_test, split,
                          best_epoch, tolerance)


def _pct(x: float | None) -> str:
    return "     —" if x is None else f"{100 * x:6.2f}"


def format_table(res: PipelineResult) -> str:
    """The pipeline's closing table: where the selection was made, validation and test accuracy
    side by side (unquantized, quantized, each decoded file), entropy and each codec's file size."""
    n = res.n_params
    s = res.selected
    h = (res.split or {}).get("val_indices_sha256")
    where = (f"selected on VALIDATION (split {h[:12]}…, {res.split.get('val_size'):,} images)" if res.selection == "validation"
             else "selected on TEST (explicit option; every number below is test-selected)")
    epoch = f" (epoch {res.best_epoch})" if res.best_epoch is not None else ""
    lines = [f"{where}; test evaluated once per model, after selection",
             f"{'model':34s} {'val acc %':>9s} {'test acc %':>10s}",
             f"{'unquantized' + epoch:34s} {_pct(res.unquantized_val_accuracy):>9s} {_pct(res.unquantized_test_accuracy):>10s}",
             f"{f'C_Q = {s.C_Q} ({s.used_buckets} buckets used)':34s} {_pct(res.val_accuracy):>9s} {_pct(res.test_accuracy):>10s}",
             f"C_Q rule: {res.selection_rule}; entropy {s.entropy_bits:,.0f} bits ({s.entropy_bits / n:.3f} bits/weight)",
             f"{'codec':8s} {'file bits':>10s} {'bits/w':>7s} {'ratio':>7s} {'exact':>6s} {'val acc %':>9s} {'test acc %':>10s}"]
    for r in res.codec_rows:
        lines.append(f"{r.codec:8s} {r.file_bits:10,d} {r.bits_per_weight:7.3f} {r.compression_ratio:6.1f}× "
                     f"{str(r.decoded_exact):>6s} {_pct(r.decoded_val_accuracy):>9s} {_pct(r.decoded_accuracy):>10s}")
    lines.append(f"(ratios against 32 × {n:,} = {32 * n:,} bits of float32)")
    lines += _beta_lines(res.train_history)
    return "\n".join(lines)


def _beta_lines(history: Sequence[dict[str, Any]]) -> list[str]:
    """What the entropy term added during training: β statistics of the last step of a few epochs
    (so a reader sees the term acting, or not), and the share of weights off the dual grid."""
    rows = [h for h in history if "beta_mean" in h]
    if not rows:
        return []
    pick = sorted({0, len(rows) // 4, len(rows) // 2, len(rows) - 1})
    out = ["entropy term (β of the last training step of the epoch; λ(1−α)β is added to the gradients):",
           f"{'epoch':>5s} {'β mean':>9s} {'β std':>9s} {'β min':>9s} {'β max':>9s} {'distinct':>8s} "
           f"{'above v_C-1':>11s} {'below v_0':>9s} {'entropy bits':>12s}"]
    for i in pick:
        h = rows[i]
        out.append(f"{h['epoch']:5d} {h['beta_mean']:9.4g} {h['beta_std']:9.3g} {h.get('beta_min', float('nan')):9.4g} "
                   f"{h.get('beta_max', float('nan')):9.4g} {h.get('beta_distinct', 0):8d} "
                   f"{100 * h.get('share_above_grid', float('nan')):10.2f}% {100 * h.get('share_below_grid', float('nan')):8.2f}% "
                   f"{h.get('entropy_grid_bits', float('nan')):12,.0f}")
    if all(h["beta_mean"] == 0 and h["beta_std"] == 0 for h in rows):
        out.append("β = 0 at every recorded step: the term added nothing (see README: solver rules)")
    return out
