"""The papermill batch runner on Dask: batch files, a local cluster, a cluster of separate
processes with a worker killed mid-batch, and an interrupted batch resumed.

The notebooks here are tiny ones written by the tests (a parameters cell, a sleep, a metric), so
that each run costs a kernel start and little else."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from metaq_utils.batch import expand_batch, format_summary, record_metrics, run_batch, run_id

REPO = Path(__file__).resolve().parent.parent


def test_grid_expands_to_the_cartesian_product():
    runs = expand_batch({"runs": [{"notebook": "nb/T.ipynb", "parameters": {"epochs": 2},
                                   "grid": {"lam": [1, 2], "variant": ["a", "b", "c"]}}]})
    assert len(runs) == 6
    assert {(r.parameters["lam"], r.parameters["variant"]) for r in runs} == {(l, v) for l in (1, 2) for v in "abc"}
    assert all(r.parameters["epochs"] == 2 for r in runs)
    assert len({r.label for r in runs}) == 6
    assert len({r.id for r in runs}) == 6


@pytest.mark.parametrize("spec,msg", [({}, "'runs' must be a non-empty list"),
                                      ({"runs": [{"parameters": {}}]}, "has no 'notebook'"),
                                      ({"runs": [{"notebook": "x", "grid": {"a": []}}]}, "non-empty lists"),
                                      ({"runs": [{"notebook": "x", "parameters": {"a": 1}},
                                                 {"notebook": "./x", "label": "y", "grid": {"a": [1]}}]},
                                       "appears twice")])
def test_bad_batch_files(spec, msg):
    with pytest.raises(ValueError, match=msg):
        expand_batch(spec)


def test_a_run_is_identified_by_notebook_and_parameters():
    assert run_id("notebooks/T.ipynb", {"a": 1, "b": 2}) == run_id("./notebooks/T.ipynb", {"b": 2, "a": 1})
    assert run_id("notebooks/T.ipynb", {"a": 1}) != run_id("notebooks/T.ipynb", {"a": 2})
    assert run_id("notebooks/T.ipynb", {"a": 1}) != run_id("notebooks/U.ipynb", {"a": 1})


def test_record_metrics_and_dry_run(tmp_path):
    record_metrics({"acc": 0.99}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"acc": 0.99}
    record_metrics({"acc": 1}, "")            # no path: nothing written, no error
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"name": "x", "runs": [{"notebook": "n.ipynb", "grid": {"a": [1, 2]}}]}))
    rows = run_batch(f, tmp_path / "runs", dry_run=True)
    assert [r["param.a"] for r in rows] == [1, 2]
    assert [r["done"] for r in rows] == ["", ""]
    assert "param.a" in format_summary(rows)
    assert not (tmp_path / "runs").exists()   # a dry run writes nothing


def test_the_workspace_batches_are_valid():
    for f in sorted((REPO / "batches").glob("*.json")):
        for run in expand_batch(json.loads(f.read_text())):
            assert (REPO / run.notebook).is_file(), (f.name, run.notebook)


# ---------------------------------------------------------------------------- executed batches

TINY_CODE = """\
import json, os, time
if log:
    with open(log, "a") as f:
        f.write(f"start {x} {os.getpid()} {os.getppid()}\\n")
time.sleep(sleep)
if fail:
    raise RuntimeError(f"run {x} fails on purpose")
if metrics_path:
    with open(metrics_path, "w") as f:
        json.dump({"y": x * x}, f)
if log:
    with open(log, "a") as f:
        f.write(f"end {x}\\n")
