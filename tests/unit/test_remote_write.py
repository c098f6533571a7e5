"""remote_write 1.0 receiver: a real Prometheus sending to it, and every documented refusal."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import cramjam
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from detector.source.ingest import IngestReport
from detector.source.ingest.remote_pb import messages
from detector.source.ingest.remote_write import remote_write_router, snappy_decoded_length
from detector.source.series import STALE_NAN, is_stale_marker
from detector.source.store import SampleStore
from tests._procs import free_port, prometheus, serve_asgi, wait_until

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

Series = tuple[dict[str, str], list[tuple[int, float]]]


def write_request(series: list[Series], *, histograms: bool = False) -> bytes:
    """Serialise a WriteRequest; labels include __name__; samples are (ms, value)."""
    m = messages()
    req = m.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for k, v in sorted(labels.items()):
            ts.labels.add(name=k, value=v)
        for t_ms, v in samples:
            ts.samples.add(timestamp=t_ms, value=v)
        if histograms:
            ts.histograms.append(b"\x08\x01")
    return req.SerializeToString()


def snappy(raw: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(raw))


@pytest.fixture()
def app_store() -> Iterator[tuple[httpx.Client, SampleStore, list[IngestReport]]]:
    """A receiver (1 MiB body / 4 MiB decoded limits) served by uvicorn on loopback, and an HTTP client."""
    store = SampleStore(retention=None)
    reports: list[IngestReport] = []
    app = FastAPI()
    app.include_router(
        remote_write_router(
            store, max_body_bytes=1 << 20, max_decoded_bytes=4 << 20, on_ingest=reports.append
        )
    )
    with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, store, reports


def _snapshot(store: SampleStore) -> dict:
    out = {}
    for name in store.names():
        for labels, ts, vals in store.select(name):
            out[(name, labels)] = (ts.copy(), vals.view(np.uint64).copy())
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])


BASE = 1_700_000_000_000  # ms
GOOD: list[Series] = [
    ({"__name__": "http_requests_total", "job": "api", "code": "200"}, [(BASE, 10.0), (BASE + 15_000, 25.0)]),
    (
        {"__name__": "temperature", "room": "a"},
        [(BASE, math.nan), (BASE + 15_000, math.inf), (BASE + 30_000, -math.inf)],
    ),
    ({"__name__": "temperature", "room": "b"}, [(BASE, 21.5), (BASE + 15_000, STALE_NAN)]),
]


def _post_good(client: httpx.Client) -> None:
    r = client.post("/api/v1/write", content=snappy(write_request(GOOD)), headers=HEADERS)
    assert r.status_code == 204, r.text


def test_samples_land_in_the_store_with_seconds_and_exact_bits(app_store) -> None:
    client, store, reports = app_store
    _post_good(client)
    ((labels, ts, vals),) = store.select("http_requests_total")
    assert labels == (("code", "200"), ("job", "api"))
    np.testing.assert_array_equal(ts, [1_700_000_000.0, 1_700_000_015.0])
    np.testing.assert_array_equal(vals, [10.0, 25.0])
    (_, _, a), (_, _, b) = store.select("temperature")
    assert np.isnan(a[0]) and not is_stale_marker(a[0:1])[0]
    assert a[1] == math.inf and a[2] == -math.inf
    assert b[0] == 21.5 and is_stale_marker(b)[1]
    assert reports[-1] == IngestReport(protocol="remote_write", status=204, series=3, accepted=7)


def test_resent_batch_is_idempotent(app_store) -> None:
    client, store, reports = app_store
    _post_good(client)
    before = _snapshot(store)
    _post_good(client)  # a sender retrying after a lost 204
    _assert_same(before, _snapshot(store))
    assert reports[-1].status == 204 and reports[-1].duplicates == 7 and reports[-1].accepted == 0


def test_out_of_order_samples_are_dropped_and_in_order_ones_kept(app_store) -> None:
    client, store, reports = app_store
    _post_good(client)
    late = [
        (
            {"__name__": "http_requests_total", "job": "api", "code": "200"},
            [(BASE + 5_000, 99.0), (BASE + 30_000, 40.0)],
        ),
        ({"__name__": "temperature", "room": "b"}, [(BASE + 15_000, 22.0)]),  # same time, other value
    ]
    r = client.post("/api/v1/write", content=snappy(write_request(late)), headers=HEADERS)
    assert r.status_code == 400 and "2 out-of-order" in r.text
    ((_, ts, vals),) = store.select("http_requests_total")
    np.testing.assert_array_equal(ts, [1_700_000_000.0, 1_700_000_015.0, 1_700_000_030.0])
    np.testing.assert_array_equal(vals, [10.0, 25.0, 40.0])
    assert (reports[-1].accepted, reports[-1].out_of_order) == (1, 2)


def test_counter_reset_is_stored_as_is(app_store) -> None:
    client, store, _ = app_store
    samples = [(BASE + i * 1000, v) for i, v in enumerate([5.0, 9.0, 2.0, 4.0])]
    r = client.post(
        "/api/v1/write", content=snappy(write_request([({"__name__": "c_total"}, samples)])), headers=HEADERS
    )
    assert r.status_code == 204
    ((_, _, vals),) = store.select("c_total")
    np.testing.assert_array_equal(vals, [5.0, 9.0, 2.0, 4.0])


def _raw(payload: bytes, headers: dict[str, str] | None = None):
    return payload, headers if headers is not None else HEADERS


BAD_CASES = {
    "truncated snappy": (400, "snappy", lambda: _raw(snappy(write_request(GOOD))[:-7])),
    "not snappy at all": (400, "snappy", lambda: _raw(b"\xff\xff\xff\xff\xff\xff")),
    "garbage protobuf": (400, "WriteRequest", lambda: _raw(snappy(b"\x0a\x05\xff\xff\xff\xff\xff"))),
    "unknown fields (rw2 body)": (400, "unknown fields", lambda: _raw(snappy(b"\x2a\x05hello"))),
    "missing __name__": (
        400,
        "no __name__",
        lambda: _raw(snappy(write_request([GOOD[0], ({"job": "x"}, [(BASE + 60_000, 1.0)])]))),
    ),
    "bad label name": (
        400,
        "invalid label name",
        lambda: _raw(snappy(write_request([({"__name__": "m", "bad-name": "x"}, [(BASE + 60_000, 1.0)])]))),
    ),
    "colon label after colon metric": (
        400,
        "invalid label name 'a:b'",
        lambda: _raw(
            snappy(
                write_request(
                    [({"__name__": "a:b"}, [(BASE, 1.0)]), ({"__name__": "m", "a:b": "1"}, [(BASE, 1.0)])]
                )
            )
        ),
    ),
    "bad metric name": (
        400,
        "invalid metric name",
        lambda: _raw(snappy(write_request([({"__name__": "1m"}, [(BASE, 1.0)])]))),
    ),
    "reserved label": (
        400,
        "reserved",
        lambda: _raw(snappy(write_request([({"__name__": "m", "__meta": "x"}, [(BASE + 60_000, 1.0)])]))),
    ),
    "native histograms": (
        400,
        "native histogram",
        lambda: _raw(snappy(write_request([({"__name__": "h"}, [])], histograms=True))),
    ),
    "json content type": (
        415,
        "Content-Type",
        lambda: _raw(b"{}", {**HEADERS, "Content-Type": "application/json"}),
    ),
    "remote write 2.0": (
        415,
        "remote write 1.0",
        lambda: _raw(
            snappy(write_request(GOOD)),
            {
                **HEADERS,
                "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                "X-Prometheus-Remote-Write-Version": "2.0.0",
            },
        ),
    ),
    "version 2.0.0 header": (
        415,
        "Version",
        lambda: _raw(snappy(write_request(GOOD)), {**HEADERS, "X-Prometheus-Remote-Write-Version": "2.0.0"}),
    ),
    "gzip encoding": (
        415,
        "Content-Encoding",
        lambda: _raw(b"\x1f\x8b", {**HEADERS, "Content-Encoding": "gzip"}),
    ),
    "body above limit": (413, "exceeds", lambda: _raw(b"\x00" * ((1 << 20) + 1))),
    "decoded size above limit": (413, "decompressed size", lambda: _raw(snappy(b"\x00" * ((4 << 20) + 1)))),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_get_documented_status_and_keep_data(app_store, case: str) -> None:
    client, store, reports = app_store
    _post_good(client)
    before = _snapshot(store)
    status, fragment, make = BAD_CASES[case]
    payload, headers = make()
    r = client.post("/api/v1/write", content=payload, headers=headers)
    assert r.status_code == status, r.text
    assert fragment.lower() in r.text.lower()
    _assert_same(before, _snapshot(store))
    assert reports[-1].status == status and reports[-1].accepted == 0


def test_decoded_size_is_checked_before_decompressing() -> None:
    # a 5-byte header claiming 4 GiB: refused from the header alone
    header = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    assert snappy_decoded_length(header) == 2**32 - 1
    store = SampleStore(retention=None)
    app = FastAPI()
    app.include_router(remote_write_router(store))
    with serve_asgi(app) as url:
        r = httpx.post(url + "/api/v1/write", content=header + b"\x00" * 10, headers=HEADERS)
    assert r.status_code == 413


def test_headers_may_be_absent_as_with_prometheus(app_store) -> None:
    client, store, _ = app_store
    r = client.post("/api/v1/write", content=snappy(write_request(GOOD)))
    assert r.status_code == 204
    assert store.series_count() == 3


def test_burst_of_100k_series() -> None:
    """10^5 series in one request, with the router's default limits (10 MiB body, 64 MiB decoded)."""
    store = SampleStore(retention=None)
    reports: list[IngestReport] = []
    app = FastAPI()
    app.include_router(remote_write_router(store, on_ingest=reports.append))
    with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        _burst(client, store, reports)


