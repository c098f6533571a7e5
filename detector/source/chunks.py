"""A lossless, compact codec for one chunk of one time series.

`encode_chunk` turns timestamps (float64 unix seconds, finite, strictly increasing) and
values (float64, any bit pattern: NaN payloads such as the Prometheus stale marker,
+-Inf, -0.0) into bytes; `decode_chunk` gives both arrays back bit for bit;
`chunk_count` reads the number of samples from the header alone. Malformed input makes
`decode_chunk` and `chunk_count` raise `ChunkError` (a `DataError`), never anything else.
Everything is vectorised with numpy: no Python loop runs per sample.

Format (version 1)
------------------
All integers little-endian; ``uvarint`` is unsigned LEB128 (7 bits a byte, low first,
at most 10 bytes, canonical: no trailing zero byte); ``zigzag`` maps a signed 64-bit
integer s to ``(s << 1) ^ (s >> 63)`` (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...)::

    chunk   := version:u8 (= 1) | n:uvarint | body | crc:u32
    body    := (nothing when n == 0)
             | t0:f64 | v0:f64 | stream(timestamps) | stream(values)
    stream  := kind:u8 | planes:u8 | [first:uvarint] | [length:uvarint | payload]
    crc     := CRC-32 (zlib) of every byte before it

``n`` is the sample count (at most `MAX_SAMPLES`), ``t0`` / ``v0`` the raw bits of the
first timestamp and value. Each stream turns its n floats into an integer sequence
``x[0..n)`` (uint64, arithmetic modulo 2**64), then into ``m`` uint64 *words*.
``kind`` holds the transform (bits 0-2), the codec (bits 3-4) and the decimal scale k
(bits 5-7; 0..6, and 0 for every transform but the scaled ones; bit 7 is thus 0)::

    timestamps  0  ms, delta                x = round(t * 1000) as int64, |x| < 2**53,
                1  ms, delta-of-delta         and float64(x) / 1000.0 == t bit for bit
                2  bits, delta              x = the uint64 bits of t
                3  bits, delta-of-delta
    values      0  XOR                      words[i-1] = bits(v[i]) ^ bits(v[i-1]), m = n - 1
                1  bits, delta              x = the uint64 bits of v
                2  bits, delta-of-delta
                3  scaled, delta            x = round(v * 10**k) as int64, |x| < 2**53,
                4  scaled, delta-of-delta     and float64(x) / 10.0**k == v bit for bit

    d[i] = x[i+1] - x[i]  (i = 0..n-2)
    delta           words = zigzag(d[0..n-1)), m = n - 1; no first
    delta-of-delta  first = zigzag(d[0]) (present when n >= 2);
                    words[i] = zigzag(d[i+1] - d[i]) (i = 0..n-3), m = max(n - 2, 0)

``x[0]`` is not stored: it is the bits of t0 / v0, or their rounding as above (the
decoder checks that it gives t0 / v0 back). The words are *byte-shuffled*: byte plane p
(p = 0 the least significant byte of every word, then p = 1 ...) holds m bytes; bit p of
``planes`` says plane p is stored, an absent plane is all zero. When ``planes`` is 0
nothing follows ``first`` and the codec is 0; otherwise the stored planes, in increasing
p, make ``popcount(planes) * m`` bytes, stored as ``payload`` of ``length`` bytes by the
codec: 0 raw, 1 zstd (one frame), 2 lz4 block (no size prefix). So a regular scrape
(delta-of-delta all 0) costs no timestamp payload (a chunk of a constant is 29 bytes),
small integer increments keep one plane, and equal high bytes of floats compress.

The encoder tries every transform that applies (timestamps: delta-of-delta, delta;
values: scaled delta, scaled delta-of-delta, XOR, bits delta, bits delta-of-delta),
keeps the smallest stream (the first of equal ones; it stops at one without payload),
and stores a payload raw when the codec does not make it smaller. The default codec is
zstd level 3: on the simulator's data (benchmarks/chunk_size.py) it beats lz4 by under
1% and raw planes by 7%, as those values are mostly full-precision noise; on integer
counters zstd makes the difference. The decoder rejects an unknown version, transform
or codec, a scale on another transform, a bad checksum, a payload of the wrong size,
trailing bytes, and timestamps that do not come out finite and strictly increasing.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import cramjam
import numpy as np

from detector.errors import DataError

VERSION = 1
MAX_SAMPLES = 1 << 22
"""Largest sample count of a chunk (caps what a corrupt header can make the decoder allocate)."""
CODECS = {"raw": 0, "zstd": 1, "lz4": 2}
DEFAULT_CODEC = "zstd"
DEFAULT_LEVEL = 3
MAX_SCALE = 6

# transform id -> (source, order); source: "ms", "bits", "xor" or "scaled"
TS_TRANSFORMS: dict[int, tuple[str, int]] = {0: ("ms", 1), 1: ("ms", 2), 2: ("bits", 1), 3: ("bits", 2)}
VALUE_TRANSFORMS: dict[int, tuple[str, int]] = {
    0: ("xor", 1),
    1: ("bits", 1),
    2: ("bits", 2),
    3: ("scaled", 1),
    4: ("scaled", 2),
}

_F64 = np.dtype("<f8")
_U64 = np.dtype("<u8")
_I64 = np.dtype("<i8")
_EXACT = float(2**53)
_MASK64 = (1 << 64) - 1
_HEAD = struct.Struct("<dd")
_PROBE = 16
"""Samples a scale is tried on before the whole chunk."""


class ChunkError(DataError):
    """A chunk cannot be decoded: truncated, corrupt, or of an unknown format version."""


# ----------------------------------------------------------------------------- integers


def _put_uvarint(out: bytearray, x: int) -> None:
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)


def _zigzag_int(d: int) -> int:
    """zigzag of a uint64 `d` read as a signed 64-bit integer."""
    s = d - (1 << 64) if d >= 1 << 63 else d
    return ((s << 1) ^ (s >> 63)) & _MASK64


def _unzigzag_int(z: int) -> int:
    return ((z >> 1) ^ -(z & 1)) & _MASK64


def _zigzag(d: np.ndarray) -> np.ndarray:
    """zigzag of uint64 words read as int64 (vectorised)."""
    return (d << np.uint64(1)) ^ (d.view(_I64) >> 63).view(_U64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint64(1)) ^ (-(z & np.uint64(1)).view(_I64)).view(_U64)


# ----------------------------------------------------------------------------- shuffle and codecs


def _shuffle(words: np.ndarray) -> tuple[int, bytes]:
    """(plane mask, the non-zero byte planes of `words`, lowest first)."""
    if len(words) == 0:
        return 0, b""
    union = int(np.bitwise_or.reduce(words))
    present = [p for p in range(8) if union >> (8 * p) & 0xFF]
    mask = sum(1 << p for p in present)
    if not mask:
        return 0, b""
    planes = words.astype(_U64, copy=False).view(np.uint8).reshape(len(words), 8)[:, present]
    return mask, np.ascontiguousarray(planes.T).tobytes()


def _unshuffle(raw: np.ndarray, mask: int, m: int) -> np.ndarray:
    """The m uint64 words whose present byte planes (bits of `mask`) are `raw`."""
    planes = np.zeros((m, 8), dtype=np.uint8)
    present = [p for p in range(8) if mask >> p & 1]
    planes[:, present] = raw.reshape(len(present), m).T
    return planes.view(_U64).reshape(m)


def _pack(raw: bytes, codec: str, level: int) -> tuple[int, bytes]:
    """(codec id, payload): `raw` compressed by `codec`, or raw when that is not smaller."""
    if codec == "zstd":
        packed = bytes(cramjam.zstd.compress(raw, level=level))
    elif codec == "lz4":
        packed = bytes(cramjam.lz4.compress_block(raw, store_size=False))
    else:
        return 0, raw
    return (CODECS[codec], packed) if len(packed) < len(raw) else (0, raw)


def _unpack(payload: memoryview, codec: int, size: int) -> np.ndarray:
    """`payload` decoded by codec id `codec` into exactly `size` bytes."""
    if codec == 0:
        if len(payload) != size:
            raise ChunkError(f"raw payload of {len(payload)} bytes where {size} are expected")
        return np.frombuffer(payload, dtype=np.uint8)
    out = np.empty(size, dtype=np.uint8)
    name = "zstd" if codec == 1 else "lz4"
    try:
        if codec == 1:
            got = cramjam.zstd.decompress_into(payload, out.data)
        else:
            got = cramjam.lz4.decompress_block_into(payload, out.data)
    except (cramjam.DecompressionError, ValueError, TypeError, OverflowError) as exc:
        raise ChunkError(f"{name} payload does not decompress to {size} bytes: {exc}") from None
    if got != size:
        raise ChunkError(f"{name} payload decompresses to {got} bytes where {size} are expected")
    return out


# ----------------------------------------------------------------------------- encoding


def _words(x: np.ndarray, order: int) -> tuple[int | None, np.ndarray]:
    """(zigzag first delta or None, zigzag words) of the uint64 sequence `x` by delta `order`."""
    d = x[1:] - x[:-1]  # modulo 2**64
    if order == 1:
        return None, _zigzag(d)
    if len(d) == 0:
        return None, d
    return _zigzag_int(int(d[0])), _zigzag(d[1:] - d[:-1])


def _stream(transform: int, scale: int, first: int | None, words: np.ndarray, codec: str, level: int) -> bytes:
    mask, raw = _shuffle(words)
    out = bytearray(2)
    if first is not None:
        _put_uvarint(out, first)
    codec_id = 0
    if mask:
        codec_id, payload = _pack(raw, codec, level)
        _put_uvarint(out, len(payload))
        out += payload
    out[0] = transform | codec_id << 3 | scale << 5
    out[1] = mask
    return bytes(out)


def _smallest(candidates: Iterator[tuple[int, int, int | None, np.ndarray]], codec: str, level: int) -> bytes:
    """The shortest encoded stream of the candidates (transform, scale, first, words); stops at
    the first one without a payload (the likeliest winner comes first)."""
    best: bytes | None = None
    for transform, scale, first, words in candidates:
        out = _stream(transform, scale, first, words, codec, level)
        if best is None or len(out) < len(best):
            best = out
        if best[1] == 0:
            break
    assert best is not None
    return best


def _millis(ts: np.ndarray) -> np.ndarray | None:
    """The timestamps as int64 milliseconds when that is exact, else None."""
    with np.errstate(all="ignore"):
        ms = np.round(ts * 1000.0)
        if not (np.abs(ms) < _EXACT).all():
            return None
        ints = ms.astype(_I64)  # as the decoder computes it (-0.0 becomes 0)
        if not np.array_equal((ints.astype(_F64) / 1000.0).view(_U64), ts.view(_U64)):
            return None
    return ints


def _scaled(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(k, int64 values * 10**k) for the smallest k that is exact for every value, else None.

    When k is exact, so is every larger k while ``|v * 10**k| < 2**50`` (the rounding then
    finds the integer times a power of ten, exact, and the division rounds to the same
    nearest double), and a k out of range puts every larger one out too. So full-precision
    noise is rejected by one try of `MAX_SCALE` on the first `_PROBE` values, and a range
    failure ends the search.
    """
    probe = values[:_PROBE]
    with np.errstate(all="ignore"):
        small = bool(np.abs(probe).max() * 10.0**MAX_SCALE < 2.0**50)
    if small and _try_scale(probe, MAX_SCALE) is False:
        return None
    for k in range(MAX_SCALE + 1):
        ok = _try_scale(probe, k)
        if ok is None:
            return None
        if ok:
            ints = _try_scale(values, k, want=True)
            if ints is None:
                return None
            if ints is not False:
                return k, ints
    return None


