"""The METaQ compressed model file, format version 2 — every reported size is this file's size.

A file holds the parameters of one network (every trainable tensor, in ``model.parameters()``
order), quantized and entropy-coded; decoding gives back exactly (bit for bit) the float32
tensors the writer quantized to. Tensor *names* are not stored: they come from the architecture
(``dict(zip(names_of(build_model(arch)), model.tensors))``); shapes are stored and can be checked
against the architecture with ``read_compressed(..., expected_shapes=...)``.

Layout (all integers are unsigned LEB128 varints unless a width is given; floats little-endian)::

    offset  size  field
    0       3     magic b"MTQ"
    3       1     format version (2; version 1 files are read too, see below)
    4       v     L = total file length in bytes, this field and the checksum included
    .       v     len(arch), then the architecture name (UTF-8)
    .       1     input preprocessing (version 2 only): 0 none recorded; 1 per-channel normalisation
                  of input images in [0, 1] (pixel / 255, channels first): x' = (x − mean_c)/std_c,
                  then v K = channels, K × float32 mean, K × float32 std; other values reserved
    .       v     T = number of tensors; per tensor: ndim, then ndim dims
    .       v     G = number of groups; per group:
                    1   flags: bits 0-1 storage mode (0 dense, 1 sparse, 2 float32)
                               bits 2-3 codebook   (0 grid/float32, 1 grid/float64,
                                                    2 table/float32, 3 none)
                               bit 4    the group covers all T tensors (no list follows)
                               bits 5-7 zero
                    [v  k, then k tensor indices: the first, then each gap − 1 (ascending)]
                    codebook  grid: w0, r (2 × float32, or 2 × float64), C (varint)
                              table: K (varint), K × float32 values (e.g. k-means centroids)
                    dense:    1 byte codec id; v payload length; payload = codec(symbols)
                    sparse:   1 byte: low nibble value-codec id, high nibble index-codec id;
                              v max_gap; v E = number of entries;
                              v length + payload of index-codec(gap − 1), alphabet max_gap;
                              v length + payload of value-codec(symbol), alphabet K + 1
                    float32:  4 × (group size) bytes, the raw little-endian float32 values
    L−4     4     CRC-32 (zlib.crc32, little-endian) of bytes [0, L−4)

Symbols of a group are its tensors flattened (C order) and concatenated in parameter order.
``dense``: one symbol per weight, the codebook index (bucket index for a grid, see
:mod:`metaq_utils.quant.quantization`; nearest value for a table). ``sparse`` (Deep Compression, Han et
al. 2016, §3): only non-zero weights are stored, as entries (gap, symbol): gap = distance from the
previous entry (the first from position −1), in ``[1, max_gap]``; symbol = codebook index + 1 for
a surviving weight, 0 for a *filler zero* inserted when a gap exceeds ``max_gap`` (filler gaps
are always exactly ``max_gap``). Positions not listed decode to 0.0. ``float32``: the tensors
stored unquantized (e.g. for baselines that keep biases in full precision).

Codecs (one byte, or one nibble each in sparse mode; ids from :mod:`metaq_utils.coding.codecs`):
0 raw, 1 huffman, 2 range, 3 gzip9, 4 zstd22, 5 context. ``context``
(:mod:`metaq_utils.coding.context`) is a DeepCABAC-like context-adaptive range coder meant for
``dense`` groups of pruned layers with a table that contains 0.0 (one group per tensor, see
:func:`per_layer_table_groups`): a significance flag per weight (≠ the most frequent symbol)
whose context is the flags of the previous weight and of the weight one row earlier, then the
value with an adaptive model; no table is stored. The writer passes the group's tensor shapes to
the codec as a hint for the row length; the chosen row length is stored inside the codec payload,
so the byte layout above is unchanged and the reader needs no extra field. Files with codec ids
0-4 are byte-for-byte what they were before id 5 existed.

Grids are stored as float32 when ``w0`` and ``r`` are exactly representable in float32, else as
float64 (``GroupSpec.grid_precision``), so the decoded grid is the writer's grid and the decoded
weights equal ``quantize_array(w, grid)``. Bucket centres are rounded once to float32.

Version 1 is version 2 without the preprocessing byte (and block): it records no preprocessing
(:attr:`CompressedModel.preprocessing` is None). The writer writes version 2 unless asked for 1.
The preprocessing is stored as float32, the precision in which float32 images are normalised
(``(x − 0.1307)/0.3081`` on a float32 tensor uses float32(0.1307)), so a model rebuilt from the
file (:func:`metaq_utils.nn.networks.model_from_compressed` with ``raw_input=True``) gives exactly
the predictions of the network fed as during training. It costs 10 bytes for MNIST (K = 1).

Robustness: :func:`read_compressed` raises only :class:`CompressedFileError` for anything wrong
with the bytes (bad magic, unsupported version, truncation/trailing data via the length field,
checksum mismatch, and — for checksum-valid but inconsistent files — every count/length is
checked against the bytes present and sane limits before allocating). The checksum is verified
before anything else is parsed.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from metaq_utils.coding.codecs import ByteReader, CodecError, codec_by_id, encode_varint, get_codec
from metaq_utils.coding.architectures import preprocessing_for
from metaq_utils.coding.preprocessing import Preprocessing
from metaq_utils.coding.format_types import (
    DEFAULT_MAX_PARAMS,
    FILE_INPUT,
    FLAG_ALL,
    KIND_GRID32,
    KIND_GRID64,
    KIND_NONE,
    KIND_TABLE,
    MAGIC,
    MAX_ARCH_LEN,
    MAX_CHANNELS,
    MAX_CODEBOOK,
    MAX_DIM,
    MAX_GAP,
    MAX_NDIM,
    MAX_TENSORS,
    MODES,
    PRE_NONE,
    PRE_NORMALIZE,
    READABLE_VERSIONS,
    VERSION,
    CompressedFileError,
    CompressedModel,
    GroupInfo,
    GroupSpec,
    metaq_group,
)
from metaq_utils.core.grid import Grid, check_finite
from metaq_utils.quant.quantization import dequantize, nearest_indices, quantize_indices
from metaq_utils.store.atomic import atomic_write_bytes

__all__ = [
    "MAGIC",
    "VERSION",
    "READABLE_VERSIONS",
    "CompressedFileError",
    "GroupSpec",
    "GroupInfo",
    "CompressedModel",
    "metaq_group",
    "encode_compressed",
    "decode_compressed",
    "write_compressed",
    "read_compressed",
    "expected_tensors",
    "mismatched_tensors",
    "RoundTrip",
    "round_trip",
    "per_layer_table_groups",
]

# ------------------------------------------------------------------------------------------------
# writing


def _as_float32(t) -> np.ndarray:
    if hasattr(t, "detach"):  # torch.Tensor
        t = t.detach().cpu().numpy()
    arr = np.asarray(t, dtype=np.float32)
    return arr


def per_layer_table_groups(tensors: Sequence, codec: str = "context", mode: str = "dense") -> list[GroupSpec]:
    """One group per tensor, each with its own table codebook = the tensor's distinct float32
    values (sorted; 0.0 included when the tensor has zeros), stored ``mode`` (default dense) with
    ``codec`` (default ``"context"``). The file then decodes to exactly the given float32
    tensors, except that a zero is always decoded as ``+0.0`` (a table cannot tell ``-0.0`` from
    ``0.0``; pruning by ``w * mask`` leaves ``-0.0`` for negative weights: write ``w + 0.0`` if
    the bit-exact check (:func:`round_trip`) is to pass)::

        write_compressed(path, arch, tensors, per_layer_table_groups(tensors))
    """
    groups = []
    for i, t in enumerate(tensors):
        a = _as_float32(t).ravel()
        check_finite(a, f"tensor {i}")
        table = np.unique(a + np.float32(0.0))  # -0.0 + 0.0 = +0.0
        if table.size == 0:
            table = np.zeros(1, dtype=np.float32)
        groups.append(GroupSpec(tensors=(i,), codebook=table, mode=mode, codec=codec))
    return groups


def _normalize_groups(groups, n_tensors: int) -> list[tuple[GroupSpec, tuple[int, ...], bool]]:
    if isinstance(groups, GroupSpec):
        groups = [groups]
    groups = list(groups)
    if not groups and n_tensors:
        raise ValueError("no groups given: every tensor must belong to exactly one group")
    out = []
    covered: dict[int, int] = {}
    for gi, g in enumerate(groups):
        if not isinstance(g, GroupSpec):
            raise TypeError(f"group {gi}: expected GroupSpec, got {type(g).__name__}")
        if g.mode not in MODES:
            raise ValueError(f"group {gi}: mode must be one of {MODES}, got {g.mode!r}")
        if g.tensors is None:
            if len(groups) != 1:
                raise ValueError(f"group {gi}: tensors=None (all tensors) is only allowed for a single group")
            idx, all_flag = tuple(range(n_tensors)), True
        else:
            idx = tuple(int(i) for i in g.tensors)
            all_flag = False
            if not idx:
                raise ValueError(f"group {gi}: empty tensor list")
            if len(set(idx)) != len(idx):
                raise ValueError(f"group {gi}: duplicate tensor indices {idx}")
            idx = tuple(sorted(idx))
            if idx[0] < 0 or idx[-1] >= n_tensors:
                raise ValueError(f"group {gi}: tensor index out of range [0, {n_tensors})")
        for i in idx:
            if i in covered:
                raise ValueError(f"tensor {i} is in groups {covered[i]} and {gi}")
            covered[i] = gi
        if g.mode == "float32":
            if g.codebook is not None:
                raise ValueError(f"group {gi}: mode 'float32' takes no codebook")
        else:
            if g.codebook is None:
                raise ValueError(f"group {gi}: mode {g.mode!r} needs a codebook (Grid or array)")
            get_codec(g.codec)
            if g.mode == "sparse":
                get_codec(g.index_codec or g.codec)
                if not isinstance(g.max_gap, (int, np.integer)) or not 1 <= g.max_gap <= MAX_GAP:
                    raise ValueError(f"group {gi}: max_gap must be an int in [1, {MAX_GAP}], got {g.max_gap!r}")
        if g.grid_precision not in ("auto", "float32", "float64"):
            raise ValueError(f"group {gi}: grid_precision must be 'auto', 'float32' or 'float64'")
        out.append((g, idx, all_flag))
    missing = [i for i in range(n_tensors) if i not in covered]
    if missing:
        raise ValueError(f"tensors {missing} are in no group: every tensor must belong to exactly one group")
    return out


def _stored_grid(grid: Grid, precision: str) -> tuple[Grid, int]:
    with np.errstate(over="ignore"):
        w0_32, r_32 = float(np.float32(grid.w0)), float(np.float32(grid.r))
    exact32 = w0_32 == grid.w0 and r_32 == grid.r
    if precision == "float64" or (precision == "auto" and not exact32):
        return grid, KIND_GRID64
    if not (np.isfinite(w0_32) and np.isfinite(r_32) and r_32 > 0):
        raise ValueError(f"{grid} cannot be stored in float32")
    return Grid(w0_32, r_32, grid.C), KIND_GRID32


@dataclass
class _Quantized:
    """A group's quantization: what is coded and what the reader will reconstruct."""

    kind: int
    codebook_bytes: bytes
    values: np.ndarray | None  # float32 value of each codebook index
    symbols: np.ndarray | None  # dense: per weight; sparse: per survivor (codebook index)
    positions: np.ndarray | None  # sparse: survivor positions
    recon: np.ndarray  # flat float32 reconstruction
    flat: np.ndarray = field(repr=False, default=None)


