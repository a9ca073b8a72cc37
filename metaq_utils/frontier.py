"""The one shared accuracy-vs-file-size table, ``results/frontier.csv``, and its figure.

Every compression method (METaQ and its variants, Deep Compression, ...) appends its *measured*
points here: test accuracy of the network decoded from a real compressed file, and the size of
that whole file in bits (:mod:`metaq_utils.coding.fileformat`). One row per (method, network, run).

Columns (``COLUMNS``; a CSV with a header, UTF-8):

=================  ===========================================================================
method             e.g. ``deep-compression``, ``metaq-thesis``, ``adjacent``, ``no-entropy-term``
network            a registry id of :mod:`metaq_utils.coding.architectures` (``lenet5``, ``lenet300100``, ``lenet5caffe``)
accuracy           test accuracy as a **fraction** in [0, 1] (0.9901, not 99.01)
file_bits          size of the whole compressed file in bits (8 × bytes)
run                the run's name (for this repository's runs: the folder under ``runs/``)
bits_per_weight    file_bits / n_params (filled in from ``n_params`` when left empty)
n_params           number of parameters of the network (weights and biases)
notes              free text (configuration summary, caveats)
selection          ``validation`` (every choice made on the validation split, PROTOCOL.md) or
                   ``test`` (selected on the test set; every row older than the protocol)
seeds              number of seeds aggregated in the row (≥ 3 for a reported point)
test_acc_mean      mean test accuracy over the seeds (fraction; = ``accuracy``)
test_acc_std       its standard deviation over the seeds (ddof = 1; empty for one seed)
val_acc_mean       mean validation accuracy over the seeds (empty if not measured)
file_bits_mean     mean file size over the seeds (bits; ``file_bits`` is its rounding)
file_bits_std      its standard deviation over the seeds (ddof = 1; empty for one seed)
budget             the training budget behind the point (epochs, retraining steps, μ schedule)
=================  ===========================================================================

Rows written before the protocol (no ``selection`` column) are read, and rewritten on the next
append, as ``selection="test"``, ``seeds=1``, the means equal to the single values and the stds
empty (:func:`migrate_frontier` rewrites a file at once). :func:`aggregate_seeds` turns per-seed
run results into one row; :func:`plot_frontier` draws error bars and never puts validation- and
test-selected points in one series.

:func:`append_points` replaces rows with the same ``(method, network, run)`` key, so re-running an
experiment does not duplicate its points; the file is rewritten atomically under an exclusive
lock (several processes may append at the same time).

Points that were *not* measured here are kept out of the CSV and live in this module as
reference constants: METaQ's reported thesis result (:data:`METAQ_REPORTED`, spec §3) and the
published Deep Compression results (:data:`DEEP_COMPRESSION_PUBLISHED`, Han et al. 2016).
:func:`plot_frontier` draws them with hollow markers and says so in the legend.
"""
from __future__ import annotations

import csv
import fcntl
import io
import math
from contextlib import contextmanager
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .nn.networks import EXPECTED_PARAMETERS
from .store import paths
from .store.atomic import atomic_write_bytes
from .store.paths import REPO_ROOT
from .studies.thesis import HEADLINE

__all__ = ["COLUMNS", "DEFAULT_PATH", "FrontierPoint", "ReferencePoint", "METAQ_REPORTED",
           "DEEP_COMPRESSION_PUBLISHED", "PublishedRecord", "PUBLISHED_RECORDS", "published_reference_points",
           "append_points", "read_frontier", "format_frontier", "pareto_front",
           "plot_frontier", "resolve", "aggregate_seeds", "migrate_frontier", "MIN_SEEDS"]

DEFAULT_PATH = REPO_ROOT / "results" / "frontier.csv"
COLUMNS = ("method", "network", "accuracy", "file_bits", "run", "bits_per_weight", "n_params", "notes",
           "selection", "seeds", "test_acc_mean", "test_acc_std", "val_acc_mean", "file_bits_mean",
           "file_bits_std", "budget")
MIN_SEEDS = 3     # PROTOCOL.md: every reported point is at least 3 seeds


def _blank(x: Any) -> bool:
    return x is None or (isinstance(x, str) and not x.strip()) or (isinstance(x, float) and math.isnan(x))


def _opt_float(x: Any) -> float | None:
    return None if _blank(x) else float(x)


