"""Checkpoints that cannot be silently wrong — the only code that touches the two model folders.

A checkpoint is a plain dict saved with ``torch.save`` (loadable with ``weights_only=True``):

========================  ==========================================================
``format``, ``version``   ``"metaq-checkpoint"``, 1
``arch``, ``n_params``    architecture name (see :mod:`metaq_utils.nn.networks`) and n
``state_dict``            the model's tensors
``content_hash``          sha256 of arch + every tensor's name, dtype, shape and bytes
``config``                hyper-parameters (JSON-like), e.g. the training configuration
``metrics``               JSON-like metrics (accuracy, entropy, ...)
``grid``                  ``{"w0", "r", "C"}`` (:meth:`Grid.to_dict`) when a bucket grid is relevant
                          (the training grid, or the quantization grid), else None; validated
``preprocessing``         what the network expects as input (:meth:`Preprocessing.to_dict`), by
                          default the architecture's; None in checkpoints saved before it existed
``versions``, ``commit``  library versions and the project's git commit
``training_state``        optional: optimizer, RNG states, epoch, regularizer, history
========================  ==========================================================

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``): a crash never
leaves a half-written checkpoint, and the previous file stays intact. Every problem on load
raises :class:`CheckpointError` with a message that says which check failed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..coding.architectures import preprocessing_for
from ..coding.preprocessing import Preprocessing
from ..core.grid import Grid
from ..store.atomic import atomic_write_bytes
from ..store.paths import AFTER_DIR, BEFORE_DIR, REPO_ROOT
from .networks import build_model, count_parameters

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "find_checkpoint", "state_hash",
           "atomic_write_bytes", "library_versions", "project_commit", "REPO_ROOT",
           "BEFORE_DIR", "AFTER_DIR"]

FORMAT, VERSION = "metaq-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, or does not match what was expected."""


def state_hash(arch: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the architecture name and each tensor's name, dtype, shape and raw bytes."""
    h = hashlib.sha256(arch.encode())
    for name, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision
    from .. import __version__
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": str(numpy.__version__),
            "metaq_utils": str(__version__)}


def project_commit() -> str | None:
    """The git commit of the workspace (with ``-dirty`` if it has uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint."""
    path: Path
    arch: str
    n_params: int
    state_dict: dict[str, torch.Tensor]
    content_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None   # None: an older checkpoint that did not record it
    versions: dict[str, str] = field(default_factory=dict)
    commit: str | None = None
    training_state: dict[str, Any] | None = None

    @property
    def grid_value(self) -> Grid | None:
        """``grid`` as a :class:`Grid` (None when the checkpoint has none, e.g. plain training)."""
        return None if self.grid is None else Grid.from_dict(self.grid)

    @property
    def input_preprocessing(self) -> Preprocessing | None:
        """The recorded preprocessing, or for an older checkpoint that did not record one the
        architecture's (:func:`metaq_utils.coding.architectures.preprocessing_for`)."""
        if self.preprocessing is not None:
            return Preprocessing.from_dict(self.preprocessing)
        return preprocessing_for(self.arch)

    def build_model(self) -> torch.nn.Module:
        """Rebuild the architecture and load the verified weights into it."""
        model = build_model(self.arch)
        model.load_state_dict(self.state_dict)
        return model