def _grid_values(grid: Grid) -> np.ndarray:
    """float32 bucket centres (what ``dequantize`` returns); overflow shows up as inf."""
    with np.errstate(over="ignore"):
        return dequantize(np.arange(grid.C), grid)


def _quantize_group(spec: GroupSpec, flat: np.ndarray, gi: int) -> _Quantized:
    check_finite(flat, f"group {gi}: weights")
    if spec.mode == "float32":
        return _Quantized(KIND_NONE, b"", None, None, None, flat.copy(), flat)
    cb = spec.codebook
    if isinstance(cb, Grid):
        grid, kind = _stored_grid(cb, spec.grid_precision)
        if grid.C > MAX_CODEBOOK:
            raise ValueError(f"group {gi}: C = {grid.C} exceeds {MAX_CODEBOOK}")
        dt = "<f4" if kind == KIND_GRID32 else "<f8"
        cb_bytes = np.array([grid.w0, grid.r], dtype=dt).tobytes() + encode_varint(grid.C)
        values = _grid_values(grid)
        if not np.isfinite(values).all():
            raise ValueError(f"group {gi}: grid centres overflow float32 ({grid})")
        to_index = lambda w: quantize_indices(w, grid)  # noqa: E731
    else:
        table = np.asarray(cb, dtype=np.float64)
        if table.ndim != 1 or not 1 <= table.size <= MAX_CODEBOOK:
            raise ValueError(f"group {gi}: codebook table must be 1-D with 1..{MAX_CODEBOOK} values")
        values = table.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"group {gi}: codebook table contains NaN or inf (after float32 rounding)")
        kind = KIND_TABLE
        cb_bytes = encode_varint(values.size) + values.astype("<f4").tobytes()
        to_index = lambda w: nearest_indices(w, values)  # noqa: E731
    if spec.mode == "dense":
        symbols = to_index(flat)
        return _Quantized(kind, cb_bytes, values, symbols, None, values[symbols], flat)
    positions = np.flatnonzero(flat != 0)
    symbols = to_index(flat[positions])
    recon = np.zeros(flat.size, dtype=np.float32)
    recon[positions] = values[symbols]
    return _Quantized(kind, cb_bytes, values, symbols, positions, recon, flat)