def resolve(path: str | Path | None, default: Path = DEFAULT_PATH) -> Path:
    """:func:`metaq_utils.store.paths.resolve` with the frontier file as default: ``None`` →
    ``default``; a relative path is taken relative to the repository root."""
    return paths.resolve(path, default)


@dataclass(frozen=True)
class FrontierPoint:
    """One measured point: a decoded network's test accuracy and its compressed file's size
    (for a row aggregated over seeds: the means, with the stds beside them).

    ``selection`` defaults to ``"test"``: a point is validation-selected only when it says so."""
    method: str
    network: str
    accuracy: float            # fraction in [0, 1] (the mean over seeds)
    file_bits: int             # whole file, bits (the mean over seeds, rounded)
    run: str
    bits_per_weight: float | None = None
    n_params: int | None = None
    notes: str = ""
    selection: str = "test"
    seeds: int = 1
    test_acc_mean: float | None = None
    test_acc_std: float | None = None
    val_acc_mean: float | None = None
    file_bits_mean: float | None = None
    file_bits_std: float | None = None
    budget: str = ""

    def __post_init__(self) -> None:
        for name in ("method", "network", "run"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or value != value.strip():
                raise ValueError(f"{name} must be a non-empty string without surrounding spaces, got {value!r}")
        acc = float(self.accuracy)
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy must be a fraction in [0, 1], got {self.accuracy!r} "
                             "(a percentage? divide by 100)")
        object.__setattr__(self, "accuracy", acc)
        bits = int(self.file_bits)
        if bits != float(self.file_bits) or bits <= 0:
            raise ValueError(f"file_bits must be a positive integer, got {self.file_bits!r}")
        object.__setattr__(self, "file_bits", bits)
        n = self.n_params
        if n in (None, ""):
            n = EXPECTED_PARAMETERS.get(self.network)
        object.__setattr__(self, "n_params", None if n is None else int(n))
        bpw = self.bits_per_weight
        if bpw in (None, "") or (isinstance(bpw, float) and math.isnan(bpw)):
            bpw = bits / self.n_params if self.n_params else None
        object.__setattr__(self, "bits_per_weight", None if bpw is None else float(bpw))
        object.__setattr__(self, "notes", "" if self.notes is None else str(self.notes))
        sel = "test" if _blank(self.selection) else str(self.selection).strip()
        if sel not in ("validation", "test"):
            raise ValueError(f"selection must be 'validation' or 'test', got {self.selection!r}")
        object.__setattr__(self, "selection", sel)
        seeds = 1 if _blank(self.seeds) else int(float(self.seeds))
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)
        for name in ("test_acc_mean", "test_acc_std", "val_acc_mean", "file_bits_mean", "file_bits_std"):
            object.__setattr__(self, name, _opt_float(getattr(self, name)))
        if self.test_acc_mean is None:
            object.__setattr__(self, "test_acc_mean", acc)
        elif abs(self.test_acc_mean - acc) > 1e-12:
            raise ValueError(f"test_acc_mean {self.test_acc_mean} differs from accuracy {acc}")
        if self.file_bits_mean is None:
            object.__setattr__(self, "file_bits_mean", float(bits))
        elif abs(self.file_bits_mean - bits) > 0.5 + 1e-9:
            raise ValueError(f"file_bits {bits} is not the rounding of file_bits_mean {self.file_bits_mean}")
        for name in ("test_acc_std", "file_bits_std"):
            v = getattr(self, name)
            if v is not None and (v < 0 or seeds == 1):
                raise ValueError(f"{name} must be >= 0 and only given for several seeds, got {v} with seeds={seeds}")
        if self.val_acc_mean is not None and not 0.0 <= self.val_acc_mean <= 1.0:
            raise ValueError(f"val_acc_mean must be a fraction in [0, 1], got {self.val_acc_mean!r}")
        object.__setattr__(self, "budget", "" if _blank(self.budget) else str(self.budget))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.method, self.network, self.run)

    @property
    def validation_selected(self) -> bool:
        return self.selection == "validation"

    @property
    def compression_ratio(self) -> float | None:
        """32·n / file_bits (against float32 storage of every parameter)."""
        return 32 * self.n_params / self.file_bits if self.n_params else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "FrontierPoint":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})


