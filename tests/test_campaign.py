"""metaq_utils.campaign: declared runs run once, resume by identity, claims, order, failures."""
import json
import subprocess
import sys
import time

import pytest

from metaq_utils.campaign import Campaign, CampaignError, Run, identity_key


def _job(calls, value, fail=False):
    def job(out):
        calls.append(out.name)
        if fail:
            raise RuntimeError(f"boom in {out.name}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "artefact.txt").write_text(str(value))
        return {"value": value}
    return job


def _campaign(tmp_path, calls, **kw):
    runs = [Run(f"r{i}", tmp_path / "runs" / f"r{i}", {"lr": 0.1 * i, "seed": i}, _job(calls, i)) for i in range(3)]
    return Campaign("t", runs, tmp_path / "state", command="pytest", log=lambda m: None, **kw)


def test_identity_key_is_canonical_and_rejects_non_json():
    assert identity_key({"a": 1, "b": [1, 2]}) == identity_key({"b": [1, 2], "a": 1})
    assert identity_key({"a": 1}) != identity_key({"a": 1.5})
    with pytest.raises(CampaignError, match="plain JSON"):
        identity_key({"a": object()})
    with pytest.raises(CampaignError, match="plain JSON"):
        identity_key({"a": float("nan")})


def test_runs_once_and_resumes_by_identity(tmp_path):
    calls = []
    c = _campaign(tmp_path, calls)
    assert c.status() == {"r0": "todo", "r1": "todo", "r2": "todo"}
    assert c.run() == 3 and calls == ["r0", "r1", "r2"]
    res = json.loads((tmp_path / "runs" / "r1" / "result.json").read_text())
    assert res["value"] == 1 and res["identity"] == {"lr": 0.1, "seed": 1} and res["command"] == "pytest"
    assert res["identity_key"] == identity_key({"lr": 0.1, "seed": 1})
    assert c.run() == 0 and calls == ["r0", "r1", "r2"]          # nothing redone
    assert set(c.status().values()) == {"done"}
    assert [r["value"] for r in c.results().values()] == [0, 1, 2]
    assert not list((tmp_path / "runs").rglob(".claim"))          # claims released


def test_a_changed_declaration_is_never_mixed_with_the_old_result(tmp_path):
    calls = []
    _campaign(tmp_path, calls).run()
    changed = Campaign("t", [Run("r1", tmp_path / "runs" / "r1", {"lr": 0.2, "seed": 1}, _job(calls, 9))],
                       tmp_path / "state", log=lambda m: None)
    before = (tmp_path / "runs" / "r1" / "result.json").read_bytes()
    with pytest.raises(CampaignError, match="another identity"):
        changed.run()
    assert (tmp_path / "runs" / "r1" / "result.json").read_bytes() == before


def test_legacy_results_are_accepted_only_when_declared(tmp_path):
    out = tmp_path / "runs" / "r0"
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps({"value": "old"}))
    calls = []
    strict = Campaign("t", [Run("r0", out, {"seed": 0}, _job(calls, 0))], tmp_path / "state", log=lambda m: None)
    with pytest.raises(CampaignError, match="legacy=True"):
        strict.run()
    legacy = Campaign("t", [Run("r0", out, {"seed": 0}, _job(calls, 0))], tmp_path / "state", legacy=True,
                      log=lambda m: None)
    assert legacy.run() == 0 and calls == []
    assert json.loads((out / "result.json").read_text()) == {"value": "old"}     # untouched
    assert json.loads((out / "identity.json").read_text())["identity_key"] == identity_key({"seed": 0})


def test_a_failure_is_recorded_and_does_not_stop_the_others(tmp_path):
    calls = []
    runs = [Run("bad", tmp_path / "bad", {"i": 0}, _job(calls, 0, fail=True)),
            Run("good", tmp_path / "good", {"i": 1}, _job(calls, 1))]
    c = Campaign("t", runs, tmp_path / "state", log=lambda m: None)
    assert c.run() == 1
    assert c.status() == {"bad": "failed", "good": "done"}
    assert "boom in bad" in (tmp_path / "state" / "failed" / "bad.txt").read_text()
    assert not (tmp_path / "bad" / "result.json").exists()
    assert c.run() == 0 and calls == ["bad", "good"]               # not retried unless asked
    c.run(retry_failed=True)
    assert calls == ["bad", "good", "bad"]


def test_prerequisites_run_first_whatever_the_declaration_order(tmp_path):
    calls = []
    runs = [Run("quant", tmp_path / "quant", {"s": 0}, _job(calls, 1), after=("dense",)),
            Run("dense", tmp_path / "dense", {"s": 0}, _job(calls, 0))]
    c = Campaign("t", runs, tmp_path / "state", log=lambda m: None)
    assert c.status() == {"quant": "waiting", "dense": "todo"}
    assert c.run() == 2 and calls == ["dense", "quant"]
    with pytest.raises(CampaignError, match="undeclared"):
        Campaign("t", [Run("a", tmp_path / "a", {}, _job(calls, 0), after=("zzz",))], tmp_path / "state")
    with pytest.raises(CampaignError, match="twice"):
        Campaign("t", [Run("a", tmp_path / "a", {}, _job(calls, 0))] * 2, tmp_path / "state")