def _sparse_entries(positions: np.ndarray, symbols: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(gap − 1, value symbol) streams with Han et al.'s filler zeros (value symbol 0)."""
    if positions.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gaps = np.diff(positions, prepend=-1)
    fillers = (gaps - 1) // max_gap
    survivor_at = np.cumsum(fillers + 1) - 1
    n_entries = int(survivor_at[-1]) + 1
    gap_sym = np.full(n_entries, max_gap - 1, dtype=np.int64)
    gap_sym[survivor_at] = gaps - fillers * max_gap - 1
    val_sym = np.zeros(n_entries, dtype=np.int64)
    val_sym[survivor_at] = symbols + 1
    return gap_sym, val_sym


def _group_flat(arrays: Sequence[np.ndarray], idx: tuple[int, ...]) -> np.ndarray:
    parts = [arrays[i].ravel() for i in idx]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _encode_group(spec: GroupSpec, idx: tuple[int, ...], all_flag: bool, arrays, gi: int) -> tuple[bytes, np.ndarray]:
    q = _quantize_group(spec, _group_flat(arrays, idx), gi)
    mode = MODES.index(spec.mode)
    out = bytearray([mode | (q.kind << 2) | (FLAG_ALL if all_flag else 0)])
    if not all_flag:
        out += encode_varint(len(idx)) + encode_varint(idx[0])
        for a, b in zip(idx, idx[1:]):
            out += encode_varint(b - a - 1)
    out += q.codebook_bytes
    if spec.mode == "float32":
        out += q.flat.astype("<f4").tobytes()
    elif spec.mode == "dense":
        codec = get_codec(spec.codec)
        if getattr(codec, "uses_shapes", False):  # e.g. "context": the shapes propose row strides
            payload = codec.encode(q.symbols, q.values.size, shapes=[arrays[i].shape for i in idx])
        else:
            payload = codec.encode(q.symbols, q.values.size)
        out += bytes([codec.id]) + encode_varint(len(payload)) + payload
    else:
        vcodec = get_codec(spec.codec)
        icodec = get_codec(spec.index_codec or spec.codec)
        gap_sym, val_sym = _sparse_entries(q.positions, q.symbols, int(spec.max_gap))
        ipay = icodec.encode(gap_sym, int(spec.max_gap))
        vpay = vcodec.encode(val_sym, q.values.size + 1)
        out += bytes([vcodec.id | (icodec.id << 4)]) + encode_varint(spec.max_gap) + encode_varint(len(gap_sym))
        out += encode_varint(len(ipay)) + ipay + encode_varint(len(vpay)) + vpay
    return bytes(out), q.recon


def _validate_model(arch: str, tensors) -> tuple[bytes, list[np.ndarray]]:
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str, got {type(arch).__name__}")
    arch_b = arch.encode("utf-8")
    if len(arch_b) > MAX_ARCH_LEN:
        raise ValueError(f"architecture name is {len(arch_b)} bytes, at most {MAX_ARCH_LEN} allowed")
    arrays = [_as_float32(t) for t in tensors]
    if len(arrays) > MAX_TENSORS:
        raise ValueError(f"{len(arrays)} tensors, at most {MAX_TENSORS} allowed")
    for i, a in enumerate(arrays):
        if a.ndim > MAX_NDIM or any(d >= MAX_DIM for d in a.shape):
            raise ValueError(f"tensor {i}: shape {a.shape} exceeds the format's limits")
    return arch_b, arrays


def _preprocessing_bytes(pre: Preprocessing | None) -> bytes:
    if pre is None:
        return bytes([PRE_NONE])
    if pre.channels > MAX_CHANNELS:
        raise ValueError(f"preprocessing has {pre.channels} channels, at most {MAX_CHANNELS} allowed")
    mean, std = np.asarray(pre.mean, "<f4"), np.asarray(pre.std, "<f4")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"preprocessing {pre} cannot be stored in float32")
    return bytes([PRE_NORMALIZE]) + encode_varint(pre.channels) + mean.tobytes() + std.tobytes()