"""


def tiny_notebook(path: Path) -> Path:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell('x = 1\nsleep = 0.0\nfail = False\nlog = ""\nmetrics_path = ""')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(TINY_CODE)]
    nbformat.write(nb, str(path))
    return path


def tiny_batch(tmp_path: Path, xs, *, sleep=0.0, fail=(), name="tiny") -> Path:
    nb = tiny_notebook(tmp_path / "Tiny.ipynb")
    log = tmp_path / "executions.log"
    spec = {"name": name, "runs": [{"notebook": str(nb), "label": f"tiny-{x}",
                                    "parameters": {"x": x, "sleep": sleep, "fail": x in fail, "log": str(log)}}
                                   for x in xs]}
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(spec))
    return f


def log_lines(tmp_path: Path) -> list[str]:
    f = tmp_path / "executions.log"
    return f.read_text().splitlines() if f.exists() else []


def result_files(runs_dir: Path) -> list[Path]:
    return sorted(runs_dir.glob("*/*/result.json"))


@pytest.mark.slow
def test_batch_on_a_local_cluster_reports_a_failure_without_stopping_the_others(tmp_path, capsys):
    f = tiny_batch(tmp_path, [1, 2, 3], fail={2})
    t0 = time.perf_counter()
    rows = run_batch(f, tmp_path / "runs", n_workers=2)
    print(f"local-cluster batch of 3 runs: {time.perf_counter() - t0:.1f} s")
    assert [r["param.x"] for r in rows] == [1, 2, 3]
    assert [r["status"] for r in rows][0::2] == ["ok", "ok"]
    assert rows[1]["status"].startswith("failed: RuntimeError: run 2 fails on purpose")
    assert [r.get("y") for r in rows] == [1, None, 9]
    assert all(r["done"] == "now" for r in rows)
    assert len({r["worker"] for r in rows}) >= 1
    root = tmp_path / "runs" / "tiny"
    for r in rows:
        folder = root / r["run"]
        assert json.loads((folder / "result.json").read_text())["status"] == r["status"]
        assert json.loads((folder / "parameters.json").read_text())["x"] == r["param.x"]
        assert (folder / "Tiny.ipynb").exists()          # the failed run's notebook too, with its error
    assert (root / rows[0]["run"] / "metrics.json").exists()
    assert not (root / rows[1]["run"] / "metrics.json").exists()
    summaries = list(root.glob("summary-*.csv"))
    assert len(summaries) == 1
    with open(summaries[0]) as fh:
        table = list(csv.DictReader(fh))
    assert [t["status"][:6] for t in table] == ["ok", "failed", "ok"]
    out = capsys.readouterr().out
    assert "[batch]" in out and "\r" not in out
    # what a resumed batch would do: the two finished runs are done, the failed one runs again
    plan = run_batch(f, tmp_path / "runs", dry_run=True)
    assert [p["done"] for p in plan] == ["earlier", "", "earlier"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd, log):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def _stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


@pytest.mark.slow
def test_batch_on_a_cluster_survives_a_killed_worker(tmp_path):
    """A scheduler and two workers as separate processes on 127.0.0.1; one worker is killed while it
    executes a run; the batch completes on the other, with every result exactly once."""
    from distributed import Client
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "cluster.log", "w")
    scheduler = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                        "--port", str(port), "--no-dashboard"], log)
    workers = []
    killed_pids: list[int] = []
    try:
        workers = [_start([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                           "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"], log) for i in range(2)]
        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
        f = tiny_batch(tmp_path, [1, 2, 3, 4], sleep=2.0, name="faults")
        done: dict = {}
        runner = threading.Thread(target=lambda: done.update(rows=run_batch(f, tmp_path / "runs", scheduler=address)))
        runner.start()
        victim = None
        deadline = time.monotonic() + 300     # a loaded machine can take minutes to start a kernel
        while victim is None and time.monotonic() < deadline:
            for line in log_lines(tmp_path):
                if line.startswith("start "):
                    _, x, kernel_pid, worker_pid = line.split()
                    group = os.getpgid(int(worker_pid))
                    hits = [w for w in workers if w.pid == group]
                    if hits:                           # a run of ours, in one of our two workers: kill it
                        victim = (int(x), hits[0], int(kernel_pid), int(worker_pid))
                        break
            time.sleep(0.1)
        assert victim is not None, "no run started within 120 s"
        x_killed, proc, kernel_pid, worker_pid = victim
        os.killpg(proc.pid, signal.SIGKILL)           # the worker (and its nanny) die mid-run
        killed_pids += [kernel_pid]
        proc.wait(10)
        runner.join(240)
        assert not runner.is_alive(), "the batch did not finish after the worker was killed"
        rows = done["rows"]
        assert sorted(r["param.x"] for r in rows) == [1, 2, 3, 4]
        assert [r["status"] for r in rows] == ["ok"] * 4, rows
        assert [r["y"] for r in rows] == [1, 4, 9, 16]
        assert all(str(worker_pid) not in r["worker"] for r in rows)   # no result from the killed worker
        assert len(result_files(tmp_path / "runs")) == 4                 # every result exactly once
        lines = log_lines(tmp_path)
        assert lines.count(f"end {x_killed}") == 1
        assert sum(l.startswith(f"start {x_killed} ") for l in lines) == 2   # rescheduled after the kill
        with Client(address, timeout=30) as c:
            assert len(c.scheduler_info()["workers"]) == 1
    finally:
        for w in workers:
            _stop(w)
        _stop(scheduler)
        log.close()
        for pid in killed_pids:          # the killed worker's kernel exits by itself once its parent is gone
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_an_interrupted_batch_resumes_without_redoing_finished_runs(tmp_path):
    f = tiny_batch(tmp_path, [1, 2, 3], sleep=1.0, name="resume")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "metaq_utils", "batch", str(f), "--runs-dir", str(runs), "--workers", "1"]
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            deadline = time.monotonic() + 300     # a loaded machine can take minutes to start a kernel
            while not result_files(runs) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert result_files(runs), (tmp_path / "first.log").read_text()
            proc.send_signal(signal.SIGINT)       # Ctrl-C after the first finished run
            rc = proc.wait(60)
        finally:
            _stop(proc)
    text = (tmp_path / "first.log").read_text()
    assert rc == 130, text
    assert "run the same command again to resume" in text
    finished = {json.loads(p.read_text())["param.x"]: p.read_text() for p in result_files(runs)}
    assert 1 <= len(finished) < 3, f"interrupted too late to test resuming: {text}"

    rows = run_batch(f, runs, n_workers=1)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert [r["y"] for r in rows] == [1, 4, 9]
    for r in rows:
        assert r["done"] == ("earlier" if r["param.x"] in finished else "now")
    for x, text_before in finished.items():   # finished runs were not redone: same result, one execution
        assert (runs / "resume" / rows[x - 1]["run"] / "result.json").read_text() == text_before
        assert log_lines(tmp_path).count(f"end {x}") == 1
    assert len(result_files(runs)) == 3
