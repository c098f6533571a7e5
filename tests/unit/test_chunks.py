"""The chunk codec: bit-for-bit round trips, damaged input, and the sizes it reaches."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import DataError
from detector.source.chunks import (
    MAX_SAMPLES,
    ChunkError,
    chunk_count,
    decode_chunk,
    encode_chunk,
)

T0 = 1_700_000_000.0
STALE_BITS = 0x7FF0000000000002
RNG_SEED = 20240601


def floats_from_bits(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=np.uint64).view(np.float64)


def regular(n: int, step: float, t0: float = T0) -> np.ndarray:
    return t0 + step * np.arange(n, dtype=np.float64)


def assert_round_trip(ts: np.ndarray, vals: np.ndarray, **kw: object) -> bytes:
    data = encode_chunk(ts, vals, **kw)
    got_ts, got_vals = decode_chunk(data)
    assert got_ts.dtype == np.float64 and got_vals.dtype == np.float64
    assert got_ts.flags.writeable and got_vals.flags.writeable
    assert got_ts.flags.c_contiguous and got_vals.flags.c_contiguous
    assert got_ts.tobytes() == np.asarray(ts, dtype=np.float64).tobytes()
    assert got_vals.tobytes() == np.asarray(vals, dtype=np.float64).tobytes()
    assert chunk_count(data) == len(ts)
    return data


def reseal(data: bytes | bytearray) -> bytes:
    """`data` with its checksum recomputed (to reach the structural checks behind it)."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


