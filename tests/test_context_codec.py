"""The context-adaptive codec ("context", id 5): bit-exact round trips, sizes against the order-0
entropy and the static range coder, corrupted payloads, and whole-model files with per-layer
tables (metaq_utils.coding.context, metaq_utils.coding.fileformat.per_layer_table_groups)."""

import time

import numpy as np
import pytest

from metaq_utils.coding.codecs import CODECS, ByteReader, CodecError, codec_by_id, get_codec
from metaq_utils.coding.codecs import encode_varint
from metaq_utils.coding.context import FLAG_LIMITS, ContextCodec, candidate_strides
from metaq_utils.coding.fileformat import (
    CompressedFileError,
    GroupSpec,
    encode_compressed,
    per_layer_table_groups,
    read_compressed,
    round_trip,
)

CTX = get_codec("context")


def entropy_bits(symbols) -> float:
    counts = np.bincount(np.asarray(symbols))
    p = counts[counts > 0] / counts.sum()
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def sparse_stream(rng, n, alphabet, density):
    x = rng.integers(0, alphabet, n)
    zero = int(rng.integers(0, alphabet))
    x[rng.random(n) >= density] = zero
    return x


def test_registered():
    assert isinstance(CTX, ContextCodec)
    assert CTX.name == "context" and CTX.id == 5
    assert CODECS["context"] is CTX and codec_by_id(5) is CTX


