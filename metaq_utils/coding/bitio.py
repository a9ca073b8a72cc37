"""The codec interface and the bit-level pieces every codec shares (below both
:mod:`metaq_utils.coding.codecs` and :mod:`metaq_utils.coding.context`, so neither imports the other's
internals): :class:`CodecError`, LEB128 varints (:func:`encode_varint`, :class:`ByteReader`), MSB-first
fixed-width bit packing (:func:`pack_uint` / :func:`unpack_uint`), the argument checks every
``encode``/``decode`` starts with, the little-endian uint32 word conversions the ``constriction`` coders
need, and the abstract :class:`Codec`.

Moved here unchanged from ``codecs.py`` (issue 22: ``codecs`` imported ``context`` and ``context``
imported six private helpers back from ``codecs``); the helpers lost their leading underscore because
two modules use them. The byte layout of every payload is unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = [
    "MAX_ALPHABET",
    "CodecError",
    "encode_varint",
    "ByteReader",
    "pack_uint",
    "unpack_uint",
    "check_alphabet",
    "check_symbols",
    "check_decode_args",
    "open_payload",
    "bitlength",
    "words_from_bytes",
    "bytes_from_words",
    "strip_last_word",
    "Codec",
]

MAX_ALPHABET = 2**31  # largest alphabet any codec accepts (symbols must fit in int32 for constriction)


class CodecError(ValueError):
    """A payload could not be decoded (truncated, corrupted, or inconsistent with n/alphabet)."""


# ------------------------------------------------------------------------------------------------
# byte-level helpers shared with the file format


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 varint: 7 bits per byte, low bits first, high bit = "more bytes follow"."""
    value = int(value)
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class ByteReader:
    """Bounds-checked sequential reader over ``bytes``; every failure raises ``error(message)``."""

    def __init__(self, data: bytes, error: type[Exception] = CodecError, what: str = "payload"):
        self.data = data
        self.pos = 0
        self.error = error
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, k: int) -> bytes:
        if k < 0 or k > self.remaining:
            raise self.error(
                f"truncated {self.what}: need {k} bytes at offset {self.pos}, only {self.remaining} left"
            )
        chunk = self.data[self.pos : self.pos + k]
        self.pos += k
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self, max_value: int, name: str = "value") -> int:
        """Read a canonical varint and check ``0 <= value <= max_value``."""
        start = self.pos
        value = 0
        shift = 0
        while True:
            if self.pos >= len(self.data):
                raise self.error(f"truncated {self.what}: varint '{name}' at offset {start} runs past the end")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise self.error(f"corrupted {self.what}: varint '{name}' at offset {start} is too long")
        if self.pos - start > 1 and byte == 0:
            raise self.error(f"corrupted {self.what}: varint '{name}' at offset {start} is not canonical")
        if value > max_value:
            raise self.error(
                f"corrupted {self.what}: '{name}' = {value} at offset {start} exceeds the limit {max_value}"
            )
        return value

    def expect_end(self) -> None:
        if self.remaining:
            raise self.error(f"corrupted {self.what}: {self.remaining} unexpected trailing bytes")


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers (each ``< 2**width``) into ``ceil(len*width/8)`` bytes, MSB first,
    zero-padded."""
    values = np.asarray(values)
    if width == 0 or values.size == 0:
        return b""
    v = values.astype(np.uint64, copy=False).ravel()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((v[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_uint(data: bytes, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`; ``data`` must be exactly ``ceil(n*width/8)`` bytes with zero
    padding bits (else :class:`CodecError`). Returns ``int64``."""
    nbytes = (n * width + 7) // 8
    if len(data) != nbytes:
        raise CodecError(f"bit-packed data has {len(data)} bytes, expected {nbytes} for {n}×{width} bits")
    if width == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[n * width :].any():
        raise CodecError("bit-packed data has non-zero padding bits")
    bits = bits[: n * width].reshape(n, width).astype(np.uint64)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return (bits << shifts).sum(axis=1, dtype=np.uint64).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# validation helpers shared by every codec


def check_alphabet(alphabet_size: int) -> int:
    if isinstance(alphabet_size, (bool, np.bool_)) or not isinstance(alphabet_size, (int, np.integer)):
        raise ValueError(f"alphabet_size must be an int, got {type(alphabet_size).__name__}")
    alphabet_size = int(alphabet_size)
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise ValueError(f"alphabet_size must be in [1, {MAX_ALPHABET}], got {alphabet_size}")
    return alphabet_size


def check_symbols(symbols, alphabet_size: int) -> np.ndarray:
    alphabet_size = check_alphabet(alphabet_size)
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        raise ValueError(f"symbols must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"symbols must have an integer dtype, got {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"symbols must be non-negative, found {lo}")
    if hi >= alphabet_size:
        raise ValueError(f"symbol {hi} is outside the alphabet [0, {alphabet_size})")
    return arr.astype(np.int64, copy=False)


def check_decode_args(payload, n: int, alphabet_size: int) -> bytes:
    check_alphabet(alphabet_size)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    return bytes(payload)


def open_payload(name: str, payload, n: int, alphabet_size: int) -> "ByteReader | None":
    """The common start of every ``decode``: check the arguments, refuse a non-empty payload for
    ``n == 0`` (then return None: nothing to decode) and open a reader that raises CodecError."""
    payload = check_decode_args(payload, n, alphabet_size)
    if n == 0:
        if payload:
            raise CodecError(f"{name}: non-empty payload for n = 0")
        return None
    return ByteReader(payload, CodecError, f"{name} payload")


def bitlength(x: int) -> int:
    return int(x).bit_length()


def words_from_bytes(data: bytes) -> np.ndarray:
    """Little-endian bytes -> uint32 words, zero-padding the last word."""
    padded = data + b"\0" * (-len(data) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


def bytes_from_words(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()


def strip_last_word(data: bytes) -> bytes:
    """Drop up to 3 trailing zero bytes: ``words_from_bytes`` restores exactly the same words."""
    k = 0
    while k < 3 and k < len(data) and data[len(data) - 1 - k] == 0:
        k += 1
    return data[: len(data) - k]


# ------------------------------------------------------------------------------------------------
# the interface


class Codec(ABC):
    """A symbol-stream codec. ``name``: registry key; ``id``: stable 4-bit id for the file format."""

    name: str = ""
    id: int = -1

    @abstractmethod
    def encode(self, symbols: np.ndarray, alphabet_size: int) -> bytes:
        """Encode a 1-D array of ints in ``[0, alphabet_size)`` into a self-contained payload."""

    @abstractmethod
    def decode(self, payload: bytes, n: int, alphabet_size: int) -> np.ndarray:
        """Decode ``n`` symbols (``int64``) from a payload produced by :meth:`encode`."""

    def encoded_bits(self, symbols: np.ndarray, alphabet_size: int) -> int:
        """Exact size in bits of :meth:`encode`'s payload."""
        return 8 * len(self.encode(symbols, alphabet_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, id={self.id})"
