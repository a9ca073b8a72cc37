"""Progress bars that stay readable when their output is a log file.

``from metaq_utils.store.progress import tqdm`` is a drop-in for ``from tqdm.auto import tqdm``:

* in a Jupyter kernel with ipywidgets: tqdm's notebook widget, as ``tqdm.auto`` gives;
* on a terminal: tqdm's usual bar, redrawn in place;
* anywhere else (output redirected to a file or a pipe: ``make run > log``, CI, Dask workers, a
  Jupyter kernel without ipywidgets): **plain lines**, one at most every :data:`PLAIN_INTERVAL`
  seconds and one when a bar that is kept (``leave=True``) closes, never a carriage return::

      C_Q sweep: 35/70 (50%) [00:30<00:30, 1.17it/s]

The interval is 30 s, or ``METAQ_PROGRESS_INTERVAL`` seconds from the environment; a larger
``mininterval`` given by the caller is kept. ``tqdm.write`` works as usual in every mode.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm as _std_tqdm

__all__ = ["tqdm", "trange", "PlainTqdm", "PLAIN_INTERVAL", "is_terminal"]


def _interval_from_env() -> float:
    try:
        return max(0.0, float(os.environ.get("METAQ_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


PLAIN_INTERVAL = _interval_from_env()


def is_terminal(file) -> bool:
    """Whether ``file`` is an interactive terminal (False for files, pipes, notebook streams)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class PlainTqdm(_std_tqdm):
    """tqdm that prints plain lines instead of redrawing a bar when its file is not a terminal.

    On a terminal it is tqdm itself. Otherwise: no line when the bar starts, a line at most every
    ``mininterval`` seconds (at least :data:`PLAIN_INTERVAL`) while it advances, and a final line when
    it closes if it is kept (``leave``) and advanced since the last line; a bar with ``leave=False``
    (e.g. one per epoch, followed by the caller's own summary line) ends silently.
    """

    def __init__(self, *args, **kwargs):
        file = kwargs.get("file")
        self._plain = not is_terminal(file if file is not None else sys.stderr)
        if self._plain:
            interval = kwargs.get("plain_interval", PLAIN_INTERVAL)
            kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0.1), interval)
            kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 10.0), kwargs["mininterval"])
            kwargs["dynamic_ncols"] = False
        kwargs.pop("plain_interval", None)
        self._plain_last_n = None
        super().__init__(*args, **kwargs)

    # the line printed in plain mode
    def plain_line(self) -> str:
        d = self.format_dict
        if d.get("bar_format"):
            return self.format_meter(**d)
        desc = d.get("prefix") or ""
        head = (desc if desc.endswith(": ") else desc + ": ") if desc else ""
        total = d.get("total")
        if total:
            fmt = head + "{n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        else:
            fmt = head + "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        return self.format_meter(**{**d, "bar_format": fmt, "ncols": None})

    def display(self, msg=None, pos=None):
        if not self._plain:
            return super().display(msg, pos)
        if msg == "":                     # a request to clear the bar: nothing to clear
            return False
        if msg is None:
            if self._plain_last_n is None:   # the bar's first display: its start is not news
                self._plain_last_n = self.n
                return False
            if self.n == self._plain_last_n:  # nothing new since the last line
                return False
            self._plain_last_n = self.n
            msg = self.plain_line()
        self.fp.write(msg + "\n")
        getattr(self.fp, "flush", lambda: None)()
        return True

    def clear(self, nolock=False):
        if not self._plain:
            return super().clear(nolock)

    def moveto(self, n):
        if not self._plain:
            return super().moveto(n)

    def close(self):
        if not self._plain or self.disable:
            return super().close()
        pos = abs(self.pos)
        leave = pos == 0 if self.leave is None else self.leave
        if leave and hasattr(self, "last_print_t") and self.n != self._plain_last_n:
            with self._lock:
                self._ema_dt = lambda: None   # the final line shows the overall rate
                self._plain_last_n = self.n
                self.fp.write(self.plain_line() + "\n")
                getattr(self.fp, "flush", lambda: None)()
        self.leave = False                # super().close() below only does its bookkeeping
        return super().close()


def _notebook_tqdm():
    """tqdm.notebook's class when running in a Jupyter kernel that can show widgets, else None."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
        shell = get_ipython()
        if shell is None or "zmq" not in type(shell).__name__.lower():
            return None
        if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
            return None
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm as notebook_tqdm
        return notebook_tqdm
    except Exception:
        return None


tqdm = _notebook_tqdm() or PlainTqdm


def trange(*args, **kwargs):
    """``tqdm(range(*args), **kwargs)``."""
    return tqdm(range(*args), **kwargs)