def _try_scale(values: np.ndarray, k: int, want: bool = False) -> Any:
    """None when some ``|round(v * 10**k)|`` is not below 2**53 (or v is not finite); else whether
    k is exact for every value (with `want`: the int64 array instead of True)."""
    p = 10.0**k
    with np.errstate(all="ignore"):
        r = np.round(values * p)
        if not (np.abs(r) < _EXACT).all():
            return None
    ints = r.astype(_I64)  # as the decoder computes it (-0.0 becomes 0)
    if not np.array_equal((ints.astype(_F64) / p).view(_U64), values.view(_U64)):
        return False
    return ints if want else True


def _ts_candidates(ts: np.ndarray) -> Iterator[tuple[int, int, int | None, np.ndarray]]:
    ms = _millis(ts)
    x = ms.view(_U64) if ms is not None else ts.view(_U64)
    base = 0 if ms is not None else 2
    for order in (2, 1):
        first, words = _words(x, order)
        yield base + order - 1, 0, first, words


def _value_candidates(values: np.ndarray) -> Iterator[tuple[int, int, int | None, np.ndarray]]:
    scaled = _scaled(values)
    if scaled is not None:
        k, ints = scaled
        for order in (1, 2):
            first, words = _words(ints.view(_U64), order)
            yield 2 + order, k, first, words
    bits = values.view(_U64)
    yield 0, 0, None, bits[1:] ^ bits[:-1]
    for order in (1, 2):
        first, words = _words(bits, order)
        yield order, 0, first, words


