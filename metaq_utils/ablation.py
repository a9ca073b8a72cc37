"""Summaries of experiment runs written by ``python -m metaq_utils pipeline --results`` (the
ablation of issue 8): per-run figures, per-variant mean ± std over seeds, the accuracy–bytes
frontier of each run, and the rows it contributes to ``results/frontier.csv``.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .frontier import FrontierPoint, pareto_front

__all__ = ["RunSummary", "load_runs", "summarize_run", "variant_table", "frontier_rows", "METHOD_NAMES"]

# run-folder variant name → method name in results/frontier.csv
METHOD_NAMES = {"none": "no-entropy-term", "thesis": "metaq-thesis", "flipped": "metaq-flipped",
                "sorted": "metaq-sorted", "adjacent": "adjacent", "thesis-bundle": "metaq-thesis-bundle"}


@dataclass(frozen=True)
class RunSummary:
    run: str                     # folder name, e.g. 'thesis_seed0'
    variant: str
    seed: int
    epochs: int
    final_accuracy: float        # unquantized, final epoch
    final_entropy_grid_bits: float
    beta_std_last: float | None  # spread of β across weights at the last step (None: no β)
    beta_abs_mean_last: float | None
    selected_C_Q: int
    selected_accuracy: float
    selected_file_bits: int      # range-coded whole file at the selected C_Q
    min_bits_at_98: int | None   # smallest swept file with accuracy ≥ 98 %
    min_bits_at_985: int | None  # … ≥ 98.5 %


def load_runs(folder: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, result.json) of every finished run under ``folder``."""
    out = []
    for f in sorted(Path(folder).glob("*/result.json")):
        out.append((f.parent.name, json.loads(f.read_text())))
    return out


def _min_bits(sweep: Sequence[dict], level: float) -> int | None:
    ok = [p["file_bits"] for p in sweep if p["accuracy"] >= level and p.get("file_bits") is not None]
    return min(ok) if ok else None


def summarize_run(name: str, result: dict[str, Any]) -> RunSummary:
    variant, seed = name.rsplit("_seed", 1)
    h = result["train_history"]
    last = h[-1]
    beta_mean = last.get("beta_mean")
    return RunSummary(
        run=name, variant=variant, seed=int(seed), epochs=last["epoch"],
        final_accuracy=last["test_accuracy"], final_entropy_grid_bits=last["entropy_grid_bits"],
        beta_std_last=last.get("beta_std"), beta_abs_mean_last=abs(beta_mean) if beta_mean is not None else None,
        selected_C_Q=result["selected"]["C_Q"], selected_accuracy=result["selected"]["accuracy"],
        selected_file_bits=result["selected"]["file_bits"],
        min_bits_at_98=_min_bits(result["sweep"], 0.98), min_bits_at_985=_min_bits(result["sweep"], 0.985))


def _mean_std(xs: Iterable[float | None]) -> tuple[float, float, int]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan), len(xs)


def variant_table(runs: Sequence[RunSummary],
                  fields: Sequence[str] = ("final_accuracy", "final_entropy_grid_bits", "selected_file_bits",
                                           "selected_accuracy", "min_bits_at_98", "min_bits_at_985")) -> list[dict]:
    """One row per variant: mean, std and count over seeds of each field, and for each field the
    difference from the ``none`` variant in units of the larger of the two seed spreads."""
    by: dict[str, list[RunSummary]] = {}
    for r in runs:
        by.setdefault(r.variant, []).append(r)
    base = by.get("none")
    rows = []
    for variant, rs in by.items():
        row: dict[str, Any] = {"variant": variant, "method": METHOD_NAMES.get(variant, variant),
                               "seeds": sorted(r.seed for r in rs)}
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
                  run_prefix: str = "", notes: str = "") -> list[FrontierPoint]:
    """The Pareto-optimal (accuracy, range-coded file bits) points of one run's C_Q sweep."""
    pts = [FrontierPoint(method=method, network=network, accuracy=p["accuracy"], file_bits=p["file_bits"],
                         run=f"{run_prefix}{name}/CQ{p['C_Q']}", n_params=result.get("n_params"),
                         notes=notes or f"C_Q={p['C_Q']} range coder")
           for p in result["sweep"] if p.get("file_bits") is not None]
    return pareto_front(pts)
