"""The compressed model file: bit-exact round trips, sparse storage, exact header size, atomic
writes, and robustness (only CompressedFileError on bad bytes, never a hang or a wrong model)."""

import os
import time
import zlib

import numpy as np
import pytest

from metaq_utils.coding.codecs import CODECS, encode_varint
from metaq_utils.coding.fileformat import (
    MAGIC,
    CompressedFileError,
    GroupSpec,
    _sparse_entries,
    decode_compressed,
    encode_compressed,
    expected_tensors,
    metaq_group,
    read_compressed,
    write_compressed,
)
from metaq_utils.core.grid import Grid
from metaq_utils.quant.quantization import quantize_array

LENET5_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 256), (120,), (84, 120), (84,), (10, 84), (10,)]
GRID32 = Grid(w0=-0.125, r=1.0, C=6)  # w0, r exact in float32
THESIS_GRID = Grid(w0=-0.11, r=1.114, C=6)  # not float32-exact: stored as float64


def lenet_tensors(seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, scale, s).astype(np.float32) for s in LENET5_SHAPES]


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def assert_model(cm, expected):
    assert len(cm.tensors) == len(expected)
    for got, want in zip(cm.tensors, expected):
        assert got.dtype == np.float32
        assert bits_equal(got, want)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("grid", [GRID32, THESIS_GRID, Grid(-0.11, 1.114, 140)], ids=["grid32", "thesis6", "thesis140"])
def test_lenet_round_trip_bit_exact(tmp_path, codec, grid):
    ts = lenet_tensors()
    path = tmp_path / "m.mtq"
    bits = write_compressed(path, "lenet5", ts, metaq_group(grid, codec))
    assert bits == 8 * os.path.getsize(path)
    cm = read_compressed(path, expected_arch="lenet5", expected_shapes=LENET5_SHAPES)
    assert cm.file_bits == bits and cm.arch == "lenet5" and cm.version == 2
    assert cm.preprocessing is not None and cm.preprocessing.channels == 1   # recorded for lenet5
    assert cm.shapes == tuple(LENET5_SHAPES) and cm.n_params == 44_426
    assert cm.codecs == (codec,)
    # exactly the quantized tensors, bit for bit
    assert_model(cm, [quantize_array(t, grid) for t in ts])
    assert_model(cm, expected_tensors(ts, metaq_group(grid, codec)))
    (g,) = cm.groups
    assert g.mode == "dense" and g.tensors == tuple(range(10))
    assert g.codebook == grid  # the writer's grid comes back exactly (float32 or float64 storage)
    assert read_compressed(path.read_bytes()).file_bits == bits


def test_header_overhead_lenet5_single_group():
    """Whole-file overhead of a 10-tensor LeNet-5 METaQ file, derived byte by byte."""
    ts = lenet_tensors()
    data = encode_compressed("lenet5", ts, metaq_group(GRID32, "range"))
    cm = decode_compressed(data)
    shapes = sum(len(encode_varint(len(s))) + sum(len(encode_varint(d)) for d in s) for s in LENET5_SHAPES)
    assert shapes == 30
    payload = cm.groups[0].payload_bytes
    expected = (
        3 + 1  # magic, version
        + len(encode_varint(len(data)))  # total length (2 bytes here)
        + 1 + len("lenet5")  # arch
        + 1 + 1 + 4 + 4  # preprocessing: kind (normalise), K = 1, mean and std as float32
        + 1 + shapes  # T, shapes
        + 1  # G
        + 1  # flags (dense, grid32, all tensors)
        + 8 + 1  # w0, r as float32; C = 6
        + 1 + len(encode_varint(payload))  # codec id, payload length
        + 4  # CRC-32
    )
    assert 128 <= payload < 16384  # 2-byte payload-length varint
    assert expected == 72
    assert cm.overhead_bytes == expected
    assert len(data) == expected + payload
    # a grid not exactly representable in float32 costs 8 more bytes (float64 storage)
    cm64 = decode_compressed(encode_compressed("lenet5", ts, metaq_group(THESIS_GRID, "range")))
    assert cm64.overhead_bytes - len(encode_varint(cm64.groups[0].payload_bytes)) == expected - len(
        encode_varint(payload)
    ) + 8