@dataclass(frozen=True)
class ReferencePoint:
    """A point that was not measured here (reported in a thesis or a paper)."""
    label: str
    network: str               # the network of *our* axes it is drawn on
    accuracy: float            # fraction
    file_bits: int             # on our network (see ``how``)
    how: str                   # where the number comes from and how it was translated


# Spec §3: thesis Table 8, C_Q = 140 model coded with zstd-22: 48,824 bits at 99.01 %.
METAQ_REPORTED = ReferencePoint(
    label="METaQ reported (thesis)", network="lenet5", accuracy=HEADLINE["accuracy"], file_bits=HEADLINE["file_bits"],
    how="thesis Table 8: zstd-22 of the C_Q = 140 model, 99.01 %; reported, not measured here")

# Han et al. 2016, Table 1: compression ratio against 32-bit weights, and top-1 error. The ratio
# is translated to bits on our network as 32·n/ratio (bits per weight transfer between sizes).
# LeNet-300-100 is the same architecture as ours; LeNet-5 in the paper is LeNet-5-Caffe with
# 431K parameters (conv 20/50 channels, fc 500), NOT our 44,426-parameter LeNet-5.
DEEP_COMPRESSION_PUBLISHED = (
    ReferencePoint(
        label="Deep Compression published (LeNet-300-100, 40×)", network="lenet300100",
        accuracy=1 - 0.0158, file_bits=round(32 * EXPECTED_PARAMETERS["lenet300100"] / 40),
        how="Han et al. 2016 Table 1: 40× at 1.58 % error; drawn at 32·266,610/40 bits"),
    ReferencePoint(
        label="Deep Compression published (LeNet-5-Caffe 431K, 39×; other network)", network="lenet5",
        accuracy=1 - 0.0074, file_bits=round(32 * EXPECTED_PARAMETERS["lenet5"] / 39),
        how="Han et al. 2016 Table 1: 39× at 0.74 % error on LeNet-5-Caffe (431K parameters); "
            "drawn at the same ratio on our 44,426 parameters, 32·44,426/39 bits"),
)



@dataclass(frozen=True)
class PublishedRecord:
    """A compression result published by others on one of the field's benchmark networks (issue 21):
    quoted, not measured here. ``ratio`` is the paper's own ``32·n / (its bit count)``; ``counts`` says
    what that bit count includes — never a coded file."""
    method: str
    network: str               # our registry id of the same network
    error: float               # top-1 test error, fraction
    ratio: float
    counts: str
    source: str

    @property
    def file_bits(self) -> int:
        """The paper's size translated to bits on the same network: 32·n / ratio."""
        return round(32 * EXPECTED_PARAMETERS[self.network] / self.ratio)


_DC_COUNT = "paper's count: pruned weights' codebook indices + relative positions, Huffman-coded, + codebooks; no file"
_SWS_COUNT = "paper's count (Han et al.'s scheme): CSR positions + mixture indices, Huffman-coded; no file"
_BC_COUNT = "paper's count: the surviving weights at the reduced precision their posterior variance allows; no file"
PUBLISHED_RECORDS: tuple[PublishedRecord, ...] = (
    PublishedRecord("Deep Compression", "lenet5caffe", 0.0074, 39, _DC_COUNT, "Han, Mao, Dally, ICLR 2016, Table 1"),
    PublishedRecord("Deep Compression", "lenet300100", 0.0158, 40, _DC_COUNT, "Han, Mao, Dally, ICLR 2016, Table 1"),
    PublishedRecord("soft weight-sharing", "lenet5caffe", 0.0097, 162, _SWS_COUNT,
                    "Ullrich, Meeds, Welling, ICLR 2017, Table 1"),
    PublishedRecord("soft weight-sharing", "lenet300100", 0.0194, 64, _SWS_COUNT,
                    "Ullrich, Meeds, Welling, ICLR 2017, Table 1"),
    PublishedRecord("Sparse VD", "lenet5caffe", 0.010, 228, _BC_COUNT,
                    "Bayesian Compression code release README (Louizos, Ullrich, Welling 2017), ≈ 1.0 % error"),
    PublishedRecord("BC-GNJ", "lenet5caffe", 0.010, 361, _BC_COUNT,
                    "Bayesian Compression code release README (Louizos, Ullrich, Welling 2017), ≈ 1.0 % error"),
    PublishedRecord("BC-GHS", "lenet5caffe", 0.010, 419, _BC_COUNT,
                    "Bayesian Compression code release README (Louizos, Ullrich, Welling 2017), ≈ 1.0 % error"),
)


