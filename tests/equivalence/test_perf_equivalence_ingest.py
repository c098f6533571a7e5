"""The bulk remote_write path gives what the series-by-series path gives.

* `decode_fast` (numpy walk of the wire bytes, label sets cached by their bytes) returns
  the same series, labels, timestamps and value bits as `decode_reference` (protobuf
  objects), or None -- and None whenever the reference refuses the request, so that the
  reference's error is the answer;
* `SampleStore.append_refs` leaves the store exactly as `append` calls would (same
  samples, bits, buffers), and `store_series` of a `DecodedRequest` gives the same
  report as of the `SeriesSamples` list, duplicates and out-of-order samples included.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import cramjam
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.source.ingest import IngestError
from detector.source.ingest.remote_pb import messages
from detector.source.ingest.remote_write import (
    DecodedRequest,
    SeriesCache,
    SeriesSamples,
    decode_fast,
    decode_reference,
    decode_request,
    decode_write_request,
    store_series,
)
from detector.source.series import STALE_NAN, RefBatch, series_ref
from detector.source.store import SampleStore

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = 1_700_000_000_000

Labels = list[tuple[str, str]]
Samples = list[tuple[int, float]]


def encode(series: list[tuple[Labels, Samples]], *, exemplar: bool = False, metadata: bool = False) -> bytes:
    req = messages().WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for k, v in labels:
            ts.labels.add(name=k, value=v)
        for t_ms, v in samples:
            ts.samples.add(timestamp=t_ms, value=v)
        if exemplar:
            ex = ts.exemplars.add(value=1.0, timestamp=BASE)
            ex.labels.add(name="trace_id", value="abc")
    if metadata:
        req.metadata.add(type=1, metric_family_name="m", help="h")
    return bytes(req.SerializeToString())


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + varint(len(payload)) + payload


def wire_label(name: str, value: str) -> bytes:
    return field(0x0A, field(0x0A, name.encode()) + field(0x12, value.encode()))


def wire_sample(value: float, t_ms: int) -> bytes:
    return field(0x12, b"\x09" + struct.pack("<d", value) + b"\x10" + varint(t_ms))


def wire_series(content: bytes) -> bytes:
    return field(0x0A, content)


def bits(a: np.ndarray) -> list[int]:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64).tolist()


def same_series(fast: list[SeriesSamples], ref: list[SeriesSamples]) -> None:
    assert len(fast) == len(ref)
    for f, r in zip(fast, ref, strict=True):
        assert f.name == r.name
        assert f.labels == r.labels and list(f.labels) == list(r.labels)
        assert f.timestamps.dtype == r.timestamps.dtype == np.float64
        assert bits(f.timestamps) == bits(r.timestamps)
        assert bits(f.values) == bits(r.values)


def reference_or_error(raw: bytes) -> list[SeriesSamples] | IngestError:
    try:
        return decode_reference(raw)
    except IngestError as exc:
        return exc


def check_decoders_agree(raw: bytes, cache: SeriesCache | None = None) -> DecodedRequest | None:
    fast = decode_fast(raw, cache if cache is not None else SeriesCache())
    ref = reference_or_error(raw)
    if isinstance(ref, IngestError):
        assert fast is None, f"the fast decoder accepted what the reference refuses: {ref.message}"
    elif fast is not None:
        same_series(fast.series(), ref)
    return fast


# --------------------------------------------------------------------------- decoding

odd_floats = st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, STALE_NAN, 5e-324, 1e308])
values = st.floats(allow_nan=True, allow_infinity=True) | odd_floats
stamps = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, -1, BASE, 2**41, 2**42 - 1, 2**63 - 1])
valid_names = st.sampled_from(["job", "instance", "le", "code", "region", "a_b", "_x"])
label_values = st.text(max_size=8).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
metric_names = st.sampled_from(["up", "http_requests_total", "a:b", "m"])


@st.composite
def valid_series(draw: Any) -> tuple[Labels, Samples]:
    name = draw(metric_names)
    names = draw(st.lists(valid_names, unique=True, max_size=4))
    labels = [("__name__", name)] + [(k, draw(label_values)) for k in names]
    if draw(st.booleans()):
        labels = draw(st.permutations(labels))
    samples = draw(st.lists(st.tuples(stamps, values), max_size=6))
    return labels, samples


hostile_names = st.sampled_from(["__name__", "job", "__x", "a-b", "", "0a", "é", "_"])


@st.composite
def hostile_series(draw: Any) -> tuple[Labels, Samples]:
    labels = draw(st.lists(st.tuples(hostile_names, label_values), max_size=4))
    samples = draw(st.lists(st.tuples(stamps, values), max_size=3))
    return labels, samples


@SETTINGS
@given(series=st.lists(valid_series(), max_size=40))
def test_valid_requests_decode_fast_and_equal(series: list[tuple[Labels, Samples]]) -> None:
    raw = encode(series)
    fast = check_decoders_agree(raw)
    assert fast is not None  # every well-formed request of this shape takes the fast path
    assert len(fast) == len(series)


@SETTINGS
@given(series=st.lists(valid_series() | hostile_series(), max_size=12))
def test_hostile_label_sets_are_left_to_the_reference(series: list[tuple[Labels, Samples]]) -> None:
    check_decoders_agree(encode(series))


@SETTINGS
@given(
    series=st.lists(valid_series(), min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 1 << 16),
)
def test_corrupted_bytes_never_decode_differently(
    series: list[tuple[Labels, Samples]], flips: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(encode(series))
    for pos, x in flips:
        if raw:
            raw[pos % len(raw)] ^= x
    check_decoders_agree(bytes(raw))
    check_decoders_agree(bytes(raw[: cut % (len(raw) + 1)]))


def test_many_series_take_the_lockstep_walk_and_long_series_the_loop() -> None:
    rng = np.random.default_rng(7)
    series = []
    for i in range(300):
        n = int(rng.integers(0, 4)) if i != 17 else 500  # one long series ends in the Python loop
        samples = [(BASE + 15_000 * k, float(rng.choice([0.0, rng.normal()]))) for k in range(n)]
        extra = [("pod", f"p{i % 7}")] if i % 3 else []
        series.append(([("__name__", f"m{i % 5}"), ("instance", f"h{i}"), *extra], samples))
    raw = encode(series)
    cache = SeriesCache()
    fast = check_decoders_agree(raw, cache)
    assert fast is not None and len(cache) == 300
    again = check_decoders_agree(raw, cache)  # all label sets from the cache now
    assert again is not None and len(cache) == 300
    assert again.heads[5] is fast.heads[5]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(encode([([("__name__", "m")], [(BASE, 1.0)])], exemplar=True), id="exemplars"),
        pytest.param(encode([([("__name__", "m")], [(BASE, 1.0)])], metadata=True), id="metadata"),
        pytest.param(
            # a label after the samples: valid protobuf (the library merges the labels)
            wire_series(wire_label("__name__", "m") + wire_sample(2.0, BASE) + wire_label("job", "x")),
            id="label-after-sample",
        ),
        pytest.param(
            # the timestamp field before the value field
            wire_series(
                wire_label("__name__", "m")
                + field(0x12, b"\x10" + varint(BASE) + b"\x09" + struct.pack("<d", 3.0))
            ),
            id="timestamp-first",
        ),
        pytest.param(
            # a non-minimal length varint on a series
            b"\x0a" + bytes([len(wire_label("__name__", "m")) | 0x80, 0x00]) + wire_label("__name__", "m"),
            id="overlong-length",
        ),
        pytest.param(
            wire_series(
                wire_label("__name__", "m")
                + field(0x12, b"\x09" + struct.pack("<d", 1.0) + b"\x09" + struct.pack("<d", 2.0))
            ),
            id="repeated-value-field",
        ),
        pytest.param(
            wire_series(wire_label("__name__", "m") + field(0x12, b"\x10")), id="tag-without-varint"
        ),
        pytest.param(
            encode([([("__name__", "m"), ("job", "x"), ("job", "y")], [(BASE, 1.0)])]), id="repeated-label"
        ),
        pytest.param(encode([([("job", "x")], [(BASE, 1.0)])]), id="no-name"),
        pytest.param(encode([([("__name__", "1m")], [(BASE, 1.0)])]), id="bad-metric-name"),
        pytest.param(b"\x08\x01", id="varint-top-level-field"),
    ],
)
def test_unusual_encodings_fall_back_to_the_reference(raw: bytes) -> None:
    assert decode_fast(raw, SeriesCache()) is None
    got = reference_or_error(raw)
    # and the public decoder answers as the reference does
    body = bytes(cramjam.snappy.compress_raw(raw))
    if isinstance(got, IngestError):
        with pytest.raises(IngestError) as info:
            decode_write_request(body, 1 << 20)
        assert info.value.message == got.message
    else:
        same_series(decode_write_request(body, 1 << 20), got)


def test_empty_request_and_empty_series() -> None:
    assert len(check_decoders_agree(b"") or []) == 0
    fast = check_decoders_agree(
        encode([([("__name__", "m"), ("a", "")], []), ([("__name__", "n")], [(0, 0.0)])])
    )
    assert fast is not None
    assert fast.bounds.tolist() == [0, 0, 1]
    assert fast.heads[0][1] == {"a": ""}


# --------------------------------------------------------------------------- storing


def snapshot(store: SampleStore) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for name in store.names():
        for labels, ts, vals in store.select(name):
            out[(name, labels)] = (bits(ts), bits(vals))
    return out


def store_state(store: SampleStore) -> tuple[Any, ...]:
    return (
        snapshot(store),
        store.memory_bytes(),
        store.series_count(),
        store.sample_count(),
        store.newest_timestamp(),
        store.oldest_timestamp(),
    )


batch_series = st.lists(
    st.tuples(
        st.integers(0, 5),  # which series (repeats allowed within one batch)
        st.lists(
            st.tuples(st.integers(-3, 40), st.sampled_from([0.0, 1.0, 2.5, math.nan, STALE_NAN, -math.inf])),
            max_size=4,
        ),
    ),
    max_size=12,
)


@SETTINGS
@given(batches=st.lists(batch_series, min_size=1, max_size=5), retention=st.sampled_from([None, 25.0]))
def test_append_refs_equals_append(batches: list[Any], retention: float | None) -> None:
    bulk, single = SampleStore(retention=retention), SampleStore(retention=retention)
    names = [("m", {"i": str(i)}) if i % 2 else ("n", {"i": str(i), "e": ""}) for i in range(6)]
    for batch in batches:
        refs = [series_ref(*names[i]) for i, _ in batch]
        counts = [len(samples) for _, samples in batch]
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ts = np.array([float(t) for _, samples in batch for t, _ in samples], dtype=np.float64)
        vals = np.array([v for _, samples in batch for _, v in samples], dtype=np.float64)
        rb = RefBatch(refs, bounds, ts, vals)
        expected = []
        for k, (i, _) in enumerate(batch):
            b0, b1 = int(bounds[k]), int(bounds[k + 1])
            r = single.append(names[i][0], names[i][1], ts[b0:b1], vals[b0:b1])
            expected.append(r.accepted)
        k, accepted_total = 0, 0
        while k < len(batch):  # what store_series does: bulk, then `append` where the bulk path stops
            k, acc = bulk.append_refs(rb, k)
            accepted_total += acc
            if k < len(batch):
                b0, b1 = int(bounds[k]), int(bounds[k + 1])
                accepted_total += bulk.append(
                    names[batch[k][0]][0], names[batch[k][0]][1], ts[b0:b1], vals[b0:b1]
                ).accepted
                k += 1
        assert accepted_total == sum(expected)
        assert store_state(bulk) == store_state(single)
    if retention is not None:
        assert bulk.enforce_retention(45.0) == single.enforce_retention(45.0)
        assert store_state(bulk) == store_state(single)


def test_ref_batch_validates() -> None:
    ref = series_ref("m", {})
    with pytest.raises(ValueError, match="finite"):
        RefBatch([ref], [0, 1], np.array([math.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="bounds"):
        RefBatch([ref], [0, 2], np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-decreasing"):
        RefBatch([ref, ref], [0, 1, 0], np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="invalid label name"):
        series_ref("m", {"__x": "1"})


def test_series_forgotten_by_retention_come_back_through_refs() -> None:
    store = SampleStore(retention=100.0)
    ref = series_ref("m", {"a": "1"})
    assert store.append_refs(RefBatch([ref], [0, 1], np.array([10.0]), np.array([1.0]))) == (1, 1)
    assert store.enforce_retention(500.0) == 1 and store.series_count() == 0
    assert store.append_refs(RefBatch([ref], [0, 1], np.array([450.0]), np.array([2.0]))) == (1, 1)
    [(labels, ts, vals)] = store.select("m")
    assert labels == (("a", "1"),) and ts.tolist() == [450.0] and vals.tolist() == [2.0]


requests = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.lists(
                st.tuples(
                    st.integers(0, 30).map(lambda k: BASE + 1000 * k), st.sampled_from([1.0, 2.0, STALE_NAN])
                ),
                max_size=3,
            ),
        ),
        max_size=8,
    ),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(reqs=requests, not_after=st.sampled_from([None, (BASE + 20_000) / 1000.0]))
def test_store_series_bulk_equals_series_by_series(reqs: list[Any], not_after: float | None) -> None:
    """Resends (duplicates), out-of-order samples, a series twice in one request, future samples."""
    label_sets = [[("__name__", "m"), ("i", str(i))] for i in range(5)]
    bulk, single = SampleStore(retention=None), SampleStore(retention=None)
    cache = SeriesCache()
    history = []
    for req in reqs:
        raw = encode([(label_sets[i], samples) for i, samples in req])
        history.append(raw)
        for body in (raw, history[0]):  # each request, then a resend of the first
            decoded = decode_fast(body, cache)
            assert decoded is not None
            got = store_series(bulk, decoded, not_after)
            want = store_series(single, decode_reference(body), not_after)
            assert got == want
            assert store_state(bulk) == store_state(single)


def test_decode_request_uses_the_cache_between_requests() -> None:
    cache = SeriesCache()
    raw = encode([([("__name__", "up"), ("job", "a")], [(BASE, 1.0)])])
    body = bytes(cramjam.snappy.compress_raw(raw))
    first = decode_request(body, 1 << 20, cache)
    second = decode_request(body, 1 << 20, cache)
    assert isinstance(first, DecodedRequest) and isinstance(second, DecodedRequest)
    assert second.heads[0] is first.heads[0] and len(cache) == 1
    small = SeriesCache(max_size=1)
    small.put(b"x", first.heads[0])
    small.put(b"y", first.heads[0])
    assert list(small.entries) == [b"y"]