def encode_compressed(arch: str, tensors: Sequence, groups: GroupSpec | Sequence[GroupSpec], *,
                      preprocessing: Preprocessing | str | None = "arch", version: int = VERSION) -> bytes:
    """The whole compressed file as bytes (see the module docstring for the layout).

    ``tensors``: the parameters in ``model.parameters()`` order (NumPy arrays or torch tensors,
    converted to float32). ``groups``: one :class:`GroupSpec` or a list covering every tensor
    exactly once. ``preprocessing``: the input normalisation to record — ``"arch"`` (default)
    the architecture's (:func:`metaq_utils.coding.architectures.preprocessing_for`, none for a name
    not in its table), a :class:`Preprocessing`, or None. ``version``: 2, or 1 for the old
    layout (no preprocessing recorded; ``preprocessing`` is then ignored).
    ``ValueError`` for invalid inputs (NaN/inf weights, unknown codec, ...).
    """
    if version not in READABLE_VERSIONS:
        raise ValueError(f"version must be one of {READABLE_VERSIONS}, got {version!r}")
    arch_b, arrays = _validate_model(arch, tensors)
    if isinstance(preprocessing, str):
        if preprocessing != "arch":
            raise ValueError(f"preprocessing must be 'arch', a Preprocessing or None, got {preprocessing!r}")
        preprocessing = preprocessing_for(arch)
    specs = _normalize_groups(groups, len(arrays))
    body = bytearray(encode_varint(len(arch_b)) + arch_b)
    if version >= 2:
        body += _preprocessing_bytes(preprocessing)
    body += encode_varint(len(arrays))
    for a in arrays:
        body += encode_varint(a.ndim) + b"".join(encode_varint(d) for d in a.shape)
    body += encode_varint(len(specs))
    for gi, (spec, idx, all_flag) in enumerate(specs):
        body += _encode_group(spec, idx, all_flag, arrays, gi)[0]
    total = len(MAGIC) + 1 + 1 + len(body) + 4
    while len(MAGIC) + 1 + len(encode_varint(total)) + len(body) + 4 != total:
        total = len(MAGIC) + 1 + len(encode_varint(total)) + len(body) + 4
    head = MAGIC + bytes([version]) + encode_varint(total) + bytes(body)
    data = head + (zlib.crc32(head) & 0xFFFFFFFF).to_bytes(4, "little")
    assert len(data) == total
    return data