def published_reference_points() -> tuple[ReferencePoint, ...]:
    """:data:`PUBLISHED_RECORDS` as hollow reference markers on their own network's panel."""
    return tuple(ReferencePoint(label=f"{r.method} published ({r.ratio:g}×)", network=r.network,
                                accuracy=1 - r.error, file_bits=r.file_bits,
                                how=f"{r.source}: {r.ratio:g}× at {100 * r.error:.2f} % error; {r.counts}")
                 for r in PUBLISHED_RECORDS)

@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[FrontierPoint]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("method", "network", "accuracy", "file_bits", "run") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a frontier table, columns {missing} are missing")
        return [FrontierPoint.from_row(row) for row in reader]


def read_frontier(path: str | Path | None = None, *, method: str | None = None,
                  network: str | None = None) -> list[FrontierPoint]:
    """All points of the table (in file order), optionally only one method / network.
    A missing file is an empty table."""
    points = _read(resolve(path))
    return [p for p in points if (method is None or p.method == method) and (network is None or p.network == network)]


def append_points(rows: Iterable[FrontierPoint | Mapping[str, Any]], path: str | Path | None = None) -> Path:
    """Add points to the table; a row with the same ``(method, network, run)`` as an existing one
    replaces it in place (so re-running does not duplicate). New rows go at the end, in the given
    order (the last of duplicated keys within ``rows`` wins). Written atomically, under a lock."""
    new = [r if isinstance(r, FrontierPoint) else FrontierPoint.from_row(r) for r in rows]
    path = resolve(path)
    with _locked(path):
        points = _read(path)
        incoming: dict[tuple[str, str, str], FrontierPoint] = {}
        for p in new:                      # first appearance fixes the position, the last value wins
            incoming[p.key] = p
        out = [incoming.pop(p.key, p) for p in points]   # replace in place
        out += list(incoming.values())                    # then the new keys, in order
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for p in out:
            writer.writerow(_csv_row(p))
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return path


def _csv_row(p: FrontierPoint) -> dict[str, Any]:
    row = asdict(p)
    row["accuracy"] = repr(p.accuracy)
    row["bits_per_weight"] = "" if p.bits_per_weight is None else f"{p.bits_per_weight:.6f}"
    row["n_params"] = "" if p.n_params is None else p.n_params
    for name in ("test_acc_mean", "test_acc_std", "val_acc_mean", "file_bits_std"):
        v = getattr(p, name)
        row[name] = "" if v is None else repr(v)
    row["file_bits_mean"] = ("" if p.file_bits_mean is None else
                             str(int(p.file_bits_mean)) if p.file_bits_mean == int(p.file_bits_mean) else repr(p.file_bits_mean))
    return row


def migrate_frontier(path: str | Path | None = None) -> Path:
    """Rewrite a frontier table with every column of :data:`COLUMNS`: rows written before the
    protocol become ``selection="test"``, ``seeds=1``, means = the single values, stds empty.
    Idempotent (a second call changes nothing)."""
    return append_points([], path)


