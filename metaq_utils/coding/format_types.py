"""The vocabulary of the METaQ file format (:mod:`metaq_utils.coding.fileformat`, where the layout is
documented): its constants and limits, the error every reader raises, what the writer is told
(:class:`GroupSpec`, :func:`metaq_group`) and what the reader returns (:class:`GroupInfo`,
:class:`CompressedModel`).

Moved here unchanged from ``fileformat.py`` (issue 22: that module was 840 lines); every name is
still importable from :mod:`metaq_utils.coding.fileformat`, so old pickles and imports keep working.
The private constants lost their leading underscore because two modules use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaq_utils.coding.preprocessing import Preprocessing
from metaq_utils.core.grid import Grid

__all__ = [
    "MAGIC",
    "VERSION",
    "READABLE_VERSIONS",
    "FILE_INPUT",
    "MAX_ARCH_LEN",
    "MAX_TENSORS",
    "MAX_NDIM",
    "MAX_DIM",
    "DEFAULT_MAX_PARAMS",
    "MAX_CODEBOOK",
    "MAX_GAP",
    "MAX_CHANNELS",
    "PRE_NONE",
    "PRE_NORMALIZE",
    "MODES",
    "KIND_GRID32",
    "KIND_GRID64",
    "KIND_TABLE",
    "KIND_NONE",
    "FLAG_ALL",
    "CompressedFileError",
    "GroupSpec",
    "metaq_group",
    "GroupInfo",
    "CompressedModel",
]

MAGIC = b"MTQ"
VERSION = 2  # what the writer writes
READABLE_VERSIONS = (1, 2)
FILE_INPUT = "images in [0, 1], channels first"  # the input convention of the preprocessing block

MAX_ARCH_LEN = 255  # bytes of UTF-8
MAX_TENSORS = 65_536
MAX_NDIM = 8
MAX_DIM = 2**31
DEFAULT_MAX_PARAMS = 2**28  # reader refuses files that would decode to more parameters
MAX_CODEBOOK = 2**24
MAX_GAP = 2**24
MAX_CHANNELS = 255
PRE_NONE, PRE_NORMALIZE = 0, 1

MODES = ("dense", "sparse", "float32")
KIND_GRID32, KIND_GRID64, KIND_TABLE, KIND_NONE = 0, 1, 2, 3
FLAG_ALL = 0x10


class CompressedFileError(ValueError):
    """The bytes are not a valid METaQ compressed file: foreign (bad magic), unsupported version,
    truncated or with trailing data, checksum mismatch, or internally inconsistent."""


# ------------------------------------------------------------------------------------------------
# what the writer is told, and what the reader returns


@dataclass(frozen=True, eq=False)
class GroupSpec:
    """How to store a set of tensors (one group = one codebook + one storage mode + codec(s)).

    tensors:        indices into the parameter list; ``None`` = all tensors (then it must be the
                    only group). Stored ascending; the symbol stream follows parameter order.
    codebook:       a :class:`Grid` (uniform METaQ grid), a 1-D float array (explicit table, e.g.
                    per-layer k-means centroids, stored as float32), or ``None`` (mode float32).
    mode:           ``"dense"`` | ``"sparse"`` | ``"float32"``.
    codec:          codec name for the symbols (see :mod:`metaq_utils.coding.codecs`), e.g. ``"range"``.
    index_codec:    sparse only: codec for the gaps; ``None`` = same as ``codec``.
    max_gap:        sparse only: largest stored gap (Han et al.: 2**8 conv, 2**5 fc).
    grid_precision: ``"auto"`` (float32 if lossless else float64) | ``"float32"`` (round the grid
                    to float32 and quantize with the rounded grid) | ``"float64"``.
    """

    tensors: tuple[int, ...] | None = None
    codebook: Grid | np.ndarray | None = None
    mode: str = "dense"
    codec: str = "range"
    index_codec: str | None = None
    max_gap: int = 256
    grid_precision: str = "auto"


def metaq_group(grid: Grid, codec: str = "range") -> GroupSpec:
    """The METaQ convention: one dense group, every parameter on one shared grid."""
    return GroupSpec(tensors=None, codebook=grid, mode="dense", codec=codec)


@dataclass(frozen=True, eq=False)
class GroupInfo:
    """One group as read from a file."""

    tensors: tuple[int, ...]  # parameter indices, ascending
    mode: str  # "dense" | "sparse" | "float32"
    codebook: Grid | np.ndarray | None  # Grid, float32 table, or None (float32 mode)
    codec: str | None  # value codec (None for float32 mode)
    index_codec: str | None  # sparse only
    max_gap: int | None  # sparse only
    n_entries: int | None  # sparse only: stored entries incl. filler zeros
    payload_bytes: int  # bytes of coded payload(s), codec tables included (raw floats for float32)
    group_bytes: int  # all bytes of the group: flags, tensor list, codebook, lengths, payloads


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """A decoded file. ``tensors``: float32 arrays in parameter order, each its own writable
    buffer; ``shapes`` as stored; ``groups`` with codebooks, codecs and byte counts;
    ``preprocessing``: the input normalisation recorded in the file (None: a version 1 file, or
    none recorded)."""

    arch: str
    version: int
    shapes: tuple[tuple[int, ...], ...]
    tensors: list[np.ndarray]
    groups: tuple[GroupInfo, ...]
    file_bytes: int
    preprocessing: Preprocessing | None = None

    @property
    def file_bits(self) -> int:
        """Exact size of the whole file in bits (8 × bytes): the number every report uses."""
        return 8 * self.file_bytes

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes))

    @property
    def codecs(self) -> tuple[str | None, ...]:
        return tuple(g.codec for g in self.groups)

    @property
    def overhead_bytes(self) -> int:
        """Bytes that are not coded payload: magic, version, length, arch, preprocessing, shapes, group headers,
        codebooks, checksum."""
        return self.file_bytes - sum(g.payload_bytes for g in self.groups)