def save_checkpoint(path: str | os.PathLike, model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
                    arch: str, *, config: Mapping[str, Any] | None = None,
                    metrics: Mapping[str, Any] | None = None, grid: Grid | Mapping[str, Any] | None = None,
                    training_state: Mapping[str, Any] | None = None,
                    preprocessing: Preprocessing | Mapping[str, Any] | str | None = "arch") -> Path:
    """Save a verified checkpoint atomically and return its path.

    The state dict is checked against ``arch`` (names, shapes, parameter count) and ``grid`` (a
    :class:`Grid` or its dict) is validated before anything is written, so a mismatched
    checkpoint is never produced. ``preprocessing``: the input the network expects — ``"arch"``
    (default) the architecture's (:data:`metaq_utils.coding.architectures.REGISTRY`), a
    :class:`Preprocessing` or its dict, or None.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"refusing to save: tensor {k!r} contains NaN or inf")
    reference = build_model(arch)
    _check_matches(arch, reference, state, where="refusing to save")
    if grid is not None:
        try:
            grid = (grid if isinstance(grid, Grid) else Grid.from_dict(grid)).to_dict()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"refusing to save: invalid grid {grid!r} ({e})") from None
    if isinstance(preprocessing, str):
        if preprocessing != "arch":
            raise CheckpointError(f"refusing to save: preprocessing must be 'arch', a Preprocessing, "
                                  f"a dict or None, got {preprocessing!r}")
        preprocessing = preprocessing_for(arch)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        try:
            preprocessing = Preprocessing.from_dict(preprocessing)
        except ValueError as e:
            raise CheckpointError(f"refusing to save: {e}") from None
    payload = {
        "format": FORMAT, "version": VERSION, "arch": arch,
        "n_params": count_parameters(reference), "state_dict": state,
        "content_hash": state_hash(arch, state),
        "config": _plain(config or {}), "metrics": _plain(metrics or {}),
        "grid": grid,
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "versions": library_versions(), "commit": project_commit(),
        "training_state": dict(training_state) if training_state is not None else None,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _plain(obj: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-like copy (numpy scalars to floats, tuples to lists) so ``weights_only`` loading works."""
    def default(x):
        if hasattr(x, "item"):
            return x.item()
        if hasattr(x, "tolist"):
            return x.tolist()
        return str(x)
    return json.loads(json.dumps(dict(obj), default=default))


def _check_matches(arch: str, reference: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    ref = reference.state_dict()
    missing = [k for k in ref if k not in state]
    extra = [k for k in state if k not in ref]
    if missing or extra:
        raise CheckpointError(f"{where}: state dict does not match architecture {arch!r} "
                              f"(missing {missing[:5]}, unexpected {extra[:5]})")
    for k, t in ref.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                  f"architecture {arch!r} expects {tuple(t.shape)}")


def load_checkpoint(path: str | os.PathLike, *, expected_arch: str | None = None) -> Checkpoint:
    """Load and verify a checkpoint. Raises :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        size = path.stat().st_size
        raise CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: truncated or corrupted "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a METaQ checkpoint (no '{FORMAT}' format marker)")
    if raw.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {raw.get('version')!r} (expected {VERSION})")
    for key in ("arch", "n_params", "state_dict", "content_hash"):
        if key not in raw:
            raise CheckpointError(f"{path}: checkpoint lacks the field {key!r}")
    arch, state = raw["arch"], raw["state_dict"]
    if expected_arch is not None and arch != expected_arch:
        raise CheckpointError(f"{path}: architecture mismatch: file holds {arch!r}, expected {expected_arch!r}")
    try:
        reference = build_model(arch)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _check_matches(arch, reference, state, where=str(path))
    n = count_parameters(reference)
    if raw["n_params"] != n:
        raise CheckpointError(f"{path}: parameter count mismatch: file says {raw['n_params']}, "
                              f"architecture {arch!r} has {n}")
    digest = state_hash(arch, state)
    if digest != raw["content_hash"]:
        raise CheckpointError(f"{path}: content hash mismatch (stored {raw['content_hash'][:12]}…, "
                              f"computed {digest[:12]}…): the weights are corrupted")
    grid = raw.get("grid")
    if grid is not None:
        try:
            grid = Grid.from_dict(grid).to_dict()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: invalid grid {grid!r} ({e})") from None
    pre = raw.get("preprocessing")
    if pre is not None:
        try:
            pre = Preprocessing.from_dict(pre).to_dict()
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return Checkpoint(path=path, arch=arch, n_params=n, state_dict=state, content_hash=digest,
                      config=raw.get("config") or {}, metrics=raw.get("metrics") or {},
                      grid=grid, preprocessing=pre, versions=raw.get("versions") or {}, commit=raw.get("commit"),
                      training_state=raw.get("training_state"))


def find_checkpoint(folders: Sequence[str | os.PathLike], *, expected_arch: str | None = None) -> Checkpoint | None:
    """The first loadable checkpoint (``*.pt``, searched recursively) under ``folders``, in the
    order given and by sorted path within a folder; with ``expected_arch`` only checkpoints of
    that architecture count. Files that are not valid checkpoints (:class:`CheckpointError`) are
    skipped; any other error propagates. None when there is none."""
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.pt")):
            try:
                return load_checkpoint(path, expected_arch=expected_arch)
            except CheckpointError:
                continue
    return None