def aggregate_seeds(runs: Sequence[Mapping[str, Any]], *, method: str, network: str, run: str, budget: str,
                    notes: str = "", n_params: int | None = None, min_seeds: int = MIN_SEEDS) -> FrontierPoint:
    """One frontier row from per-seed results of the same configuration (PROTOCOL.md).

    Each run is a dict with ``test_accuracy`` (fraction; the decoded file's, measured once after
    selection), ``file_bits``, ``selection`` (``"validation"`` or ``"test"``) and, for
    validation-selected runs, ``val_accuracy``; ``seed`` if present must differ between runs.
    The row holds the means, the standard deviations (ddof = 1) and the number of seeds; it is
    test-selected if any run is. ``budget`` (the training budget, written next to the point) must
    not be empty. Fewer than ``min_seeds`` runs raise ValueError (lower ``min_seeds`` explicitly
    for an exploratory row; ``seeds`` then says how many there were)."""
    runs = list(runs)
    if len(runs) < max(1, min_seeds):
        raise ValueError(f"{method}/{network}/{run}: {len(runs)} seed(s), a reported point needs >= {min_seeds}")
    if _blank(budget):
        raise ValueError(f"{method}/{network}/{run}: the training budget must be written next to the point")
    seeds = [r.get("seed") for r in runs if r.get("seed") is not None]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{method}/{network}/{run}: the same seed appears twice ({seeds})")
    missing = [k for k in ("test_accuracy", "file_bits", "selection") for r in runs if _blank(r.get(k))]
    if missing:
        raise ValueError(f"{method}/{network}/{run}: every run needs test_accuracy, file_bits and selection "
                         f"(missing {sorted(set(missing))})")
    selections = {r["selection"] for r in runs}
    if not selections <= {"validation", "test"}:
        raise ValueError(f"selection must be 'validation' or 'test', got {sorted(selections)}")
    selection = "test" if "test" in selections else "validation"
    vals = [r.get("val_accuracy") for r in runs]
    if selection == "validation" and any(_blank(v) for v in vals):
        raise ValueError(f"{method}/{network}/{run}: a validation-selected run must carry its val_accuracy")
    acc = [float(r["test_accuracy"]) for r in runs]
    bits = [float(r["file_bits"]) for r in runs]
    std = (lambda xs: statistics.stdev(xs)) if len(runs) > 1 else (lambda xs: None)
    bits_mean = statistics.fmean(bits)
    val_mean = statistics.fmean(float(v) for v in vals) if not any(_blank(v) for v in vals) else None
    return FrontierPoint(method=method, network=network, accuracy=statistics.fmean(acc), file_bits=round(bits_mean),
                         run=run, n_params=n_params, notes=notes, selection=selection, seeds=len(runs),
                         test_acc_mean=statistics.fmean(acc), test_acc_std=std(acc), val_acc_mean=val_mean,
                         file_bits_mean=bits_mean, file_bits_std=std(bits), budget=budget)


