#!/usr/bin/env python3
"""Normalize the workspace notebooks' metadata and committed outputs (idempotent).

    python scripts/clean_notebooks.py            # clean notebooks/*.ipynb in place
    python scripts/clean_notebooks.py --check    # list what is not clean, exit 1 if anything is
    python scripts/clean_notebooks.py A.ipynb …  # these notebooks only

Run it after executing and saving a notebook, before committing it; tests/test_clean_notebooks.py
fails while a committed notebook is not clean. What it does, and only this (cell sources are never
changed, nor are the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``, whose values nbval checks):

* the notebook's kernel is the workspace's: ``kernelspec`` = ``metaq`` with the display name of
  its kernel.json (so JupyterLab neither asks for a kernel nor rewrites the metadata on opening),
  ``language_info`` as that kernel reports it;
* stale progress bars are removed: tqdm's carriage-return bars in stream outputs, plain progress
  lines of :mod:`metaq_utils.store.progress`, and tqdm's notebook widgets, which a saved notebook shows
  frozen (e.g. "C_Q sweep: 0/70") above the finished results; with them the saved widget state;
* warnings (``file:line: SomeWarning: …`` and the source line under it) are removed from the
  outputs' stderr;
* absolute paths left in text outputs are made relative to the workspace (``/…/main/runs/x`` →
  ``runs/x``); any other absolute path keeps only its file name (``…/name``).

The file is written only when its content changes, re-read from disk just before, with the layout
JupyterLab and nbformat use (one-space indent, sorted keys, UTF-8).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KERNEL_NAME = "metaq"
DEFAULT_DISPLAY_NAME = "Python (METaQ)"   # what scripts/setup.sh registers
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"

# tqdm bars ("C_Q sweep:  3%|▎   | 2/70 [00:01<00:40, 1.7it/s]", "123it [00:01, 99.0it/s]") and the
# plain lines of metaq_utils.store.progress ("C_Q sweep: 35/70 (50%) [00:30<00:30, 1.17it/s]")
BAR_RE = re.compile(r"\d+%\||[\d.]+[kMGTP]?(?:/[\d.]+[kMGTP]?)?(?:[a-zA-Z/]+)?(?: \(\d+%\))? "
                    r"\[(?:\d+:)?\d{2}:\d{2}(?:<|,|\])")
WARNING_RE = re.compile(r"^(?:\S.*:\d+: )?[A-Z]\w*Warning: ")
ABS_PATH_RE = re.compile(r"(?<![\w.~/-])/(?:home|root|Users|tmp|work|workspace|opt|usr|var|private|mnt|srv|"
                         r"scratch|data|builds|github)(?:/[^\s'\"<>:,;()\[\]{}]*)+")
WORKSPACE_TOPS = ("metaq_utils", "notebooks", "runs", "results", "data", "BestModelsBeforeQuantization",
                  "BestModelsAfterQuantization", "batches", "bench", "experiments", "scripts", "tests", ".venv")
TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# ------------------------------------------------------------------------------ kernel metadata

def kernel_json() -> dict[str, Any] | None:
    """The workspace kernel's kernel.json: the one in this clone's .venv, else Jupyter's lookup."""
    f = REPO / ".venv" / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    if f.is_file():
        return json.loads(f.read_text())
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        return KernelSpecManager().get_kernel_spec(KERNEL_NAME).to_dict()
    except Exception:
        return None


