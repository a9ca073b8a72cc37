"""Context-adaptive arithmetic coding of quantized sparse weights (codec ``"context"``, id 5).

A DeepCABAC-like codec (Wiedemann et al. 2020, "DeepCABAC: A Universal Compression Algorithm
for Deep Neural Networks"), kept small and exact. The arithmetic coding itself is
``constriction.stream.queue.RangeEncoder``/``RangeDecoder`` with
``constriction.stream.model.Categorical(perfect=False)`` models; only the *modelling* is here.

Binarisation. Let ``z`` be the most frequent symbol of the stream (for a pruned layer written
with a table that contains 0.0: the index of 0.0). Every symbol ``s`` is coded as

1. a *significance flag* ``s != z`` with an adaptive binary model chosen by a context made of
   already coded flags (see the schemes below);
2. if significant, its value, with one of these *value modes* (the encoder codes the stream with
   each candidate, keeps the shortest payload and stores the mode):

   * mode 0: ``s`` itself with one adaptive categorical model over the symbols of the band
     ``[first, first + span]`` (the smallest and largest significant symbols) other than ``z``;
   * modes 1..6 (binarised, DeepCABAC-like): the signed level ``l = s − z`` (for a zero-centred
     grid the grid level; for a sorted table containing 0.0 the rank offset from 0.0) as
     a *sign flag* (only when both signs occur in the band; context = sign of the previous
     significant level × sign of the level at position i−1, 9 contexts), then unary flags
     ``|l| > k`` for ``k = 1 .. min(U, amax − 1)`` (``amax`` = the band's largest magnitude on
     that sign; context = (k, sign, min(|level(i−1)|, PC) [× min(|previous significant level|,
     PC) for "both"])), then, when all U flags were 1 and ``amax > U + 1``, the remainder
     ``|l| − U − 1`` with one adaptive categorical model of size ``max(amax) − U``. The six modes
     are (kind, PC, U) = ``_VMODES``. Binary models here halve at ``BIN_LIMIT = 2**10``.
     Contexts use the levels decoded so far capped at ``U + 1``, so all binary events of all
     values are coded before all remainders.

All flags are coded first, then all values (the flag contexts only depend on flags and the value
models only on flags and earlier values, so the decoder can do the same; it is one range-coder
stream).

Flag context schemes (``sig(j)`` = flag of position ``j``, 0 before the stream start; the
*stride* is a row length, e.g. ``prod(shape[1:])`` of a weight tensor: the flag one row earlier
is the same input of the previous output neuron, so dead inputs (columns) and dead neurons (rows)
both become predictable)::

    scheme 0   1 context    (iid)
    scheme 1   2 contexts   sig(i−1)
    scheme 2   4 contexts   sig(i−1) + 2·sig(i−stride)
    scheme 3   9 contexts   (sig(i−1) + sig(i−2)) + 3·(sig(i−stride) + sig(i−2·stride))
    scheme 4   8 contexts   sig(i−1) + 2·min(col, 1) + 4·min(row, 1)
    scheme 5  18 contexts   sig(i−1) + 2·min(col, 2) + 6·min(row, 2)

where, cutting the stream into rows of ``stride`` symbols, ``col`` = the number of significant
flags above position i in its column and ``row`` = the number before it in its row (dead inputs
such as the always-black border pixels of MNIST in an fc1 matrix, and dead neurons).

The encoder computes the exact adaptive code length of every (scheme, stride) candidate — strides
come from the ``shapes`` hint the file format passes (``prod(shape[1:])`` and ``shape[-1]`` of
the first tensor); without it only schemes 0 and 1 are tried — and keeps the cheapest; the choice
is stored in the payload, so decoding needs nothing but the payload, ``n`` and the alphabet size.

Adaptive models (no table is stored): every symbol count starts at ``INIT = 1`` and grows by
``INC = 2`` after each coded symbol (a Krichevsky–Trofimov-like estimator: the prior weighs half
an observation); when a model's total exceeds ``LIMIT`` (for the significance flags one of
``FLAG_LIMITS`` = 2**13, 2**8, 2**10, 2**6, chosen by the encoder with the scheme and stored in
``cfg``; ``2**10`` for the binarised value flags, ``2**16`` for the categorical models)
all its counts are halved, rounding up (``(c + 1) // 2``), so the models follow drifting
statistics. The probabilities handed to ``Categorical`` are these integer counts as float64
(exact), quantized by constriction identically on both sides.

Payload::

    varint cfg     0: every symbol equals z (nothing else but z follows);
                   1 + scheme + 7 · (value mode + 7 · flag limit index) otherwise (value mode 0
                   with flag limit 2**13 is exactly the earlier single-model payload);
                   7 (RAW_CFG): raw packing, only ``ceil(n·w/8)`` bytes follow: the symbols as
                   w = bit_length(alphabet_size − 1)-bit big-endian fields, zero padding (chosen
                   when strictly shorter, e.g. a small bias vector; nothing below follows)
    varint z
    [varint stride]           schemes 2 and 3
    varint first, varint span the band of significant symbols
    range-coder words         little-endian uint32, trailing zero bytes dropped: the flags, then
                              the value mode's binary events, then its categorical symbols

``n == 0`` encodes to the empty payload. The decoder re-encodes what it decoded and requires the
identical bytes (the raw packing: exact length, zero padding, symbols in the alphabet), so any
truncated, extended or corrupted payload raises :class:`CodecError` (a payload is accepted iff
it is exactly the encoding of the decoded symbols under its stored configuration -- scheme,
stride, flag limit, value mode -- which the encoder chooses as the shortest).

Speed: encoding and decoding are Python loops over the symbols with one constriction call per
decoded symbol, about 2–4 µs per symbol (LeNet-5's 44,426 weights: well under a second).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import constriction

from metaq_utils.coding.bitio import (
    Codec,
    CodecError,
    bytes_from_words,
    check_symbols,
    encode_varint,
    open_payload,
    strip_last_word,
    words_from_bytes,
)

__all__ = ["ContextCodec", "INIT", "INC", "FLAG_LIMIT", "FLAG_LIMITS", "VALUE_LIMIT", "BIN_LIMIT", "SCHEMES", "candidate_strides"]

INIT = 1
INC = 2
FLAG_LIMIT = 2**13
VALUE_LIMIT = 2**16
SCHEMES = (0, 1, 2, 3, 4, 5)
_STRIDED = (2, 3, 4, 5)
_N_CFG = len(SCHEMES) + 1  # cfg = 1 + scheme + _N_CFG · (value mode + _N_VM · flag limit index)
FLAG_LIMITS = (FLAG_LIMIT, 2**8, 2**10, 2**6)  # halving limits of the flag models the encoder tries
RAW_CFG = 7  # cfg ≡ 0 (mod 7) is no scheme: 7 marks the raw fixed-width packing
_N_CTX = {0: 1, 1: 2, 2: 4, 3: 9, 4: 8, 5: 18}
_LEVELS = {4: 1, 5: 2}  # schemes 4/5: cap of the column / row counts
_MAX_STRIDE = 2**24
_CHUNK = 1 << 20  # float64 entries per batched encode call

_FAMILY = constriction.stream.model.Categorical(perfect=False)


def candidate_strides(shapes: Sequence[Sequence[int]] | None) -> list[int]:
    """Row lengths worth trying for the first tensor of a group (empty without a shape hint)."""
    if not shapes:
        return []
    shape = tuple(int(d) for d in shapes[0])
    out = []
    if len(shape) >= 2:
        for s in (int(np.prod(shape[1:], dtype=np.int64)), shape[-1]):
            if s > 1 and s not in out:
                out.append(s)
    return out


def _contexts(sig: np.ndarray, scheme: int, stride: int) -> np.ndarray:
    """Context of every flag from the (known) flags, vectorised; the decoder's loop matches it."""
    n = sig.size
    s = sig.astype(np.int64)

    def shifted(k):
        out = np.zeros(n, dtype=np.int64)
        if k < n:
            out[k:] = s[: n - k]
        return out

    if scheme == 0:
        return np.zeros(n, dtype=np.int64)
    if scheme == 1:
        return shifted(1)
    if scheme == 2:
        return shifted(1) + 2 * shifted(stride)
    if scheme == 3:
        return shifted(1) + shifted(2) + 3 * (shifted(stride) + shifted(2 * stride))
    cap = _LEVELS[scheme]
    rows = -(-n // stride)
    grid = np.zeros(rows * stride, dtype=np.int64)
    grid[:n] = s
    grid = grid.reshape(rows, stride)
    col = np.zeros_like(grid)
    col[1:] = np.cumsum(grid, axis=0)[:-1]
    row = np.zeros_like(grid)
    row[:, 1:] = np.cumsum(grid, axis=1)[:, :-1]
    col = np.minimum(col.ravel()[:n], cap)
    row = np.minimum(row.ravel()[:n], cap)
    return shifted(1) + 2 * col + 2 * (cap + 1) * row


def _adapt_bit(a0: int, a1: int, bit: int, limit: int) -> tuple[int, int]:
    """The adaptive binary model's update after coding ``bit`` with counts ``(a0, a1)`` (the one
    rule of the encoder's causal counts, the bin models and the decoder): the coded bit's count
    grows by INC; above ``limit`` both halve, rounding up."""
    if bit:
        a1 += INC
    else:
        a0 += INC
    if a0 + a1 > limit:
        a0, a1 = (a0 + 1) // 2, (a1 + 1) // 2
    return a0, a1


def _adapt_value(cnt: np.ndarray, total: int, r: int) -> tuple[np.ndarray, int]:
    """The adaptive value model's update after coding rank ``r`` (encoder and decoder): its count
    grows by INC; above VALUE_LIMIT all counts halve, rounding up."""
    cnt[r] += INC
    total += INC
    if total > VALUE_LIMIT:
        cnt = (cnt + 1) // 2
        total = int(cnt.sum())
    return cnt, total


def _flag_counts(sig: np.ndarray, ctx: np.ndarray, n_ctx: int, limit: int = FLAG_LIMIT) -> np.ndarray:
    """(n, 2) float64 causal counts [c(not significant), c(significant)] of each flag's context."""
    c0 = [INIT] * n_ctx
    c1 = [INIT] * n_ctx
    out = np.empty((sig.size, 2), dtype=np.float64)
    rows0 = [0] * sig.size
    rows1 = [0] * sig.size
    for i, (b, c) in enumerate(zip(sig.tolist(), ctx.tolist())):
        a0, a1 = c0[c], c1[c]
        rows0[i] = a0
        rows1[i] = a1
        c0[c], c1[c] = _adapt_bit(a0, a1, b, limit)
    out[:, 0] = rows0
    out[:, 1] = rows1
    return out


def _value_count_chunks(ranks: np.ndarray, m: int):
    """Yield ``(start, counts)``: the (rows, m) float64 causal counts of the adaptive value model
    for ``ranks[start : start + rows]``, in chunks of at most ``_CHUNK`` entries."""
    cnt = np.full(m, INIT, dtype=np.int64)
    total = INIT * m
    step = max(1, _CHUNK // m)
    rl = ranks.tolist()
    for a in range(0, len(rl), step):
        part = rl[a : a + step]
        out = np.empty((len(part), m), dtype=np.float64)
        for i, r in enumerate(part):
            out[i] = cnt
            cnt, total = _adapt_value(cnt, total, r)
        yield a, out


def _bits(counts: np.ndarray, symbols: np.ndarray) -> float:
    """Ideal code length of ``symbols`` under the per-row ``counts``."""
    if symbols.size == 0:
        return 0.0
    p = counts[np.arange(symbols.size), symbols] / counts.sum(axis=1)
    return float(-np.log2(p).sum())


# Binarised value model (value modes 1..len(_VMODES)): (magnitude context kind, cap PC, unary cap U).
# "left": min(|level(i-1)|, PC); "both": that and min(|previous significant level|, PC).
_VMODES = (("left", 2, 14), ("left", 3, 14), ("both", 2, 14), ("both", 3, 14), ("left", 2, 4), ("both", 3, 4))
BIN_LIMIT = 2**10
_N_VM = len(_VMODES) + 1


def _sgn3(level: int) -> int:
    return 0 if level == 0 else (1 if level < 0 else 2)


class _BinModel:
    """Adaptive binary models indexed by an integer context (lazily created)."""

    def __init__(self):
        self.c0: dict[int, int] = {}
        self.c1: dict[int, int] = {}

    def counts(self, c: int) -> tuple[int, int]:
        return self.c0.get(c, INIT), self.c1.get(c, INIT)

    def update(self, c: int, a0: int, a1: int, bit: int) -> None:
        self.c0[c], self.c1[c] = _adapt_bit(a0, a1, bit, BIN_LIMIT)


class _BinCoder:
    """One pass of the binarised value model over the significant levels in position order; the
    encoder (``levels`` given) and the decoder (``decode_bit`` given) share it so their contexts
    and counts agree. ``levels`` are signed (symbol − z), ``positions`` the flags' indices."""

    def __init__(self, vmode: int, nneg: int, npos: int):
        self.kind, self.pc, self.u = _VMODES[vmode - 1]
        self.nneg, self.npos = nneg, npos
        self.nm = (self.pc + 1) * ((self.pc + 1) if self.kind == "both" else 1)
        self.rem_m = max(nneg, npos) - self.u  # remainder alphabet (a − U − 1 in [0, rem_m))

    def run(self, positions, n: int, levels=None, decode_bit=None):
        """Returns (bits, counts rows, capped levels or None, remainder flags list)."""
        model = _BinModel()
        lev = [0] * (n + 1)  # lev[p + 1]: capped level at p (|.| <= U + 1)
        ps = 0
        pa = 0
        bits: list[int] = []
        rows: list[tuple[int, int]] = []
        out = [] if levels is None else None
        need_rem = []
        both_signs = self.nneg > 0 and self.npos > 0
        u, pc, nm = self.u, self.pc, self.nm
        for j, p in enumerate(positions):
            left = lev[p]  # level at p - 1
            s1 = _sgn3(left)
            if levels is not None:
                lv = levels[j]
                neg = 1 if lv < 0 else 0
                a = -lv if neg else lv
            if both_signs:
                c = ps * 3 + s1
                a0, a1 = model.counts(c)
                if levels is None:
                    neg = decode_bit(a0, a1)
                else:
                    bits.append(neg)
                    rows.append((a0, a1))
                model.update(c, a0, a1, neg)
            elif levels is None:
                neg = 1 if self.npos <= 0 else 0
            amax = self.nneg if neg else self.npos
            mc = min(-left if left < 0 else left, pc)
            if self.kind == "both":
                mc += (pc + 1) * min(pa, pc)
            k = 1
            base = 9 + 2 * mc + neg
            while k <= u and k < amax:
                c = base + 2 * nm * (k - 1)
                a0, a1 = model.counts(c)
                if levels is None:
                    bit = decode_bit(a0, a1)
                else:
                    bit = 1 if a > k else 0
                    bits.append(bit)
                    rows.append((a0, a1))
                model.update(c, a0, a1, bit)
                if not bit:
                    break
                k += 1
            # k is the magnitude, unless k = U + 1 < amax: then a remainder a − U − 1 follows
            if levels is None:
                a = k
            capped = min(a, u + 1)
            rem = k > u and amax > u + 1
            need_rem.append(rem)
            lvc = -capped if neg else capped
            lev[p + 1] = lvc
            ps = 1 + neg
            pa = capped
            if out is not None:
                out.append(lvc)
        return bits, rows, out, need_rem


def _bin_encode_parts(levels: np.ndarray, positions: np.ndarray, n: int, vmode: int, nneg: int, npos: int):
    bc = _BinCoder(vmode, nneg, npos)
    lv = levels.tolist()
    bits, rows, _, need_rem = bc.run(positions.tolist(), n, levels=lv)
    rem = np.asarray([abs(v) - bc.u - 1 for v, r in zip(lv, need_rem) if r], dtype=np.int64)
    return (np.asarray(bits, dtype=np.int64), np.asarray(rows, dtype=np.float64).reshape(-1, 2), rem, bc.rem_m)


def _encode_stream(flags: np.ndarray, flag_counts: np.ndarray, ranks: np.ndarray, m: int,
                   vbits: np.ndarray | None = None, vrows: np.ndarray | None = None) -> bytes:
    """Flags, then the binarised value events (if any), then ``ranks`` under the adaptive
    categorical model of size ``m`` (the old value model, or the binarised remainders)."""
    enc = constriction.stream.queue.RangeEncoder()
    if flags.size:
        enc.encode(flags.astype(np.int32), _FAMILY, flag_counts)
    if vbits is not None and vbits.size:
        enc.encode(vbits.astype(np.int32), _FAMILY, vrows)
    if m > 1 and ranks.size:
        for a, counts in _value_count_chunks(ranks, m):
            enc.encode(ranks[a : a + len(counts)].astype(np.int32), _FAMILY, counts)
    return bytes_from_words(enc.get_compressed())


class ContextCodec(Codec):
    """Significance flag with neighbour contexts + adaptive value model, range coded (see module doc).

    ``encode(symbols, alphabet_size, shapes=None)``: ``shapes`` (optional) are the shapes of the
    tensors the stream is made of; they only propose row strides to try and are not needed to
    decode. The file format passes them (``uses_shapes``)."""

    name = "context"
    id = 5
    uses_shapes = True

    def encode(self, symbols, alphabet_size, *, shapes: Sequence[Sequence[int]] | None = None,
               vmodes: Sequence[int] | None = None) -> bytes:
        """``vmodes``: the value modes to try (default all; ``(0,)``: the single categorical model
        only). A short stream may come out as the raw fixed-width packing (``cfg = RAW_CFG``) when
        that is strictly smaller."""
        s = check_symbols(symbols, alphabet_size)
        out = self._encode_coded(s, shapes, vmodes)
        if out and out[0] != 0 and alphabet_size >= 2:
            w = (int(alphabet_size) - 1).bit_length()
            if 1 + (s.size * w + 7) // 8 < len(out):
                bits = ((s[:, None] >> np.arange(w - 1, -1, -1)) & 1).astype(np.uint8).ravel()
                return encode_varint(RAW_CFG) + np.packbits(bits).tobytes()
        return out

    def _encode_coded(self, s: np.ndarray, shapes, vmodes) -> bytes:
        n = s.size
        if n == 0:
            return b""
        z = int(np.argmax(np.bincount(s)))
        sig = s != z
        if not sig.any():
            return encode_varint(0) + encode_varint(z)
        flags = sig.astype(np.int64)
        best = None
        configs = [(0, 0), (1, 0)] + [(sc, st) for st in candidate_strides(shapes) for sc in _STRIDED]
        for scheme, stride in configs:
            if stride > min(n, _MAX_STRIDE):
                continue
            ctx = _contexts(flags, scheme, stride)
            for li, limit in enumerate(FLAG_LIMITS):
                counts = _flag_counts(flags, ctx, _N_CTX[scheme], limit)
                bits = _bits(counts, flags) + 8 * (li > 1)  # index 2, 3: a 2-byte cfg varint
                if best is None or bits < best[0]:
                    best = (bits, scheme, stride, counts, li)
        _, scheme, stride, flag_counts, li = best
        vals = s[sig]
        first = int(vals.min())
        span = int(vals.max()) - first
        head0 = encode_varint(z)
        if scheme in _STRIDED:
            head0 += encode_varint(stride)
        head0 += encode_varint(first) + encode_varint(span)
        if vmodes is None:
            vmodes = range(len(_VMODES) + 1)
        vmodes = sorted({int(v) for v in vmodes})
        if not vmodes or not all(0 <= v <= len(_VMODES) for v in vmodes):
            raise ValueError(f"context: vmodes must be a non-empty subset of 0..{len(_VMODES)}")
        best_v = None
        if 0 in vmodes:  # value model 0: one adaptive categorical model over the band (the old coding)
            ranks, m = self._ranks(vals, z, first, span)
            best_v = (strip_last_word(_encode_stream(flags, flag_counts, ranks, m)), 0)
        # value modes 1..: binarised levels; exact sizes of the two cheapest by ideal length
        levels = vals - z
        positions = np.flatnonzero(sig)
        nneg, npos = max(0, z - first), max(0, first + span - z)
        est = []
        for vm in (v for v in vmodes if v):
            vb, vr, rem, rm = _bin_encode_parts(levels, positions, n, vm, nneg, npos)
            bits = _bits(vr, vb) if vb.size else 0.0
            if rm > 1 and rem.size:
                bits += sum(_bits(c, rem[a : a + len(c)]) for a, c in _value_count_chunks(rem, rm))
            est.append((bits, vm, vb, vr, rem, rm))
        est.sort(key=lambda e: e[0])
        for _, vm, vb, vr, rem, rm in est[:2]:
            code = strip_last_word(_encode_stream(flags, flag_counts, rem, rm, vb, vr))
            if best_v is None or len(code) < len(best_v[0]):
                best_v = (code, vm)
        code, vm = best_v
        return encode_varint(1 + scheme + _N_CFG * (vm + _N_VM * li)) + head0 + code

    @staticmethod
    def _ranks(vals: np.ndarray, z: int, first: int, span: int) -> tuple[np.ndarray, int]:
        """Band offsets with z taken out: rank = offset − (offset > z − first)."""
        off = vals - first
        zo = z - first
        m = span + 1 - (1 if 0 <= zo <= span else 0)
        if 0 <= zo <= span:
            off = off - (off > zo)
        return off.astype(np.int64), m

    def encoded_bits(self, symbols, alphabet_size, *, shapes=None) -> int:
        return 8 * len(self.encode(symbols, alphabet_size, shapes=shapes))

    def decode(self, payload, n, alphabet_size):
        r = open_payload("context", payload, n, alphabet_size)
        if r is None:
            return np.zeros(0, dtype=np.int64)
        cfg = r.varint(_N_CFG * _N_VM * len(FLAG_LIMITS) - 1, "scheme")
        if cfg == RAW_CFG:
            return self._decode_raw(r.take(r.remaining), n, alphabet_size)
        z = r.varint(alphabet_size - 1, "most frequent symbol")
        if cfg == 0:
            r.expect_end()
            return np.full(n, z, dtype=np.int64)
        if cfg % _N_CFG == 0:
            raise CodecError("context: invalid configuration")
        scheme = cfg % _N_CFG - 1
        vmode = cfg // _N_CFG % _N_VM
        limit = FLAG_LIMITS[cfg // (_N_CFG * _N_VM)]
        stride = r.varint(min(n, _MAX_STRIDE), "stride") if scheme in _STRIDED else 0
        if scheme in _STRIDED and stride == 0:
            raise CodecError("context: stride 0")
        first = r.varint(alphabet_size - 1, "first significant symbol")
        span = r.varint(alphabet_size - 1 - first, "significant symbol span")
        m = span + 1 - (1 if first <= z <= first + span else 0)
        if m < 1:
            raise CodecError("context: the significant band holds only the most frequent symbol")
        coded = r.take(r.remaining)
        words = words_from_bytes(coded)
        nneg, npos = max(0, z - first), max(0, first + span - z)
        vb = vr = None
        try:
            dec = constriction.stream.queue.RangeDecoder(words)
            flags, flag_counts = self._decode_flags(dec, n, scheme, stride, limit)
            k = int(flags.sum())
            if k == 0:
                raise CodecError("context: no significant symbol decoded for a non-trivial payload")
            if vmode == 0:
                ranks = self._decode_values(dec, k, m) if m > 1 else np.zeros(k, dtype=np.int64)
            else:
                positions = np.flatnonzero(flags)
                levels, vb, vr, ranks, rm = self._decode_binarised(dec, positions, n, vmode, nneg, npos)
        except CodecError:
            raise
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # constriction raises ValueError / pyo3 PanicException
            raise CodecError(f"context: corrupted payload ({type(exc).__name__}: {exc})") from exc
        # Canonical check: the payload must be exactly what the encoder writes for these symbols
        # (detects truncation, trailing bytes and corruption that still decodes).
        if vmode == 0:
            again = strip_last_word(_encode_stream(flags, flag_counts, ranks, m))
            vals = ranks + first
            zo = z - first
            if 0 <= zo <= span:
                vals = vals + (ranks >= zo)
        else:
            vals = levels + z
            if int(vals.min()) != first or int(vals.max()) != first + span:
                raise CodecError("context: decoded values do not span the stored band")
            again = strip_last_word(_encode_stream(flags, flag_counts, ranks, rm, vb, vr))
        if again != coded:
            raise CodecError(
                f"context: payload is not the encoding of the decoded symbols (truncated or corrupted; "
                f"{len(coded)} code bytes, re-encoding gives {len(again)})"
            )
        out = np.full(n, z, dtype=np.int64)
        out[flags.astype(bool)] = vals
        if int(out.max()) >= alphabet_size or int(out.min()) < 0:
            raise CodecError("context: decoded symbol outside the alphabet")
        return out

    @staticmethod
    def _decode_raw(data: bytes, n: int, alphabet_size: int) -> np.ndarray:
        if alphabet_size < 2:
            raise CodecError("context: raw packing needs an alphabet of at least 2 symbols")
        w = (int(alphabet_size) - 1).bit_length()
        if len(data) != (n * w + 7) // 8:
            raise CodecError(f"context: raw packing of {n} symbols needs {(n * w + 7) // 8} bytes, got {len(data)}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        if bits[n * w :].any():
            raise CodecError("context: non-zero padding bits in a raw packing")
        out = (bits[: n * w].reshape(n, w).astype(np.int64) << np.arange(w - 1, -1, -1)).sum(axis=1)
        if int(out.max()) >= alphabet_size:
            raise CodecError("context: decoded symbol outside the alphabet")
        return out.astype(np.int64)

    @staticmethod
    def _decode_binarised(dec, positions: np.ndarray, n: int, vmode: int, nneg: int, npos: int):
        bc = _BinCoder(vmode, nneg, npos)
        row = np.empty((1, 2), dtype=np.float64)
        decode = dec.decode
        fam = _FAMILY

        def decode_bit(a0, a1):
            row[0, 0] = a0
            row[0, 1] = a1
            return int(decode(fam, row)[0])

        bits, rows, capped, need_rem = bc.run(positions.tolist(), n, decode_bit=decode_bit)
        # re-derive the event rows exactly as the encoder does (for the canonical re-encoding)
        levels = np.asarray(capped, dtype=np.int64)
        need = np.asarray(need_rem, dtype=bool)
        nr = int(need.sum())
        rm = bc.rem_m
        if nr:
            rem = ContextCodec._decode_values(dec, nr, rm) if rm > 1 else np.zeros(nr, dtype=np.int64)
            mag = np.abs(levels[need]) + rem  # capped = U + 1; a = U + 1 + r
            levels[need] = np.where(levels[need] < 0, -mag, mag)
        else:
            rem = np.zeros(0, dtype=np.int64)
        vb, vr, rem2, rm2 = _bin_encode_parts(levels, positions, n, vmode, nneg, npos)
        return levels, vb, vr, rem, rm

    @staticmethod
    def _decode_flags(dec, n: int, scheme: int, stride: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        n_ctx = _N_CTX[scheme]
        c0 = [INIT] * n_ctx
        c1 = [INIT] * n_ctx
        pad = 2 * stride + 2 if scheme in (2, 3) else 2
        sig = [0] * (n + pad)
        cap = _LEVELS.get(scheme, 0)
        colc = [0] * (stride if scheme in _LEVELS else 0)
        rowc = 0
        pos = 0  # column of position i
        counts = np.empty((n, 2), dtype=np.float64)
        decode = dec.decode
        fam = _FAMILY
        for i in range(n):
            j = i + pad
            if scheme == 0:
                c = 0
            elif scheme == 1:
                c = sig[j - 1]
            elif scheme == 2:
                c = sig[j - 1] + 2 * sig[j - stride]
            elif scheme == 3:
                c = sig[j - 1] + sig[j - 2] + 3 * (sig[j - stride] + sig[j - 2 * stride])
            else:
                if pos == stride:
                    pos = 0
                    rowc = 0
                c = sig[j - 1] + 2 * colc[pos] + 2 * (cap + 1) * rowc
            a0, a1 = c0[c], c1[c]
            row = counts[i : i + 1]
            row[0, 0] = a0
            row[0, 1] = a1
            b = int(decode(fam, row)[0])
            if b:
                sig[j] = 1
                if cap:
                    if colc[pos] < cap:
                        colc[pos] += 1
                    if rowc < cap:
                        rowc += 1
            pos += 1
            c0[c], c1[c] = _adapt_bit(a0, a1, b, limit)
        return np.asarray(sig[pad:], dtype=np.int64), counts

    @staticmethod
    def _decode_values(dec, k: int, m: int) -> np.ndarray:
        cnt = np.full(m, INIT, dtype=np.int64)
        total = INIT * m
        row = np.empty((1, m), dtype=np.float64)
        ranks = np.empty(k, dtype=np.int64)
        decode = dec.decode
        fam = _FAMILY
        for i in range(k):
            row[0] = cnt
            r = int(decode(fam, row)[0])
            ranks[i] = r
            cnt, total = _adapt_value(cnt, total, r)
        return ranks
