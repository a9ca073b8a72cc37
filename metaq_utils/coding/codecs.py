"""Entropy codecs for streams of quantized-weight symbols, with honest sizes.

One interface (in the spirit of ``constriction``: coders are objects, switching coder changes one
name)::

    codec = get_codec("range")
    payload = codec.encode(symbols, alphabet_size)    # -> bytes, self-contained
    symbols2 = codec.decode(payload, n, alphabet_size)  # -> np.ndarray[int64], == symbols

* ``symbols`` is a 1-D array of non-negative integers, each ``< alphabet_size`` (any integer
  dtype; it is validated, a ``ValueError`` names the problem). ``decode`` returns ``int64``.
* The payload is *self-contained*: it carries whatever table/model the codec needs (symbol counts
  for the range coder, code lengths for Huffman), so ``8 * len(payload)`` is the honest size in
  bits. What it does not carry is ``n`` and ``alphabet_size``: the container (the compressed file
  format, :mod:`metaq_utils.coding.fileformat`) knows them from the parameter shapes and the codebook.
* ``decode`` of a malformed payload raises :class:`CodecError` (a ``ValueError``); it validates
  every length/count against the bytes actually present before allocating.
* ``n == 0`` encodes to the empty payload for every codec.

Codecs (``CODECS``; the ``id`` is stable and used by the file format, never renumber):

==========  ==  ===================================================================================
name        id  what
==========  ==  ===================================================================================
raw         0   fixed-width bit packing, ``ceil(log2 alphabet_size)`` bits/symbol, MSB first;
                no table. Alphabet 1 costs 0 bits.
huffman     1   Huffman code (Huffman 1952) built with ``constriction.symbol.huffman``; the table is
                the code-length of each symbol (bit-packed). Payload bits = Σ count·length exactly.
range       2   range coding (Martin 1979; arithmetic coding, Witten-Neal-Cleary 1987) with
                ``constriction.stream.queue.RangeEncoder`` and a ``Categorical`` model built from
                the stored (optionally rounded) symbol counts. Size ≈ n·H(p) + table + a few bytes.
gzip9       3   DEFLATE level 9 (``zlib``, raw deflate stream: gzip's 18-byte wrapper/CRC is left
                out because the file format has its own checksum) of the symbols packed as
                uint8 (alphabet ≤ 256), little-endian uint16 (≤ 65,536) or uint32.
zstd22      4   Zstandard level 22 (``zstandard``), same packing, magic-less frame without content
                size, checksum or dictionary id (the container knows n and checks integrity).
context     5   context-adaptive range coding (DeepCABAC-like, :mod:`metaq_utils.coding.context`):
                a significance flag (symbol != most frequent) with neighbour contexts, then the
                value with an adaptive model; no table. ``encode`` also takes ``shapes=`` (a hint
                for the row stride; the chosen stride is stored in the payload).
==========  ==  ===================================================================================

Caveats:

* ``range`` depends on ``constriction``'s fixed-point quantization of ``Categorical(...,
  perfect=False)`` probabilities (exactly invertible, deterministic, but an implementation detail
  of the library); a file written with one ``constriction`` version is decoded with the same
  model only if that quantization does not change. ``tests/test_codecs.py`` pins exact sizes on
  fixed inputs to catch such a change.
* ``range`` stores counts *rounded* to ``m`` significant bits when that makes table + payload
  smaller (chosen per stream by minimising the estimated total size); the decoder rebuilds the
  identical integer counts, so decoding is exact — only the model is slightly approximate.
* ``huffman`` uses one ``constriction`` call per symbol in Python: about 0.3 µs/symbol to encode
  and 0.1 µs/symbol to decode (44,426 symbols: ~13 ms / ~5 ms on this machine).
* Huffman's and the range coder's ``decode`` check the payload against the decoded symbols'
  code lengths / information content, so an exhausted or over-long payload is detected.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod

import numpy as np

import constriction
import zstandard

from metaq_utils.coding.bitio import (
    MAX_ALPHABET,
    ByteReader,
    Codec,
    CodecError,
    bitlength,
    bytes_from_words,
    check_decode_args,
    check_symbols,
    encode_varint,
    open_payload,
    pack_uint,
    strip_last_word,
    unpack_uint,
    words_from_bytes,
)
from metaq_utils.coding.context import ContextCodec

__all__ = [
    "CodecError",
    "Codec",
    "RawCodec",
    "HuffmanCodec",
    "RangeCodec",
    "Gzip9Codec",
    "Zstd22Codec",
    "CODECS",
    "CODEC_BY_ID",
    "get_codec",
    "codec_by_id",
    "MAX_ALPHABET",
    "encode_varint",
    "ByteReader",
    "pack_uint",
    "unpack_uint",
    "ContextCodec",
]

# The interface, CodecError and the bit-level helpers are in metaq_utils.coding.bitio (shared with
# metaq_utils.coding.context); they are re-exported here under their old names.

# ------------------------------------------------------------------------------------------------
# band and table helpers of the Huffman and range codecs


def _open_band(symbols, alphabet_size: int) -> tuple[bytes, np.ndarray | None, int]:
    """The common start of a band codec's ``encode`` (Huffman, range): check the symbols and
    write the band header ``varint first, varint span``. Returns ``(head, rel, span)`` with
    ``rel = symbols − first``; ``rel`` is None when ``head`` is already the whole payload (no
    symbols: ``b""``; one distinct symbol: the header alone)."""
    s = check_symbols(symbols, alphabet_size)
    if s.size == 0:
        return b"", None, 0
    first, span = _band_header(s)
    head = encode_varint(first) + encode_varint(span)
    if span == 0:
        return head, None, 0
    return head, s - first, span


def _band_header(symbols: np.ndarray) -> tuple[int, int]:
    return int(symbols.min()), int(symbols.max()) - int(symbols.min())


def _read_band(reader: ByteReader, alphabet_size: int) -> tuple[int, int]:
    first = reader.varint(alphabet_size - 1, "first symbol")
    span = reader.varint(alphabet_size - 1 - first, "symbol span")
    return first, span


def _write_table(present: np.ndarray, values: np.ndarray, span: int) -> bytes:
    """Per-symbol table (positive ``values`` at band offsets ``present``, which include 0 and
    ``span``), in the smaller of two layouts, tagged by ``varint(2*width + layout)``:

    * dense  (layout 0): ``span+1`` values bit-packed with ``width`` bits, 0 = absent symbol;
    * sparse (layout 1): ``varint k``, the ``k−1`` gaps between present offsets minus 1 as
      varints, then the ``k`` values bit-packed — for bands with few present symbols (e.g. a
      few clusters of weights on a fine grid).
    """
    width = bitlength(int(values.max()))
    band = np.zeros(span + 1, dtype=np.int64)
    band[present] = values
    dense = encode_varint(2 * width) + pack_uint(band, width)
    if len(present) == span + 1:
        return dense
    gaps = np.diff(present) - 1
    sparse = (
        encode_varint(2 * width + 1)
        + encode_varint(len(present))
        + b"".join(encode_varint(int(g)) for g in gaps)
        + pack_uint(values, width)
    )
    return sparse if len(sparse) < len(dense) else dense


def _read_table(reader: ByteReader, span: int, max_width: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_write_table`: (present offsets, their positive values), both int64.
    Allocates only what the bytes present can describe."""
    tag = reader.varint(2 * max_width + 1, f"{what} table tag")
    width, layout = tag >> 1, tag & 1
    if width == 0:
        raise CodecError(f"{what}: zero table width with more than one symbol")
    if layout == 0:
        nbytes = ((span + 1) * width + 7) // 8
        band = unpack_uint(reader.take(nbytes), span + 1, width)
        present = np.flatnonzero(band)
        values = band[present]
    else:
        k = reader.varint(min(span + 1, reader.remaining + 2), f"{what} present-symbol count")
        if k < 2:
            raise CodecError(f"{what}: sparse table with {k} symbols")
        gaps = [reader.varint(span, f"{what} symbol gap") for _ in range(k - 1)]
        present = np.concatenate([[0], np.cumsum(np.asarray(gaps, dtype=np.int64) + 1)])
        values = unpack_uint(reader.take((k * width + 7) // 8), k, width)
        if (values == 0).any():
            raise CodecError(f"{what}: sparse table lists an absent symbol")
    if len(present) < 2 or present[0] != 0 or present[-1] != span:
        raise CodecError(f"{what}: table does not cover the band's first and last symbol")
    return present, values


class RawCodec(Codec):
    """Fixed-width bit packing: ``ceil(log2 alphabet_size)`` bits per symbol, MSB first, the last
    byte zero-padded. No table; the reference "no entropy coding" size."""

    name = "raw"
    id = 0

    @staticmethod
    def width(alphabet_size: int) -> int:
        return bitlength(alphabet_size - 1)

    def encode(self, symbols, alphabet_size):
        s = check_symbols(symbols, alphabet_size)
        return pack_uint(s, self.width(alphabet_size))

    def decode(self, payload, n, alphabet_size):
        payload = check_decode_args(payload, n, alphabet_size)
        s = unpack_uint(payload, n, self.width(alphabet_size))
        if s.size and int(s.max()) >= alphabet_size:
            raise CodecError(f"raw payload contains symbol {int(s.max())} >= alphabet size {alphabet_size}")
        return s


class _PackedBytesCodec(Codec):
    """Shared by gzip9/zstd22: symbols -> uint8/uint16/uint32 little-endian bytes -> compressor."""

    @staticmethod
    def dtype(alphabet_size: int) -> np.dtype:
        if alphabet_size <= 1 << 8:
            return np.dtype(np.uint8)
        if alphabet_size <= 1 << 16:
            return np.dtype("<u2")
        return np.dtype("<u4")

    @abstractmethod
    def _compress(self, data: bytes) -> bytes: ...

    @abstractmethod
    def _decompress(self, payload: bytes, size: int) -> bytes: ...

    def encode(self, symbols, alphabet_size):
        s = check_symbols(symbols, alphabet_size)
        if s.size == 0:
            return b""
        return self._compress(s.astype(self.dtype(alphabet_size)).tobytes())

    def decode(self, payload, n, alphabet_size):
        payload = check_decode_args(payload, n, alphabet_size)
        if n == 0:
            if payload:
                raise CodecError(f"{self.name}: non-empty payload for n = 0")
            return np.zeros(0, dtype=np.int64)
        dt = self.dtype(alphabet_size)
        size = n * dt.itemsize
        try:
            raw = self._decompress(payload, size)
        except CodecError:
            raise
        except Exception as exc:  # zlib.error, zstandard.ZstdError, ...
            raise CodecError(f"{self.name}: corrupted payload ({type(exc).__name__}: {exc})") from exc
        if len(raw) != size:
            raise CodecError(f"{self.name}: decompressed {len(raw)} bytes, expected {size}")
        s = np.frombuffer(raw, dtype=dt).astype(np.int64)
        if int(s.max()) >= alphabet_size:
            raise CodecError(f"{self.name}: symbol {int(s.max())} >= alphabet size {alphabet_size}")
        return s


class Gzip9Codec(_PackedBytesCodec):
    """DEFLATE (RFC 1951) at level 9 via ``zlib``, raw stream (no gzip/zlib wrapper: ``gzip.compress``
    would add 18 bytes of header and CRC-32/size trailer, ``zlib.compress`` 6)."""

    name = "gzip9"
    id = 3

    def _compress(self, data):
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # memLevel 8, as gzip -9 and gzip.compress
        return c.compress(data) + c.flush()

    def _decompress(self, payload, size):
        d = zlib.decompressobj(-15)
        out = d.decompress(payload, size + 1)  # one spare byte: a valid stream reaches its end
        if not d.eof or d.unconsumed_tail or d.unused_data:
            raise CodecError("gzip9: deflate stream is truncated, too long, or has trailing data")
        return out


class Zstd22Codec(_PackedBytesCodec):
    """Zstandard (RFC 8878) level 22 via ``zstandard``; magic-less frame
    (``FORMAT_ZSTD1_MAGICLESS``), no content size, no checksum, no dictionary id."""

    name = "zstd22"
    id = 4

    _PARAMS = zstandard.ZstdCompressionParameters.from_level(
        22,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=0,
        write_checksum=0,
        write_dict_id=0,
    )

    def _compress(self, data):
        return zstandard.ZstdCompressor(compression_params=self._PARAMS).compress(data)

    def _decompress(self, payload, size):
        d = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
        # bounded output (no decompression bomb), whole frame required, no trailing bytes allowed
        return d.decompress(payload, max_output_size=size, allow_extra_data=False)


class HuffmanCodec(Codec):
    """Huffman coding with ``constriction.symbol`` (``EncoderHuffmanTree``/``QueueEncoder``).

    Payload: ``varint first, varint span`` (the band ``[first, first+span]`` of symbols that
    occur), then — if more than one symbol occurs — the table of code lengths of the occurring
    symbols (see ``_write_table``: bit-packed over the band with 0 = absent, or a list of the
    occurring symbols when they are few), then the code bits as little-endian uint32 words with
    up to 3 trailing zero bytes dropped.

    Code lengths come from a Huffman tree built on the exact counts; the encoder and decoder then
    both build their trees from the dyadic probabilities ``2**-length`` (for which the Huffman
    lengths are exactly those lengths), so only the lengths need storing. A single distinct symbol
    costs 0 bits per symbol (table only).
    """

    name = "huffman"
    id = 1
    MAX_LENGTH = 63

    @staticmethod
    def code_lengths(counts: np.ndarray) -> np.ndarray:
        """Huffman code lengths (int64) for positive ``counts`` (len ≥ 2), from constriction's tree."""
        tree = constriction.symbol.huffman.EncoderHuffmanTree(np.asarray(counts, dtype=np.float64))
        lengths = np.empty(len(counts), dtype=np.int64)
        for r in range(len(counts)):
            enc = constriction.symbol.QueueEncoder()
            enc.encode_symbol(r, tree)
            lengths[r] = enc.get_compressed_and_bitrate()[1]
        return lengths

    def encode(self, symbols, alphabet_size):
        head, rel, span = _open_band(symbols, alphabet_size)
        if rel is None:
            return head
        counts = np.bincount(rel, minlength=span + 1)
        present = np.flatnonzero(counts)
        lengths = self.code_lengths(counts[present])
        rank = np.zeros(span + 1, dtype=np.int64)
        rank[present] = np.arange(len(present))
        ranks = rank[rel]
        tree = constriction.symbol.huffman.EncoderHuffmanTree(np.ldexp(1.0, -lengths))
        enc = constriction.symbol.QueueEncoder()
        for r in ranks.tolist():
            enc.encode_symbol(r, tree)
        words, nbits = enc.get_compressed_and_bitrate()
        expected = int((counts[present] * lengths).sum())
        if nbits != expected:  # would mean the dyadic tree differs from the stored lengths
            raise RuntimeError(f"huffman: coded {nbits} bits, expected Σ count·length = {expected}")
        return head + _write_table(present, lengths, span) + strip_last_word(bytes_from_words(words))

    def decode(self, payload, n, alphabet_size):
        reader = open_payload("huffman", payload, n, alphabet_size)
        if reader is None:
            return np.zeros(0, dtype=np.int64)
        first, span = _read_band(reader, alphabet_size)
        if span == 0:
            reader.expect_end()
            return np.full(n, first, dtype=np.int64)
        present, lengths = _read_table(reader, span, bitlength(self.MAX_LENGTH), "huffman")
        maxlen = int(lengths.max())
        if maxlen > self.MAX_LENGTH:
            raise CodecError(f"huffman: code length {maxlen} exceeds {self.MAX_LENGTH}")
        kraft = sum(1 << (maxlen - int(l)) for l in lengths)
        if kraft != 1 << maxlen:
            raise CodecError("huffman: code lengths do not form a complete prefix code")
        coded = reader.take(reader.remaining)
        avail_bits = 8 * (len(coded) + (-len(coded) % 4))
        if n * int(lengths.min()) > avail_bits:
            raise CodecError(f"huffman: {len(coded)} payload bytes cannot hold {n} symbols")
        tree = constriction.symbol.huffman.DecoderHuffmanTree(np.ldexp(1.0, -lengths))
        dec = constriction.symbol.QueueDecoder(words_from_bytes(coded))
        try:
            ranks = np.fromiter((dec.decode_symbol(tree) for _ in range(n)), dtype=np.int64, count=n)
        except Exception as exc:
            raise CodecError(f"huffman: corrupted payload ({exc})") from exc
        nbits = int(lengths[ranks].sum())
        full = 4 * ((nbits + 31) // 32)
        if not full - 3 <= len(coded) <= full:
            raise CodecError(f"huffman: payload has {len(coded)} code bytes, the {n} symbols need {full}")
        return present[ranks] + first


class RangeCodec(Codec):
    """Range coding with ``constriction.stream.queue.RangeEncoder`` and a
    ``constriction.stream.model.Categorical(counts, perfect=False)`` model.

    Payload: ``varint first, varint span`` (band of occurring symbols); if more than one symbol
    occurs: ``varint m`` and the table of *count indices* of the occurring symbols (see
    ``_write_table``: bit-packed over the band with 0 = absent, or a list of the occurring
    symbols when they are few), then the range coder's uint32 words, little-endian, trailing zero
    bytes dropped (the decoder reads zeros past the end of its buffer; the encoder checks this by
    decoding).

    Counts are stored rounded to ``m+1`` significant bits (exact when ``c < 2**(m+1)``):
    ``c' = mant << e`` with ``mant`` in ``[2**m, 2**(m+1))``; index = ``c`` for small counts, else
    ``2**(m+1) + (e-1)*2**m + (mant - 2**m)``. The encoder picks the ``m`` that minimises
    (table bits + Σ count·log2(Σc'/c')); the largest ``m`` stores every count exactly.
    The model only spans the occurring symbols, so no probability mass is wasted on absent ones.
    """

    name = "range"
    id = 2
    MAX_M = 40

    @staticmethod
    def quantize_counts(counts: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (indices, rounded counts) for non-negative int64 ``counts``; 0 stays 0."""
        c = np.asarray(counts, dtype=np.int64)
        idx = c.copy()
        rounded = c.copy()
        big = c >= (1 << (m + 1))
        if big.any():
            cb = c[big]
            e = np.frexp(cb.astype(np.float64))[1].astype(np.int64) - (m + 1)  # exact bit length - (m+1)
            mant = (cb + (np.int64(1) << (e - 1))) >> e
            carry = mant == (1 << (m + 1))
            mant = np.where(carry, mant >> 1, mant)
            e = e + carry
            idx[big] = (1 << (m + 1)) + (e - 1) * (1 << m) + (mant - (1 << m))
            rounded[big] = mant << e
        return idx, rounded

    @staticmethod
    def counts_from_indices(idx: np.ndarray, m: int) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = idx.copy()
        big = idx >= (1 << (m + 1))
        if big.any():
            t = idx[big] - (1 << (m + 1))
            e = t // (1 << m) + 1
            mant = (1 << m) + t % (1 << m)
            if int((e + m + 1).max()) > 52:  # keep counts exact in float64
                raise CodecError("range: stored count is too large")
            out[big] = mant << e
        return out

    @staticmethod
    def _information_bits(counts: np.ndarray, model_counts: np.ndarray) -> float:
        present = counts > 0
        p = model_counts[present] / model_counts[present].sum()
        return float(-(counts[present] * np.log2(p)).sum())

    @staticmethod
    def _model(model_counts: np.ndarray):
        return constriction.stream.model.Categorical(model_counts.astype(np.float64), perfect=False)

    def encode(self, symbols, alphabet_size):
        head, rel, span = _open_band(symbols, alphabet_size)
        if rel is None:
            return head
        counts = np.bincount(rel, minlength=span + 1).astype(np.int64)
        present = np.flatnonzero(counts)
        best = None
        for m in range(0, bitlength(int(counts.max()))):
            idx, rounded = self.quantize_counts(counts[present], m)
            table = encode_varint(m) + _write_table(present, idx, span)
            est = 8 * len(table) + self._information_bits(counts[present], rounded)
            if best is None or est < best[0]:
                best = (est, table, rounded)
        _, table, rounded = best
        rank = np.zeros(span + 1, dtype=np.int64)
        rank[present] = np.arange(len(present))
        ranks = rank[rel].astype(np.int32)
        model = self._model(rounded)
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(ranks, model)
        full = bytes_from_words(enc.get_compressed())
        coded = full.rstrip(b"\0")
        check = constriction.stream.queue.RangeDecoder(words_from_bytes(coded)).decode(model, len(ranks))
        if not np.array_equal(check, ranks):  # never observed; keep the exact words then
            coded = strip_last_word(full)
        return head + table + coded

    def decode(self, payload, n, alphabet_size):
        reader = open_payload("range", payload, n, alphabet_size)
        if reader is None:
            return np.zeros(0, dtype=np.int64)
        first, span = _read_band(reader, alphabet_size)
        if span == 0:
            reader.expect_end()
            return np.full(n, first, dtype=np.int64)
        m = reader.varint(self.MAX_M, "count precision m")
        present, idx = _read_table(reader, span, 63, "range")
        model_counts = self.counts_from_indices(idx, m)
        coded = reader.take(reader.remaining)
        model = self._model(model_counts)
        try:
            ranks = constriction.stream.queue.RangeDecoder(words_from_bytes(coded)).decode(model, n)
        except Exception as exc:
            raise CodecError(f"range: corrupted payload ({exc})") from exc
        ranks = np.asarray(ranks, dtype=np.int64)
        if ranks.size != n or (n and (ranks.min() < 0 or ranks.max() >= len(present))):
            raise CodecError("range: decoder returned out-of-model symbols")
        # Consistency: n symbols of this information content cannot come from fewer bytes (a
        # truncated or garbage stream decodes "from zeros" past its end).
        info = self._information_bits(np.bincount(ranks, minlength=len(present)), model_counts)
        if info > 1.05 * 8 * len(coded) + 256:
            raise CodecError(
                f"range: {n} decoded symbols carry {info:.0f} bits but the payload has only {8 * len(coded)}"
            )
        return present[ranks] + first


CODECS: dict[str, Codec] = {
    c.name: c for c in (RawCodec(), HuffmanCodec(), RangeCodec(), Gzip9Codec(), Zstd22Codec(), ContextCodec())
}
CODEC_BY_ID: dict[int, Codec] = {c.id: c for c in CODECS.values()}


def get_codec(name: str) -> Codec:
    """The codec registered under ``name`` (one of ``CODECS``); ``ValueError`` for unknown names."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(sorted(CODECS))}") from None


def codec_by_id(codec_id: int) -> Codec:
    """The codec with file-format id ``codec_id``; :class:`CodecError` for unknown ids."""
    try:
        return CODEC_BY_ID[codec_id]
    except KeyError:
        raise CodecError(f"unknown codec id {codec_id}") from None