def expected_tensors(tensors: Sequence, groups: GroupSpec | Sequence[GroupSpec]) -> list[np.ndarray]:
    """The float32 tensors a file written with these arguments decodes to (no coding done)."""
    _, arrays = _validate_model("", tensors)
    out: list[np.ndarray | None] = [None] * len(arrays)
    for gi, (spec, idx, _) in enumerate(_normalize_groups(groups, len(arrays))):
        recon = _quantize_group(spec, _group_flat(arrays, idx), gi).recon
        start = 0
        for i in idx:
            out[i] = recon[start : start + arrays[i].size].reshape(arrays[i].shape).copy()
            start += arrays[i].size
    return out


def mismatched_tensors(tensors: Sequence, decoded: "CompressedModel | Sequence[np.ndarray]") -> list[int]:
    """The round-trip check: indices of the ``tensors`` (arrays or torch tensors, as written) that
    the decoded file (a :class:`CompressedModel` or its ``tensors``) does not give back bit for
    bit as float32 (a count or shape mismatch counts as a mismatch). Empty: the file is exact."""
    got = decoded.tensors if isinstance(decoded, CompressedModel) else list(decoded)
    want = [_as_float32(t) for t in tensors]
    bad = [i for i, (a, b) in enumerate(zip(want, got)) if a.shape != np.shape(b)
           or not np.array_equal(a.view(np.uint32), np.asarray(b, np.float32).view(np.uint32))]
    return bad + list(range(min(len(want), len(got)), max(len(want), len(got))))


@dataclass(frozen=True, eq=False)
class RoundTrip:
    """A file written and read back: its bytes, the decoded model, and the indices of the tensors
    given that it does not give back bit for bit (:func:`mismatched_tensors`; empty: exact)."""

    data: bytes
    decoded: CompressedModel
    mismatched: tuple[int, ...]

    @property
    def exact(self) -> bool:
        return not self.mismatched

    @property
    def file_bits(self) -> int:
        return 8 * len(self.data)

    def check(self, names: Sequence[str] | None = None) -> "RoundTrip":
        """``self`` if the file is exact, else AssertionError naming the first tensor that differs
        (by ``names``, the parameters' names in order, when given)."""
        if self.mismatched:
            i = self.mismatched[0]
            name = names[i] if names is not None and i < len(names) else f"tensor {i}"
            raise AssertionError(f"{name}: the decoded tensor differs from the encoded one")
        return self


def round_trip(arch: str, tensors: Sequence, groups: GroupSpec | Sequence[GroupSpec], *,
               preprocessing: Preprocessing | str | None = "arch") -> RoundTrip:
    """Encode (:func:`encode_compressed`), read the bytes back (:func:`read_compressed`, the
    architecture checked) and compare every decoded tensor with the one written, bit for bit: the
    one round-trip check of the pipeline and the baselines. The caller reads :attr:`RoundTrip.exact`
    (a table column) or calls :meth:`RoundTrip.check` (raise on a difference)."""
    tensors = list(tensors)
    data = encode_compressed(arch, tensors, groups, preprocessing=preprocessing)
    decoded = read_compressed(data, expected_arch=arch)
    return RoundTrip(data, decoded, tuple(mismatched_tensors(tensors, decoded)))


