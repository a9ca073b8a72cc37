"""Summaries of experiment runs written by ``python -m metaq_utils pipeline --results`` (the
ablation of issue 8): per-run figures, per-variant mean ± std over seeds, the accuracy–bytes
frontier of each run, and the rows it contributes to ``results/frontier.csv``.

Protocol (PROTOCOL.md): a run's ``selection`` is read from its result (``"validation"`` for
pipeline results written under the protocol; results without it are older runs, every choice
made on the test set, and are marked ``"test"``). :func:`variant_table` refuses to average
runs selected differently; :func:`frontier_rows` marks every row it makes; :func:`frontier_row`
aggregates the seeds of one configuration into one row (mean ± std, :func:`~metaq_utils.frontier.aggregate_seeds`).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .frontier import MIN_SEEDS, FrontierPoint, aggregate_seeds, pareto_front

__all__ = ["RunSummary", "load_runs", "summarize_run", "variant_table", "frontier_rows", "frontier_row",
           "run_selection", "seed_result", "METHOD_NAMES"]

# run-folder variant name → method name in results/frontier.csv
METHOD_NAMES = {"none": "no-entropy-term", "thesis": "metaq-thesis", "flipped": "metaq-flipped",
                "sorted": "metaq-sorted", "adjacent": "adjacent", "thesis-bundle": "metaq-thesis-bundle"}


@dataclass(frozen=True)
class RunSummary:
    run: str                     # folder name, e.g. 'thesis_seed0'
    variant: str
    seed: int
    epochs: int
    final_accuracy: float | None  # unquantized, final epoch, TEST (older runs only; None under the protocol)
    final_entropy_grid_bits: float
    beta_std_last: float | None  # spread of β across weights at the last step (None: no β)
    beta_abs_mean_last: float | None
    selected_C_Q: int
    selected_accuracy: float     # the selected quantized model's TEST accuracy
    selected_file_bits: int      # range-coded whole file at the selected C_Q
    min_bits_at_98: int | None   # smallest swept file with accuracy ≥ 98 % (on the sweep's split)
    min_bits_at_985: int | None  # … ≥ 98.5 %
    selection: str = "test"      # 'validation' (the protocol) or 'test' (older runs)
    final_val_accuracy: float | None = None     # unquantized, final epoch, validation
    selected_val_accuracy: float | None = None  # the selected quantized model's validation accuracy
    sweep_split: str = "test"    # the split the C_Q sweep (and min_bits_at_*) was scored on


def load_runs(folder: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, result.json) of every finished run under ``folder``."""
    out = []
    for f in sorted(Path(folder).glob("*/result.json")):
        out.append((f.parent.name, json.loads(f.read_text())))
    return out


def _min_bits(sweep: Sequence[dict], level: float) -> int | None:
    ok = [p["file_bits"] for p in sweep if p["accuracy"] >= level and p.get("file_bits") is not None]
    return min(ok) if ok else None


def run_selection(result: dict[str, Any]) -> str:
    """Where a run's choices were made: its result's ``selection`` if it is ``"validation"`` or
    ``"test"``; anything else (a result written before the protocol, whose ``selection`` was the
    C_Q rule's text or absent) is ``"test"``."""
    sel = result.get("selection")
    return sel if sel in ("validation", "test") else "test"


def _selected_test_accuracy(result: dict[str, Any]) -> float:
    if result.get("test_accuracy") is not None:
        return result["test_accuracy"]
    if run_selection(result) == "validation":
        raise ValueError("a validation-selected result without test_accuracy")
    return result["selected"]["accuracy"]        # older runs: the sweep was scored on test


def summarize_run(name: str, result: dict[str, Any]) -> RunSummary:
    variant, seed = name.rsplit("_seed", 1)
    h = result["train_history"]
    last = h[-1]
    beta_mean = last.get("beta_mean")
    selection = run_selection(result)
    return RunSummary(
        run=name, variant=variant, seed=int(seed), epochs=last["epoch"],
        final_accuracy=last.get("test_accuracy"), final_entropy_grid_bits=last["entropy_grid_bits"],
        beta_std_last=last.get("beta_std"), beta_abs_mean_last=abs(beta_mean) if beta_mean is not None else None,
        selected_C_Q=result["selected"]["C_Q"], selected_accuracy=_selected_test_accuracy(result),
        selected_file_bits=result["selected"]["file_bits"],
        min_bits_at_98=_min_bits(result["sweep"], 0.98), min_bits_at_985=_min_bits(result["sweep"], 0.985),
        selection=selection, final_val_accuracy=last.get("val_accuracy"),
        selected_val_accuracy=result.get("val_accuracy"),
        sweep_split=result["selected"].get("evaluated_on", "test"))


def _mean_std(xs: Iterable[float | None]) -> tuple[float, float, int]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan), len(xs)