def kernel_python_version(spec: dict[str, Any] | None) -> str | None:
    """The Python version the workspace kernel runs (what it reports as language_info.version)."""
    if not spec or not spec.get("argv"):
        return None
    exe = spec["argv"][0]
    if exe in ("python", "python3"):
        exe = sys.executable
    try:
        return subprocess.run([exe, "-c", "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def wanted_metadata(old: dict[str, Any], spec: dict[str, Any] | None, version: str | None) -> dict[str, Any]:
    meta = dict(old)
    meta["kernelspec"] = {"display_name": (spec or {}).get("display_name", DEFAULT_DISPLAY_NAME),
                          "language": "python", "name": KERNEL_NAME}
    version = version or (old.get("language_info") or {}).get("version") or \
        ".".join(map(str, sys.version_info[:3]))
    meta["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                             "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                             "pygments_lexer": "ipython3", "version": version}
    return meta


# ------------------------------------------------------------------------------ outputs

def _text(v) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def _lines_like(original, text: str):
    """``text`` in the representation of ``original`` (a list of lines, as nbformat stores it, or a str)."""
    if isinstance(original, list):
        return text.splitlines(keepends=True)
    return text


def relative_paths(text: str) -> str:
    def repl(m: re.Match) -> str:
        path = m.group(0)
        parts = path.split("/")
        for i, part in enumerate(parts):
            if part in WORKSPACE_TOPS and i > 1:
                return "/".join(parts[i:])
        return "…/" + (parts[-1] or parts[-2])
    return ABS_PATH_RE.sub(repl, text)


def clean_stream_text(text: str, name: str = "stderr") -> str:
    """A stream's text without progress bars, without warnings (on stderr), with relative paths."""
    out: list[str] = []
    skipping_warning_source = False
    for line in text.split("\n"):
        if "\r" in line:                       # what a terminal would show: the text after the last \r
            line = line.rsplit("\r", 1)[1]
        if skipping_warning_source and line[:1] in (" ", "\t") and line.strip():
            continue
        skipping_warning_source = False
        if name == "stderr" and WARNING_RE.search(line):
            skipping_warning_source = True
            continue
        if BAR_RE.search(line):
            continue
        out.append(line)
    cleaned = "\n".join(out)
    cleaned = re.sub(r"\n{2,}$", "\n", cleaned)   # the blank lines left where bars were
    if not cleaned.strip():
        return ""
    return relative_paths(cleaned)


def clean_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cleaned: list[dict[str, Any]] = []
    for o in outputs:
        o = json.loads(json.dumps(o))          # a copy
        kind = o.get("output_type")
        if kind == "stream":
            text = clean_stream_text(_text(o.get("text", "")), o.get("name", "stdout"))
            if not text:
                continue
            if cleaned and cleaned[-1].get("output_type") == "stream" and cleaned[-1].get("name") == o.get("name"):
                prev = cleaned[-1]
                prev["text"] = _lines_like(prev["text"], _text(prev["text"]) + text)
                continue
            o["text"] = _lines_like(o.get("text", ""), text)
        elif kind in ("display_data", "execute_result"):
            data = o.get("data", {})
            if WIDGET_MIME in data and BAR_RE.search(_text(data.get("text/plain", ""))):
                continue                       # a tqdm widget: frozen at its first state once saved
            for mime in TEXT_MIMES:
                if mime in data:
                    data[mime] = _lines_like(data[mime], relative_paths(_text(data[mime])))
        cleaned.append(o)
    return cleaned


def is_checked(cell: dict[str, Any]) -> bool:
    return CHECK_MARK in _text(cell.get("source", ""))


def clean_notebook(nb: dict[str, Any], spec: dict[str, Any] | None, version: str | None) -> dict[str, Any]:
    nb = json.loads(json.dumps(nb))
    nb["metadata"] = wanted_metadata(nb.get("metadata", {}), spec, version)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and not is_checked(cell):
            cell["outputs"] = clean_outputs(cell.get("outputs", []))
    if not any(WIDGET_MIME in o.get("data", {}) for c in nb.get("cells", []) for o in c.get("outputs", [])):
        nb["metadata"].pop("widgets", None)
    return nb


def problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What cleaning changes, in words (empty: the notebook is clean). language_info.version is
    only compared for presence: it is the Python of whoever ran the cleaner last."""
    out = []
    if old.get("metadata", {}).get("kernelspec") != new["metadata"]["kernelspec"]:
        out.append(f"kernelspec is {old.get('metadata', {}).get('kernelspec')}, "
                   f"not {new['metadata']['kernelspec']}")
    li_old = dict(old.get("metadata", {}).get("language_info") or {})
    li_new = dict(new["metadata"]["language_info"])
    if not li_old.get("version"):
        out.append("language_info has no version")
    li_old.pop("version", None)
    li_new.pop("version", None)
    if li_old != li_new:
        out.append("language_info differs from the kernel's")
    if "widgets" in old.get("metadata", {}) and "widgets" not in new["metadata"]:
        out.append("saved widget state of removed progress widgets")
    for i, (a, b) in enumerate(zip(old.get("cells", []), new.get("cells", []))):
        if a.get("outputs") != b.get("outputs"):
            out.append(f"cell {i}: outputs with progress bars, warnings or absolute paths")
    return out


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def process(path: Path, spec, version, check: bool) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    new = clean_notebook(nb, spec, version)
    found = problems(nb, new)
    if check:
        return found
    if new == nb:
        return []
    # re-read just before writing: someone may have edited a cell's source meanwhile; keep their
    # cells and apply our metadata/outputs cleaning to them
    nb = json.loads(path.read_text(encoding="utf-8"))
    new = clean_notebook(nb, spec, version)
    if new != nb:
        tmp = path.with_name(f".{path.name}.clean.tmp")
        tmp.write_text(dumps(new), encoding="utf-8")
        os.replace(tmp, path)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not clean")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    spec = kernel_json()
    if spec is None:
        print(f"note: no '{KERNEL_NAME}' kernel found (run make setup); display name {DEFAULT_DISPLAY_NAME!r}",
              file=sys.stderr)
    version = kernel_python_version(spec)
    dirty = 0
    for p in paths:
        found = process(p, spec, version, args.check)
        if found:
            dirty += 1
            print(f"{p}: " + ("; ".join(found) if args.check else "cleaned (" + "; ".join(found) + ")"))
    if args.check and dirty:
        print(f"{dirty} notebook(s) not clean: run python scripts/clean_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
