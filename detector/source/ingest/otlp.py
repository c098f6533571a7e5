"""OTLP/HTTP metrics receiver: ``POST /v1/metrics`` into a `SampleStore`.

Accepts an ``ExportMetricsServiceRequest`` as binary protobuf
(``Content-Type: application/x-protobuf``) or as OTLP JSON (``application/json``),
optionally ``Content-Encoding: gzip`` (the decompressed size is bounded by
``max_decoded_bytes``; the body by ``max_body_bytes``). The reply is an
``ExportMetricsServiceResponse`` in the request's encoding, HTTP 200; points that
could not be stored are counted in ``partial_success.rejected_data_points`` with a
summary in ``partial_success.error_message``. Refusals: 400 (body not decodable),
413 (body or decompressed size above the limit), 415 (other content type or
encoding), each with a ``google.rpc.Status`` body.

Mapping to the Prometheus data model
------------------------------------
Names (`prometheus_metric_name`): every run of characters outside
``[a-zA-Z0-9_:]`` becomes one ``_``; a leading digit gets a ``_`` prefix. Then the
unit becomes a suffix unless the name already ends with it: ``{...}`` annotations
are dropped; ``s``->``seconds``, ``ms``->``milliseconds``, ``By``->``bytes``, ... (table
`UNIT_SUFFIXES`); ``A/B`` -> ``<A>_per_<b>`` (``By/s`` -> ``bytes_per_second``); ``1``
-> ``ratio`` for gauges and nothing otherwise; an unknown unit is sanitised and used
as is. Counters finally get ``_total`` (unless already there).

Labels: data point attribute keys are sanitised like names (a leading digit gets a
``key_`` prefix, a leading ``__`` a ``key`` prefix); two keys that sanitise to one label
have their values joined with ``;`` in key order. Values are strings as given,
``true``/``false``, decimal integers, shortest round-trip floats, base64 bytes, JSON
for arrays and maps. Empty values mean "no label". From the resource only
``service.name`` -> ``job`` (``service.namespace/service.name`` when a namespace is
set) and ``service.instance.id`` -> ``instance`` are kept (they override point
attributes of those names); other resource and scope attributes are dropped.

Points, by metric type:

* **gauge** -> one gauge sample per point.
* **sum, monotonic, cumulative** -> counter ``<name>_total``.
* **sum, non-monotonic, cumulative** -> gauge ``<name>``.
* **sum, delta** -> accumulated per series (in time order) into a running total,
  published as the counter (monotonic) or gauge (non-monotonic) above. A delta point
  not newer than the series' last accumulated point, or a negative delta of a
  monotonic sum, is rejected. Accumulators live as long as the router.
* **histogram (explicit buckets)** -> ``<name>_bucket{le}`` cumulative counts (``le``
  written like Go's ``FormatFloat(b, 'f', -1)``, plus ``le="+Inf"`` = count),
  ``<name>_sum`` (when the point has a sum) and ``<name>_count``. Delta histograms are
  accumulated like delta sums (a change of bucket bounds restarts the accumulator,
  which readers see as a counter reset).
* **summary** -> ``<name>{quantile}``, ``<name>_sum``, ``<name>_count``.
* **exponential histogram** -> rejected (not supported).
* A point flagged ``FLAG_NO_RECORDED_VALUE`` becomes a Prometheus stale marker on
  every series it would have written.

Timestamps: ``time_unix_nano`` truncated to milliseconds (Prometheus' resolution),
stored as seconds; a point without a timestamp is rejected. Rejected also: sums with
unspecified temporality, points with no value, histograms whose bucket counts do not
match their bounds or whose bounds are not increasing. Samples the store drops as out
of order reject their point; exact duplicates (a retried export) are accepted
silently. Exemplars and metadata are ignored.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from detector.source.frame import Labels
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
from detector.source.series import STALE_NAN
from detector.source.store import SampleStore

log = logging.getLogger(__name__)

PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

_INVALID_RUN = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL_RUN = re.compile(r"[^a-zA-Z0-9_]+")
_ANNOTATION = re.compile(r"\{[^}]*\}")

UNIT_SUFFIXES: dict[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
"""OTel (UCUM) unit -> Prometheus name suffix."""

PER_UNIT_SUFFIXES: dict[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
"""Denominator of an ``A/B`` unit -> singular suffix."""


# --------------------------------------------------------------------------- names and labels


def _sanitize(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub("_", text)


def unit_suffix(unit: str, kind: str) -> str:
    """The name suffix for an OTel unit ('' for none). `kind`: gauge | counter | histogram | summary."""
    u = _ANNOTATION.sub("", unit).strip()
    if not u:
        return ""
    if u == "1":
        return "ratio" if kind == "gauge" else ""
    if "/" in u:
        num, _, den = u.partition("/")
        num_s = (
            UNIT_SUFFIXES.get(num.strip(), _sanitize(num.strip(), _INVALID_LABEL_RUN)) if num.strip() else ""
        )
        den_s = PER_UNIT_SUFFIXES.get(den.strip(), _sanitize(den.strip(), _INVALID_LABEL_RUN))
        parts = [p.strip("_") for p in (num_s, "per", den_s) if p.strip("_")]
        return "_".join(parts) if den_s.strip("_") else num_s.strip("_")
    return UNIT_SUFFIXES.get(u, _sanitize(u, _INVALID_LABEL_RUN).strip("_"))


def prometheus_metric_name(name: str, unit: str, kind: str) -> str:
    """OTel metric name + unit -> Prometheus name (rules in the module docstring)."""
    base = _sanitize(name, _INVALID_RUN)
    if not base or base == "_":
        raise ValueError(f"metric name {name!r} has no usable characters")
    if base[0].isdigit():
        base = "_" + base
    counter = kind == "counter"
    if counter and base.endswith("_total"):
        base = base[: -len("_total")]
    suffix = unit_suffix(unit, kind)
    if suffix and not base.endswith("_" + suffix) and base != suffix:
        base = f"{base}_{suffix}"
    if counter:
        base += "_total"
    return base


def prometheus_label_name(key: str) -> str:
    out = _sanitize(key, _INVALID_LABEL_RUN)
    if not out:
        raise ValueError(f"attribute key {key!r} has no usable characters")
    if out[0].isdigit():
        out = "key_" + out
    elif out.startswith("__"):
        out = "key" + out
    return out


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return getattr(v, kind)


def attribute_text(v: Any) -> str:
    """An OTLP AnyValue as a label value."""
    py = _any_value(v)
    if py is None:
        return ""
    if isinstance(py, bool):
        return "true" if py else "false"
    if isinstance(py, int | str):
        return str(py)
    if isinstance(py, float):
        return repr(py) if math.isfinite(py) else {math.inf: "+Inf", -math.inf: "-Inf"}.get(py, "NaN")
    return json.dumps(py, sort_keys=True, separators=(",", ":"))


def attribute_labels(attributes: Iterable[Any]) -> dict[str, str]:
    """KeyValue list -> Prometheus labels (collisions joined with ';' in key order)."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for kv in attributes:
        grouped.setdefault(prometheus_label_name(kv.key), []).append((kv.key, attribute_text(kv.value)))
    out: dict[str, str] = {}
    for name, items in grouped.items():
        values = [v for _, v in sorted(items) if v != ""]
        if values:
            out[name] = ";".join(values)
    return out