def _check_input(timestamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ts = np.ascontiguousarray(timestamps, dtype=_F64)
    vals = np.ascontiguousarray(values, dtype=_F64)
    if ts.ndim != 1 or vals.ndim != 1:
        raise ValueError(f"timestamps and values must be 1-D, got shapes {ts.shape} and {vals.shape}")
    if len(ts) != len(vals):
        raise ValueError(f"{len(ts)} timestamps but {len(vals)} values")
    if len(ts) > MAX_SAMPLES:
        raise ValueError(f"{len(ts)} samples in one chunk; at most {MAX_SAMPLES}")
    if len(ts) and not (np.isfinite(ts[0]) and np.isfinite(ts[-1]) and (np.diff(ts) > 0).all()):
        raise ValueError("timestamps must be finite and strictly increasing")
    return ts, vals


def encode_chunk(
    timestamps: np.ndarray, values: np.ndarray, *, codec: str = DEFAULT_CODEC, level: int = DEFAULT_LEVEL
) -> bytes:
    """The chunk (format in the module docstring) holding these samples, bit for bit.

    `codec` ("zstd", "lz4" or "raw") and its `level` (zstd only) choose how byte planes
    are compressed; the decoder reads every codec. Raises ValueError for arrays that are
    not 1-D float64-convertible of equal length, more than `MAX_SAMPLES` samples, or
    timestamps that are not finite and strictly increasing.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    ts, vals = _check_input(timestamps, values)
    out = bytearray([VERSION])
    _put_uvarint(out, len(ts))
    if len(ts):
        out += _HEAD.pack(ts[0], vals[0])
        out += _smallest(_ts_candidates(ts), codec, level)
        out += _smallest(_value_candidates(vals), codec, level)
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


# ----------------------------------------------------------------------------- decoding


class _Reader:
    """Bounds-checked reads from the chunk body."""

    def __init__(self, data: memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, k: int, what: str) -> memoryview:
        if k > len(self.data) - self.pos:
            raise ChunkError(f"truncated chunk: {what} needs {k} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + k]
        self.pos += k
        return out

    def u8(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise ChunkError(f"truncated chunk: {what} needs 1 byte, none left")
        self.pos += 1
        return self.data[self.pos - 1]

    def uvarint(self, what: str) -> int:
        x = shift = 0
        for i in range(10):
            b = self.u8(what)
            x |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if (b == 0 and i) or x > _MASK64:
                    raise ChunkError(f"corrupt chunk: {what} is not a canonical 64-bit varint")
                return x
        raise ChunkError(f"corrupt chunk: {what} varint longer than 10 bytes")


def _header(data: bytes | bytearray | memoryview) -> tuple[memoryview, _Reader, int]:
    """(chunk bytes, a reader past the sample count, the sample count); checks version and count."""
    view = memoryview(data).cast("B")
    if len(view) == 0:
        raise ChunkError("empty chunk: no version byte")
    if view[0] != VERSION:
        raise ChunkError(f"unknown chunk format version {view[0]} (this build reads version {VERSION})")
    reader = _Reader(view[: max(len(view) - 4, 1)], 1)
    n = reader.uvarint("sample count")
    if n > MAX_SAMPLES:
        raise ChunkError(f"corrupt chunk: {n} samples, more than the {MAX_SAMPLES} a chunk holds")
    return view, reader, n


def chunk_count(data: bytes) -> int:
    """Number of samples in a chunk, from its header (version and count checked, not the rest)."""
    return _header(data)[2]


def _read_stream(r: _Reader, table: dict[int, tuple[str, int]], n: int, what: str) -> tuple[int, int, int | None, np.ndarray]:
    """(transform, scale, first delta or None, words) of the next stream."""
    kind = r.u8(f"{what} kind")
    transform, codec, scale = kind & 7, kind >> 3 & 3, kind >> 5
    if transform not in table:
        raise ChunkError(f"corrupt chunk: unknown {what} transform {transform}")
    source, order = table[transform]
    if codec == 3:
        raise ChunkError(f"corrupt chunk: unknown {what} codec 3")
    if scale > MAX_SCALE or (scale and source != "scaled"):
        raise ChunkError(f"corrupt chunk: decimal scale {scale} with {what} transform {transform}")
    mask = r.u8(f"{what} plane mask")
    m = max(n - order, 0)
    first = r.uvarint(f"{what} first delta") if order == 2 and n >= 2 else None
    if not mask:
        if codec:
            raise ChunkError(f"corrupt chunk: {what} codec {codec} without a payload")
        return transform, scale, first, np.zeros(m, dtype=_U64)
    if m == 0:
        raise ChunkError(f"corrupt chunk: {what} payload for {n} sample(s)")
    length = r.uvarint(f"{what} payload length")
    payload = r.take(length, f"{what} payload")
    raw = _unpack(payload, codec, mask.bit_count() * m)
    return transform, scale, first, _unshuffle(raw, mask, m)


def _sequence(x0: int, order: int, first: int | None, words: np.ndarray, n: int) -> np.ndarray:
    """The uint64 sequence of n terms from x[0], the first delta and the zigzag words."""
    d = np.empty(n - 1, dtype=_U64)
    if order == 2 and n >= 2:
        d[0] = _unzigzag_int(first or 0)
        d[1:] = _unzigzag(words)
        np.cumsum(d, out=d)
    else:
        d[:] = _unzigzag(words)
    x = np.empty(n, dtype=_U64)
    x[0] = x0
    x[1:] = d
    return np.cumsum(x, out=x)


def _round_scaled(v: float, scale: int, what: str) -> int:
    """round(v * 10**scale) as the encoder computed it; ChunkError when it is not an exact int."""
    s = v * 10.0**scale
    if not math.isfinite(s) or abs(s) >= _EXACT:
        raise ChunkError(f"corrupt chunk: first {what} {v!r} is not a scaled integer")
    return round(s) & _MASK64


def _timestamps(r: _Reader, t0: float, n: int) -> np.ndarray:
    transform, _, first, words = _read_stream(r, TS_TRANSFORMS, n, "timestamp")
    source, order = TS_TRANSFORMS[transform]
    if source == "ms":
        x = _sequence(_round_scaled(t0, 3, "timestamp"), order, first, words, n)
        ts = x.view(_I64).astype(_F64) / 1000.0
    else:
        ts = _sequence(int(np.float64(t0).view(_U64)), order, first, words, n).view(_F64)
    with np.errstate(invalid="ignore"):
        ok = ts.view(_U64)[0] == np.float64(t0).view(_U64) and np.isfinite(ts[[0, -1]]).all()
        if not (ok and (ts[1:] > ts[:-1]).all()):
            raise ChunkError("corrupt chunk: decoded timestamps are not finite and strictly increasing")
    return ts


def _values(r: _Reader, v0: float, n: int) -> np.ndarray:
    transform, scale, first, words = _read_stream(r, VALUE_TRANSFORMS, n, "value")
    source, order = VALUE_TRANSFORMS[transform]
    bits0 = np.float64(v0).view(_U64)
    if source == "xor":
        x = np.empty(n, dtype=_U64)
        x[0] = bits0
        x[1:] = words
        return np.bitwise_xor.accumulate(x).view(_F64)
    if source == "bits":
        return _sequence(int(bits0), order, first, words, n).view(_F64)
    x = _sequence(_round_scaled(v0, scale, "value"), order, first, words, n)
    with np.errstate(all="ignore"):
        vals = x.view(_I64).astype(_F64) / 10.0**scale
    if vals.view(_U64)[0] != bits0:
        raise ChunkError("corrupt chunk: scaled values do not start at the first value")
    return vals


def decode_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) of a chunk: new writable C-contiguous float64 arrays, bit for bit
    what was encoded. Raises ChunkError when the chunk is truncated, corrupt or of an
    unknown version."""
    view, r, n = _header(data)
    if len(view) < r.pos + 4:
        raise ChunkError(f"truncated chunk: {len(view)} bytes, no room for the checksum")
    (stored,) = struct.unpack_from("<I", view, len(view) - 4)
    if zlib.crc32(view[:-4]) != stored:
        raise ChunkError("corrupt or truncated chunk: checksum mismatch")
    if n == 0:
        ts, vals = np.empty(0, dtype=_F64), np.empty(0, dtype=_F64)
    else:
        t0, v0 = _HEAD.unpack(r.take(_HEAD.size, "first timestamp and value"))
        ts = _timestamps(r, t0, n)
        vals = _values(r, v0, n)
    if r.pos != len(r.data):
        raise ChunkError(f"corrupt chunk: {len(r.data) - r.pos} unexpected bytes after the value stream")
    return ts, vals  # fresh arrays: writable, C-contiguous


__all__ = ["MAX_SAMPLES", "ChunkError", "chunk_count", "decode_chunk", "encode_chunk"]
