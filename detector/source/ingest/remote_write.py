"""Prometheus remote_write 1.0 receiver: ``POST /api/v1/write`` into a `SampleStore`.

Request (what Prometheus and the OpenTelemetry collector send): a protobuf
``prometheus.WriteRequest`` (`detector.source.ingest.remote_pb`), compressed with the snappy
*block* format, with ``Content-Encoding: snappy``, ``Content-Type:
application/x-protobuf`` and ``X-Prometheus-Remote-Write-Version: 0.1.0``.

Responses
---------
* **204** — every sample was stored, or was an exact duplicate (same timestamp, same
  value bits) of a sample already stored: a sender re-sending a batch we did store
  (its request timed out) gets 204, so retries are idempotent.
* **400** — the data cannot be used: a truncated or corrupt snappy block, bytes that
  are not a ``WriteRequest`` (also a request with unknown top-level fields, e.g. a
  remote-write 2.0 body sent as 1.0), a series without ``__name__``, an invalid metric
  or label name, a repeated label name, a label name starting with ``__``, native
  histogram samples (not supported by the store). This validation covers the whole
  request **before** anything is stored: a 400 of this kind stores nothing.
  Also **400** when samples were *out of order* (older than, or at the same time as
  but different from, the newest stored sample of their series). Those samples are
  dropped and counted; the request's in-order samples **are kept**. Prometheus' own
  receiver rolls the whole request back instead; our store has no transactions, and
  as a sender never retries a 400, keeping the good samples loses less. The 400 tells
  the sender (which logs it and drops the batch) that retrying cannot help.
* **413** — a body above ``max_body_bytes``, or a snappy block whose declared
  decompressed length (read from its header, before decompressing) is above
  ``max_decoded_bytes``.
* **415** — ``Content-Type`` other than ``application/x-protobuf`` (``proto=`` absent
  or ``prometheus.WriteRequest``), among them remote write 2.0
  (``proto=io.prometheus.write.v2.Request``); a ``Content-Encoding`` other than
  snappy; a ``X-Prometheus-Remote-Write-Version`` other than 0.1.x. A missing
  Content-Type/Content-Encoding/version header is read as remote write 1.0, as
  Prometheus' own receiver does.
* **500** — only our own unexpected fault while storing (the sender retries 5xx).

Samples: timestamps (ms) become seconds; values are stored bit for bit, so NaN,
+-Inf and Prometheus stale markers (the receiver of a stale marker sees the series
end) keep their meaning. Counter resets are ordinary samples (the query side handles
them). Exemplars and metric metadata are accepted and ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cramjam
import numpy as np
from fastapi import APIRouter
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from detector.source.ingest import (
    MAX_FUTURE_SECONDS,
    IngestError,
    IngestReport,
    MiB,
    OnIngest,
    media_type,
    read_body,
    safe_reporter,
)
from detector.source.ingest.remote_pb import messages, raw_write_request
from detector.source.series import RefBatch, SeriesRef, series_ref, validate_label_name, validate_metric_name
from detector.source.store import SampleStore

log = logging.getLogger(__name__)

PATH = "/api/v1/write"
_V1_PROTOS = ("", "prometheus.writerequest")


@dataclass(frozen=True)
class SeriesSamples:
    """One decoded, validated series of a WriteRequest."""

    name: str
    labels: dict[str, str]
    timestamps: np.ndarray
    """Seconds."""
    values: np.ndarray


# --------------------------------------------------------------------------- decoding (pure)


def snappy_decoded_length(block: bytes) -> int:
    """The uncompressed length a snappy block declares in its varint header."""
    n = 0
    for i, byte in enumerate(block[:5]):
        n |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return n
    raise IngestError(400, "snappy block has no valid length header (truncated or not snappy)")


def decompress(body: bytes, max_decoded_bytes: int) -> bytes:
    if not body:
        raise IngestError(400, "empty body: expected a snappy-compressed WriteRequest")
    declared = snappy_decoded_length(body)
    if declared > max_decoded_bytes:
        raise IngestError(
            413, f"decompressed size {declared} bytes exceeds the limit of {max_decoded_bytes} bytes"
        )
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise IngestError(400, f"invalid snappy block: {exc}") from None
    if len(raw) != declared:
        raise IngestError(400, f"snappy block declared {declared} bytes but held {len(raw)}")
    return raw


def _series_labels(index: int, labels: object, known: set[str]) -> tuple[str, dict[str, str]]:
    name = ""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for lbl in labels:  # type: ignore[attr-defined]
        key, value = lbl.name, lbl.value
        if key in seen:
            raise IngestError(400, f"timeseries[{index}]: label {key!r} appears twice")
        seen.add(key)
        if key == "__name__":
            name = value
            continue
        if key not in known:
            try:
                validate_label_name(key)
            except ValueError as exc:
                raise IngestError(400, f"timeseries[{index}]: {exc}") from None
            known.add(key)
        out[key] = value
    if not name:
        raise IngestError(400, f"timeseries[{index}]: no __name__ label")
    if "\x00name:" + name not in known:  # metric names and label names are cached apart
        try:
            validate_metric_name(name)
        except ValueError as exc:
            raise IngestError(400, f"timeseries[{index}]: {exc}") from None
        known.add("\x00name:" + name)
    return name, out


def decode_reference(raw: bytes) -> list[SeriesSamples]:
    """Parse and validate a decompressed WriteRequest with the protobuf library, series by
    series (the reference the fast decoder is tested against). Raises IngestError (400)."""
    try:
        req = messages().WriteRequest.FromString(raw)
    except DecodeError as exc:
        raise IngestError(400, f"body is not a remote write 1.0 WriteRequest: {exc}") from None
    unknown = sorted({f.field_number for f in unknown_fields.UnknownFieldSet(req)})
    if unknown:
        raise IngestError(
            400,
            f"WriteRequest has unknown fields {unknown} (a remote write 2.0 body needs "
            "Content-Type application/x-protobuf;proto=io.prometheus.write.v2.Request, which is not supported)",
        )
    known: set[str] = set()
    heads: list[tuple[str, dict[str, str], int]] = []
    stamps: list[int] = []
    values: list[float] = []
    for i, ts in enumerate(req.timeseries):
        name, labels = _series_labels(i, ts.labels, known)
        if len(ts.histograms):
            raise IngestError(400, f"timeseries[{i}] ({name}): native histogram samples are not supported")
        samples = ts.samples
        stamps.extend([s.timestamp for s in samples])
        values.extend([s.value for s in samples])
        heads.append((name, labels, len(stamps)))
    # one conversion for the whole request; each series gets a slice (a view)
    all_ts = np.array(stamps, dtype=np.int64) / 1000.0
    all_vals = np.array(values, dtype=np.float64)
    out: list[SeriesSamples] = []
    begin = 0
    for name, labels, end in heads:
        out.append(SeriesSamples(name, labels, all_ts[begin:end], all_vals[begin:end]))
        begin = end
    return out


# --------------------------------------------------------------------------- fast decoding

_LABEL_TAG = 0x0A
"""TimeSeries.labels: field 1, length-delimited."""
_SAMPLE_TAG = 0x12
"""TimeSeries.samples: field 2, length-delimited."""
_VALUE_TAG = 0x09
"""Sample.value: field 1, 64-bit."""
_TIMESTAMP_TAG = 0x10
"""Sample.timestamp: field 2, varint."""
_MAX_SAMPLE_BYTES = 20
"""The longest Sample in canonical encoding: value (1 + 8) and a 10-byte timestamp varint (1 + 10)."""
_PAD = 32
_SCALAR_BELOW = 16
"""The lockstep walk hands series to a Python loop when fewer than this many are left."""
SERIES_CACHE_SIZE = 1 << 18


class SeriesCache:
    """Label sets already decoded and validated, keyed by their bytes on the wire.

    A sender encodes a series' labels the same way in every request, so the receiver
    decodes and validates each distinct label set once. Entries are
    ``(name, labels, SeriesRef)``; the cache is emptied when it reaches `max_size`.
    Safe to share between threads (single dictionary operations only).
    """

    __slots__ = ("entries", "max_size")

    def __init__(self, max_size: int = SERIES_CACHE_SIZE) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size!r}")
        self.entries: dict[bytes, tuple[str, dict[str, str], SeriesRef]] = {}
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: bytes, entry: tuple[str, dict[str, str], SeriesRef]) -> None:
        if len(self.entries) >= self.max_size:
            self.entries.clear()
        self.entries[key] = entry


class DecodedRequest:
    """A decoded WriteRequest as flat arrays: series k is ``heads[k]`` (name, labels,
    `SeriesRef`) with samples ``timestamps[bounds[k]:bounds[k + 1]]`` (seconds) and the
    same slice of ``values``. `series()` gives the `SeriesSamples` list of
    `decode_reference`. Label dicts are shared with the cache: read only."""

    __slots__ = ("heads", "bounds", "timestamps", "values")

    def __init__(
        self,
        heads: list[tuple[str, dict[str, str], SeriesRef]],
        bounds: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
    ) -> None:
        self.heads = heads
        self.bounds = bounds
        self.timestamps = timestamps
        self.values = values

    def __len__(self) -> int:
        return len(self.heads)

    def series(self) -> list[SeriesSamples]:
        b = self.bounds.tolist()
        return [
            SeriesSamples(name, dict(labels), self.timestamps[b[k] : b[k + 1]], self.values[b[k] : b[k + 1]])
            for k, (name, labels, _) in enumerate(self.heads)
        ]


def _varint_size(n: np.ndarray) -> np.ndarray:
    """Bytes of the shortest varint of each (non-negative) n."""
    size = np.ones(n.shape, dtype=np.int64)
    for shift in range(7, 64, 7):
        size += n >= (1 << shift)
    return size


def _lengths(buf: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Varint lengths starting at positions `q` (at most 3 bytes): (values, bytes used)."""
    b = buf[q].astype(np.int64)
    length = b & 0x7F
    used = np.ones(len(q), dtype=np.int64)
    more = b >= 0x80
    for shift in (7, 14):
        if not more.any():
            return length, used
        b = buf[q + used].astype(np.int64)
        length = np.where(more, length | ((b & 0x7F) << shift), length)
        used += more
        more &= b >= 0x80
    return None if more.any() else (length, used)