def format_frontier(points: Sequence[FrontierPoint], *, protocol: bool = False) -> str:
    """A Markdown table of the points, sorted by network, method, file size.

    ``protocol=True`` adds the protocol's columns: where the point was selected, the number of
    seeds, test accuracy and file bits as mean ± std, validation accuracy and the budget, and
    sorts validation-selected points before test-selected ones (never interleaved)."""
    if protocol:
        lines = ["| network | selection | method | run | seeds | test acc (%) | val acc (%) | file bits | "
                 "bits/weight | ratio (32n/bits) | budget |",
                 "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
        order = {"validation": 0, "test": 1}
        for p in sorted(points, key=lambda p: (p.network, order[p.selection], p.method, p.file_bits)):
            acc = f"{100 * p.test_acc_mean:.2f}" + ("" if p.test_acc_std is None else f" ± {100 * p.test_acc_std:.2f}")
            val = "" if p.val_acc_mean is None else f"{100 * p.val_acc_mean:.2f}"
            fb = f"{p.file_bits:,}" + ("" if p.file_bits_std is None else f" ± {p.file_bits_std:,.0f}")
            bpw = "" if p.bits_per_weight is None else f"{p.bits_per_weight:.3f}"
            ratio = "" if p.compression_ratio is None else f"{p.compression_ratio:.1f}×"
            lines.append(f"| {p.network} | {p.selection} | {p.method} | {p.run} | {p.seeds} | {acc} | {val} | {fb} | "
                         f"{bpw} | {ratio} | {p.budget} |")
        return "\n".join(lines)
    lines = ["| network | method | run | accuracy (%) | file bits | bits/weight | ratio (32n/bits) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p.network, p.method, p.file_bits)):
        bpw = "" if p.bits_per_weight is None else f"{p.bits_per_weight:.3f}"
        ratio = "" if p.compression_ratio is None else f"{p.compression_ratio:.1f}×"
        lines.append(f"| {p.network} | {p.method} | {p.run} | {100 * p.accuracy:.2f} | {p.file_bits:,} | {bpw} | {ratio} |")
    return "\n".join(lines)


def pareto_front(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point beats: none is at most as large with at least the same accuracy
    and better in one of the two. Sorted by file size (accuracy then increases strictly)."""
    front: list[FrontierPoint] = []
    for p in sorted(points, key=lambda p: (p.file_bits, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")


def plot_frontier(ax=None, networks: Sequence[str] = ("lenet5", "lenet300100"), *,
                  points: Sequence[FrontierPoint] | None = None, path: str | Path | None = None,
                  show_references: bool = True, selection: str | None = None):
    """Test accuracy (%) against compressed file size (bits, log x-axis), one panel per network,
    one marker style per method (the same style for a method on every panel), each series'
    Pareto front (:func:`pareto_front`) joined by a thin line, error bars (± one std over seeds)
    where a point aggregates several seeds.

    Validation- and test-selected points are never one series: a series is one (method,
    selection) pair; validation-selected points are filled and labelled ``validation-selected``,
    test-selected ones hollow and labelled ``test-selected``. ``selection``: draw only
    ``"validation"`` or only ``"test"`` points (default: both, as separate series).

    ``ax``: ``None`` (a new figure with one panel per network), one Axes (one network) or a
    sequence of Axes (one per network). ``points``: default :func:`read_frontier` of ``path``.
    ``show_references``: also draw METaQ's *reported* thesis point and the published Deep
    Compression points, hollow, labelled as reported/published. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if selection not in (None, "validation", "test"):
        raise ValueError(f"selection must be None, 'validation' or 'test', got {selection!r}")
    networks = list(networks)
    if ax is None:
        fig, axes = plt.subplots(1, len(networks), figsize=(6.2 * len(networks), 5.4), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(ax) if isinstance(ax, (list, tuple)) or hasattr(ax, "__len__") else [ax]
        if len(axes) != len(networks):
            raise ValueError(f"{len(axes)} axes for {len(networks)} networks")
        fig = axes[0].figure
    if points is None:
        points = read_frontier(path)
    if selection is not None:
        points = [p for p in points if p.selection == selection]
    methods = list(dict.fromkeys(p.method for p in points))
    style = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(methods)}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {m: colors[i % len(colors)] for i, m in enumerate(methods)}
    references = (METAQ_REPORTED, *DEEP_COMPRESSION_PUBLISHED,
                  *(r for r in published_reference_points() if r.network == "lenet5caffe")) if show_references else ()
    for axis, net in zip(axes, networks):
        for m in methods:
            for sel in ("validation", "test"):
                pts = sorted((p for p in points if p.network == net and p.method == m and p.selection == sel),
                             key=lambda p: p.file_bits)
                if not pts:
                    continue
                seeds = sorted({p.seeds for p in pts})
                seed_txt = f"{seeds[0]} seed{'s' if seeds[-1] > 1 else ''}" if len(seeds) == 1 \
                    else f"{seeds[0]}–{seeds[-1]} seeds"
                filled = sel == "validation"
                axis.plot([p.file_bits for p in pts], [100 * p.accuracy for p in pts], linestyle="none",
                          marker=style[m], color=color[m], markersize=7,
                          markerfacecolor=color[m] if filled else "none", markeredgewidth=1.3,
                          label=f"{m} (measured, {sel}-selected, {seed_txt})")
                if any(p.test_acc_std is not None or p.file_bits_std is not None for p in pts):
                    axis.errorbar([p.file_bits for p in pts], [100 * p.accuracy for p in pts],
                                  yerr=[100 * (p.test_acc_std or 0.0) for p in pts],
                                  xerr=[p.file_bits_std or 0.0 for p in pts], fmt="none", ecolor=color[m],
                                  elinewidth=1.0, capsize=2.5, alpha=0.8 if filled else 0.5, label="_nolegend_")
                front = pareto_front(pts)       # the series' best trade-offs, joined by a thin line
                axis.plot([p.file_bits for p in front], [100 * p.accuracy for p in front],
                          linestyle="-" if filled else ":", linewidth=0.8, color=color[m], alpha=0.6,
                          label="_nolegend_")
        for ref in references:
            if ref.network == net:
                is_metaq = ref is METAQ_REPORTED
                axis.plot([ref.file_bits], [100 * ref.accuracy], linestyle="none",
                          marker="*" if is_metaq else "X", markersize=15 if is_metaq else 11,
                          markerfacecolor="none", markeredgewidth=1.6,
                          color="crimson" if is_metaq else "dimgray", label=ref.label)
        axis.set_xscale("log")
        axis.set_xlabel("compressed file size (bits, log scale)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(net)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    return fig