def test_shards_split_the_runs_and_a_live_claim_is_respected(tmp_path):
    calls = []
    c = _campaign(tmp_path, calls)
    assert c.run(shard=(1, 2)) == 1 and calls == ["r1"]
    with pytest.raises(ValueError, match="shard"):
        c.run(shard=(2, 2))
    with pytest.raises(CampaignError, match="no such runs"):
        c.run(only=["r9"])
    # another live process holds r0's claim: this worker leaves it alone
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from metaq_utils.store.claims import ClaimFile; "
                               f"ClaimFile({str(tmp_path / 'runs' / 'r0' / '.claim')!r}).claim('other'); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert c.status()["r0"] == "running"
        assert c.run() == 1 and calls == ["r1", "r2"]
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the stale claim is taken over and the run is done
    time.sleep(0.05)
    assert c.run() == 1 and calls == ["r1", "r2", "r0"]


def test_a_legacy_check_refuses_an_old_result_that_is_not_the_declared_run(tmp_path):
    out = tmp_path / "r0"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"seed": 1}))
    check = lambda run, res: None if res["seed"] == run.identity["seed"] else f"seed {res['seed']}"
    c = Campaign("t", [Run("r0", out, {"seed": 0}, _job([], 0))], tmp_path / "state", legacy=check, log=lambda m: None)
    with pytest.raises(CampaignError, match="seed 1"):
        c.run()
    ok = Campaign("t", [Run("r0", out, {"seed": 1}, _job([], 0))], tmp_path / "state", legacy=check, log=lambda m: None)
    assert ok.run() == 0 and ok.status() == {"r0": "done"}


def test_a_run_not_needed_is_skipped_and_satisfies_the_runs_after_it(tmp_path):
    calls, chosen = [], {"recipe": None}
    runs = [Run("a", tmp_path / "a", {"r": "a"}, _job(calls, 0),
                needed=lambda: chosen["recipe"] in (None, "a")),
            Run("b", tmp_path / "b", {"r": "b"}, _job(calls, 1),
                needed=lambda: chosen["recipe"] in (None, "b")),
            Run("use", tmp_path / "use", {"r": "use"}, _job(calls, 2), after=("a", "b"))]
    c = Campaign("t", runs, tmp_path / "state", log=lambda m: None)
    assert c.status() == {"a": "todo", "b": "todo", "use": "waiting"}
    chosen["recipe"] = "b"
    assert c.status() == {"a": "skipped", "b": "todo", "use": "waiting"}
    assert c.run() == 2 and calls == ["b", "use"]                  # a is never run
    assert c.status() == {"a": "skipped", "b": "done", "use": "done"}
    assert not (tmp_path / "a").exists()


def test_wait_running_polls_while_another_worker_holds_a_run_and_stops_otherwise(tmp_path):
    import threading

    calls = []
    runs = [Run("r0", tmp_path / "r0", {"i": 0}, _job(calls, 0)),
            Run("r1", tmp_path / "r1", {"i": 1}, _job(calls, 1), after=("r0",))]
    c = Campaign("t", runs, tmp_path / "state", log=lambda m: None)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; from metaq_utils.store.claims import ClaimFile; "
                               f"ClaimFile({str(tmp_path / 'r0' / '.claim')!r}).claim('other'); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    done = []
    try:
        assert holder.stdout.readline().strip() == "held"
        assert c.run(wait=False) == 0                              # without waiting: nothing to do now
        t = threading.Thread(target=lambda: done.append(c.run(wait="running", poll=0.05)))
        t.start()
        time.sleep(0.4)
        assert t.is_alive() and calls == []                        # r0 is held: the worker polls
    finally:
        holder.kill()
        holder.wait()
    t.join(timeout=20)
    assert not t.is_alive() and done == [2] and calls == ["r0", "r1"]   # the dead claim is taken over
    # a failed prerequisite and nobody else at work: the worker stops instead of polling for ever
    calls2 = []
    runs2 = [Run("p", tmp_path / "p", {"i": 0}, _job(calls2, 0, fail=True)),
             Run("q", tmp_path / "q", {"i": 1}, _job(calls2, 1), after=("p",))]
    c2 = Campaign("t2", runs2, tmp_path / "state2", log=lambda m: None)
    assert c2.run(wait="running", poll=0.05) == 0 and calls2 == ["p"]
    assert c2.status() == {"p": "failed", "q": "waiting"}
    with pytest.raises(ValueError, match="wait"):
        c2.run(wait="forever")
