"""One campaign runner (issue 22): declared runs, resume by identity, claims, failures kept apart.

A campaign is a list of :class:`Run` declarations — a name, the folder the run writes, the *identity*
that defines it (the configuration dicts, JSON-serialisable) and the function that does the work —
and :class:`Campaign` runs what is not done yet:

- **resume by identity**: a run is done when its folder holds ``result.json`` whose ``identity_key``
  (:func:`identity_key`: SHA-256 of the identity's canonical JSON) equals the declaration's. A
  ``result.json`` with *another* identity is never overwritten: the runner stops with an error that
  names both, so a changed budget cannot silently mix with old results. Results written before the
  runner existed carry no key; ``legacy=True`` accepts them as done (they are what the old scripts
  wrote) — or ``legacy=check``: ``check(run, result)`` returns what disagrees (e.g. its seed or epochs),
  ``None`` when the old result is this run — and the run's key is recorded beside them in ``identity.json``.
- **claims**: before starting, a worker claims the run (``<out>/.claim``,
  :class:`metaq_utils.store.claims.ClaimFile`: pid and host; a claim whose process is gone is taken
  over), so two workers on two cores never run the same job. An interrupted run is resumed by its own
  function (e.g. from ``last.pt``); the runner only decides *whether* to run it.
- **order**: ``after=`` names runs that must be done first (e.g. a seed's dense reference); a run
  whose prerequisites are not done is left for a later pass, and ``run(wait=True)`` polls until the
  other workers have finished them; ``run(wait="running")`` polls only while another live process holds
  one of the campaign's runs (a worker that finds nothing runnable and nobody else at work stops).
- **choices**: ``needed=`` (a callable) marks a run that a choice made from other runs' results may make
  unnecessary (e.g. the seeds of a recipe that was not chosen): while it returns ``False`` the run is
  ``skipped``, never started, and counts as satisfied for the runs declared ``after`` it.
- **stages of one folder**: ``completes=`` names a declared run with the same folder whose result this
  run's result completes (e.g. the test evaluation of a search run that was chosen): that run's result is
  this run's earlier stage (not done; this run overwrites it), and this run's result also makes that run
  done. A result from before the runner is recorded as the most complete declared run it passes.
- **failures**: an exception in one run is written to ``<state>/failed/<name>.txt`` with its traceback
  and does not stop the others; ``run(retry_failed=True)`` tries it again.

The function returns the result dict; the runner adds ``identity``, ``identity_key``, ``run`` and
``command`` and writes ``result.json`` atomically. Aggregation stays with the campaign (it knows how its
runs group into frontier rows): :meth:`Campaign.results` hands it the finished results in declaration
order, and :func:`metaq_utils.frontier.aggregate_seeds` makes the rows.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaq_utils.store.atomic import atomic_write_bytes
from metaq_utils.store.claims import ClaimFile

__all__ = ["Run", "Campaign", "CampaignError", "identity_key"]

RESULT = "result.json"


class CampaignError(RuntimeError):
    """A declaration or a folder on disk is inconsistent (duplicate names, unknown prerequisites, a
    result of another identity in a run's folder)."""


def identity_key(identity: Mapping[str, Any]) -> str:
    """SHA-256 (hex, 16 digits) of the identity's canonical JSON (sorted keys, no spaces)."""
    try:
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CampaignError(f"a run's identity must be plain JSON (numbers, strings, lists, dicts): {e}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    """One declared run. ``job(out)`` does the work in folder ``out`` and returns the result dict."""

    name: str
    out: Path
    identity: Mapping[str, Any]
    job: Callable[[Path], Mapping[str, Any]]
    after: tuple[str, ...] = ()
    needed: Callable[[], bool] | None = None
    completes: str | None = None

    def is_needed(self) -> bool:
        return self.needed is None or bool(self.needed())

    @property
    def key(self) -> str:
        return identity_key(self.identity)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CampaignError(f"{path} is not readable JSON ({e}); move it away to rerun that run") from None


@dataclass
class Campaign:
    """The declared runs of one campaign; ``state`` holds its failure records."""

    name: str
    runs: Sequence[Run]
    state: Path
    command: str = ""
    legacy: bool | Callable[[Run, Mapping[str, Any]], str | None] = False
    log: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))

    def __post_init__(self) -> None:
        self.runs = list(self.runs)
        self.state = Path(self.state)
        names = [r.name for r in self.runs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CampaignError(f"campaign {self.name!r}: run names declared twice: {dup}")
        known = set(names)
        for r in self.runs:
            missing = [a for a in r.after if a not in known]
            if missing:
                raise CampaignError(f"campaign {self.name!r}: run {r.name!r} waits for undeclared runs {missing}")
        self._by_name = {r.name: r for r in self.runs}
        self._completed_by: dict[str, Run] = {}
        for r in self.runs:
            if r.completes is None:
                continue
            e = self._by_name.get(r.completes)
            if e is None or Path(e.out) != Path(r.out) or e.completes is not None or e.name in self._completed_by:
                raise CampaignError(f"campaign {self.name!r}: run {r.name!r} completes {r.completes!r}, which must be "
                                    f"another declared run of the same folder, completed by no other run")
            self._completed_by[e.name] = r

    # -- state ----------------------------------------------------------------------------------
    def _failed_path(self, run: Run) -> Path:
        return self.state / "failed" / f"{run.name}.txt"

    def is_done(self, run: Run) -> bool:
        """Whether ``run``'s result is on disk (for this identity); a result of another identity raises."""
        res = _read_json(Path(run.out) / RESULT)
        if res is None:
            return False
        key = res.get("identity_key") if isinstance(res, dict) else None
        if key is None:
            recorded = _read_json(Path(run.out) / "identity.json")
            key = recorded.get("identity_key") if isinstance(recorded, dict) else None
        if key is None:
            if not self.legacy:
                raise CampaignError(f"{run.out / RESULT} carries no identity (written before the runner); "
                                    f"declare the campaign with legacy=True to accept it")
            check = self.legacy if callable(self.legacy) else (lambda r, x: None)
            # the most complete declared run of this folder that the old result passes
            stages = [x for x in (self._completed_by.get(run.name), run,
                                  self._by_name.get(run.completes) if run.completes else None) if x is not None]
            problems = []
            for st in stages:
                problem = check(st, res)
                if not problem:
                    atomic_write_bytes(Path(run.out) / "identity.json",
                                       json.dumps({"identity": st.identity, "identity_key": st.key,
                                                   "note": "result written before the campaign runner; accepted as this run"},
                                                  indent=1, sort_keys=True).encode())
                    return st is not self._by_name.get(run.completes)
                problems.append(problem if st is run else f"nor {st.name!r} of the same folder: {problem}")
            problems.sort(key=lambda x: x.startswith("nor "))     # this run's own problem first
            raise CampaignError(f"{run.out / RESULT} (written before the runner) is not the declared run "
                                f"{run.name!r}: {'; '.join(problems)}")
        if key != run.key and run.name in self._completed_by and key == self._completed_by[run.name].key:
            return True                 # the run that completes this one has finished
        if run.completes is not None and key == self._by_name[run.completes].key:
            return False                # only the earlier stage (the completed run) is done
        if key != run.key:
            raise CampaignError(f"{run.out / RESULT} is a result of another identity ({key}, declared {run.key}): "
                                f"the declaration of {run.name!r} changed; move the old folder away to rerun it")
        return True

    def _satisfied(self, name: str) -> bool:
        """Whether the runs declared after ``name`` may start: it is done, or not needed."""
        r = self._by_name[name]
        return self.is_done(r) or not r.is_needed()

    def status(self) -> dict[str, str]:
        """Name -> ``done`` | ``skipped`` (not needed) | ``failed`` | ``running`` (claimed by a live process)
        | ``waiting`` | ``todo``."""
        out = {}
        for r in self.runs:
            if self.is_done(r):
                out[r.name] = "done"
            elif not r.is_needed():
                out[r.name] = "skipped"
            elif self._failed_path(r).exists():
                out[r.name] = "failed"
            elif ClaimFile(Path(r.out) / ".claim").claimed_by_other():
                out[r.name] = "running"
            elif any(not self._satisfied(a) for a in r.after):
                out[r.name] = "waiting"
            else:
                out[r.name] = "todo"
        return out

    def results(self) -> dict[str, dict]:
        """The finished runs' results, in declaration order."""
        return {r.name: _read_json(Path(r.out) / RESULT) for r in self.runs if self.is_done(r)}

    def _held_by_others(self) -> bool:
        """Whether another live process holds the claim of one of the runs not done."""
        return any(ClaimFile(Path(r.out) / ".claim").claimed_by_other() for r in self.runs if not self.is_done(r))

    # -- running --------------------------------------------------------------------------------
    def _run_one(self, run: Run, worker: str) -> bool:
        out = Path(run.out)
        claim = ClaimFile(out / ".claim")
        if not claim.claim(worker):
            self.log(f"[{self.name}] {run.name}: claimed by another process, skipped")
            return False
        try:
            if self.is_done(run) or not run.is_needed():   # finished by another worker meanwhile
                return False
            self.log(f"[{self.name}] {run.name} -> {out}")
            t0 = time.time()
            try:
                result = dict(run.job(out))
            except Exception as e:          # one failed run does not stop the campaign; it is recorded
                fp = self._failed_path(run)
                fp.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(fp, f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}".encode())
                self.log(f"[{self.name}] {run.name} FAILED: {type(e).__name__}: {e} (see {fp})")
                return False
            result.setdefault("command", self.command)
            result.setdefault("run", run.name)
            result.setdefault("runner_seconds", time.time() - t0)
            result["identity"] = run.identity
            result["identity_key"] = run.key
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / RESULT, json.dumps(result, indent=1).encode())
            self._failed_path(run).unlink(missing_ok=True)
            return True
        finally:
            claim.release()

    def run(self, worker: str = "w0", *, only: Sequence[str] | None = None, retry_failed: bool = False,
            shard: tuple[int, int] = (0, 1), wait: bool | str = False, poll: float = 15.0) -> int:
        """Run what is not done; returns how many runs this call finished. ``shard=(i, n)``: only the runs
        whose declaration index is ``i`` mod ``n``; ``only``: only these names; ``wait``: keep polling until
        every selected run is done or failed (prerequisites held by other workers); ``wait="running"``:
        keep polling only while another live process holds one of the campaign's runs."""
        if wait not in (True, False, "running"):
            raise ValueError(f"wait must be True, False or 'running', got {wait!r}")
        i, n = shard
        if not (0 <= i < n):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        unknown = sorted(set(only or ()) - set(self._by_name))
        if unknown:
            raise CampaignError(f"campaign {self.name!r}: no such runs: {unknown}")
        mine = [r for k, r in enumerate(self.runs) if k % n == i and (not only or r.name in only)]
        finished = 0
        while True:
            progressed, pending = False, 0
            for r in mine:
                if self.is_done(r) or not r.is_needed():
                    continue
                if self._failed_path(r).exists() and not retry_failed:
                    continue
                if any(not self._satisfied(a) for a in r.after):
                    pending += 1
                    continue
                if self._run_one(r, worker):
                    finished += 1
                    progressed = True
                elif not self.is_done(r) and not self._failed_path(r).exists():
                    pending += 1            # held by another worker
            retry_failed = False            # a run that fails again stays failed for this call
            if not pending:
                return finished
            if wait == "running":
                if not (progressed or self._held_by_others()):
                    return finished
            elif not (wait or progressed):
                return finished
            if not progressed:
                time.sleep(poll)
