"""metaq_utils.store.claims: of two processes that claim at once exactly one wins; a dead pid's claim
is taken over, a live one's respected; another host's fresh claim is respected and a stale one taken;
a corrupt (or old pid-only) claim file; release."""
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from metaq_utils.store.claims import ClaimDir, ClaimFile, claim_file_name


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture()
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def _race(directory, job, start, results, i):
    start.wait()
    results[i] = ClaimDir(directory).claim(job, f"w{i}")
    time.sleep(1.0)                 # stay alive while the others look, so the claim is not stale


@pytest.mark.parametrize("existing", ["none", "dead"])
def test_of_concurrent_claims_exactly_one_wins(tmp_path, existing):
    if existing == "dead":          # the racers all find a dead worker's claim and try to take it over
        _write(tmp_path / claim_file_name("job:1"),
               {"pid": _dead_pid(), "host": socket.gethostname(), "worker": "old", "since": 0})
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    n = 4
    start = ctx.Barrier(n)
    results = ctx.Array("i", [-1] * n)
    procs = [ctx.Process(target=_race, args=(str(tmp_path), "job:1", start, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(results[:]) == [0] * (n - 1) + [1]
    winner = results[:].index(1)
    assert ClaimDir(tmp_path).holder("job:1")["worker"] == f"w{winner}"
    assert [p.name for p in tmp_path.iterdir()] == ["job_1.claim"]    # nothing left aside


def test_own_claim_other_worker_and_release(tmp_path):
    claims = ClaimDir(tmp_path / "claims")
    assert claims.claim("a:b", "w0")
    path = tmp_path / "claims" / "a_b.claim"
    assert claims.path("a:b") == path and path.exists()
    h = claims.holder("a:b")
    assert (h["pid"], h["host"], h["worker"]) == (os.getpid(), socket.gethostname(), "w0")
    assert claims.claim("a:b", "w0")               # already ours
    assert not claims.claim("a:b", "w1")           # another worker of this process holds it
    assert not claims.claimed_by_other("a:b")      # this process's own claim
    claims.release("a:b")
    assert not path.exists() and claims.holder("a:b") is None
    claims.release("a:b")                          # releasing nothing is fine
    assert claims.claim("a:b", "w1")


def test_a_dead_pid_is_taken_over_a_live_one_is_not(tmp_path, live_pid):
    f = ClaimFile(tmp_path / ".claim")
    _write(f.path, {"pid": live_pid, "host": socket.gethostname(), "worker": "other", "since": 0})
    assert f.claimed_by_other() and not f.claim("me")
    f.release()                                     # not ours: left alone
    assert f.holder()["pid"] == live_pid
    _write(f.path, {"pid": _dead_pid(), "host": socket.gethostname(), "worker": "other", "since": 0})
    assert f.claim("me") and f.holder()["pid"] == os.getpid()
    _write(f.path, {"pid": _dead_pid(), "host": socket.gethostname(), "worker": "other", "since": 0})
    assert not f.claimed_by_other() and not f.path.exists()       # the check removes a dead claim


def test_another_hosts_claim_is_respected_until_stale(tmp_path):
    path = tmp_path / "x.claim"
    _write(path, {"pid": os.getpid(), "host": "some-other-host", "worker": "w", "since": time.time() - 100})
    assert ClaimFile(path).claimed_by_other()                                  # no staleness: alive
    assert not ClaimFile(path).claim("me")
    assert ClaimFile(path, foreign_stale_after=1000).claimed_by_other()        # fresh
    assert not ClaimFile(path, foreign_stale_after=1000).claim("me")
    assert ClaimFile(path, foreign_stale_after=10).claim("me")                 # stale: taken
    assert ClaimFile(path).holder()["host"] == socket.gethostname()


def test_a_corrupt_claim_is_held_while_being_written_then_stale(tmp_path):
    path = tmp_path / ".claim"
    _write(path, "{not json")
    assert ClaimFile(path).claimed_by_other()              # young: a claim being written
    assert not ClaimFile(path).claim("me")
    old = time.time() - 60
    os.utime(path, (old, old))
    with pytest.warns(RuntimeWarning, match="treated as stale"):
        assert ClaimFile(path).claim("me")
    assert ClaimFile(path).holder()["pid"] == os.getpid()
    for bad in ("", "[1, 2]", '{"pid": "x", "host": "h"}', "0"):
        _write(path, bad)
        os.utime(path, (old, old))
        assert ClaimFile(path).holder() is None
        with pytest.warns(RuntimeWarning):
            assert not ClaimFile(path).claimed_by_other() and not path.exists()


def test_the_old_pid_only_format(tmp_path, live_pid):
    path = tmp_path / ".claim"
    _write(path, str(live_pid))                    # a running worker of the old script: respected
    assert not ClaimFile(path).claim("me")
    _write(path, str(_dead_pid()))                 # a leftover: taken over
    assert ClaimFile(path).claim("me")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    _write(path, str(os.getpid()))                 # our own (the old script's re-entrant claim)
    assert ClaimFile(path).claim("me")
