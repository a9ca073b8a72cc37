"""Where the workspace keeps things: the repository root, the two model folders, ``runs/``, and the
one rule for a path a user gives (relative paths are taken from the repository root, so the
notebooks, which run in ``notebooks/``, and the scripts name the same files). No torch."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "BEFORE_DIR", "AFTER_DIR", "RUNS_DIR", "resolve"]

REPO_ROOT = Path(__file__).resolve().parents[2]   # metaq_utils/store/paths.py → the repository
BEFORE_DIR = REPO_ROOT / "BestModelsBeforeQuantization"
AFTER_DIR = REPO_ROOT / "BestModelsAfterQuantization"
RUNS_DIR = REPO_ROOT / "runs"


def resolve(path: str | os.PathLike | None, default: Path) -> Path:
    """``None`` → ``default``; a relative path is taken relative to the repository root."""
    if path is None:
        return default
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
