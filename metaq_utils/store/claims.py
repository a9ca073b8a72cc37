"""Claims on jobs that several background workers share (the campaign scripts): a worker claims a
job by creating its claim file atomically (``os.open`` with ``O_CREAT | O_EXCL``: of two workers
that try at once, exactly one succeeds), runs it, and releases the claim.

A claim file is one JSON object, ``{"pid", "host", "worker", "since"}``. Another worker's claim is

* respected while its process lives: ``os.kill(pid, 0)`` on the same host; a claim from another
  host counts as alive unless it is older than ``foreign_stale_after`` seconds (``None``: never
  stale, as no process on this machine can tell whether it is alive);
* taken over when its process is gone (the job's own resume logic then picks up where it stopped).

A claim file that cannot be parsed is one being written (the few microseconds between the create
and the write) while it is younger than ``write_grace`` seconds, and stale after that (taken over,
with a warning). A bare integer (the pid-only format the reference campaign wrote before) is read as
a claim of that pid on this host.

Taking a stale claim over removes it under a lock of its folder, only if it is still the claim that
was judged stale, so that of workers that find the same dead claim exactly one gets the job.

No torch, nothing of ours outside :mod:`metaq_utils.store`.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

__all__ = ["ClaimFile", "ClaimDir", "claim_file_name", "pid_alive"]

# what a claim file holds, as _inspect reads it
_FREE, _OURS, _HELD, _STALE = "free", "ours", "held", "stale"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (``os.kill(pid, 0)``; one we may not signal
    exists too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_file_name(job_id: str) -> str:
    """The claim file of ``job_id`` in a :class:`ClaimDir`: ``:`` and path separators become ``_``."""
    return job_id.replace(":", "_").replace("/", "_").replace(os.sep, "_") + ".claim"


def _parse(raw: bytes) -> dict | None:
    """The claim in ``raw``, or ``None`` when it is not one."""
    try:
        obj = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, bool):
        return None
    if isinstance(obj, int):              # the old pid-only format: a process on this host
        return {"pid": obj, "host": socket.gethostname(), "worker": None, "since": None} if obj > 0 else None
    if (isinstance(obj, dict) and isinstance(obj.get("pid"), int) and not isinstance(obj["pid"], bool)
            and obj["pid"] > 0 and isinstance(obj.get("host"), str)):
        return obj
    return None


class ClaimFile:
    """One claim file at ``path`` (its folder is created on the first claim)."""

    def __init__(self, path: str | os.PathLike, *, foreign_stale_after: float | None = None,
                 write_grace: float = 10.0) -> None:
        self.path = Path(path)
        self.foreign_stale_after = foreign_stale_after
        self.write_grace = float(write_grace)

    # -- reading --------------------------------------------------------------------------------
    def _inspect(self) -> tuple[str, dict | None, bytes | None]:
        """(state, claim, raw bytes) of the file now: free, ours, held by another live process, or stale."""
        try:
            raw = self.path.read_bytes()
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return _FREE, None, None
        c = _parse(raw)
        host = socket.gethostname()
        if c is None:
            if time.time() - mtime < self.write_grace:
                return _HELD, None, raw       # being written
            warnings.warn(f"claim file {self.path} cannot be read as a claim ({raw[:80]!r}): "
                          f"treated as stale", RuntimeWarning, stacklevel=3)
            return _STALE, None, raw
        if c["host"] == host:
            if c["pid"] == os.getpid():
                return _OURS, c, raw
            return (_HELD if pid_alive(c["pid"]) else _STALE), c, raw
        if self.foreign_stale_after is None:
            return _HELD, c, raw
        since = c.get("since")
        since = since if isinstance(since, (int, float)) and not isinstance(since, bool) else mtime
        return (_STALE if time.time() - since > self.foreign_stale_after else _HELD), c, raw

    def holder(self) -> dict | None:
        """The claim (``pid``, ``host``, ``worker``, ``since``), or ``None``: no claim, or one that
        cannot be read."""
        try:
            return _parse(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def claimed_by_other(self) -> bool:
        """Whether another live process holds the claim (this process's own claims, whatever their
        ``worker``, are not another's); a stale claim is removed (and ``False``)."""
        state, _, raw = self._inspect()
        if state == _STALE:
            self._take_over(raw)
            return False
        return state == _HELD

    # -- writing --------------------------------------------------------------------------------
    def _take_over(self, raw: bytes) -> None:
        """Remove the stale claim whose content is ``raw``. Under an exclusive ``flock`` of the claim's
        folder (released by the kernel if this process dies) the file is read again and removed only
        if it still holds ``raw``: of several workers that found the same stale claim, one removes
        it, and none removes the fresh claim that the first may have created meanwhile."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if self.path.read_bytes() == raw:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)                    # releases the lock

    def claim(self, worker: str = "") -> bool:
        """Claim for ``worker`` of this process: ``True`` when the claim is now ours (newly created,
        or already held by this process under the same ``worker``), ``False`` when another live
        process, or another worker of this one, holds it. A stale claim is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(4):
            state, c, raw = self._inspect()
            if state == _OURS:              # this process's: ours if the same worker holds it
                return c.get("worker") is None or c.get("worker") == worker
            if state == _HELD:
                return False
            if state == _STALE:
                self._take_over(raw)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue                    # another worker was first: look at its claim
            body = {"pid": os.getpid(), "host": socket.gethostname(), "worker": worker, "since": time.time()}
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(body))
            return True
        return False

    def release(self, *, force: bool = False) -> None:
        """Remove the claim if this process holds it (or, with ``force``, whoever holds it)."""
        if force or self._inspect()[0] == _OURS:
            self.path.unlink(missing_ok=True)


class ClaimDir:
    """Claims on named jobs, one file per job under ``directory`` (``name(job_id)``, by default
    :func:`claim_file_name`, may name a file in a sub-folder). The options are :class:`ClaimFile`'s."""

    def __init__(self, directory: str | os.PathLike, *, name: Callable[[str], str] = claim_file_name,
                 foreign_stale_after: float | None = None, write_grace: float = 10.0) -> None:
        self.directory = Path(directory)
        self.name = name
        self.foreign_stale_after = foreign_stale_after
        self.write_grace = write_grace

    def path(self, job_id: str) -> Path:
        return self.directory / self.name(job_id)

    def file(self, job_id: str) -> ClaimFile:
        return ClaimFile(self.path(job_id), foreign_stale_after=self.foreign_stale_after,
                         write_grace=self.write_grace)

    def claim(self, job_id: str, worker: str = "") -> bool:
        return self.file(job_id).claim(worker)

    def claimed_by_other(self, job_id: str) -> bool:
        return self.file(job_id).claimed_by_other()

    def release(self, job_id: str, *, force: bool = False) -> None:
        self.file(job_id).release(force=force)

    def holder(self, job_id: str) -> dict | None:
        return self.file(job_id).holder()