def test_grid_precision_options():
    ts = lenet_tensors()
    forced = GroupSpec(codebook=THESIS_GRID, grid_precision="float32")
    cm = decode_compressed(encode_compressed("lenet5", ts, forced))
    rounded = Grid(float(np.float32(THESIS_GRID.w0)), float(np.float32(THESIS_GRID.r)), 6)
    assert cm.groups[0].codebook == rounded
    assert_model(cm, [quantize_array(t, rounded) for t in ts])
    assert_model(cm, expected_tensors(ts, forced))
    cm = decode_compressed(encode_compressed("lenet5", ts, GroupSpec(codebook=GRID32, grid_precision="float64")))
    assert cm.groups[0].codebook == GRID32


def test_deep_compression_style_multi_group_round_trip():
    """Per-layer k-means-like tables, sparse weights with different codecs, float32 biases."""
    rng = np.random.default_rng(1)
    ts = lenet_tensors(1)
    for i in (0, 2, 4, 6, 8):  # prune ~80-95 % of each weight tensor
        ts[i][rng.random(ts[i].shape) < 0.9] = 0.0
    tables = {i: np.sort(rng.normal(0, 0.05, 2 ** (4 + i % 3))) for i in (0, 2, 4, 6, 8)}
    groups = [
        GroupSpec((0,), tables[0], "sparse", "huffman", max_gap=256),
        GroupSpec((2,), tables[2], "sparse", "range", index_codec="huffman", max_gap=256),
        GroupSpec((4,), tables[4], "sparse", "range", max_gap=32),
        GroupSpec([8, 6], tables[6], "sparse", "zstd22", index_codec="raw", max_gap=8),
        GroupSpec((1, 3, 5, 7, 9), None, "float32"),
    ]
    data = encode_compressed("lenet5", ts, groups)
    cm = decode_compressed(data)
    want = expected_tensors(ts, groups)
    assert_model(cm, want)
    for i in (1, 3, 5, 7, 9):
        assert bits_equal(cm.tensors[i], ts[i])
    for i in (0, 2, 4):
        assert ((want[i] == 0) == (ts[i] == 0)).all()  # pruned stay zero, survivors map to centroids
        assert np.isin(want[i][ts[i] != 0], tables[i].astype(np.float32)).all()
    assert [g.mode for g in cm.groups] == ["sparse"] * 4 + ["float32"]
    assert cm.groups[3].tensors == (6, 8) and cm.groups[3].index_codec == "raw" and cm.groups[3].max_gap == 8
    np.testing.assert_array_equal(cm.groups[0].codebook, tables[0].astype(np.float32))
    assert cm.groups[4].codebook is None and cm.groups[4].codec is None
    assert sum(g.group_bytes for g in cm.groups) < len(data)


def test_sparse_entries_hand_example():
    # positions 1, 4, 15 with max_gap 8: gaps 2, 3, 11 -> 11 > 8 needs one filler zero at 12
    gaps, vals = _sparse_entries(np.array([1, 4, 15]), np.array([5, 0, 2]), 8)
    np.testing.assert_array_equal(gaps + 1, [2, 3, 8, 3])
    np.testing.assert_array_equal(vals, [6, 1, 0, 3])