def _walk_one(
    raw: bytes, p: int, end: int, sampling: bool, out: tuple[list[int], list[int], list[int]], i: int
) -> int | None:
    """The field walk of `_walk` for one series from position p (a Python loop); returns
    where its labels end (-1: no label seen here), None when the encoding is not canonical."""
    label_end = -1
    ser, pos, lens = out
    while p < end:
        tag = raw[p]
        q = p + 1
        length = 0
        shift = 0
        while True:
            if q >= end or shift > 14:
                return None
            byte = raw[q]
            length |= (byte & 0x7F) << shift
            q += 1
            if byte < 0x80:
                break
            shift += 7
        nxt = q + length
        if nxt > end:
            return None
        if tag == _LABEL_TAG:
            if sampling:
                return None
            label_end = nxt
        elif tag == _SAMPLE_TAG:
            sampling = True
            ser.append(i)
            pos.append(q)
            lens.append(length)
        else:
            return None
        p = nxt
    return label_end


def _walk(
    raw: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Walk the fields of every TimeSeries at once (one numpy pass per field rank).

    Accepts only labels (field 1) followed by samples (field 2); anything else (exemplars,
    histograms, unknown fields, a label after a sample, a field running past its series)
    returns None. Returns (end of each series' labels, and for every sample in wire order:
    its series, start, length).
    """
    n = len(starts)
    pos = starts.copy()
    label_end = starts.copy()
    sampling = np.zeros(n, dtype=bool)
    ser: list[np.ndarray] = []
    spos: list[np.ndarray] = []
    slen: list[np.ndarray] = []
    act = np.flatnonzero(pos < ends)
    while act.size >= _SCALAR_BELOW:
        p = pos[act]
        tag = buf[p]
        got = _lengths(buf, p + 1)
        if got is None:
            return None
        length, used = got
        q = p + 1 + used
        nxt = q + length
        e = ends[act]
        if (nxt > e).any():
            return None
        is_label = tag == _LABEL_TAG
        if not (is_label | (tag == _SAMPLE_TAG)).all():
            return None
        rows = act[is_label]
        if sampling[rows].any():
            return None
        label_end[rows] = nxt[is_label]
        is_sample = ~is_label
        rows = act[is_sample]
        sampling[rows] = True
        ser.append(rows)
        spos.append(q[is_sample])
        slen.append(length[is_sample])
        pos[act] = nxt
        act = act[nxt < e]
    if act.size:
        out: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i in act.tolist():
            le = _walk_one(raw, int(pos[i]), int(ends[i]), bool(sampling[i]), out, i)
            if le is None:
                return None
            if le >= 0:
                label_end[i] = le
        ser.append(np.array(out[0], dtype=np.int64))
        spos.append(np.array(out[1], dtype=np.int64))
        slen.append(np.array(out[2], dtype=np.int64))
    if not ser:
        empty = np.empty(0, dtype=np.int64)
        return label_end, empty, empty, empty
    return label_end, np.concatenate(ser), np.concatenate(spos), np.concatenate(slen)


def _samples(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(timestamps in ms, values) of Sample messages in canonical encoding (value field,
    then timestamp field, each optional as proto3 omits zeros); None for anything else."""
    m = len(start)
    if m == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if (length > _MAX_SAMPLE_BYTES).any():
        return None
    has_value = (length >= 9) & (buf[start] == _VALUE_TAG)
    all_values = bool(has_value.all())
    at = start + 9 if all_values else start + np.where(has_value, 9, 0)
    rest = length - (at - start)
    has_time = rest > 0
    all_times = bool(has_time.all())
    if ((buf[at] != _TIMESTAMP_TAG) & has_time).any():
        return None
    used = rest - 1
    width = int(used.max())
    if width > 10 or (has_time & (used < 1)).any():
        return None
    stamps = np.zeros(m, dtype=np.uint64)
    if width > 0:
        vb = buf[(at + 1)[:, None] + np.arange(width)]
        cont = vb >= 0x80
        # each varint: continuation bits on all its bytes but the last, which ends it
        inside = np.arange(width) < used[:, None]
        last = np.arange(width) == (used - 1)[:, None]
        ok = ((cont == (inside & ~last)) | ~inside).all(axis=1) | ~has_time
        if not ok.all() or ((used == 10) & (vb[:, 9 if width == 10 else 0] > 1)).any():
            return None
        for k in range(width):
            part = (vb[:, k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
            stamps |= part if all_times and k < int(used.min()) else np.where(inside[:, k], part, np.uint64(0))
    bits = buf[(start + 1)[:, None] + np.arange(8)].view("<u8").ravel()
    if not all_values:
        bits = np.where(has_value, bits, np.uint64(0))
    return stamps.view(np.int64), bits.view(np.float64)


def _decode_labels(key: bytes, index: int) -> tuple[str, dict[str, str], SeriesRef] | None:
    """Decode and validate one label set (the bytes of a TimeSeries' label fields); None
    when the reference decoder would refuse it (it then explains why)."""
    try:
        ts = messages().TimeSeries.FromString(key)
        name, labels = _series_labels(index, ts.labels, set())
        return name, labels, series_ref(name, labels)
    except (DecodeError, IngestError, ValueError):
        return None


def decode_fast(raw: bytes, cache: SeriesCache) -> DecodedRequest | None:
    """Decode a decompressed WriteRequest without a Python object per sample or label.

    Handles the encoding Prometheus and other senders use (top level: timeseries only;
    each series: its labels, then its samples; each sample: value then timestamp, zeros
    omitted). Returns None for anything else, and for anything `decode_reference` would
    refuse: the caller then runs `decode_reference`, whose result (or error) is the answer.
    When not None, the result holds the same series, labels, timestamps and value bits as
    `decode_reference` (tests/equivalence/test_perf_equivalence_ingest.py).
    """
    try:
        entries = raw_write_request().FromString(raw).timeseries
    except DecodeError:
        return None
    n = len(entries)
    lens = np.fromiter(map(len, entries), dtype=np.int64, count=n)
    sizes = 1 + _varint_size(lens) + lens
    if int(sizes.sum()) != len(raw):
        return None  # metadata, unknown or non-canonical top-level fields
    ends = np.cumsum(sizes)
    starts = ends - lens
    buf = np.frombuffer(raw + bytes(_PAD), dtype=np.uint8)
    walked = _walk(raw, buf, starts, ends)
    if walked is None:
        return None
    label_end, ser, spos, slen = walked
    decoded = _samples(buf, spos, slen)
    if decoded is None:
        return None
    stamps, values = decoded
    if len(ser) and (ser[1:] < ser[:-1]).any():
        order = np.argsort(ser, kind="stable")
        ser, stamps, values = ser[order], stamps[order], values[order]
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(ser, minlength=n), out=bounds[1:])
    keys = [raw[a:b] for a, b in zip(starts.tolist(), label_end.tolist(), strict=True)]
    heads = list(map(cache.entries.get, keys))
    if None in heads:
        for i, head in enumerate(heads):
            if head is None:
                got = _decode_labels(keys[i], i)
                if got is None:
                    return None
                cache.put(keys[i], got)
                heads[i] = got
    return DecodedRequest(heads, bounds, stamps / 1000.0, values)  # type: ignore[arg-type]


def decode_request(
    body: bytes, max_decoded_bytes: int, cache: SeriesCache | None = None
) -> DecodedRequest | list[SeriesSamples]:
    """Decompress, parse and validate a remote_write 1.0 body (IngestError 400/413):
    `decode_fast` when it applies, else `decode_reference`."""
    raw = decompress(body, max_decoded_bytes)
    fast = decode_fast(raw, cache if cache is not None else SeriesCache())
    return fast if fast is not None else decode_reference(raw)


def decode_write_request(body: bytes, max_decoded_bytes: int) -> list[SeriesSamples]:
    """Decompress, parse and validate a remote_write 1.0 body. Raises IngestError (400/413)."""
    got = decode_request(body, max_decoded_bytes)
    return got.series() if isinstance(got, DecodedRequest) else got


# --------------------------------------------------------------------------- storing


def store_series(
    store: SampleStore, series: Sequence[SeriesSamples] | DecodedRequest, not_after: float | None = None
) -> IngestReport:
    """Append decoded series; counts accepted / out-of-order / duplicate samples.

    Samples stamped after `not_after` (a sender's clock far ahead of ours) are refused as
    invalid: stored, they would make every later real sample of the series out of order.
    A `DecodedRequest` is appended in bulk (`SampleStore.append_refs`) with the same
    result as series by series.
    """
    tally = _Tally()
    if isinstance(series, DecodedRequest):
        ts = series.timestamps
        if (not_after is not None and len(ts) and float(ts.max()) > not_after) or (
            type(store).append is not SampleStore.append  # a store that overrides append sees every series
        ):
            return store_series(store, series.series(), not_after)
        _store_decoded(store, series, tally)
    else:
        for s in series:
            if not_after is not None and len(s.timestamps) and s.timestamps[-1] > not_after:
                keep = s.timestamps <= not_after
                tally.future += int((~keep).sum())
                s = SeriesSamples(s.name, s.labels, s.timestamps[keep], s.values[keep])
            if len(s.timestamps):
                _store_one(store, s, tally)
    problems = []
    if tally.ooo:
        problems.append(f"dropped {tally.ooo} out-of-order samples (first series: {tally.example})")
    if tally.future:
        problems.append(f"refused {tally.future} samples stamped more than the allowed skew ahead of now")
    error = "; ".join(problems) + f"; stored {tally.accepted}" if problems else ""
    return IngestReport(
        protocol="remote_write",
        status=400 if problems else 204,
        series=len(series),
        accepted=tally.accepted,
        out_of_order=tally.ooo,
        duplicates=tally.dup,
        invalid=tally.future,
        error=error,
    )


@dataclass
class _Tally:
    accepted: int = 0
    ooo: int = 0
    dup: int = 0
    future: int = 0
    example: str = ""


def _store_one(store: SampleStore, s: SeriesSamples, tally: _Tally) -> None:
    r = store.append(s.name, s.labels, s.timestamps, s.values)
    tally.accepted += r.accepted
    tally.dup += r.duplicates
    if r.out_of_order:
        # A re-sent batch (the sender timed out on a request we did store) holds samples
        # older than the newest stored one; those identical to a stored sample are duplicates.
        already = _already_stored(store, s) - r.accepted
        really_late = max(0, r.out_of_order - max(0, already))
        tally.dup += r.out_of_order - really_late
        tally.ooo += really_late
        if really_late and not tally.example:
            tally.example = f"{s.name}{_fmt_labels(s.labels)}"


def _store_decoded(store: SampleStore, req: DecodedRequest, tally: _Tally) -> None:
    """Bulk append; a series the bulk path stops at (duplicates, out-of-order samples) goes
    through `_store_one`, in request order, so the counts are those of the series loop."""
    batch = RefBatch([h[2] for h in req.heads], req.bounds, req.timestamps, req.values)
    bounds = batch.bounds
    k, n = 0, len(batch)
    while k < n:
        k, accepted = store.append_refs(batch, k)
        tally.accepted += accepted
        if k < n:
            name, labels, _ = req.heads[k]
            b0, b1 = bounds[k], bounds[k + 1]
            _store_one(store, SeriesSamples(name, labels, req.timestamps[b0:b1], req.values[b0:b1]), tally)
            k += 1


def _already_stored(store: SampleStore, s: SeriesSamples) -> int:
    """How many of the series' samples (time and value bits) are present in the store."""
    key = tuple(sorted((k, v) for k, v in s.labels.items() if v != ""))
    for labels, ts, vals in store.select(s.name, key):
        if labels != key:
            continue
        idx = np.searchsorted(ts, s.timestamps)
        inside = idx < len(ts)
        safe = np.where(inside, idx, 0)
        same = inside & (ts[safe] == s.timestamps) & (vals[safe].view(np.uint64) == s.values.view(np.uint64))
        return int(same.sum())
    return 0


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def ingest_remote_write(
    store: SampleStore, body: bytes, max_decoded_bytes: int, cache: SeriesCache | None = None
) -> IngestReport:
    """Decode and store one request (`cache`: label sets decoded by earlier requests)."""
    return store_series(store, decode_request(body, max_decoded_bytes, cache))


# --------------------------------------------------------------------------- HTTP


def check_headers(content_type: str | None, encoding: str | None, version: str | None) -> None:
    """Raise IngestError(415) unless the headers describe remote write 1.0 (rules in the module doc)."""
    mtype, params = media_type(content_type)
    if content_type is not None and mtype != "application/x-protobuf":
        raise IngestError(415, f"unsupported Content-Type {content_type!r}: expected application/x-protobuf")
    proto = params.get("proto", "").lower()
    if proto not in _V1_PROTOS:
        raise IngestError(
            415,
            f"unsupported remote write message {params.get('proto')!r}: only remote write 1.0 is accepted",
        )
    if encoding is not None and encoding.strip().lower() != "snappy":
        raise IngestError(415, f"unsupported Content-Encoding {encoding!r}: expected snappy")
    if version is not None and not version.strip().startswith("0.1."):
        raise IngestError(415, f"unsupported X-Prometheus-Remote-Write-Version {version!r}: expected 0.1.0")


def remote_write_router(
    store: SampleStore,
    *,
    max_body_bytes: int = 10 * MiB,
    max_decoded_bytes: int = 64 * MiB,
    on_ingest: OnIngest | None = None,
    path: str = PATH,
    max_future: float = MAX_FUTURE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """An APIRouter with ``POST {path}`` storing remote_write 1.0 requests into `store`.

    Samples more than `max_future` seconds ahead of `clock()` are refused (400, the rest stored).
    """
    if max_body_bytes <= 0 or max_decoded_bytes <= 0:
        raise ValueError("max_body_bytes and max_decoded_bytes must be positive")
    router = APIRouter()
    cache = SeriesCache()

    report = safe_reporter(on_ingest, "remote_write")

    def decode_and_store(
        body: bytes,
    ) -> tuple[DecodedRequest | list[SeriesSamples], IngestReport | None, Exception | None]:
        """Decode (IngestError propagates), then store and commit to the store's journal (if
        any) before the answer: (series, report, our own fault)."""
        series = decode_request(body, max_decoded_bytes, cache)
        try:
            rep = store_series(store, series, clock() + max_future)
            store.commit()
            return series, rep, None
        except Exception as exc:  # our own fault, answered with a 500 by the caller
            return series, None, exc

    @router.post(path, status_code=204, response_class=Response, summary="Prometheus remote_write 1.0")
    async def write(request: Request) -> Response:
        try:
            check_headers(
                request.headers.get("content-type"),
                request.headers.get("content-encoding"),
                request.headers.get("x-prometheus-remote-write-version"),
            )
            body = await read_body(request, max_body_bytes)
            # one trip to the thread pool for decoding and storing
            series, rep, fault = await run_in_threadpool(decode_and_store, body)
        except IngestError as exc:
            report(IngestReport(protocol="remote_write", status=exc.status, error=exc.message))
            return PlainTextResponse(exc.message + "\n", status_code=exc.status)
        if fault is not None or rep is None:  # our own fault: the sender should retry
            log.error("remote_write: storing %d series failed", len(series), exc_info=fault)
            msg = f"internal error while storing samples: {type(fault).__name__}"
            if isinstance(fault, OSError):
                msg = f"cannot write the write-ahead log: {fault}"
            report(IngestReport(protocol="remote_write", status=500, series=len(series), error=msg))
            return PlainTextResponse(msg + "\n", status_code=500)
        report(rep)
        if rep.status != 204:
            return PlainTextResponse(rep.error + "\n", status_code=rep.status)
        return Response(status_code=204)

    return router