@pytest.mark.parametrize("seed", range(12))
def test_round_trip_random(seed):
    rng = np.random.default_rng(seed)
    for _ in range(6):
        alphabet = int(rng.choice([1, 2, 3, 5, 8, 17, 256, 1000, 4096]))
        n = int(rng.choice([0, 1, 2, 7, 64, 300, 2000]))
        density = float(rng.choice([0.0, 0.02, 0.1, 0.5, 1.0]))
        x = sparse_stream(rng, n, alphabet, density)
        shapes = None
        if n and rng.random() < 0.7:
            cols = int(rng.integers(1, n + 1))
            shapes = [(n // cols, cols)] if n % cols == 0 else [(n,)]
        payload = CTX.encode(x, alphabet, shapes=shapes)
        y = CTX.decode(payload, n, alphabet)
        assert y.dtype == np.int64 and np.array_equal(x, y), (seed, alphabet, n, density, shapes)
        assert CTX.encoded_bits(x, alphabet, shapes=shapes) == 8 * len(payload)
        # the default interface (no shapes) round-trips too
        assert np.array_equal(CTX.decode(CTX.encode(x, alphabet), n, alphabet), x)


@pytest.mark.parametrize("alphabet", [1, 2, 3, 255, 256, 4095, 4096])
def test_edge_streams(alphabet):
    assert CTX.encode(np.zeros(0, np.int64), alphabet) == b""
    assert CTX.decode(b"", 0, alphabet).size == 0
    for x in (np.array([alphabet - 1]), np.zeros(100, np.int64), np.full(33, alphabet - 1),
              np.arange(min(alphabet, 50)) % alphabet, np.r_[np.zeros(999, np.int64), alphabet - 1]):
        for shapes in (None, [(x.size,)], [(1, x.size)]):
            p = CTX.encode(x, alphabet, shapes=shapes)
            assert np.array_equal(CTX.decode(p, x.size, alphabet), x)
    assert len(CTX.encode(np.zeros(10**5, np.int64), alphabet)) == 2  # cfg + z: no code at all


def test_every_symbol_value_and_zero_positions():
    # the most frequent symbol anywhere in the band (start, middle, end, outside)
    rng = np.random.default_rng(1)
    for z in (0, 3, 7):
        x = rng.integers(0, 8, 500)
        x[rng.random(500) < 0.8] = z
        assert np.array_equal(CTX.decode(CTX.encode(x, 8), 500, 8), x)
    x = np.r_[np.zeros(50, np.int64), np.full(10, 6), np.full(10, 7)]  # band [6, 7] excludes z = 0
    assert np.array_equal(CTX.decode(CTX.encode(x, 8, shapes=[(7, 10)]), x.size, 8), x)


def test_iid_size_close_to_order0_entropy():
    rng = np.random.default_rng(2)
    for alphabet, density, n in [(8, 0.1, 40000), (16, 0.5, 20000), (4, 0.95, 20000)]:
        x = sparse_stream(rng, n, alphabet, density)
        bits = 8 * len(CTX.encode(x, alphabet, shapes=[(n // 100, 100)]))
        h = entropy_bits(x)
        # adaptive-model learning cost: O(log n) bits per parameter, plus a few header bytes
        assert bits <= h + 0.01 * h + 64 + 8 * alphabet * np.log2(n), (alphabet, density, bits, h)


def structured_fc(rng, rows=300, cols=784, dead_rows=0.4, dead_cols=0.5, density=0.5, k=8):
    """A pruned fc matrix with dead output neurons (rows) and dead inputs (columns)."""
    alive = (rng.random(rows) >= dead_rows)[:, None] & (rng.random(cols) >= dead_cols)[None, :]
    nz = alive & (rng.random((rows, cols)) < density)
    sym = np.zeros((rows, cols), np.int64)
    sym[nz] = rng.integers(1, k, int(nz.sum()))
    return sym


def test_structured_matrix_much_smaller_than_range():
    rng = np.random.default_rng(3)
    m = structured_fc(rng)
    x = m.ravel()
    ctx = len(CTX.encode(x, 8, shapes=[m.shape]))
    rng_bytes = len(get_codec("range").encode(x, 8))
    assert ctx < 0.8 * rng_bytes, (ctx, rng_bytes)
    assert ctx < entropy_bits(x) / 8 * 0.8
    # without the shape hint only the stride-free schemes are available: still exact, larger
    no_hint = len(CTX.encode(x, 8))
    assert ctx < no_hint
    assert np.array_equal(CTX.decode(CTX.encode(x, 8, shapes=[m.shape]), x.size, 8), x)


def test_candidate_strides():
    assert candidate_strides(None) == []
    assert candidate_strides([(10,)]) == []
    assert candidate_strides([(120, 256), (120,)]) == [256]
    assert candidate_strides([(16, 6, 5, 5)]) == [150, 5]


# --------------------------------------------------------------------------- bad payloads


def test_corrupted_and_truncated_payloads_raise():
    rng = np.random.default_rng(4)
    m = structured_fc(rng, rows=60, cols=100)
    x = m.ravel()
    p = CTX.encode(x, 8, shapes=[m.shape])
    n = x.size
    bad = [p[:-1], p[: len(p) // 2], p[:3], p + b"\x00", p + b"\x17", b"\xff" * 8, b"\x09\x00",
           b"\x00", b"\x00\x08", b"\x00\x00\x00", b"\x03\x00\x00", b""]
    for i in range(0, len(p), max(1, len(p) // 40)):
        for flip in (0x01, 0x80, 0xFF):
            q = bytearray(p)
            q[i] ^= flip
            bad.append(bytes(q))
    for q in bad:
        try:
            y = CTX.decode(q, n, 8)
        except CodecError:
            continue
        # a corrupted header byte may still be a valid (different) stream: never the original bytes,
        # and never a wrong answer for the original payload
        assert q != p and not np.array_equal(y, x) or q == p
        assert CTX.encode(y, 8, shapes=None) is not None
    with pytest.raises(CodecError, match="non-empty payload"):
        CTX.decode(b"\x00", 0, 8)
    with pytest.raises(CodecError):
        CTX.decode(p, n, 4)  # symbols outside a smaller alphabet / inconsistent header
    with pytest.raises(CodecError, match="truncated|not the encoding"):
        CTX.decode(p[:-2], n, 8)


def test_decoded_payload_is_canonical():
    """Whatever a corrupted payload decodes to, it is accepted only if it is exactly the encoding
    of the decoded symbols (the decoder re-encodes and compares)."""
    rng = np.random.default_rng(5)
    x = sparse_stream(rng, 3000, 8, 0.1)
    p = CTX.encode(x, 8)
    accepted = 0
    for i in range(len(p)):
        q = bytearray(p)
        q[i] ^= 0x10
        try:
            y = CTX.decode(bytes(q), x.size, 8)
        except CodecError:
            continue
        accepted += 1
        assert not np.array_equal(y, x)
    assert accepted <= 2  # only header bytes can flip into another valid stream


# --------------------------------------------------------------------------- whole-model files


def pruned_lenet5_tensors(seed=0, prune=0.9, k=8):
    torch = pytest.importorskip("torch")
    from metaq_utils.nn.networks import build_model

    torch.manual_seed(seed)
    model = build_model("lenet5")
    rng = np.random.default_rng(seed)
    out = []
    for p in model.parameters():
        w = p.detach().cpu().numpy().astype(np.float32)
        flat = w.ravel()
        thr = np.quantile(np.abs(flat), prune)
        keep = np.abs(flat) > thr
        # k-means-like table: k - 1 quantiles of the survivors (float32), plus 0.0
        centres = np.quantile(flat[keep], np.linspace(0.02, 0.98, k - 1)).astype(np.float32) if keep.any() else np.zeros(0, np.float32)
        q = np.zeros_like(flat)
        if keep.any():
            q[keep] = centres[np.abs(flat[keep, None] - centres[None, :]).argmin(axis=1)]
        out.append(q.reshape(w.shape) + np.float32(0.0))
        rng.random()
    return out


def test_per_layer_table_groups():
    ts = [np.array([[0.0, 1.5], [-0.0, 1.5]], np.float32), np.array([2.0, 2.0], np.float32),
          np.zeros((0, 3), np.float32)]
    groups = per_layer_table_groups(ts)
    assert [g.tensors for g in groups] == [(0,), (1,), (2,)]
    assert all(isinstance(g, GroupSpec) and g.mode == "dense" and g.codec == "context" for g in groups)
    assert groups[0].codebook.tolist() == [0.0, 1.5] and groups[1].codebook.tolist() == [2.0]
    assert not np.signbit(groups[0].codebook).any()
    cm = read_compressed(encode_compressed("toy", ts, groups, preprocessing=None))
    assert cm.codecs == ("context",) * 3
    assert cm.tensors[0].tolist() == [[0.0, 1.5], [0.0, 1.5]] and cm.tensors[2].shape == (0, 3)
    assert per_layer_table_groups(ts, codec="range")[0].codec == "range"


def test_lenet5_file_round_trip_bit_exact():
    ts = pruned_lenet5_tensors()
    assert sum(t.size for t in ts) == 44426
    zero_frac = np.mean(np.concatenate([t.ravel() for t in ts]) == 0)
    assert zero_frac > 0.85
    t0 = time.perf_counter()
    rt = round_trip("lenet5", ts, per_layer_table_groups(ts))
    elapsed = time.perf_counter() - t0
    rt.check()
    assert rt.exact and all(g.codec == "context" for g in rt.decoded.groups)
    assert elapsed < 10.0, elapsed  # encode + decode of 44,426 weights in pure Python
    for got, want in zip(rt.decoded.tensors, ts):
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # smaller than the same file with the static range coder
    ranged = round_trip("lenet5", ts, per_layer_table_groups(ts, codec="range"))
    assert ranged.exact and rt.file_bits < ranged.file_bits
    # explicit tables in another order and with unused values also work
    groups = [GroupSpec(tensors=(i,), codebook=np.r_[np.unique(t)[::-1], np.float32(9.0)], mode="dense", codec="context")
              for i, t in enumerate(ts)]
    assert round_trip("lenet5", ts, groups).exact


def test_file_with_corrupted_context_payload_raises():
    ts = pruned_lenet5_tensors(seed=1)
    data = encode_compressed("lenet5", ts, per_layer_table_groups(ts))
    import zlib

    # flip a byte near the end of the last big payload and fix the checksum: the codec must notice
    body = bytearray(data[:-4])
    body[len(body) - 300] ^= 0x55
    fixed = bytes(body) + (zlib.crc32(bytes(body)) & 0xFFFFFFFF).to_bytes(4, "little")
    try:
        cm = read_compressed(fixed)
    except CompressedFileError:
        return
    assert any(not np.array_equal(a, b) for a, b in zip(cm.tensors, ts))  # pragma: no cover


# --- binarised value model (value modes 1..): sign / |level| > k flags / remainder -------------


def _levels_stream(rng, n, alphabet, density, scale):
    z = int(rng.integers(0, alphabet))
    lv = np.rint(rng.laplace(0, scale, n)).astype(np.int64)
    x = np.clip(z + lv, 0, alphabet - 1)
    x[rng.random(n) >= density] = z
    return x


@pytest.mark.parametrize("seed", range(10))
def test_binarised_round_trip_many_levels(seed):
    from metaq_utils.coding.context import _VMODES

    rng = np.random.default_rng(100 + seed)
    for alphabet in (2, 3, 9, 27, 331, 4096):
        n = int(rng.choice([1, 5, 300, 3000]))
        x = _levels_stream(rng, n, alphabet, float(rng.choice([0.05, 0.3, 1.0])), float(rng.choice([0.7, 3, 40, 900])))
        shapes = [(n // 10, 10)] if n % 10 == 0 else None
        for vm in range(1, len(_VMODES) + 1):
            p = CTX.encode(x, alphabet, shapes=shapes, vmodes=(vm,))
            assert np.array_equal(CTX.decode(p, n, alphabet), x), (seed, alphabet, n, vm)
        p = CTX.encode(x, alphabet, shapes=shapes)
        assert np.array_equal(CTX.decode(p, n, alphabet), x)


def test_binarised_one_sided_and_single_symbol():
    for alphabet in (3, 17, 4096):
        z = alphabet // 2
        for x in (
            np.array([z] * 50 + [z + 1] + [z] * 9),  # single significant symbol
            np.array([z] * 20 + [0] + [z] * 5),  # single, far negative
            np.array([z, alphabet - 1, z, z + 1, alphabet - 1, z, z]),  # positive only
            np.array([z, 0, z, z - 1, 0, z, z]),  # negative only
            np.array([z, 0, alphabet - 1, z, z]),  # both extremes
        ):
            for vm in (1, 2, 3, 4, 5, 6):
                p = CTX.encode(x, alphabet, vmodes=(vm,))
                assert np.array_equal(CTX.decode(p, x.size, alphabet), x), (alphabet, x, vm)
    # most frequent symbol outside the band of the significant ones
    x = np.array([0] * 30 + [5, 7, 6, 5] + [0] * 10)
    for vm in range(1, 7):
        assert np.array_equal(CTX.decode(CTX.encode(x, 9, vmodes=(vm,)), x.size, 9), x)


def test_binarised_never_larger_than_single_model():
    rng = np.random.default_rng(7)
    for _ in range(25):
        alphabet = int(rng.choice([3, 9, 27, 64, 331, 4096]))
        n = int(rng.choice([50, 500, 5000]))
        x = _levels_stream(rng, n, alphabet, float(rng.choice([0.05, 0.2, 0.6])), float(rng.choice([0.8, 2, 10, 200])))
        shapes = [(n // 50, 50)]
        old = CTX.encode(x, alphabet, shapes=shapes, vmodes=(0,))
        new = CTX.encode(x, alphabet, shapes=shapes)
        assert len(new) <= len(old)
        assert np.array_equal(CTX.decode(new, n, alphabet), x)


def test_binarised_corrupted_payloads_raise():
    """A corrupted or truncated binarised payload raises, or (rarely) is the exact encoding of
    other symbols under the same configuration -- never the original symbols."""
    rng = np.random.default_rng(3)
    x = _levels_stream(rng, 2000, 27, 0.3, 2.0)
    p = CTX.encode(x, 27, shapes=[(40, 50)], vmodes=(3,))
    assert p[0] < 128 and p[0] // 7 % 7 == 3  # value mode 3 (any flag limit)
    assert np.array_equal(CTX.decode(p, 2000, 27), x)
    bad = [p[:-1], p[:-2], p[:-5], p[: len(p) // 2], p + b"\x00", p + b"\x01"]
    for i in range(0, len(p), max(1, len(p) // 40)):
        for flip in (0x01, 0x80, 0xFF):
            q = bytearray(p)
            q[i] ^= flip
            bad.append(bytes(q))
    raised = 0
    for q in bad:
        try:
            y = CTX.decode(q, 2000, 27)
        except CodecError:
            raised += 1
            continue
        assert not np.array_equal(y, x)
    assert raised > len(bad) // 2
    for cut in (1, 2):
        with pytest.raises(CodecError):
            CTX.decode(p[:-cut], 2000, 27)
    with pytest.raises(CodecError):
        CTX.decode(encode_varint(7 * 7 * len(FLAG_LIMITS)) + p[1:], 2000, 27)  # cfg out of range
    with pytest.raises(CodecError):
        CTX.decode(bytes([7]) + p[1:], 2000, 27)  # cfg % 7 == 0


def test_binarised_lenet5_decode_fast():
    rng = np.random.default_rng(11)
    x = _levels_stream(rng, 48000, 27, 0.2, 2.5)
    p = CTX.encode(x, 27, shapes=[(120, 400)], vmodes=(4,))
    t0 = time.perf_counter()
    assert np.array_equal(CTX.decode(p, x.size, 27), x)
    assert time.perf_counter() - t0 < 2.0


def test_flag_limit_choice_round_trips():
    """Every stored flag halving limit decodes (streams where fast adaptation wins pick a small one)."""
    from metaq_utils.coding import context as cx

    rng = np.random.default_rng(5)
    seen = set()
    for trial in range(12):
        n = 4000
        dens = np.repeat(rng.choice([0.02, 0.5], size=8), n // 8)  # drifting density
        x = np.where(rng.random(n) < dens, rng.integers(1, 9, n), 0)
        p = CTX.encode(x, 9, shapes=[(40, 100)])
        seen.add(ByteReader(p, CodecError, "t").varint(10**6, "cfg") // (7 * 7))
        assert np.array_equal(CTX.decode(p, n, 9), x)
    assert seen - {0}


def test_raw_packing_for_tiny_streams():
    from metaq_utils.coding.context import RAW_CFG

    x = np.array([3, 0, 5, 1, 4, 2])  # a 6-value bias with its own 6-entry table
    p = CTX.encode(x, 6)
    assert p[0] == RAW_CFG and len(p) == 1 + 3  # 6 × 3 bits
    assert np.array_equal(CTX.decode(p, 6, 6), x)
    for q in (p[:-1], p + b"\x00", p[:-1] + bytes([p[-1] | 1])):  # length / padding bits
        with pytest.raises(CodecError):
            CTX.decode(q, 6, 6)
    with pytest.raises(CodecError):
        CTX.decode(bytes([RAW_CFG]) + b"\xff\xff\xff", 6, 6)  # 7 >= alphabet
    rng = np.random.default_rng(9)
    for _ in range(200):
        a = int(rng.integers(2, 300))
        x = rng.integers(0, a, int(rng.integers(1, 12)))
        p = CTX.encode(x, a)
        assert np.array_equal(CTX.decode(p, x.size, a), x)