def variant_table(runs: Sequence[RunSummary],
                  fields: Sequence[str] = ("final_accuracy", "final_entropy_grid_bits", "selected_file_bits",
                                           "selected_accuracy", "min_bits_at_98", "min_bits_at_985")) -> list[dict]:
    """One row per variant: mean, std and count over seeds of each field, and for each field the
    difference from the ``none`` variant in units of the larger of the two seed spreads.

    All runs must have been selected the same way (``selection``): validation- and test-selected
    runs are never averaged or compared together (ValueError); each row says which it is."""
    selections = {r.selection for r in runs}
    if len(selections) > 1:
        raise ValueError(f"variant_table: runs selected on {sorted(selections)} cannot be mixed; "
                         "summarise validation- and test-selected runs separately")
    by: dict[str, list[RunSummary]] = {}
    for r in runs:
        by.setdefault(r.variant, []).append(r)
    base = by.get("none")
    rows = []
    for variant, rs in by.items():
        row: dict[str, Any] = {"variant": variant, "method": METHOD_NAMES.get(variant, variant),
                               "seeds": sorted(r.seed for r in rs), "selection": rs[0].selection}
        for f in fields:
            m, s, k = _mean_std(getattr(r, f) for r in rs)
            row[f"{f}_mean"], row[f"{f}_std"] = m, s
            if base is not None and variant != "none":
                bm, bs, _ = _mean_std(getattr(r, f) for r in base)
                spread = max(x for x in (s, bs, 0.0) if not math.isnan(x))
                row[f"{f}_diff_vs_none"] = m - bm
                row[f"{f}_diff_in_spreads"] = (m - bm) / spread if spread > 0 else (0.0 if m == bm else math.inf)
        rows.append(row)
    return rows


def frontier_rows(name: str, result: dict[str, Any], *, method: str, network: str = "lenet5",
                  run_prefix: str = "", notes: str = "", budget: str = "") -> list[FrontierPoint]:
    """The frontier rows of one run, marked with the run's ``selection``.

    * An older run (its C_Q sweep scored on test): the Pareto-optimal (accuracy, range-coded file
      bits) points of the sweep, every one ``selection="test"`` (each is a choice on test).
    * A run under the protocol (sweep scored on validation): one row, the selected model, with its
      test accuracy (measured once, after selection) and validation accuracy,
      ``selection="validation"``; the sweep's other points are validation measurements, not
      reported points. (Several seeds of one configuration: :func:`frontier_row`.)"""
    sweep_split = result["selected"].get("evaluated_on", "test")
    if sweep_split == "test":
        pts = [FrontierPoint(method=method, network=network, accuracy=p["accuracy"], file_bits=p["file_bits"],
                             run=f"{run_prefix}{name}/CQ{p['C_Q']}", n_params=result.get("n_params"),
                             notes=notes or f"C_Q={p['C_Q']} range coder", selection="test", budget=budget)
               for p in result["sweep"] if p.get("file_bits") is not None]
        return pareto_front(pts)
    s = seed_result(result)
    return [FrontierPoint(method=method, network=network, accuracy=s["test_accuracy"], file_bits=s["file_bits"],
                          run=f"{run_prefix}{name}/CQ{result['selected']['C_Q']}", n_params=result.get("n_params"),
                          notes=notes or f"C_Q={result['selected']['C_Q']} range coder", selection=s["selection"],
                          val_acc_mean=s["val_accuracy"], budget=budget)]


def seed_result(result: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """One run's contribution to :func:`~metaq_utils.frontier.aggregate_seeds`: the selected
    quantized model's test and validation accuracy, its range-coded file size, the selection."""
    return {"seed": seed, "test_accuracy": _selected_test_accuracy(result),
            "val_accuracy": result.get("val_accuracy"), "file_bits": result["selected"]["file_bits"],
            "selection": run_selection(result)}


def frontier_row(runs: Sequence[tuple[str, dict[str, Any]]], *, method: str, budget: str, network: str = "lenet5",
                 run: str | None = None, notes: str = "", min_seeds: int = MIN_SEEDS) -> FrontierPoint:
    """One frontier row from the seeds of one configuration (``(folder name, result)`` pairs as
    :func:`load_runs` gives, names ending in ``_seed<k>``): mean ± std (ddof = 1) of the selected
    models' test accuracy and file bits, the number of seeds, the budget; marked test-selected if
    any seed was."""
    if not runs:
        raise ValueError("frontier_row: no runs")
    per_seed = [seed_result(res, int(name.rsplit("_seed", 1)[1]) if "_seed" in name else None) for name, res in runs]
    name = run or runs[0][0].rsplit("_seed", 1)[0]
    return aggregate_seeds(per_seed, method=method, network=network, run=name, budget=budget, notes=notes,
                           n_params=runs[0][1].get("n_params"), min_seeds=min_seeds)
