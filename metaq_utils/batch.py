"""Parameterized batch runs of the notebooks with papermill, in parallel on Dask ``distributed``.

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

``python -m metaq_utils batch FILE`` executes the runs with papermill, each as one task on a Dask
cluster:

* by default a local cluster of one-thread worker processes, as many as the machine has cores
  (``--workers N`` to change it);
* with ``--scheduler tcp://HOST:PORT``, an existing cluster (``dask scheduler`` and ``dask worker``
  processes). Its workers need this package, the notebooks' kernel, and the workspace at the same
  path as the submitting machine (the same machine, or a shared file system): a run reads its
  notebook and its inputs there; its results come back to the submitting process, which alone
  writes them.

**A run is identified by its notebook and parameters** (:func:`run_id`, a hash) and lives in
``runs/<name>/<label>-<id>/``: the executed notebook, ``parameters.json``, ``metrics.json`` (what
the notebook passed to :func:`record_metrics` through its ``metrics_path`` parameter) and, written
last, ``result.json``. Running the same batch again **resumes** it: runs whose ``result.json``
says ``ok`` are not redone (they appear in the summary with ``done = earlier``); failed and
unfinished ones run again. A run that fails is reported in the summary, the others go on; a worker
that dies mid-run has its run rescheduled on another worker by Dask. A live progress bar counts
finished runs (plain lines when the output is not a terminal, :mod:`metaq_utils.store.progress`). At the
end the summary table is printed and written to ``runs/<name>/summary-<timestamp>.csv``.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["record_metrics", "expand_batch", "run_batch", "run_id", "execute_run", "format_summary",
           "BatchRun", "default_workers"]


def record_metrics(metrics: dict[str, Any], path: str | os.PathLike | None) -> None:
    """Write a notebook's headline metrics as JSON to ``path`` (a no-op when ``path`` is empty)."""
    if not path:
        return
    from .store.atomic import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(metrics, indent=1, default=float) + "\n").encode())


@dataclass(frozen=True)
class BatchRun:
    notebook: str
    label: str
    parameters: dict[str, Any]

    @property
    def id(self) -> str:
        return run_id(self.notebook, self.parameters)


def run_id(notebook: str | os.PathLike, parameters: dict[str, Any]) -> str:
    """The identity of a run: a hash of its notebook (as the batch file names it, normalized) and
    its parameters (order-independent). Equal for the same run in any batch file."""
    key = json.dumps({"notebook": Path(os.path.normpath(notebook)).as_posix(), "parameters": parameters},
                     sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)[:80]


def expand_batch(spec: dict[str, Any]) -> list[BatchRun]:
    """The list of runs of a batch specification (validated; the same run twice is an error)."""
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
    seen: dict[str, BatchRun] = {}
    for r in out:
        if r.id in seen:
            raise ValueError(f"batch file: the run {r.label!r} appears twice (same notebook and parameters "
                             f"as {seen[r.id].label!r})")
        seen[r.id] = r
    return out


def default_workers() -> int:
    """As many workers as the machine has cores (CPU affinity and cgroup quota respected)."""
    try:
        from dask.system import CPU_COUNT
        return max(1, int(CPU_COUNT))
    except Exception:   # pragma: no cover - dask is a dependency of the notebooks extra
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def execute_run(notebook: str, parameters: dict[str, Any], kernel_name: str | None = None,
                cwd: str | None = None) -> dict[str, Any]:
    """Execute one notebook with papermill (this is the task a Dask worker runs).

    Everything is written into a private temporary folder and returned: the status, the seconds,
    the executed notebook (JSON text, also when the run failed), the metrics the notebook recorded,
    and where it ran. A failure of the notebook is a returned status, not an exception."""
    import papermill as pm
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metaq-batch-") as tmp:
        out = Path(tmp) / Path(notebook).name
        metrics_file = Path(tmp) / "metrics.json"
        status = "ok"
        try:
            pm.execute_notebook(notebook, str(out), parameters={**parameters, "metrics_path": str(metrics_file)},
                                kernel_name=kernel_name, cwd=cwd, progress_bar=False)
        except Exception as e:   # the notebook failed (or its kernel did not start): reported, not raised
            status = _failure(e)
        return {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                "notebook_json": out.read_text() if out.exists() else None,
                "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
                "host": socket.gethostname(), "pid": os.getpid()}


