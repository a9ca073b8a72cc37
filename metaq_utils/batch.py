"""Parameterized batch reruns of the notebooks with papermill.

A batch file (JSON) lists notebooks and parameter sets; a ``grid`` expands into the Cartesian
product of its lists::

    {
      "name": "lambda_sweep",
      "runs": [
        {"notebook": "notebooks/Training.ipynb", "label": "lam",
         "parameters": {"epochs": 2},
         "grid": {"lam": [0.0005, 0.0015, 0.005]}}
      ]
    }

``python -m metaq_utils batch FILE`` executes every run with papermill into
``runs/<name>/<timestamp>-<label>-<k>/`` (the executed notebook and ``metrics.json``); an existing
folder is never overwritten. Each notebook receives a ``metrics_path`` parameter and calls
:func:`record_metrics` to write its headline numbers there. At the end a summary table across the
runs is printed and written to ``runs/<name>/summary-<timestamp>.csv``.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["record_metrics", "expand_batch", "run_batch", "BatchRun"]


def record_metrics(metrics: dict[str, Any], path: str | os.PathLike | None) -> None:
    """Write a notebook's headline metrics as JSON to ``path`` (a no-op when ``path`` is empty)."""
    if not path:
        return
    from .checkpoints import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(metrics, indent=1, default=float) + "\n").encode())


@dataclass(frozen=True)
class BatchRun:
    notebook: str
    label: str
    parameters: dict[str, Any]


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)[:80]


def expand_batch(spec: dict[str, Any]) -> list[BatchRun]:
    """The list of runs of a batch specification (validated)."""
    if "runs" not in spec or not isinstance(spec["runs"], list) or not spec["runs"]:
        raise ValueError("batch file: 'runs' must be a non-empty list")
    out = []
    for i, run in enumerate(spec["runs"]):
        if "notebook" not in run:
            raise ValueError(f"batch file: run {i} has no 'notebook'")
        base = dict(run.get("parameters", {}))
        grid = run.get("grid", {})
        if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
            raise ValueError(f"batch file: run {i}: 'grid' must map parameter names to non-empty lists")
        keys = sorted(grid)
        for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            params = {**base, **dict(zip(keys, combo))}
            label = run.get("label", Path(run["notebook"]).stem)
            if keys:
                label += "-" + "-".join(f"{k}={v}" for k, v in zip(keys, combo))
            out.append(BatchRun(run["notebook"], _slug(label), params))
    return out


def run_batch(batch_file: str | os.PathLike, runs_dir: str | os.PathLike = "runs", *,
              kernel_name: str | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Execute a batch with papermill; returns one summary row per run."""
    spec = json.loads(Path(batch_file).read_text())
    name = _slug(spec.get("name", Path(batch_file).stem))
    runs = expand_batch(spec)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(runs_dir) / name
    rows = []
    for k, run in enumerate(runs):
        folder = root / f"{stamp}-{run.label}-{k}"
        if folder.exists():
            raise FileExistsError(f"{folder} exists: refusing to overwrite an earlier run")
        row: dict[str, Any] = {"run": folder.name, "notebook": run.notebook, **{f"param.{p}": v for p, v in run.parameters.items()}}
        if dry_run:
            rows.append(row)
            continue
        folder.mkdir(parents=True)
        params = {**run.parameters, "metrics_path": str((folder / "metrics.json").resolve())}
        (folder / "parameters.json").write_text(json.dumps(params, indent=1) + "\n")
        import papermill as pm
        t0 = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(run.notebook, str(folder / Path(run.notebook).name), parameters=params,
                                kernel_name=kernel_name, cwd=str(Path(run.notebook).parent), progress_bar=False)
        except Exception as e:   # a failed run is recorded, the batch goes on
            status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        row["status"] = status
        row["seconds"] = round(time.perf_counter() - t0, 1)
        metrics_file = folder / "metrics.json"
        if metrics_file.exists():
            row.update(json.loads(metrics_file.read_text()))
        rows.append(row)
        print(f"[batch] {k + 1}/{len(runs)} {folder} {status} ({row['seconds']} s)", flush=True)
    if not dry_run and rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        summary = root / f"summary-{stamp}.csv"
        with open(summary, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        print(f"[batch] summary: {summary}")
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the batch rows (scalar columns only)."""
    if not rows:
        return "(no runs)"
    keys = [k for k in dict.fromkeys(k for r in rows for k in r)
            if all(not isinstance(r.get(k), (dict, list)) for r in rows)]
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v if v is not None else "")
    widths = {k: max(len(k), *(len(fmt(r.get(k))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(fmt(r.get(k)).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
