"""Prometheus remote_write 1.0 receiver: ``POST /api/v1/write`` into a `SampleStore`.

Request (what Prometheus and the OpenTelemetry collector send): a protobuf
``prometheus.WriteRequest`` (`detector.ingest.remote_pb`), compressed with the snappy
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
from collections.abc import Callable
from dataclasses import dataclass

import cramjam
import numpy as np
from fastapi import APIRouter
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from detector.ingest import (
    MAX_FUTURE_SECONDS,
    IngestError,
    IngestReport,
    MiB,
    OnIngest,
    media_type,
    read_body,
)
from detector.ingest.remote_pb import messages
from detector.store import SampleStore, validate_label_name, validate_metric_name

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


def decode_write_request(body: bytes, max_decoded_bytes: int) -> list[SeriesSamples]:
    """Decompress, parse and validate a remote_write 1.0 body. Raises IngestError (400/413)."""
    raw = decompress(body, max_decoded_bytes)
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


# --------------------------------------------------------------------------- storing


def store_series(
    store: SampleStore, series: list[SeriesSamples], not_after: float | None = None
) -> IngestReport:
    """Append decoded series; counts accepted / out-of-order / duplicate samples.

    Samples stamped after `not_after` (a sender's clock far ahead of ours) are refused as
    invalid: stored, they would make every later real sample of the series out of order.
    """
    accepted = ooo = dup = future = 0
    example = ""
    for s in series:
        if not_after is not None and len(s.timestamps) and s.timestamps[-1] > not_after:
            keep = s.timestamps <= not_after
            future += int((~keep).sum())
            s = SeriesSamples(s.name, s.labels, s.timestamps[keep], s.values[keep])
        if not len(s.timestamps):
            continue
        r = store.append(s.name, s.labels, s.timestamps, s.values)
        accepted += r.accepted
        dup += r.duplicates
        if r.out_of_order:
            # A re-sent batch (the sender timed out on a request we did store) holds samples
            # older than the newest stored one; those identical to a stored sample are duplicates.
            already = _already_stored(store, s) - r.accepted
            really_late = max(0, r.out_of_order - max(0, already))
            dup += r.out_of_order - really_late
            ooo += really_late
            if really_late and not example:
                example = f"{s.name}{_fmt_labels(s.labels)}"
    problems = []
    if ooo:
        problems.append(f"dropped {ooo} out-of-order samples (first series: {example})")
    if future:
        problems.append(f"refused {future} samples stamped more than the allowed skew ahead of now")
    error = "; ".join(problems) + f"; stored {accepted}" if problems else ""
    return IngestReport(
        protocol="remote_write",
        status=400 if problems else 204,
        series=len(series),
        accepted=accepted,
        out_of_order=ooo,
        duplicates=dup,
        invalid=future,
        error=error,
    )


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


def ingest_remote_write(store: SampleStore, body: bytes, max_decoded_bytes: int) -> IngestReport:
    return store_series(store, decode_write_request(body, max_decoded_bytes))


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

    def report(rep: IngestReport) -> None:
        if on_ingest is not None:
            try:
                on_ingest(rep)
            except Exception:  # a broken observer must not fail ingestion
                log.exception("remote_write on_ingest callback failed")

    @router.post(path, status_code=204, response_class=Response, summary="Prometheus remote_write 1.0")
    async def write(request: Request) -> Response:
        try:
            check_headers(
                request.headers.get("content-type"),
                request.headers.get("content-encoding"),
                request.headers.get("x-prometheus-remote-write-version"),
            )
            body = await read_body(request, max_body_bytes)
            series = await run_in_threadpool(decode_write_request, body, max_decoded_bytes)
        except IngestError as exc:
            report(IngestReport(protocol="remote_write", status=exc.status, error=exc.message))
            return PlainTextResponse(exc.message + "\n", status_code=exc.status)
        try:
            rep = await run_in_threadpool(store_series, store, series, clock() + max_future)
        except Exception as exc:  # our own fault: the sender should retry
            log.exception("remote_write: storing %d series failed", len(series))
            msg = f"internal error while storing samples: {type(exc).__name__}"
            report(IngestReport(protocol="remote_write", status=500, series=len(series), error=msg))
            return PlainTextResponse(msg + "\n", status_code=500)
        report(rep)
        if rep.status != 204:
            return PlainTextResponse(rep.error + "\n", status_code=rep.status)
        return Response(status_code=204)

    return router