def _failure(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    if type(e).__name__ == "PapermillExecutionError":
        ename, evalue = getattr(e, "ename", ""), getattr(e, "evalue", "")
        return f"failed: {ename}: {evalue}"[:300] + f" (cell {getattr(e, 'exec_count', '?')})"
    return f"failed: {type(e).__name__}: {text[0][:200] if text else ''}"


def _read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None


def _write_run(folder: Path, run: BatchRun, res: dict[str, Any], base_row: dict[str, Any]) -> dict[str, Any]:
    """Store one finished run; ``result.json`` is written last, so its presence means complete."""
    from .store.atomic import atomic_write_bytes
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", Path(run.notebook).name):   # from an earlier, failed attempt
        (folder / stale).unlink(missing_ok=True)
    if res.get("notebook_json") is not None:
        atomic_write_bytes(folder / Path(run.notebook).name, res["notebook_json"].encode())
    if res.get("metrics"):
        atomic_write_bytes(folder / "metrics.json", (json.dumps(res["metrics"], indent=1, default=float) + "\n").encode())
    atomic_write_bytes(folder / "parameters.json", (json.dumps(run.parameters, indent=1, default=str) + "\n").encode())
    row = {**base_row, "status": res["status"], "seconds": res.get("seconds"),
           "worker": f"{res.get('host', '?')}:{res.get('pid', '?')}", **(res.get("metrics") or {})}
    atomic_write_bytes(folder / "result.json", (json.dumps(row, indent=1, default=float) + "\n").encode())
    return row


def _connect(scheduler: str | None, n_workers: int | None):
    """(client, cluster): a client of the given scheduler, or of a new local cluster."""
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler, set_as_default=False), None
    # dashboard/HTTP server on a free port: two batches (or a batch and a test) never collide on 8787
    cluster = LocalCluster(n_workers=n_workers or default_workers(), threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0")
    return Client(cluster, set_as_default=False), cluster


def run_batch(batch_file: str | os.PathLike, runs_dir: str | os.PathLike = "runs", *,
              kernel_name: str | None = None, dry_run: bool = False, scheduler: str | None = None,
              n_workers: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Execute (or resume) a batch on a Dask cluster; one summary row per run, in the batch's order.

    ``scheduler``: the address of an existing Dask scheduler (``tcp://HOST:PORT``); without it a
    local cluster of ``n_workers`` one-thread processes (default: one per core) is started and
    stopped. Runs already finished (``ok``) in ``runs_dir`` are not redone. ``dry_run`` lists the
    runs and which of them are done, without executing anything."""
    from .store.progress import tqdm
    spec = json.loads(Path(batch_file).read_text())
    name = _slug(spec.get("name", Path(batch_file).stem))
    runs = expand_batch(spec)
    root = Path(runs_dir) / name
    folders = {r.id: root / f"{r.label}-{r.id}" for r in runs}
    base = {r.id: {"run": folders[r.id].name, "notebook": r.notebook,
                   **{f"param.{p}": v for p, v in r.parameters.items()}} for r in runs}
    rows: dict[str, dict[str, Any]] = {}
    for r in runs:
        earlier = _read_result(folders[r.id])
        if earlier is not None and earlier.get("status") == "ok":
            rows[r.id] = {**earlier, "done": "earlier"}
    todo = [r for r in runs if r.id not in rows]
    if dry_run:
        return [rows.get(r.id) or {**base[r.id], "done": ""} for r in runs]

    interrupted = False
    if todo:
        client, cluster = _connect(scheduler, n_workers)
        # Ctrl-C must reach this loop whatever the cluster's start-up did to the SIGINT handler (a
        # fresh-clone test once saw the interrupt go to a kernel and the batch run to the end):
        # re-assert Python's own handler here, in the main thread, and restore the previous one after
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"batch {name}", unit="run",
                   disable=not progress, mininterval=1.0)
        n_failed = 0
        try:
            from distributed import as_completed
            batch_key = uuid.uuid4().hex[:8]
            futures = {}
            for r in todo:
                nb = Path(r.notebook).resolve()
                fut = client.submit(execute_run, str(nb), r.parameters, kernel_name, str(nb.parent),
                                    key=f"metaq-batch-{name}-{r.label}-{r.id}-{batch_key}", pure=False)
                futures[fut] = r
            for fut in as_completed(list(futures), loop=client.loop):
                r = futures[fut]
                try:
                    res = fut.result()
                except Exception as e:   # e.g. KilledWorker: the run took down its workers every time
                    res = {"status": _failure(e), "seconds": None}
                row = _write_run(folders[r.id], r, res, base[r.id])
                rows[r.id] = {**row, "done": "now"}
                n_failed += row["status"] != "ok"
                bar.update(1)
                if n_failed:
                    bar.set_postfix(failed=n_failed, refresh=False)
                if progress:
                    tqdm.write(f"[batch] {folders[r.id]} {row['status']} ({row['seconds']} s)")
                fut.release()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            bar.close()
            client.close()
            if cluster is not None:
                cluster.close()
    out = [rows.get(r.id) or {**base[r.id], "status": "not run (interrupted)", "done": ""} for r in runs]
    keys = list(dict.fromkeys(k for r in out for k in r))
    summary = root / f"summary-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    root.mkdir(parents=True, exist_ok=True)
    with open(summary, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(out)
    if progress:
        print(f"[batch] {sum(r.get('done') == 'earlier' for r in out)} done earlier, "
              f"{sum(r.get('done') == 'now' for r in out)} run now; summary: {summary}", flush=True)
    if interrupted:
        raise KeyboardInterrupt(f"batch {name} interrupted; run the same command again to resume")
    return out


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