def _burst(client: httpx.Client, store: SampleStore, reports: list[IngestReport]) -> None:
    _post_good(client)
    before = _snapshot(store)
    n = 100_000
    m = messages()
    req = m.WriteRequest()
    for i in range(n):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value="burst_metric")
        ts.labels.add(name="id", value=str(i))
        ts.samples.add(timestamp=BASE, value=float(i))
    body = snappy(req.SerializeToString())
    t0 = time.perf_counter()
    r = client.post("/api/v1/write", content=body, headers=HEADERS)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 204, r.text
    assert store.series_count() == 3 + n
    got = {dict(lbl)["id"]: float(v[0]) for lbl, _, v in store.select("burst_metric")}
    assert len(got) == n and all(got[str(i)] == float(i) for i in (0, 1, 54_321, n - 1))
    snap = _snapshot(store)
    _assert_same(before, {k: v for k, v in snap.items() if k[0] != "burst_metric"})
    assert reports[-1].accepted == n
    print(f"100k-series remote_write burst: {elapsed:.2f}s, {len(body)} bytes compressed")
    assert elapsed < 30


def test_real_prometheus_remote_writes_scraped_samples(tmp_path) -> None:
    store = SampleStore(retention=None)
    reports: list[IngestReport] = []
    app = FastAPI()
    app.include_router(remote_write_router(store, on_ingest=reports.append))

    registry = CollectorRegistry()
    gauge = Gauge("csf_rw_test_gauge", "test gauge", ["region"], registry=registry)
    gauge.labels(region="eu").set(42.5)
    counter = Counter("csf_rw_test_events", "test counter", registry=registry)
    counter.inc(7)
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    target = f"127.0.0.1:{exporter_port}"
    try:
        with serve_asgi(app) as receiver:
            config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 500ms
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['{target}']
remote_write:
  - url: {receiver}/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