rng = np.random.default_rng(RNG_SEED)
N = 120
SPECIAL = floats_from_bits(STALE_BITS, 0x7FF8000000000001, 0xFFF0000000000001, 0x7FFFFFFFFFFFFFFF)
CASES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "regular 15s counter": (regular(N, 15.0), np.cumsum(rng.integers(0, 5, N)).astype(float)),
    "regular 60s gauge": (regular(N, 60.0), rng.normal(50.0, 5.0, N)),
    "regular 300s constant": (regular(N, 300.0), np.full(N, 3.0)),
    "jittered timestamps": (regular(N, 15.0) + rng.integers(-200, 200, N) / 1000.0, rng.random(N)),
    "non-millisecond timestamps": (T0 + 1.0000001 * np.arange(N), rng.random(N)),
    "microsecond jitter": (regular(N, 15.0) + rng.random(N) * 1e-3, np.arange(N, dtype=float)),
    "negative timestamps": (regular(N, 15.0, t0=-1e6), np.arange(N, dtype=float)),
    "one sample": (np.array([T0]), np.array([42.5])),
    "one sample, NaN": (np.array([T0 + 0.1234567]), floats_from_bits(STALE_BITS)),
    "two samples": (np.array([T0, T0 + 15.0]), np.array([1.0, 2.0])),
    "two samples, odd times": (np.array([0.1, 0.30000000000000004]), np.array([-0.0, 0.0])),
    "counter with resets": (
        regular(N, 15.0),
        np.concatenate([np.arange(40.0) * 3, np.arange(40.0) * 2, np.arange(40.0) * 7]),
    ),
    "full-precision floats": (regular(N, 15.0), rng.random(N) * 1e6),
    "three decimals": (regular(N, 15.0), np.round(rng.normal(0.0, 100.0, N), 3)),
    "six decimals": (regular(N, 15.0), np.round(rng.random(N), 6)),
    "NaN payloads and stale markers": (regular(8, 15.0), np.concatenate([SPECIAL, SPECIAL])),
    "stale marker between values": (regular(5, 15.0), np.array([1.0, 2.0, SPECIAL[0], 3.0, SPECIAL[0]])),
    "infinities": (regular(6, 15.0), np.array([np.inf, -np.inf, 1.0, np.inf, 0.0, -np.inf])),
    "negative zero": (regular(4, 15.0), np.array([-0.0, 0.0, -0.0, -0.0])),
    "huge values": (regular(6, 15.0), np.array([1e300, -1e300, 1.7976931348623157e308, 5e-324, 1e-300, 0.0])),
    "integers above 2**53": (regular(5, 15.0), np.array([2.0**53, 2.0**53 + 2, 2.0**60, 9.2e18, 1.8e19])),
    "integers at the edge of 2**53": (regular(3, 15.0), np.array([2.0**53 - 1, 2.0**53 - 2, -(2.0**53) + 1])),
    "big timestamps": (regular(N, 15.0, t0=4e12), np.arange(N, dtype=float)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_bit_for_bit(case: str) -> None:
    ts, vals = CASES[case]
    assert_round_trip(ts, vals)


@pytest.mark.parametrize("codec", ["zstd", "lz4", "raw"])
@pytest.mark.parametrize("case", ["regular 15s counter", "full-precision floats", "NaN payloads and stale markers"])
def test_every_codec_round_trips(case: str, codec: str) -> None:
    ts, vals = CASES[case]
    assert_round_trip(ts, vals, codec=codec)


def test_empty_chunk_round_trips() -> None:
    data = assert_round_trip(np.empty(0), np.empty(0))
    assert len(data) == 6  # version, count 0, checksum


def test_inputs_that_are_not_float64_arrays_are_converted() -> None:
    data = encode_chunk([T0, T0 + 15], np.array([1, 2], dtype=np.int32))
    ts, vals = decode_chunk(data)
    assert ts.tolist() == [T0, T0 + 15] and vals.tolist() == [1.0, 2.0]
    src_ts = regular(20, 15.0)[::2]  # a strided view
    assert_round_trip(src_ts, np.arange(10.0))


def test_decoded_arrays_are_independent_of_the_input_buffer() -> None:
    ts, vals = decode_chunk(bytearray(encode_chunk(regular(3, 15.0), np.arange(3.0))))
    ts[0] = vals[0] = -1.0  # writable, owned


@pytest.mark.parametrize(
    ("ts", "vals", "message"),
    [
        (np.array([T0, T0]), np.array([1.0, 2.0]), "strictly increasing"),
        (np.array([T0 + 1, T0]), np.array([1.0, 2.0]), "strictly increasing"),
        (np.array([T0, np.nan]), np.array([1.0, 2.0]), "finite"),
        (np.array([T0, np.inf]), np.array([1.0, 2.0]), "finite"),
        (np.array([-np.inf, T0]), np.array([1.0, 2.0]), "finite"),
        (np.array([T0]), np.array([1.0, 2.0]), "1 timestamps but 2 values"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "1-D"),
    ],
)
def test_encoding_rejects_malformed_samples(ts: np.ndarray, vals: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_chunk(ts, vals)


def test_encoding_rejects_an_unknown_codec() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        encode_chunk(regular(2, 1.0), np.zeros(2), codec="gzip")


# ------------------------------------------------------------------------------ properties

_value_bits = st.integers(min_value=0, max_value=2**64 - 1)
_steps = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@st.composite
def _samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=0, max_value=300))
    t0 = draw(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
    style = draw(st.sampled_from(["ms", "any"]))
    if style == "ms":
        t0 = round(t0 * 1000) / 1000
    steps = draw(st.lists(_steps, min_size=n, max_size=n))
    ts = t0 + np.cumsum(np.array(steps, dtype=np.float64))
    if style == "ms":
        ts = np.round(ts * 1000) / 1000
    ts = np.maximum.accumulate(ts)
    ts = ts[np.concatenate(([True], np.diff(ts) > 0))] if n else ts  # strictly increasing
    kind = draw(st.sampled_from(["bits", "decimals", "integers", "mixed"]))
    if kind == "bits":
        vals = np.array(draw(st.lists(_value_bits, min_size=len(ts), max_size=len(ts))), dtype=np.uint64)
        return ts, vals.view(np.float64)
    ints = np.array(draw(st.lists(st.integers(-(2**40), 2**40), min_size=len(ts), max_size=len(ts))))
    if kind == "decimals":
        return ts, ints / 10.0 ** draw(st.integers(0, 8))
    if kind == "integers":
        return ts, np.cumsum(ints).astype(np.float64)
    vals = ints.astype(np.float64)
    mask = np.array(draw(st.lists(st.booleans(), min_size=len(ts), max_size=len(ts))), dtype=bool)
    vals[mask] = floats_from_bits(STALE_BITS)[0]
    return ts, vals


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples())
def test_any_samples_round_trip_bit_for_bit(samples: tuple[np.ndarray, np.ndarray]) -> None:
    ts, vals = samples
    assert_round_trip(ts, vals)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200, unique=True),
    st.data(),
)
def test_any_finite_timestamps_and_value_bits_round_trip(times: list[float], data: st.DataObject) -> None:
    ts = np.sort(np.array(times, dtype=np.float64))
    ts = ts[np.concatenate(([True], np.diff(ts) > 0))]  # -0.0 and 0.0 are equal
    bits = data.draw(st.lists(_value_bits, min_size=len(ts), max_size=len(ts)))
    assert_round_trip(ts, np.array(bits, dtype=np.uint64).view(np.float64))


# ------------------------------------------------------------------------------ damaged input