@pytest.mark.parametrize(
    "pattern",
    [
        "all_zero",
        "no_zero",
        "single_survivor_at_end",
        "gap_exactly_max",
        "gap_max_plus_one",
        "long_gaps",
        "first_far",
        "trailing_zeros",
        "random",
    ],
)
@pytest.mark.parametrize("max_gap", [1, 4, 256])
def test_sparse_round_trip_patterns(pattern, max_gap):
    n = 1000
    w = np.zeros(n, np.float32)
    rng = np.random.default_rng(zlib.crc32(pattern.encode()))
    pos = {
        "all_zero": [],
        "no_zero": list(range(n)),
        "single_survivor_at_end": [n - 1],
        "gap_exactly_max": list(range(max_gap - 1, n, max_gap)),
        "gap_max_plus_one": list(range(max_gap, n, max_gap + 1)),
        "long_gaps": [0, 1, 700, 999],
        "first_far": [950],
        "trailing_zeros": [0, 5, 9],
        "random": sorted(rng.choice(n, 120, replace=False).tolist()),
    }[pattern]
    pos = np.array(pos, dtype=np.int64)
    w[pos] = rng.uniform(-1, 1, len(pos)).astype(np.float32)
    w[pos[w[pos] == 0]] = 0.5
    tensors = [w[:300].reshape(10, 30), w[300:]]  # the group spans two tensors
    table = np.linspace(-1, 1, 16)
    groups = [GroupSpec((0, 1), table, "sparse", "range", index_codec="huffman", max_gap=max_gap)]
    cm = decode_compressed(encode_compressed("toy", tensors, groups))
    assert_model(cm, expected_tensors(tensors, groups))
    flat = np.concatenate([t.ravel() for t in cm.tensors])
    np.testing.assert_array_equal(np.flatnonzero(flat), pos)  # table has no 0.0: survivors stay non-zero
    gaps = np.diff(pos, prepend=-1)
    assert cm.groups[0].n_entries == int(np.sum(-(-gaps // max_gap)))  # Σ ceil(gap / max_gap)
    # the same weights on a uniform grid in sparse mode
    g2 = [GroupSpec((0, 1), Grid(0.0, 1.0, 7), "sparse", "huffman", max_gap=max_gap)]
    assert_model(decode_compressed(encode_compressed("toy", tensors, g2)), expected_tensors(tensors, g2))


def test_torch_model_round_trip_same_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    from metaq_utils.nn.networks import build_model, parameter_shapes

    torch.manual_seed(0)
    model = build_model("lenet5")
    names = [n for n, _ in model.named_parameters()]
    grid = Grid(-0.125, 1.0, 64)
    path = tmp_path / "lenet5.mtq"
    write_compressed(path, "lenet5", list(model.parameters()), metaq_group(grid, "huffman"))
    cm = read_compressed(path, expected_arch="lenet5", expected_shapes=lambda a: [s for _, s in parameter_shapes(a)])
    quantized = {n: torch.from_numpy(quantize_array(p.detach().numpy(), grid)) for n, p in model.named_parameters()}
    decoded = {n: torch.from_numpy(t) for n, t in zip(names, cm.tensors)}
    x = torch.randn(8, 1, 28, 28)
    m1, m2 = build_model("lenet5"), build_model("lenet5")
    m1.load_state_dict(quantized)
    m2.load_state_dict(decoded)
    assert torch.equal(m1(x), m2(x))


def test_zero_and_scalar_shapes_and_empty_model():
    ts = [np.float32(0.3), np.zeros((0, 5), np.float32), np.ones((2, 1, 1, 1, 1, 1, 1, 3), np.float32)]
    for codec in sorted(CODECS):
        cm = decode_compressed(encode_compressed("odd", ts, metaq_group(GRID32, codec)))
        assert cm.shapes == ((), (0, 5), (2, 1, 1, 1, 1, 1, 1, 3))
        assert_model(cm, [quantize_array(t, GRID32) for t in ts])
    cm = decode_compressed(encode_compressed("", [], []))
    assert cm.tensors == [] and cm.arch == ""


# --------------------------------------------------------------------------- writer validation


def test_writer_rejects_bad_input(tmp_path):
    ts = lenet_tensors()
    bad = [t.copy() for t in ts]
    bad[3][2] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        encode_compressed("lenet5", bad, metaq_group(GRID32))
    with pytest.raises(ValueError, match="unknown codec 'lz4'"):
        encode_compressed("lenet5", ts, metaq_group(GRID32, "lz4"))
    with pytest.raises(ValueError, match=r"tensors \[9\] are in no group"):
        encode_compressed("lenet5", ts, [GroupSpec(tuple(range(9)), GRID32)])
    with pytest.raises(ValueError, match="tensor 3 is in groups 0 and 1"):
        encode_compressed("lenet5", ts, [GroupSpec((0, 1, 2, 3), GRID32), GroupSpec(tuple(range(3, 10)), GRID32)])
    with pytest.raises(ValueError, match="only allowed for a single group"):
        encode_compressed("lenet5", ts, [GroupSpec(None, GRID32), GroupSpec((0,), GRID32)])
    with pytest.raises(ValueError, match="needs a codebook"):
        encode_compressed("lenet5", ts, GroupSpec(None, None, "dense"))
    with pytest.raises(ValueError, match="max_gap"):
        encode_compressed("lenet5", ts, GroupSpec(None, GRID32, "sparse", max_gap=0))
    with pytest.raises(ValueError, match="architecture name"):
        encode_compressed("x" * 300, ts, metaq_group(GRID32))
    # a failed write leaves an existing file untouched and no temporary file behind
    path = tmp_path / "m.mtq"
    write_compressed(path, "lenet5", ts, metaq_group(GRID32))
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_compressed(path, "lenet5", bad, metaq_group(GRID32))
    assert path.read_bytes() == before
    write_compressed(path, "lenet5", lenet_tensors(5), metaq_group(GRID32, "huffman"))  # overwrite
    assert path.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["m.mtq"]


# --------------------------------------------------------------------------- reader errors


@pytest.fixture(scope="module")
def lenet_file() -> bytes:
    return encode_compressed("lenet5", lenet_tensors(), metaq_group(GRID32, "range"))


def test_reader_error_messages(lenet_file):
    data = lenet_file
    cases = [
        (b"", "truncated: empty file"),
        (b"MT", "truncated: file is 2 bytes"),
        (b"PK\x03\x04" + data[4:], r"not a METaQ compressed file \(bad magic"),
        (b"\x89PNG\r\n\x1a\n", "bad magic"),
        (data[:3], "truncated: file ends after the magic"),
        (data[:3] + b"\x03" + data[4:], "unsupported format version 3 .*reads versions 1, 2"),
        (data[:-1], f"truncated: expected {len(data)} bytes, got {len(data) - 1}"),
        (data[:100], f"truncated: expected {len(data)} bytes, got 100"),
        (data + b"\0", f"trailing data: expected {len(data)} bytes, got {len(data) + 1}"),
        (data[:50] + bytes([data[50] ^ 4]) + data[51:], "checksum mismatch"),
    ]
    for bad, msg in cases:
        with pytest.raises(CompressedFileError, match=msg):
            decode_compressed(bad)
    assert issubclass(CompressedFileError, ValueError)
    with pytest.raises(CompressedFileError, match="architecture mismatch"):
        decode_compressed(data, expected_arch="lenet300100")
    with pytest.raises(CompressedFileError, match="shape mismatch"):
        decode_compressed(data, expected_shapes=LENET5_SHAPES[:-1] + [(11,)])
    with pytest.raises(CompressedFileError, match="max_params"):
        decode_compressed(data, max_params=40_000)


def _refit(body: bytes) -> bytes:
    """Make arbitrary body bytes a checksum-valid file: magic, version, length, CRC recomputed."""
    total = len(MAGIC) + 1 + 1 + len(body) + 4
    while len(MAGIC) + 1 + len(encode_varint(total)) + len(body) + 4 != total:
        total = len(MAGIC) + 1 + len(encode_varint(total)) + len(body) + 4
    head = MAGIC + b"\x02" + encode_varint(total) + body
    return head + zlib.crc32(head).to_bytes(4, "little")


def _body(data: bytes) -> bytes:
    pos = 4
    while data[pos] & 0x80:
        pos += 1
    return data[pos + 1 : -4]


def test_checksum_valid_but_inconsistent_files(lenet_file):
    body = _body(lenet_file)
    assert decode_compressed(_refit(body)).file_bits == 8 * len(lenet_file)
    arch = 1 + 6 + 10  # the name, then the preprocessing block (10 bytes for lenet5)
    shapes_end = arch + 1 + 30
    cases = [
        (body[:-1], "truncated|corrupted"),
        (body + b"\x00", "unparsed bytes"),
        # first dim of tensor 0 set to 2^31 - 1: more than max_params parameters
        (body[: arch + 2] + encode_varint(2**31 - 1) + body[arch + 3 :], "max_params"),
        (body[:shapes_end] + b"\x00" + body[shapes_end + 1 :], "no groups"),  # G = 0
        (body[: shapes_end + 1] + b"\x03" + body[shapes_end + 2 :], "invalid flags"),  # mode 3
        (body[: shapes_end + 1] + b"\x1c" + body[shapes_end + 2 :], "combines mode"),  # dense + no codebook
        (body[: shapes_end + 11] + b"\x0f" + body[shapes_end + 12 :], "unknown codec id 15"),
    ]
    for bad, msg in cases:
        with pytest.raises(CompressedFileError, match=msg):
            decode_compressed(_refit(bad))


# --------------------------------------------------------------------------- fuzzing


def _assert_rejected(bad: bytes, max_seconds: float = 1.0):
    t = time.perf_counter()
    with pytest.raises(CompressedFileError):
        decode_compressed(bad)
    assert time.perf_counter() - t < max_seconds


@pytest.fixture(scope="module")
def fuzz_files(lenet_file):
    rng = np.random.default_rng(7)
    ts = lenet_tensors(3)
    for i in (0, 2, 4):
        ts[i][rng.random(ts[i].shape) < 0.85] = 0.0
    multi = encode_compressed(
        "lenet5",
        ts,
        [
            GroupSpec((0, 2), np.linspace(-0.1, 0.1, 8), "sparse", "huffman", max_gap=16),
            GroupSpec((4,), Grid(-0.125, 1.0, 32), "sparse", "range", index_codec="zstd22"),
            GroupSpec((6, 8), Grid(-0.125, 1.0, 140), "dense", "gzip9"),
            GroupSpec((1, 3, 5, 7, 9), None, "float32"),
        ],
    )
    return {"metaq": lenet_file, "multi": multi}


def test_fuzz_truncation_at_every_offset(fuzz_files):
    t = time.perf_counter()
    for data in fuzz_files.values():
        for k in range(len(data)):
            _assert_rejected(data[:k])
    assert time.perf_counter() - t < 20


def test_fuzz_bit_flips_garbage_magic_version(fuzz_files):
    rng = np.random.default_rng(11)
    t = time.perf_counter()
    count = 0
    for data in fuzz_files.values():
        n_bits = 8 * len(data)
        for _ in range(1500):  # 1..8 random bit flips anywhere
            arr = bytearray(data)
            for b in rng.choice(n_bits, int(rng.integers(1, 9)), replace=False):
                arr[b // 8] ^= 1 << (b % 8)
            _assert_rejected(bytes(arr))
            count += 1
        for _ in range(300):  # random garbage, bare or behind a valid magic + version
            garbage = rng.integers(0, 256, int(rng.integers(0, 2 * len(data))), dtype=np.uint8).tobytes()
            _assert_rejected(garbage)
            _assert_rejected(MAGIC + b"\x01" + garbage)
            count += 2
        for v in range(256):  # every wrong version
            if v not in (1, 2):
                with pytest.raises(CompressedFileError, match=f"unsupported format version {v}"):
                    decode_compressed(data[:3] + bytes([v]) + data[4:])
                count += 1
        for _ in range(100):  # wrong magic
            m = rng.integers(0, 256, 3, dtype=np.uint8).tobytes()
            if m != MAGIC:
                with pytest.raises(CompressedFileError, match="bad magic"):
                    decode_compressed(m + data[3:])
                count += 1
        for _ in range(200):  # a random slice spliced out, or random bytes inserted
            i, j = sorted(rng.integers(0, len(data), 2))
            _assert_rejected(data[:i] + data[j + 1 :])
            _assert_rejected(data[:i] + rng.integers(0, 256, 5, dtype=np.uint8).tobytes() + data[i:])
            count += 2
    assert count > 4000
    assert time.perf_counter() - t < 30


def test_fuzz_checksum_valid_mutations_never_crash_or_hang(fuzz_files):
    """Corrupt the body and *recompute* length and CRC: the parser itself is then exercised.
    Any outcome but CompressedFileError or a well-formed model (right count of float32 tensors
    with their stated shapes) is a failure; so is any single decode taking over a second."""
    rng = np.random.default_rng(13)
    small = encode_compressed(
        "toy",
        [np.float32(rng.normal(0, 0.3, (20, 30))), np.float32(rng.normal(0, 0.3, 30)) * (rng.random(30) < 0.3)],
        [
            GroupSpec((0,), Grid(-0.125, 1.0, 16), "dense", "huffman"),
            GroupSpec((1,), np.linspace(-0.5, 0.5, 4), "sparse", "range", max_gap=4),
        ],
    )
    outcomes = {"error": 0, "model": 0}
    t0 = time.perf_counter()
    for data in (small, fuzz_files["metaq"], fuzz_files["multi"]):
        body = _body(data)
        for _ in range(600):
            arr = bytearray(body)
            op = rng.integers(3)
            if op == 0:
                for _ in range(int(rng.integers(1, 4))):
                    arr[int(rng.integers(len(arr)))] = int(rng.integers(256))
            elif op == 1:
                i = int(rng.integers(len(arr)))
                del arr[i : i + int(rng.integers(1, 8))]
            else:
                i = int(rng.integers(len(arr)))
                arr[i:i] = rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
            bad = _refit(bytes(arr))
            t = time.perf_counter()
            try:
                cm = decode_compressed(bad, max_params=200_000)
            except CompressedFileError:
                outcomes["error"] += 1
            else:
                outcomes["model"] += 1
                assert len(cm.tensors) == len(cm.shapes)
                for tensor, shape in zip(cm.tensors, cm.shapes):
                    assert tensor.dtype == np.float32 and tensor.shape == shape and np.isfinite(tensor).all()
                assert cm.file_bits == 8 * len(bad)
            assert time.perf_counter() - t < 1.0
    assert outcomes["error"] > 0
    assert time.perf_counter() - t0 < 30


# --------------------------------------------------------------------------- versions 1 and 2

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _v1_fixture_model():
    """What tests/fixtures/v1_probe.mtq holds: written by the version-1 writer (before the format
    recorded preprocessing) from these tensors and groups."""
    rng = np.random.default_rng(14)
    t = [rng.normal(0, 0.3, (4, 5)).astype(np.float32), rng.normal(0, 0.3, 7).astype(np.float32),
         np.where(rng.random((3, 8)) < 0.6, 0, rng.normal(0, 0.3, (3, 8))).astype(np.float32),
         rng.normal(0, 1, 3).astype(np.float32)]
    groups = [GroupSpec(tensors=(0, 1), codebook=Grid(-0.11, 1.114, 6), mode="dense", codec="range"),
              GroupSpec(tensors=(2,), codebook=np.array([-0.25, 0.0, 0.125, 0.5], np.float32), mode="sparse",
                        codec="huffman", max_gap=4),
              GroupSpec(tensors=(3,), mode="float32")]
    return t, groups


def test_version_1_files_are_still_read():
    data = open(os.path.join(FIXTURES, "v1_probe.mtq"), "rb").read()
    assert data[:4] == MAGIC + b"\x01"
    t, groups = _v1_fixture_model()
    cm = read_compressed(data)
    assert cm.version == 1 and cm.preprocessing is None and cm.arch == "probe"
    assert_model(cm, expected_tensors(t, groups))
    assert [g.mode for g in cm.groups] == ["dense", "sparse", "float32"]
    # the writer's version-1 layout is that file byte for byte; version 2 adds the preprocessing byte
    assert encode_compressed("probe", t, groups, version=1) == data
    v2 = encode_compressed("probe", t, groups)
    assert len(v2) == len(data) + 1 and read_compressed(v2).preprocessing is None   # 'probe': none known
    assert_model(read_compressed(v2), expected_tensors(t, groups))


def test_preprocessing_is_recorded_in_version_2():
    from metaq_utils.coding.preprocessing import MNIST_PREPROCESSING, Preprocessing
    ts = lenet_tensors()
    cm = read_compressed(encode_compressed("lenet5", ts, metaq_group(GRID32)))
    assert cm.version == 2
    assert cm.preprocessing.mean == (float(np.float32(MNIST_PREPROCESSING.mean[0])),)
    assert cm.preprocessing.std == (float(np.float32(MNIST_PREPROCESSING.std[0])),)
    rgb = Preprocessing("RGB in [0,1]", (0.5, 0.25, 0.125), (0.5, 1.0, 2.0))   # float32-exact values
    cm = read_compressed(encode_compressed("lenet5", ts, metaq_group(GRID32), preprocessing=rgb))
    assert (cm.preprocessing.mean, cm.preprocessing.std) == (rgb.mean, rgb.std)
    none = encode_compressed("lenet5", ts, metaq_group(GRID32), preprocessing=None)
    assert read_compressed(none).preprocessing is None
    assert len(none) == len(encode_compressed("lenet5", ts, metaq_group(GRID32))) - 9
    with pytest.raises(ValueError, match="version must be one of"):
        encode_compressed("lenet5", ts, metaq_group(GRID32), version=3)


def test_corrupted_preprocessing_block_is_rejected(lenet_file):
    body = _body(lenet_file)
    pre = 1 + 6                                   # the block starts after the architecture name
    assert body[pre : pre + 2] == b"\x01\x01"
    cases = [
        (body[:pre] + b"\x02" + body[pre + 1 :], "unknown preprocessing kind 2"),
        (body[:pre + 1] + b"\x00" + body[pre + 2 :], "preprocessing with 0 channels"),
        (body[:pre + 6] + np.float32(-1.0).tobytes() + body[pre + 10 :], "invalid preprocessing"),   # std < 0
    ]
    for bad, msg in cases:
        with pytest.raises(CompressedFileError, match=msg):
            decode_compressed(_refit(bad))