"""
            with prometheus(tmp_path, config) as prom:
                labels = (("instance", target), ("job", "exporter"), ("region", "eu"))

                def gauge_arrived() -> bool:
                    return any(lbl == labels for lbl, _, _ in store.select("csf_rw_test_gauge"))

                wait_until(gauge_arrived, 45, 0.2, f"remote-written samples (log: {prom.log_path})")
                wait_until(lambda: bool(store.select("csf_rw_test_events_total")), 20, 0.2, "counter samples")
                ((lbl, ts, vals),) = store.select("csf_rw_test_gauge")
                assert lbl == labels
                assert (vals[~is_stale_marker(vals)] == 42.5).all()
                assert abs(ts[-1] - time.time()) < 60
                ((_, _, cvals),) = store.select("csf_rw_test_events_total")
                assert cvals[-1] == 7.0
                (up_lbl, _, up_vals), *_ = store.select("up", [("job", "exporter")])
                assert up_vals[-1] == 1.0
                # the target goes away: Prometheus marks its series stale, and the marker arrives intact
                server.shutdown()
                server.server_close()

                def stale_arrived() -> bool:
                    (_, _, v), *_ = store.select("csf_rw_test_gauge")
                    return bool(is_stale_marker(v[-1:])[0])

                wait_until(stale_arrived, 45, 0.2, "stale marker for the vanished target")
                assert store.newest_timestamp("csf_rw_test_gauge") is not None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert all(r.status == 204 for r in reports), [r for r in reports if r.status != 204]


class _BrokenStore(SampleStore):
    def append(self, *args: object, **kwargs: object):  # type: ignore[override]
        raise MemoryError("simulated")


def test_our_own_fault_is_a_5xx_so_the_sender_retries() -> None:
    reports: list[IngestReport] = []
    app = FastAPI()
    app.include_router(remote_write_router(_BrokenStore(retention=None), on_ingest=reports.append))
    with serve_asgi(app) as url:
        r = httpx.post(url + "/api/v1/write", content=snappy(write_request(GOOD)), headers=HEADERS)
    assert r.status_code == 500 and "MemoryError" in r.text
    assert reports[-1].status == 500