def _sample_chunks() -> dict[str, bytes]:
    return {
        "counter": encode_chunk(*CASES["regular 15s counter"]),
        "gauge": encode_chunk(*CASES["full-precision floats"]),
        "jittered": encode_chunk(*CASES["jittered timestamps"]),
        "special": encode_chunk(*CASES["NaN payloads and stale markers"]),
        "lz4": encode_chunk(*CASES["three decimals"], codec="lz4"),
        "raw": encode_chunk(*CASES["non-millisecond timestamps"], codec="raw"),
        "one": encode_chunk(*CASES["one sample"]),
        "empty": encode_chunk(np.empty(0), np.empty(0)),
    }


CHUNKS = _sample_chunks()


@pytest.mark.parametrize("name", list(CHUNKS))
def test_every_truncation_raises_chunk_error(name: str) -> None:
    data = CHUNKS[name]
    for k in range(len(data)):
        with pytest.raises(ChunkError):
            decode_chunk(data[:k])


@pytest.mark.parametrize("name", list(CHUNKS))
def test_every_truncation_resealed_raises_chunk_error(name: str) -> None:
    """Cut short, with a checksum that matches: the structure itself must not hold."""
    data = CHUNKS[name]
    for k in range(2, len(data) - 4):
        with pytest.raises(ChunkError):
            decode_chunk(reseal(data[:k] + b"\0\0\0\0"))


@pytest.mark.parametrize("name", list(CHUNKS))
def test_byte_flips_raise_chunk_error(name: str) -> None:
    data = CHUNKS[name]
    flips = np.random.default_rng(7)
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= int(flips.integers(1, 256))
        with pytest.raises(ChunkError):
            decode_chunk(bytes(damaged))


@pytest.mark.parametrize("name", list(CHUNKS))
def test_resealed_byte_flips_raise_chunk_error_or_decode(name: str) -> None:
    """A flip behind a matching checksum either fails as ChunkError or decodes to n samples."""
    data = CHUNKS[name]
    flips = np.random.default_rng(11)
    for pos in range(len(data) - 4):
        for _ in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= int(flips.integers(1, 256))
            damaged_data = reseal(damaged)
            try:
                ts, vals = decode_chunk(damaged_data)
            except ChunkError:
                continue
            n = chunk_count(damaged_data)
            assert len(ts) == len(vals) == n
            assert ts.dtype == vals.dtype == np.float64


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(CHUNKS)), st.integers(0, 400))
def test_any_body_behind_a_valid_checksum_fails_cleanly(body: bytes, name: str, cut: int) -> None:
    """Arbitrary bytes, alone or spliced into a real chunk, sealed with a matching checksum:
    ChunkError, or arrays of the sample count the header says."""
    real = CHUNKS[name][:-4]
    for candidate in (b"\x01" + body, real[:cut] + body, real[:cut] + body + real[cut + len(body) :]):
        data = reseal(candidate + b"\0\0\0\0")
        try:
            ts, vals = decode_chunk(data)
        except ChunkError:
            continue
        assert len(ts) == len(vals) == chunk_count(data)


def test_random_garbage_raises_chunk_error() -> None:
    noise = np.random.default_rng(3)
    for size in range(0, 200, 3):
        garbage = noise.integers(0, 256, size, dtype=np.uint8).tobytes()
        with pytest.raises(ChunkError):
            decode_chunk(garbage)
        with pytest.raises(ChunkError):
            decode_chunk(b"\x01" + garbage)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty chunk"),
        (b"\x02\x00\x00\x00\x00\x00", "unknown chunk format version 2"),
        (b"\x00", "unknown chunk format version 0"),
        (b"\x01", "truncated"),
        (b"\x01\x00", "truncated"),
        (reseal(b"\x01\x80\x00" + b"\0" * 4), "canonical"),
        (reseal(b"\x01" + b"\xff" * 11 + b"\0" * 4), "varint"),
        (reseal(b"\x01\x80\x80\x80\x04" + b"\0" * 4), "more than"),
        (reseal(b"\x01\x00\x00" + b"\0" * 4), "unexpected bytes"),
        (reseal(b"\x01\x01" + b"\0" * 4), "truncated"),
    ],
)
def test_errors_name_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ChunkError, match=message):
        decode_chunk(data)


def test_checksum_mismatch_is_named() -> None:
    data = bytearray(CHUNKS["counter"])
    data[-1] ^= 1
    with pytest.raises(ChunkError, match="checksum"):
        decode_chunk(bytes(data))


def test_header_fields_are_checked_behind_a_valid_checksum() -> None:
    data = bytearray(CHUNKS["counter"])
    ts_kind = 2 + 16  # version, count (1 byte), t0, v0
    for kind, message in ((7, "unknown timestamp transform"), (0x18, "codec 3"), (0x20, "scale")):
        damaged = bytearray(data)
        damaged[ts_kind] = kind
        with pytest.raises(ChunkError, match=message):
            decode_chunk(reseal(damaged))