def write_compressed(path, arch: str, tensors: Sequence, groups: GroupSpec | Sequence[GroupSpec], *,
                     preprocessing: Preprocessing | str | None = "arch") -> int:
    """Encode (:func:`encode_compressed`) and write atomically (temp file in the same directory,
    fsync, ``os.replace``). Returns ``file_bits``, the exact size of the file in bits."""
    data = encode_compressed(arch, tensors, groups, preprocessing=preprocessing)
    atomic_write_bytes(path, data)
    return 8 * len(data)


# ------------------------------------------------------------------------------------------------
# reading


def _check_preamble(data: bytes) -> tuple[int, int]:
    """Magic, version, length and checksum; returns (version, offset after the length field)."""
    if len(data) < len(MAGIC):
        if data and MAGIC.startswith(data):
            raise CompressedFileError(f"truncated: file is {len(data)} bytes, shorter than the 3-byte magic")
        if not data:
            raise CompressedFileError("truncated: empty file (0 bytes)")
        raise CompressedFileError(f"not a METaQ compressed file (bad magic {data[:3]!r}, expected {MAGIC!r})")
    if data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"not a METaQ compressed file (bad magic {data[:3]!r}, expected {MAGIC!r})")
    if len(data) < len(MAGIC) + 1:
        raise CompressedFileError("truncated: file ends after the magic, no version byte")
    version = data[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise CompressedFileError(f"unsupported format version {version} (this reader reads versions "
                                  f"{', '.join(map(str, READABLE_VERSIONS))})")
    reader = ByteReader(data, CompressedFileError, "file header")
    reader.pos = len(MAGIC) + 1
    try:
        total = reader.varint(2**62, "file length")
    except CompressedFileError as exc:
        raise CompressedFileError(f"truncated or corrupted: cannot read the length field ({exc})") from None
    if total < reader.pos + 4:
        raise CompressedFileError(f"corrupted: length field says {total} bytes, less than a minimal file")
    if len(data) < total:
        raise CompressedFileError(f"truncated: expected {total} bytes, got {len(data)}")
    if len(data) > total:
        raise CompressedFileError(f"trailing data: expected {total} bytes, got {len(data)}")
    stored = int.from_bytes(data[-4:], "little")
    computed = zlib.crc32(data[:-4]) & 0xFFFFFFFF
    if stored != computed:
        raise CompressedFileError(
            f"checksum mismatch: stored CRC-32 0x{stored:08x}, computed 0x{computed:08x} (file corrupted)"
        )
    return version, reader.pos


def _shape_list(expected_shapes, arch: str):
    if expected_shapes is None:
        return None
    shapes = expected_shapes(arch) if callable(expected_shapes) else expected_shapes
    return [tuple(int(d) for d in s) for s in shapes]


def decode_compressed(
    data: bytes,
    *,
    expected_arch: str | None = None,
    expected_shapes: Sequence[Sequence[int]] | Callable[[str], Sequence[Sequence[int]]] | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> CompressedModel:
    """Decode a file's bytes. Raises only :class:`CompressedFileError` for bad bytes.

    ``expected_arch`` / ``expected_shapes`` (a list of shapes, or a callable ``arch -> shapes``,
    e.g. from ``build_model``) are checked against the file if given. ``max_params`` bounds the
    allocation a (checksum-valid) file may request.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        return _decode(data, expected_arch, expected_shapes, max_params)
    except CompressedFileError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # includes pyo3 PanicException from constriction (a BaseException)
        raise CompressedFileError(f"corrupted: decoding failed ({type(exc).__name__}: {exc})") from exc


def _decode(data: bytes, expected_arch, expected_shapes, max_params: int) -> CompressedModel:
    version, pos = _check_preamble(data)
    r = ByteReader(data[:-4], CompressedFileError, "file")
    r.pos = pos
    arch_len = r.varint(MAX_ARCH_LEN, "architecture name length")
    try:
        arch = r.take(arch_len).decode("utf-8")
    except UnicodeDecodeError:
        raise CompressedFileError("corrupted: architecture name is not valid UTF-8") from None
    if expected_arch is not None and arch != expected_arch:
        raise CompressedFileError(f"architecture mismatch: file is {arch!r}, expected {expected_arch!r}")
    preprocessing = _read_preprocessing(r) if version >= 2 else None
    n_tensors = r.varint(min(MAX_TENSORS, r.remaining), "number of tensors")
    shapes: list[tuple[int, ...]] = []
    total = 0
    for i in range(n_tensors):
        ndim = r.varint(MAX_NDIM, f"ndim of tensor {i}")
        shape = tuple(r.varint(MAX_DIM - 1, f"dim of tensor {i}") for _ in range(ndim))
        shapes.append(shape)
        total += int(np.prod(shape, dtype=object)) if shape else 1
        if total > max_params:
            raise CompressedFileError(f"corrupted or too large: more than max_params = {max_params} parameters")
    try:
        want = _shape_list(expected_shapes, arch)
    except Exception as exc:
        raise CompressedFileError(f"architecture {arch!r}: expected_shapes failed ({type(exc).__name__}: {exc})") from exc
    if want is not None and want != shapes:
        raise CompressedFileError(f"shape mismatch: file has {shapes}, architecture {arch!r} expects {want}")
    sizes = [int(np.prod(s, dtype=np.int64)) if s else 1 for s in shapes]
    n_groups = r.varint(n_tensors, "number of groups")
    if n_tensors and not n_groups:
        raise CompressedFileError("corrupted: no groups but the file has tensors")
    covered = [False] * n_tensors
    jobs = []
    for gi in range(n_groups):
        jobs.append(_parse_group(r, gi, n_groups, sizes, covered))
    if not all(covered):
        raise CompressedFileError(f"corrupted: tensors {[i for i, c in enumerate(covered) if not c]} are in no group")
    if r.remaining:
        raise CompressedFileError(f"corrupted: {r.remaining} unparsed bytes before the checksum")
    tensors: list[np.ndarray | None] = [None] * n_tensors
    infos = []
    for gi, job in enumerate(jobs):
        recon, info = _decode_group(job, gi)
        start = 0
        for i in info.tensors:
            tensors[i] = recon[start : start + sizes[i]].reshape(shapes[i]).copy()
            start += sizes[i]
        infos.append(info)
    return CompressedModel(arch, version, tuple(shapes), tensors, tuple(infos), len(data), preprocessing)


def _read_preprocessing(r: ByteReader) -> Preprocessing | None:
    kind = r.u8()
    if kind == PRE_NONE:
        return None
    if kind != PRE_NORMALIZE:
        raise CompressedFileError(f"corrupted: unknown preprocessing kind {kind}")
    k = r.varint(min(MAX_CHANNELS, r.remaining // 8), "preprocessing channels")
    if k == 0:
        raise CompressedFileError("corrupted: preprocessing with 0 channels")
    mean = np.frombuffer(r.take(4 * k), dtype="<f4")
    std = np.frombuffer(r.take(4 * k), dtype="<f4")
    try:
        return Preprocessing(FILE_INPUT, tuple(map(float, mean)), tuple(map(float, std)))
    except ValueError as exc:
        raise CompressedFileError(f"corrupted: invalid preprocessing ({exc})") from None


def _parse_group(r: ByteReader, gi: int, n_groups: int, sizes: list[int], covered: list[bool]) -> dict:
    start = r.pos
    flags = r.u8()
    mode, kind, all_flag = flags & 3, (flags >> 2) & 3, bool(flags & FLAG_ALL)
    if flags & 0xE0 or mode == 3:
        raise CompressedFileError(f"corrupted: group {gi} has invalid flags 0x{flags:02x}")
    n_tensors = len(sizes)
    if all_flag:
        if n_groups != 1:
            raise CompressedFileError(f"corrupted: group {gi} claims all tensors but there are {n_groups} groups")
        idx = tuple(range(n_tensors))
    else:
        k = r.varint(n_tensors, f"tensor count of group {gi}")
        if k == 0:
            raise CompressedFileError(f"corrupted: group {gi} has no tensors")
        idx_list = [r.varint(n_tensors - 1, f"tensor index in group {gi}")]
        for _ in range(k - 1):
            idx_list.append(idx_list[-1] + 1 + r.varint(n_tensors, f"tensor index gap in group {gi}"))
        if idx_list[-1] >= n_tensors:
            raise CompressedFileError(f"corrupted: group {gi} lists tensor {idx_list[-1]} of {n_tensors}")
        idx = tuple(idx_list)
    for i in idx:
        if covered[i]:
            raise CompressedFileError(f"corrupted: tensor {i} is in more than one group")
        covered[i] = True
    size = sum(sizes[i] for i in idx)
    job = {"tensors": idx, "mode": MODES[mode], "size": size, "start": start}
    # codebook
    if (mode == 2) != (kind == KIND_NONE):
        raise CompressedFileError(f"corrupted: group {gi} combines mode {MODES[mode]} with codebook kind {kind}")
    if kind in (KIND_GRID32, KIND_GRID64):
        dt, width = ("<f4", 4) if kind == KIND_GRID32 else ("<f8", 8)
        w0, rr = np.frombuffer(r.take(2 * width), dtype=dt).astype(np.float64)
        C = r.varint(MAX_CODEBOOK, f"C of group {gi}")
        try:
            grid = Grid(float(w0), float(rr), C)
        except (ValueError, TypeError) as exc:
            raise CompressedFileError(f"corrupted: group {gi} has an invalid grid ({exc})") from None
        job["codebook"] = grid
        job["values"] = _grid_values(grid)
        if not np.isfinite(job["values"]).all():
            raise CompressedFileError(f"corrupted: group {gi} grid centres overflow float32")
    elif kind == KIND_TABLE:
        K = r.varint(min(MAX_CODEBOOK, r.remaining // 4), f"codebook size of group {gi}")
        if K == 0:
            raise CompressedFileError(f"corrupted: group {gi} has an empty codebook")
        values = np.frombuffer(r.take(4 * K), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise CompressedFileError(f"corrupted: group {gi} codebook contains NaN or inf")
        job["codebook"] = values
        job["values"] = values
    else:
        job["codebook"] = None
    if mode == 0:
        cid = r.u8()
        if cid >> 4:
            raise CompressedFileError(f"corrupted: group {gi} has invalid codec byte 0x{cid:02x}")
        job["codec"] = _codec(cid, gi)
        job["payload"] = r.take(r.varint(r.remaining, f"payload length of group {gi}"))
    elif mode == 1:
        cid = r.u8()
        job["codec"], job["index_codec"] = _codec(cid & 15, gi), _codec(cid >> 4, gi)
        job["max_gap"] = r.varint(MAX_GAP, f"max_gap of group {gi}")
        if job["max_gap"] == 0:
            raise CompressedFileError(f"corrupted: group {gi} has max_gap 0")
        job["n_entries"] = r.varint(size, f"entry count of group {gi}")
        job["index_payload"] = r.take(r.varint(r.remaining, f"index payload length of group {gi}"))
        job["payload"] = r.take(r.varint(r.remaining, f"value payload length of group {gi}"))
    else:
        if 4 * size > r.remaining:
            raise CompressedFileError(f"truncated: group {gi} needs {4 * size} bytes of float32, {r.remaining} left")
        job["payload"] = r.take(4 * size)
    job["group_bytes"] = r.pos - start
    return job


def _codec(cid: int, gi: int):
    try:
        return codec_by_id(cid)
    except CodecError:
        raise CompressedFileError(f"corrupted: group {gi} uses unknown codec id {cid}") from None


def _decode_group(job: dict, gi: int) -> tuple[np.ndarray, GroupInfo]:
    mode, size = job["mode"], job["size"]
    index_codec = max_gap = n_entries = None
    try:
        if mode == "float32":
            recon = np.frombuffer(job["payload"], dtype="<f4").astype(np.float32)
            if not np.isfinite(recon).all():
                raise CompressedFileError(f"corrupted: group {gi} float32 values contain NaN or inf")
            payload_bytes = len(job["payload"])
            codec = None
        elif mode == "dense":
            codec = job["codec"]
            values = job["values"]
            symbols = codec.decode(job["payload"], size, values.size)
            recon = values[symbols]
            payload_bytes = len(job["payload"])
        else:
            codec, icodec = job["codec"], job["index_codec"]
            index_codec, max_gap, n_entries = icodec.name, job["max_gap"], job["n_entries"]
            values = job["values"]
            gaps = icodec.decode(job["index_payload"], n_entries, max_gap) + 1
            vals = codec.decode(job["payload"], n_entries, values.size + 1)
            positions = np.cumsum(gaps) - 1
            if n_entries and positions[-1] >= size:
                raise CompressedFileError(f"corrupted: group {gi} sparse entries run past its {size} weights")
            fillers = vals == 0
            if (gaps[fillers] != max_gap).any():
                raise CompressedFileError(f"corrupted: group {gi} has a filler zero with a gap below max_gap")
            recon = np.zeros(size, dtype=np.float32)
            recon[positions] = np.concatenate([np.zeros(1, np.float32), values])[vals]
            payload_bytes = len(job["index_payload"]) + len(job["payload"])
    except CodecError as exc:
        raise CompressedFileError(f"corrupted: group {gi}: {exc}") from None
    info = GroupInfo(
        tensors=job["tensors"],
        mode=mode,
        codebook=job["codebook"],
        codec=None if codec is None else codec.name,
        index_codec=index_codec,
        max_gap=max_gap,
        n_entries=n_entries,
        payload_bytes=payload_bytes,
        group_bytes=job["group_bytes"],
    )
    return recon, info


def read_compressed(
    src,
    *,
    expected_arch: str | None = None,
    expected_shapes: Sequence[Sequence[int]] | Callable[[str], Sequence[Sequence[int]]] | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> CompressedModel:
    """Read a compressed file from a path (str/PathLike) or from bytes; see :func:`decode_compressed`.
    ``OSError`` if the path cannot be read; :class:`CompressedFileError` for bad contents."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        with open(os.fspath(src), "rb") as f:
            data = f.read()
    return decode_compressed(data, expected_arch=expected_arch, expected_shapes=expected_shapes, max_params=max_params)