def resource_labels(resource: Any) -> dict[str, str]:
    attrs = {kv.key: attribute_text(kv.value) for kv in resource.attributes}
    out: dict[str, str] = {}
    name = attrs.get("service.name", "")
    if name:
        ns = attrs.get("service.namespace", "")
        out["job"] = f"{ns}/{name}" if ns else name
    instance = attrs.get("service.instance.id", "")
    if instance:
        out["instance"] = instance
    return out


def format_le(bound: float) -> str:
    """A bucket bound as Go's strconv.FormatFloat(b, 'f', -1, 64) writes it ('+Inf' for infinity)."""
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return np.format_float_positional(bound, trim="-")


# --------------------------------------------------------------------------- translation (pure apart from accumulators)


@dataclass
class _SumState:
    last_ns: int
    total: float


@dataclass
class _HistState:
    last_ns: int
    bounds: tuple[float, ...]
    counts: np.ndarray
    total_count: float
    total_sum: float


@dataclass
class DeltaAccumulator:
    """Running totals of delta sums and histograms, per output series (thread-safe)."""

    sums: dict[tuple[str, Labels], _SumState] = field(default_factory=dict)
    hists: dict[tuple[str, Labels], _HistState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Translation:
    """Samples per output series, each tagged with the id of the OTLP point that made it."""

    series: dict[tuple[str, Labels], list[tuple[float, float, int]]] = field(default_factory=dict)
    points: int = 0
    rejected: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, labels: Labels, t: float, v: float, point: int) -> None:
        self.series.setdefault((name, labels), []).append((t, v, point))

    def reject(self, point: int, why: str) -> None:
        self.rejected.add(point)
        if len(self.errors) < 10 and why not in self.errors:
            self.errors.append(why)


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _seconds(ns: int) -> float:
    return (ns // 1_000_000) / 1000.0


def _number(p: Any) -> float | None:
    kind = p.WhichOneof("value")
    if kind == "as_double":
        return float(p.as_double)
    if kind == "as_int":
        return float(p.as_int)
    return None


def translate(request: Any, acc: DeltaAccumulator) -> Translation:
    """ExportMetricsServiceRequest -> per-series samples (mapping rules in the module docstring)."""
    out = Translation()
    with acc.lock:
        for rm in request.resource_metrics:
            res = resource_labels(rm.resource)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    _metric(metric, res, acc, out)
    return out


def _points_sorted(points: Any) -> list[Any]:
    return sorted(points, key=lambda p: p.time_unix_nano)


def _metric(metric: Any, res: dict[str, str], acc: DeltaAccumulator, out: Translation) -> None:
    kind = metric.WhichOneof("data")
    if kind is None:
        return
    data = getattr(metric, kind)
    points = _points_sorted(data.data_points)
    first = out.points
    out.points += len(points)
    ids = range(first, first + len(points))
    label = f"metric {metric.name!r}"
    if kind == "exponential_histogram":
        for pid in ids:
            out.reject(pid, f"{label}: exponential histograms are not supported")
        return
    prom_kind = {"gauge": "gauge", "histogram": "histogram", "summary": "summary"}.get(kind, "")
    if kind == "sum":
        prom_kind = "counter" if data.is_monotonic else "gauge"
    try:
        name = prometheus_metric_name(metric.name, metric.unit, prom_kind)
    except ValueError as exc:
        for pid in ids:
            out.reject(pid, f"{label}: {exc}")
        return
    temporality = getattr(data, "aggregation_temporality", _CUMULATIVE)
    if kind in ("sum", "histogram") and temporality not in (_DELTA, _CUMULATIVE):
        for pid in ids:
            out.reject(pid, f"{label}: aggregation temporality unspecified")
        return
    for pid, p in zip(ids, points, strict=True):
        if p.time_unix_nano == 0:
            out.reject(pid, f"{label}: data point without time_unix_nano")
            continue
        try:
            labels = attribute_labels(p.attributes)
        except ValueError as exc:
            out.reject(pid, f"{label}: {exc}")
            continue
        labels.update(res)
        t = _seconds(p.time_unix_nano)
        stale = bool(p.flags & _NO_RECORDED_VALUE)
        if kind in ("gauge", "sum"):
            _number_point(kind, data, name, labels, p, t, stale, pid, acc, out, label)
        elif kind == "histogram":
            _histogram_point(data, name, labels, p, t, stale, pid, acc, out, label)
        else:
            _summary_point(name, labels, p, t, stale, pid, out)


def _number_point(
    kind: str,
    data: Any,
    name: str,
    labels: dict[str, str],
    p: Any,
    t: float,
    stale: bool,
    pid: int,
    acc: DeltaAccumulator,
    out: Translation,
    label: str,
) -> None:
    key = _key(labels)
    if stale:
        out.add(name, key, t, STALE_NAN, pid)
        return
    v = _number(p)
    if v is None:
        out.reject(pid, f"{label}: data point has no value")
        return
    if kind == "sum" and data.aggregation_temporality == _DELTA:
        if data.is_monotonic and v < 0:
            out.reject(pid, f"{label}: negative delta {v} of a monotonic sum")
            return
        state = acc.sums.get((name, key))
        if state is not None and p.time_unix_nano <= state.last_ns:
            out.reject(pid, f"{label}: delta point not newer than the previous one")
            return
        if state is None:
            state = acc.sums[(name, key)] = _SumState(p.time_unix_nano, 0.0)
        state.total += v
        state.last_ns = p.time_unix_nano
        v = state.total
    out.add(name, key, t, v, pid)


def _histogram_point(
    data: Any,
    name: str,
    labels: dict[str, str],
    p: Any,
    t: float,
    stale: bool,
    pid: int,
    acc: DeltaAccumulator,
    out: Translation,
    label: str,
) -> None:
    bounds = tuple(float(b) for b in p.explicit_bounds)
    counts = np.asarray(p.bucket_counts, dtype=np.float64)
    if len(counts) and len(counts) != len(bounds) + 1:
        out.reject(pid, f"{label}: {len(counts)} bucket counts for {len(bounds)} bounds")
        return
    if any(math.isnan(b) for b in bounds) or any(
        b2 <= b1 for b1, b2 in zip(bounds, bounds[1:], strict=False)
    ):
        out.reject(pid, f"{label}: bucket bounds are not increasing")
        return
    base = _key(labels)
    has_sum = p.HasField("sum")
    total_count = float(p.count)
    total_sum = float(p.sum) if has_sum else math.nan
    if not stale and data.aggregation_temporality == _DELTA:
        hkey = (name, base)
        state = acc.hists.get(hkey)
        if state is not None and p.time_unix_nano <= state.last_ns:
            out.reject(pid, f"{label}: delta point not newer than the previous one")
            return
        if state is None or state.bounds != bounds or len(state.counts) != len(counts):
            state = acc.hists[hkey] = _HistState(0, bounds, np.zeros(len(counts)), 0.0, 0.0)
        state.counts = state.counts + counts
        state.total_count += total_count
        if has_sum:
            state.total_sum += total_sum
        state.last_ns = p.time_unix_nano
        counts, total_count, total_sum = state.counts, state.total_count, state.total_sum
    cumulative = np.cumsum(counts)[: len(bounds)] if len(counts) else np.full(len(bounds), math.nan)
    bucket_name = name + "_bucket"
    for b, c in zip(bounds, cumulative, strict=True):
        if not len(counts) and not stale:
            break  # no bucket counts: only the +Inf bucket is known
        out.add(bucket_name, _key({**labels, "le": format_le(b)}), t, STALE_NAN if stale else float(c), pid)
    out.add(bucket_name, _key({**labels, "le": "+Inf"}), t, STALE_NAN if stale else total_count, pid)
    if has_sum or stale:
        out.add(name + "_sum", base, t, STALE_NAN if stale else total_sum, pid)
    out.add(name + "_count", base, t, STALE_NAN if stale else total_count, pid)


def _summary_point(
    name: str, labels: dict[str, str], p: Any, t: float, stale: bool, pid: int, out: Translation
) -> None:
    base = _key(labels)
    for q in p.quantile_values:
        out.add(
            name, _key({**labels, "quantile": format_le(q.quantile)}), t, STALE_NAN if stale else q.value, pid
        )
    out.add(name + "_sum", base, t, STALE_NAN if stale else p.sum, pid)
    out.add(name + "_count", base, t, STALE_NAN if stale else float(p.count), pid)


# --------------------------------------------------------------------------- storing


def store_translation(store: SampleStore, tr: Translation, not_after: float | None = None) -> IngestReport:
    """Append every series (in time order); points whose samples were dropped as out of order are rejected.

    Points stamped after `not_after` (a sender's clock far ahead of ours) are rejected too.
    """
    accepted = ooo = dup = 0
    rejected = set(tr.rejected)
    errors = list(tr.errors)
    for (name, labels), samples in tr.series.items():
        if not_after is not None and any(s[0] > not_after for s in samples):
            rejected.update(s[2] for s in samples if s[0] > not_after)
            msg = f"points of {name} stamped more than the allowed skew ahead of now"
            if len(errors) < 10 and msg not in errors:
                errors.append(msg)
            samples = [s for s in samples if s[0] <= not_after]
            if not samples:
                continue
        samples.sort(key=lambda s: s[0])
        ts = np.array([s[0] for s in samples])
        vals = np.array([s[1] for s in samples])
        r = store.append(name, dict(labels), ts, vals)
        accepted += r.accepted
        dup += r.duplicates
        if r.out_of_order:
            dropped = _not_stored(store, name, labels, ts, vals)
            dup += r.out_of_order - int(dropped.sum())
            ooo += int(dropped.sum())
            if dropped.any():
                rejected.update(samples[i][2] for i in np.flatnonzero(dropped))
                msg = f"out-of-order samples for {name}"
                if len(errors) < 10 and msg not in errors:
                    errors.append(msg)
    return IngestReport(
        protocol="otlp",
        status=200,
        series=len(tr.series),
        accepted=accepted,
        out_of_order=ooo,
        duplicates=dup,
        invalid=len(rejected),
        error="; ".join(errors) if rejected else "",
    )


def _not_stored(
    store: SampleStore, name: str, labels: Labels, ts: np.ndarray, vals: np.ndarray
) -> np.ndarray:
    """Mask of samples with no bit-identical twin in the store (the ones really dropped)."""
    for lbl, sts, svals in store.select(name, labels):
        if lbl != labels:
            continue
        idx = np.searchsorted(sts, ts)
        inside = idx < len(sts)
        safe = np.where(inside, idx, 0)
        same = inside & (sts[safe] == ts) & (svals[safe].view(np.uint64) == vals.view(np.uint64))
        return ~same
    return np.ones(len(ts), dtype=bool)


# --------------------------------------------------------------------------- HTTP


def decode_request(
    body: bytes, content_type: str | None, encoding: str | None, max_decoded_bytes: int
) -> tuple[Any, str]:
    """(ExportMetricsServiceRequest, media type); raises IngestError 400/413/415."""
    mtype, _ = media_type(content_type)
    if mtype not in (PROTOBUF, JSON):
        raise IngestError(415, f"unsupported Content-Type {content_type!r}: expected {PROTOBUF} or {JSON}")
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        raw = gunzip(body, max_decoded_bytes)
    elif enc == "identity":
        raw = body
    else:
        raise IngestError(415, f"unsupported Content-Encoding {encoding!r}: expected gzip or none")
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    try:
        if mtype == PROTOBUF:
            req.ParseFromString(raw)
        else:
            json_format.Parse(raw.decode("utf-8"), req, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise IngestError(400, f"body is not an OTLP ExportMetricsServiceRequest: {exc}") from None
    return req, mtype


def gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        raw = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, f"invalid gzip body: {exc}") from None
    if len(raw) > limit:
        raise IngestError(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise IngestError(400, "invalid gzip body: truncated")
    return raw


def _encode(msg: Message, mtype: str) -> bytes:
    if mtype == JSON:
        return json_format.MessageToJson(msg, indent=None).encode()
    return msg.SerializeToString()


def _status(code: int, message: str, mtype: str) -> Response:
    grpc_code = {400: 3, 413: 8, 415: 3, 500: 13}.get(code, 2)
    body_type = mtype if mtype in (PROTOBUF, JSON) else JSON
    return Response(
        _encode(status_pb2.Status(code=grpc_code, message=message), body_type),
        status_code=code,
        media_type=body_type,
    )


def otlp_router(
    store: SampleStore,
    *,
    max_body_bytes: int = 10 * MiB,
    max_decoded_bytes: int = 64 * MiB,
    on_ingest: OnIngest | None = None,
    path: str = PATH,
    max_future: float = MAX_FUTURE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """An APIRouter with ``POST {path}`` storing OTLP/HTTP metric exports into `store`.

    Points more than `max_future` seconds ahead of `clock()` are rejected (partial success).
    """
    if max_body_bytes <= 0 or max_decoded_bytes <= 0:
        raise ValueError("max_body_bytes and max_decoded_bytes must be positive")
    router = APIRouter()
    acc = DeltaAccumulator()

    report = safe_reporter(on_ingest, "otlp")

    def process(body: bytes, content_type: str | None, encoding: str | None) -> tuple[IngestReport, str]:
        req, mtype = decode_request(body, content_type, encoding, max_decoded_bytes)
        rep = store_translation(store, translate(req, acc), clock() + max_future)
        store.commit()  # logged samples are durable before the answer
        return rep, mtype

    @router.post(path, summary="OTLP/HTTP metrics export", response_class=Response)
    async def export(request: Request) -> Response:
        ctype = request.headers.get("content-type")
        mtype = media_type(ctype)[0]
        try:
            body = await read_body(request, max_body_bytes)
            rep, mtype = await run_in_threadpool(
                process, body, ctype, request.headers.get("content-encoding")
            )
        except IngestError as exc:
            report(IngestReport(protocol="otlp", status=exc.status, error=exc.message))
            return _status(exc.status, exc.message, mtype)
        except Exception as exc:  # our own fault: the exporter retries 5xx
            log.exception("otlp: storing an export failed")
            msg = f"internal error while storing samples: {type(exc).__name__}"
            if isinstance(exc, OSError):
                msg = f"cannot write the write-ahead log: {exc}"
            report(IngestReport(protocol="otlp", status=500, error=msg))
            return _status(500, msg, mtype)
        report(rep)
        resp = metrics_service_pb2.ExportMetricsServiceResponse()
        if rep.invalid:
            resp.partial_success.rejected_data_points = rep.invalid
            resp.partial_success.error_message = rep.error
        return Response(_encode(resp, mtype), status_code=200, media_type=mtype)

    return router