def test_chunk_errors_are_data_errors() -> None:
    assert issubclass(ChunkError, DataError)


def test_chunk_count_reads_only_the_header() -> None:
    assert chunk_count(CHUNKS["counter"]) == 120
    assert chunk_count(CHUNKS["empty"]) == 0
    assert chunk_count(CHUNKS["one"]) == 1
    with pytest.raises(ChunkError):
        chunk_count(b"")
    with pytest.raises(ChunkError, match="version"):
        chunk_count(b"\x09\x00\x00\x00\x00\x00")
    with pytest.raises(ChunkError, match="more than"):
        chunk_count(b"\x01\xff\xff\xff\x7f\x00\x00\x00\x00")
    assert MAX_SAMPLES >= 1 << 20


# ------------------------------------------------------------------------------ sizes


def _counter(n: int, step: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    increments = np.random.default_rng(seed).integers(0, 10, n)
    return regular(n, step), (1_000_000 + np.cumsum(increments)).astype(np.float64)


def test_regular_scrape_of_a_small_integer_counter_is_under_2_bytes_per_sample() -> None:
    ts, vals = _counter(120, 15.0)
    data = assert_round_trip(ts, vals)
    # measured: 102 bytes (0.85 B/sample): 29 of header, t0, v0 and first delta (the
    # timestamps cost nothing more), ~73 of zstd for 119 increments of 3.3 bits of entropy
    assert len(data) / 120 < 2.0
    assert len(data) <= 115


def test_regular_timestamps_cost_almost_nothing() -> None:
    for step in (15.0, 60.0, 300.0):
        for n in (120, 1024):
            data = assert_round_trip(regular(n, step), np.zeros(n))
            # measured: 29 bytes (30 at 1024: a 2-byte count) whatever the step: version,
            # count, t0, v0, two stream heads, the first delta, CRC; no payload at all
            assert len(data) <= 32, (step, n, len(data))


def test_sizes_of_typical_chunks() -> None:
    """Measured sizes (bytes for 120 samples), asserted with a margin."""
    n = 120
    noise = np.random.default_rng(5)
    cases = {
        # name: (timestamps, values, measured bytes, limit)
        "constant gauge": (regular(n, 15.0), np.full(n, 0.25), 29, 34),
        "linear counter": (regular(n, 15.0), 10.0 * np.arange(n), 30, 36),
        "3-decimal gauge": (regular(n, 15.0), np.round(noise.normal(100.0, 1.0, n), 3), 269, 300),
        "jittered 15s, integer counter": (
            regular(n, 15.0) + noise.integers(-50, 50, n) / 1000.0,
            np.cumsum(noise.integers(0, 10, n)).astype(float),
            258,
            290,
        ),
        "full-precision gauge": (regular(n, 15.0), noise.random(n), 864, 900),  # 7 random bytes a value
    }
    for name, (ts, vals, _measured, limit) in cases.items():
        size = len(assert_round_trip(ts, vals))
        assert size <= limit, f"{name}: {size} bytes"


def test_large_chunks_compress_regular_counters_well() -> None:
    ts, vals = _counter(1024, 60.0)
    data = assert_round_trip(ts, vals)
    # measured: 514 bytes, 0.50 B/sample at 1024 samples (increments of 3.3 bits of entropy)
    assert len(data) / 1024 < 0.6


# ------------------------------------------------------------------------------ the decimal scale


def _smallest_scale_by_brute_force(values: np.ndarray) -> int | None:
    for k in range(7):
        with np.errstate(all="ignore"):
            r = np.round(values * 10.0**k)
            if not (np.isfinite(values).all() and (np.abs(r) < 2.0**53).all()):
                return None
            back = r.astype(np.int64).astype(np.float64) / 10.0**k
        if back.tobytes() == values.tobytes():
            return k
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-(2**53) + 1, 2**53 - 1), min_size=1, max_size=40),
    st.integers(0, 8),
    st.sampled_from([None, 0.0, -0.0, np.nan, np.inf, 1e300, 0.1234567891234]),
)
def test_the_scale_is_the_smallest_exact_one(ints: list[int], decimals: int, extra: float | None) -> None:
    from detector.source.chunks import _scaled

    values = np.array(ints, dtype=np.float64) / 10.0**decimals
    if extra is not None:
        values = np.append(values, extra)
    found = _scaled(values)
    assert (None if found is None else found[0]) == _smallest_scale_by_brute_force(values)
    assert_round_trip(regular(len(values), 15.0), values)
