"""OTLP/HTTP metrics receiver: the OpenTelemetry SDK's own exporter, OTLP JSON, and refusals."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from detector.source.ingest import IngestReport
from detector.source.ingest.otlp import attribute_labels, format_le, otlp_router, prometheus_metric_name
from detector.source.series import is_stale_marker
from detector.source.store import SampleStore
from tests._procs import serve_asgi

SERVICE = {"service.name": "player", "service.instance.id": "pod-7"}
JOB = (("instance", "pod-7"), ("job", "player"))


@pytest.fixture()
def receiver() -> Iterator[tuple[str, SampleStore, list[IngestReport]]]:
    store = SampleStore(retention=None)
    reports: list[IngestReport] = []
    app = FastAPI()
    app.include_router(
        otlp_router(store, max_body_bytes=1 << 20, max_decoded_bytes=2 << 20, on_ingest=reports.append)
    )
    with serve_asgi(app) as url:
        yield url, store, reports


def _values(store: SampleStore, name: str, **labels: str) -> np.ndarray:
    want = tuple(sorted({**dict(JOB), **labels}.items()))
    for lbl, _, vals in store.select(name):
        if lbl == want:
            return vals
    raise AssertionError(f"no series {name}{want}; have {[lbl for lbl, _, _ in store.select(name)]}")


def _provider(url: str, **exporter_kwargs: object) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    exporter = OTLPMetricExporter(endpoint=url + "/v1/metrics", timeout=10, **exporter_kwargs)  # type: ignore[arg-type]
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(resource=Resource.create(SERVICE), metric_readers=[reader]), reader


# --------------------------------------------------------------------------- the SDK's exporter


def test_sdk_exporter_counter_histogram_gauge(receiver) -> None:
    url, store, reports = receiver
    provider, reader = _provider(url, compression=Compression.Gzip)
    try:
        meter = provider.get_meter("csf.test")
        starts = meter.create_counter("video.starts", unit="{start}")
        latency = meter.create_histogram(
            "video.start.latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.25, 0.5, 1.0, 2.5]
        )
        depth = meter.create_gauge("transcode.queue.depth", unit="{video}")
        starts.add(5, {"region": "eu"})
        starts.add(3, {"region": "us"})
        observations = [0.05, 0.2, 0.2, 1.5]
        for v in observations:
            latency.record(v, {"region": "eu"})
        depth.set(17, {"region": "eu"})
        t_before = time.time()
        assert reader.force_flush(timeout_millis=10_000)
        # second export: cumulative values grow
        starts.add(2, {"region": "eu"})
        latency.record(3.0, {"region": "eu"})
        depth.set(11, {"region": "eu"})
        assert reader.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()

    np.testing.assert_array_equal(_values(store, "video_starts_total", region="eu")[:2], [5.0, 7.0])
    np.testing.assert_array_equal(_values(store, "video_starts_total", region="us")[:1], [3.0])
    np.testing.assert_array_equal(_values(store, "transcode_queue_depth", region="eu")[:2], [17.0, 11.0])
    # buckets: cumulative counts of the recorded values, computed independently
    bounds = [0.1, 0.25, 0.5, 1.0, 2.5]
    for le, text in zip(bounds, ["0.1", "0.25", "0.5", "1", "2.5"], strict=True):
        first = sum(1 for v in observations if v <= le)
        second = sum(1 for v in [*observations, 3.0] if v <= le)
        got = _values(store, "video_start_latency_seconds_bucket", region="eu", le=text)
        np.testing.assert_array_equal(got[:2], [first, second], err_msg=f"le={text}")
    np.testing.assert_array_equal(
        _values(store, "video_start_latency_seconds_bucket", region="eu", le="+Inf")[:2], [4, 5]
    )
    np.testing.assert_array_equal(
        _values(store, "video_start_latency_seconds_count", region="eu")[:2], [4, 5]
    )
    np.testing.assert_allclose(
        _values(store, "video_start_latency_seconds_sum", region="eu")[:2], [1.95, 4.95]
    )
    ((_, ts, _),) = [s for s in store.select("transcode_queue_depth")]
    assert abs(ts[0] - t_before) < 30 and ts[0] == round(ts[0], 3)  # millisecond resolution
    exports = [r for r in reports if r.accepted]
    assert len(exports) >= 2 and all(r.status == 200 and r.invalid == 0 for r in reports)


def test_sdk_exporter_delta_temporality_is_accumulated(receiver) -> None:
    url, store, _ = receiver
    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    provider, reader = _provider(url, preferred_temporality=delta)
    try:
        meter = provider.get_meter("csf.test")
        c = meter.create_counter("uploads", unit="1")
        h = meter.create_histogram("wait", unit="ms", explicit_bucket_boundaries_advisory=[10.0, 100.0])
        c.add(5, {"tier": "pro"})
        h.record(5.0, {"tier": "pro"})
        assert reader.force_flush(timeout_millis=10_000)
        c.add(2, {"tier": "pro"})
        h.record(50.0, {"tier": "pro"})
        h.record(500.0, {"tier": "pro"})
        assert reader.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()
    np.testing.assert_array_equal(_values(store, "uploads_total", tier="pro")[:2], [5.0, 7.0])
    np.testing.assert_array_equal(_values(store, "wait_milliseconds_bucket", tier="pro", le="10")[:2], [1, 1])
    np.testing.assert_array_equal(
        _values(store, "wait_milliseconds_bucket", tier="pro", le="100")[:2], [1, 2]
    )
    np.testing.assert_array_equal(_values(store, "wait_milliseconds_count", tier="pro")[:2], [1, 3])
    np.testing.assert_allclose(_values(store, "wait_milliseconds_sum", tier="pro")[:2], [5.0, 555.0])


# --------------------------------------------------------------------------- OTLP JSON

NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z in ns


def _attrs(**kv: object) -> list[dict]:
    out = []
    for k, v in kv.items():
        if isinstance(v, bool):
            out.append({"key": k, "value": {"boolValue": v}})
        elif isinstance(v, int):
            out.append({"key": k, "value": {"intValue": str(v)}})
        else:
            out.append({"key": k, "value": {"stringValue": str(v)}})
    return out


def _json_request(metrics: list[dict]) -> dict:
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": _attrs(**{**SERVICE, "host.name": "h1"})},
                "scopeMetrics": [{"scope": {"name": "json-test"}, "metrics": metrics}],
            }
        ]
    }


JSON_METRICS = [
    {
        "name": "cpu.temp",
        "unit": "Cel",
        "gauge": {"dataPoints": [{"timeUnixNano": str(NS), "asDouble": 61.5, "attributes": _attrs(core=0)}]},
    },
    {
        "name": "http.requests",
        "unit": "1",
        "sum": {
            "aggregationTemporality": 2,
            "isMonotonic": True,
            "dataPoints": [
                {
                    "timeUnixNano": str(NS),
                    "asInt": "40",
                    "attributes": _attrs(**{"http.method": "GET", "ok": True}),
                },
                {
                    "timeUnixNano": str(NS + 15_000_000_000),
                    "asInt": "42",
                    "attributes": _attrs(**{"http.method": "GET", "ok": True}),
                },
            ],
        },
    },
    {
        "name": "pool.in_use",
        "sum": {
            "aggregationTemporality": 2,
            "isMonotonic": False,
            "dataPoints": [{"timeUnixNano": str(NS), "asInt": "-3"}],
        },
    },
    {
        "name": "payload.size",
        "unit": "By",
        "histogram": {
            "aggregationTemporality": 2,
            "dataPoints": [
                {
                    "timeUnixNano": str(NS),
                    "count": "6",
                    "sum": 3100.0,
                    "bucketCounts": ["1", "2", "3"],
                    "explicitBounds": [100.0, 1000.0],
                }
            ],
        },
    },
    {
        "name": "rpc.latency",
        "unit": "s",
        "summary": {
            "dataPoints": [
                {
                    "timeUnixNano": str(NS),
                    "count": "10",
                    "sum": 2.5,
                    "quantileValues": [{"quantile": 0.5, "value": 0.2}, {"quantile": 0.99, "value": 0.9}],
                }
            ]
        },
    },
    # rejected: exponential histogram (1 point), a sum point with no value, a point with no time
    {
        "name": "exp",
        "exponentialHistogram": {
            "aggregationTemporality": 2,
            "dataPoints": [{"timeUnixNano": str(NS), "count": "1"}],
        },
    },
    {"name": "novalue", "gauge": {"dataPoints": [{"timeUnixNano": str(NS)}]}},
    {"name": "notime", "gauge": {"dataPoints": [{"asDouble": 1.0}]}},
    # a series that ends: FLAG_NO_RECORDED_VALUE -> stale marker
    {
        "name": "conn.open",
        "gauge": {
            "dataPoints": [
                {"timeUnixNano": str(NS), "asInt": "4"},
                {"timeUnixNano": str(NS + 30_000_000_000), "flags": 1},
            ]
        },
    },
]


def _post_json(url: str, body: dict) -> httpx.Response:
    return httpx.post(
        url + "/v1/metrics", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def test_json_request_maps_every_type(receiver) -> None:
    url, store, reports = receiver
    r = _post_json(url, _json_request(JSON_METRICS))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedDataPoints"]) == 3
    assert "exponential" in partial["errorMessage"] and "no value" in partial["errorMessage"]
    t0 = NS / 1e9
    assert _values(store, "cpu_temp_celsius", core="0").tolist() == [61.5]
    req = store.select("http_requests_total")
    assert [lbl for lbl, _, _ in req] == [
        (("http_method", "GET"), ("instance", "pod-7"), ("job", "player"), ("ok", "true"))
    ]
    np.testing.assert_array_equal(req[0][1], [t0, t0 + 15])
    np.testing.assert_array_equal(req[0][2], [40.0, 42.0])
    assert _values(store, "pool_in_use").tolist() == [-3.0]
    assert _values(store, "payload_size_bytes_bucket", le="100").tolist() == [1.0]
    assert _values(store, "payload_size_bytes_bucket", le="1000").tolist() == [3.0]
    assert _values(store, "payload_size_bytes_bucket", le="+Inf").tolist() == [6.0]
    assert _values(store, "payload_size_bytes_sum").tolist() == [3100.0]
    assert _values(store, "payload_size_bytes_count").tolist() == [6.0]
    assert _values(store, "rpc_latency_seconds", quantile="0.99").tolist() == [0.9]
    assert _values(store, "rpc_latency_seconds_count").tolist() == [10.0]
    conn = _values(store, "conn_open")
    assert conn[0] == 4.0 and is_stale_marker(conn)[1]
    assert "exp" not in store.names() and "novalue" not in store.names()
    # 1 gauge + 2 counter + 1 gauge + (3 buckets, sum, count) + (2 quantiles, sum, count) + 2 conn
    assert reports[-1].invalid == 3 and reports[-1].accepted == 1 + 2 + 1 + 5 + 4 + 2


def test_resend_is_accepted_and_out_of_order_points_are_rejected(receiver) -> None:
    url, store, _ = receiver
    metric = JSON_METRICS[1]
    assert _post_json(url, _json_request([metric])).json() == {}
    assert _post_json(url, _json_request([metric])).json() == {}  # an exporter retry: nothing rejected
    older = json.loads(json.dumps(metric))
    older["sum"]["dataPoints"] = [
        dict(older["sum"]["dataPoints"][0], timeUnixNano=str(NS + 5_000_000_000), asInt="41")
    ]
    partial = _post_json(url, _json_request([older])).json()["partialSuccess"]
    assert int(partial["rejectedDataPoints"]) == 1 and "out-of-order" in partial["errorMessage"]
    assert store.select("http_requests_total")[0][2].tolist() == [40.0, 42.0]


def test_protobuf_response_is_protobuf(receiver) -> None:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    url, store, _ = receiver
    req = json_format.ParseDict(
        _json_request(JSON_METRICS[:1] + JSON_METRICS[5:6]), metrics_service_pb2.ExportMetricsServiceRequest()
    )
    r = httpx.post(
        url + "/v1/metrics",
        content=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_data_points == 1
    assert store.names() == ["cpu_temp_celsius"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, b"x", 415),
        ({"Content-Type": "application/x-protobuf"}, b"\x0a\x05\xff\xff\xff\xff\xff", 400),
        ({"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, gzip.compress(b"{}")[:-6], 400),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            gzip.compress(b" " * (3 << 20)),
            413,
        ),
        ({"Content-Type": "application/x-protobuf"}, b"\x00" * ((1 << 20) + 1), 413),
    ],
    ids=[
        "text-plain",
        "brotli",
        "garbage-protobuf",
        "bad-json",
        "truncated-gzip",
        "gzip-bomb",
        "body-too-big",
    ],
)
def test_refusals(receiver, headers: dict[str, str], body: bytes, status: int) -> None:
    url, store, reports = receiver
    assert _post_json(url, _json_request(JSON_METRICS[:1])).status_code == 200
    r = httpx.post(url + "/v1/metrics", content=body, headers=headers)
    assert r.status_code == status, r.text
    if r.headers["content-type"].startswith("application/json"):
        assert r.json()["message"]
    assert _values(store, "cpu_temp_celsius", core="0").tolist() == [61.5]  # earlier data intact
    assert reports[-1].status == status


# --------------------------------------------------------------------------- names and labels


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "ms", "histogram", "http_server_duration_milliseconds"),
        ("system.memory.usage", "By", "gauge", "system_memory_usage_bytes"),
        ("requests", "1", "counter", "requests_total"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("net.throughput", "By/s", "gauge", "net_throughput_bytes_per_second"),
        ("latency_seconds", "s", "histogram", "latency_seconds"),
        ("2xx.count", "{request}", "counter", "_2xx_count_total"),
        ("requests_total", "", "counter", "requests_total"),
        ("io.time", "s", "counter", "io_time_seconds_total"),
        ("weird--name!!x", "", "gauge", "weird_name_x"),
    ],
)
def test_metric_names(name: str, unit: str, kind: str, expected: str) -> None:
    assert prometheus_metric_name(name, unit, kind) == expected


def test_label_translation_and_bounds() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    kvs = [
        KeyValue(key="a.b", value=AnyValue(string_value="1")),
        KeyValue(key="a_b", value=AnyValue(string_value="2")),
        KeyValue(key="1st", value=AnyValue(int_value=7)),
        KeyValue(key="__x", value=AnyValue(bool_value=False)),
        KeyValue(key="ratio", value=AnyValue(double_value=0.25)),
        KeyValue(key="empty", value=AnyValue(string_value="")),
    ]
    assert attribute_labels(kvs) == {"a_b": "1;2", "key_1st": "7", "key__x": "false", "ratio": "0.25"}
    assert [format_le(b) for b in (0.005, 1.0, 250.0, 1e-7, math.inf)] == [
        "0.005",
        "1",
        "250",
        "0.0000001",
        "+Inf",
    ]


class _BrokenStore(SampleStore):
    def append(self, *args: object, **kwargs: object):  # type: ignore[override]
        raise MemoryError("simulated")


def test_our_own_fault_is_a_5xx_so_the_exporter_retries() -> None:
    app = FastAPI()
    app.include_router(otlp_router(_BrokenStore(retention=None)))
    with serve_asgi(app) as url:
        r = _post_json(url, _json_request(JSON_METRICS[:1]))
    assert r.status_code == 500 and "MemoryError" in r.json()["message"]
