"""`push` pipelines: remote_write and OTLP into `csf serve`, routing, counters, retention, staleness.

In-process tests serve the real app with uvicorn (the runner is driven by hand with
`Runner.run_once`); the end-to-end test runs `csf serve --config push.yaml`, a real
Prometheus that scrapes `csf simulate --serve` and remote-writes to csf, and the
OpenTelemetry SDK's OTLP/HTTP exporter.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cramjam
import httpx
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from detector.decision.pipeline import Pipeline
from detector.service.app import create_app
from detector.service.config import Config, load_config
from detector.sim.simulator import Simulator
from detector.source.ingest.remote_pb import messages
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from tests._procs import PrometheusProcess, free_port, serve_asgi, wait_until
from tests.conftest import ServerProcess

RW_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
TOKEN = "push-test-token-0123456789"


# --------------------------------------------------------------------------- helpers


def remote_write_body(series: list[tuple[str, dict[str, str], list[tuple[float, float]]]]) -> bytes:
    """A snappy-compressed WriteRequest; samples are (unix seconds, value)."""
    req = messages().WriteRequest()
    for name, labels, samples in series:
        ts = req.timeseries.add()
        for k, v in sorted({"__name__": name, **labels}.items()):
            ts.labels.add(name=k, value=v)
        for t, v in samples:
            ts.samples.add(timestamp=int(round(t * 1000)), value=v)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def simulator_body(sim: Simulator, t0: float, t1: float) -> bytes:
    return remote_write_body(
        [
            (name, dict(labels), list(zip(ts.tolist(), vals.tolist(), strict=True)))
            for name, _, labels, ts, vals in sim.generate(t0, t1)
        ]
    )


def metric_value(text: str, sample: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (AssertionError when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {sample}{labels}")


def load(tmp_path: Path, yaml_text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "csf.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n" + yaml_text)
    return load_config(path, env or {})


@contextmanager
def served(config: Config) -> Iterator[tuple[httpx.Client, Any]]:
    """The real app on loopback (runner not started: evaluations are driven by `run_once`)."""
    app = create_app(config)
    try:
        with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield client, app.state.runner
    finally:
        app.state.runner.stop()


def store_of(runner: Any, name: str) -> SampleStore:
    return runner.handle(name).receiver.store


def series_values(store: SampleStore, name: str) -> list[float]:
    return [float(v) for _, _, vals in store.select(name) for v in vals]


# --------------------------------------------------------------------------- routing and counters

THREE = """
evaluation_interval: 60s
pipelines:
  - name: a
    source: {type: push}
  - name: b
    source: {type: push}
  - name: sim
    source: {type: simulator}
"""


def test_pushed_requests_are_routed_by_query_parameter_or_header(tmp_path: Path) -> None:
    config = load(tmp_path, THREE)
    now = time.time()
    with served(config) as (client, runner):
        assert runner.push_pipelines == ("a", "b")

        def post(value: float, **kwargs: Any) -> httpx.Response:
            body = remote_write_body([("routed", {"job": "t"}, [(now, value)])])
            return client.post(
                "/api/v1/write", content=body, headers={**RW_HEADERS, **kwargs.pop("headers", {})}, **kwargs
            )

        r = post(1.0)
        assert r.status_code == 400 and "a, b" in r.json()["error"]
        assert post(2.0, params={"pipeline": "b"}).status_code == 204
        assert post(3.0, headers={"X-CSF-Pipeline": "a"}).status_code == 204
        conflict = post(4.0, params={"pipeline": "a"}, headers={"X-CSF-Pipeline": "b"})
        assert conflict.status_code == 400 and "differ" in conflict.json()["error"]
        not_push = post(5.0, params={"pipeline": "sim"})
        assert not_push.status_code == 404 and "does not accept pushed samples" in not_push.json()["error"]
        assert post(6.0, params={"pipeline": "nope"}).status_code == 404
        # only the accepted requests reached a store, each its own
        assert series_values(store_of(runner, "a"), "routed") == [3.0]
        assert series_values(store_of(runner, "b"), "routed") == [2.0]
        text = client.get("/metrics").text
        for name in ("a", "b"):
            assert (
                metric_value(
                    text,
                    "csf_ingested_samples_total",
                    pipeline=name,
                    protocol="remote_write",
                    result="accepted",
                )
                == 1
            )
            assert (
                metric_value(
                    text, "csf_ingest_requests_total", pipeline=name, protocol="remote_write", code="204"
                )
                == 1
            )
            assert (
                metric_value(
                    text, "csf_ingested_samples_total", pipeline=name, protocol="otlp", result="accepted"
                )
                == 0
            )
        pipelines = {p["name"]: p for p in client.get("/api/v1/pipelines").json()["pipelines"]}
        assert pipelines["a"]["source"]["type"] == "push"
        assert pipelines["a"]["source"]["store"]["samples"] == 1
        assert "store" not in pipelines["sim"]["source"]


def test_without_push_pipeline_the_endpoints_answer_404(tmp_path: Path) -> None:
    config = load(tmp_path, "pipelines:\n  - name: sim\n    source: {type: simulator}\n")
    with served(config) as (client, _):
        for path in ("/api/v1/write", "/v1/metrics"):
            r = client.post(path, content=b"x", headers={"Content-Type": "application/x-protobuf"})
            assert r.status_code == 404 and "source type 'push'" in r.json()["error"], path
        assert "csf_ingested_samples_total" not in client.get("/metrics").text


def test_duplicates_and_out_of_order_samples_are_counted(tmp_path: Path) -> None:
    config = load(tmp_path, "pipelines:\n  - name: only\n    source: {type: push}\n")
    t = float(math.floor(time.time())) - 60
    batch = remote_write_body([("events_total", {"job": "x"}, [(t, 1.0), (t + 15, 2.0), (t + 30, 4.0)])])
    with served(config) as (client, runner):
        assert client.post("/api/v1/write", content=batch, headers=RW_HEADERS).status_code == 204
        # a sender retrying a batch we stored: 204, counted as duplicates, nothing changes
        assert client.post("/api/v1/write", content=batch, headers=RW_HEADERS).status_code == 204
        late = remote_write_body([("events_total", {"job": "x"}, [(t + 10, 9.0), (t + 45, 5.0)])])
        r = client.post("/api/v1/write", content=late, headers=RW_HEADERS)
        assert r.status_code == 400 and "out-of-order" in r.text
        assert series_values(store_of(runner, "only"), "events_total") == [1.0, 2.0, 4.0, 5.0]
        text = client.get("/metrics").text

    def samples(result: str) -> float:
        return metric_value(
            text, "csf_ingested_samples_total", pipeline="only", protocol="remote_write", result=result
        )

    assert (samples("accepted"), samples("duplicate"), samples("out_of_order"), samples("invalid")) == (
        4,
        3,
        1,
        0,
    )
    assert (
        metric_value(text, "csf_ingest_requests_total", pipeline="only", protocol="remote_write", code="204")
        == 2
    )
    assert (
        metric_value(text, "csf_ingest_requests_total", pipeline="only", protocol="remote_write", code="400")
        == 1
    )


def test_push_endpoints_need_the_token_and_respect_the_body_limit(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "max_body_bytes: 2048\npipelines:\n  - name: only\n    source: {type: push}\n",
        {"CSF_AUTH_TOKEN": TOKEN},
    )
    now = time.time()
    small = remote_write_body([("guarded", {}, [(now, 1.0)])])
    big = remote_write_body([("guarded", {"i": str(i)}, [(now, float(i))]) for i in range(400)])
    assert len(small) < 2048 < len(big)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with served(config) as (client, runner):
        assert client.post("/api/v1/write", content=small, headers=RW_HEADERS).status_code == 401
        assert (
            client.post(
                "/v1/metrics", content=b"{}", headers={"Content-Type": "application/json"}
            ).status_code
            == 401
        )
        assert store_of(runner, "only").sample_count() == 0
        assert client.post("/api/v1/write", content=big, headers={**RW_HEADERS, **auth}).status_code == 413
        assert client.post("/api/v1/write", content=small, headers={**RW_HEADERS, **auth}).status_code == 204
        assert series_values(store_of(runner, "only"), "guarded") == [1.0]


# --------------------------------------------------------------------------- retention and evaluation


def test_retention_is_lookback_plus_margin_and_enforced_on_each_evaluation(tmp_path: Path) -> None:
    config = load(
        tmp_path, "evaluation_interval: 60s\npipelines:\n  - name: only\n    source: {type: push}\n"
    )
    # default pack: lookback 7d, warm-up 3 + 6 evaluations, status window 1h; margin 1h
    expected = 7 * 86400 + (3 + 6) * 60 + 3600 + 3600
    now = time.time()
    with served(config) as (client, runner):
        store = store_of(runner, "only")
        assert store.retention == expected
        body = remote_write_body([("kept_or_not", {}, [(now - expected - 120, 1.0), (now - 30, 2.0)])])
        assert client.post("/api/v1/write", content=body, headers=RW_HEADERS).status_code == 204
        assert series_values(store, "kept_or_not") == [1.0, 2.0]
        evaluation = runner.run_once("only")
        assert evaluation is not None
        assert series_values(store, "kept_or_not") == [2.0]


PAIR = """
evaluation_interval: 60s
pipelines:
  - name: fresh
    source: {type: push}
  - name: stale
    source: {type: push}
"""


def test_pushed_samples_are_evaluated_like_the_same_samples_written_directly(tmp_path: Path) -> None:
    config = load(tmp_path, PAIR)
    now = time.time()
    origin = math.floor(now / 60) * 60 - 3 * 3600
    sim = Simulator("latency_binding", seed=3, origin=origin, interval=60.0)
    end_fresh = now - 30  # newest point 30 s old
    end_stale = now - 20 * 60  # newest point 20 min old: beyond the pack's 15 min staleness
    with served(config) as (client, runner):
        for name, end in (("fresh", end_fresh), ("stale", end_stale)):
            r = client.post(
                "/api/v1/write",
                content=simulator_body(sim, origin, end),
                headers=RW_HEADERS,
                params={"pipeline": name},
            )
            assert r.status_code == 204, r.text
        # the pipelines' own evaluators, at one instant (the runner adds only scheduling)
        fresh = runner.handle("fresh").pipeline.evaluate(now)
        stale = runner.handle("stale").pipeline.evaluate(now)

    # reference: the same simulated samples written straight into a store, same pack, same time
    reference_store = SampleStore(retention=None)
    Simulator("latency_binding", seed=3, origin=origin, interval=60.0).write_to(
        reference_store, origin, end_fresh
    )
    reference = Pipeline("reference", default_pack(), NativeSource(reference_store)).evaluate(fresh.time)
    got = {c.name: c for c in fresh.constraints}
    want = {c.name: c for c in reference.constraints}
    for name in ("latency", "supply", "cold_start", "consistency"):
        assert got[name].state == want[name].state, name
        assert got[name].pressure is not None and want[name].pressure is not None
        assert got[name].pressure.x_now == want[name].pressure.x_now, name
    latency = got["latency"]
    assert 0.45 < latency.pressure.x_now < 0.9  # the scenario's p95 ~0.6 s
    # three hours of history cannot show a sustained problem: beyond target, but not judged yet
    assert latency.state == "observe" and "not enough history" in latency.explanation

    # stale: every signal's newest point is older than windows.staleness -> observe
    assert fresh.source_up and stale.source_up
    assert stale.binding == "observability" and stale.decision == "observe"
    stale_latency = next(c for c in stale.constraints if c.name == "latency")
    assert stale_latency.state == "observe"
    assert [d.reason for d in stale_latency.diagnoses][:2] == ["stale", "stale"]
    assert any("stale since" in m and "staleness limit 15m" in m for m in stale_latency.missing)


# --------------------------------------------------------------------------- end to end


@contextmanager
def simulate_serve(port: int, scenario: str = "latency_binding", speed: float = 60.0) -> Iterator[str]:
    """`csf simulate --serve` as a subprocess; yields its host:port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector.cli",
            "simulate",
            "--serve",
            "--port",
            str(port),
            "--scenario",
            scenario,
            "--speed",
            str(speed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0).status_code == 200,
            20,
            0.1,
            "csf simulate --serve",
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_csf_serve_receives_remote_write_from_prometheus_and_otlp_from_the_sdk(
    tmp_path: Path, csf_server
) -> None:
    config = tmp_path / "push.yaml"
    config.write_text(
        "evaluation_interval: 1s\npipelines:\n  - name: pushed\n    source:\n      type: push\n"
    )
    # everything starts at once; csf's port is known before it listens
    server: ServerProcess = csf_server("--config", str(config))
    with simulate_serve(free_port()) as target:
        prom = PrometheusProcess(
            tmp_path / "prom",
            f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: platform
    static_configs:
      - targets: ['{target}']
remote_write:
  - url: {server.url}/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
""",
        )
        try:
            server.wait_ready()
            prom.wait_ready()

            def latency_known() -> bool:
                status = server.get("/api/v1/status").json()
                latency = next(c for c in status["constraints"] if c["name"] == "latency")
                return latency["value"] is not None

            wait_until(
                latency_known,
                40,
                0.5,
                f"an evaluation of remote-written data (prometheus log: {prom.log_path})",
            )
            status = server.get("/api/v1/status").json()
            reference = httpx.get(
                prom.url + "/api/v1/query",
                params={
                    "query": "histogram_quantile(0.95, sum by (le) (rate(video_start_latency_seconds_bucket[1h])))",
                    "time": status["time"],
                },
                timeout=10,
            ).json()["data"]["result"]
        finally:
            prom.stop()
    latency = next(c for c in status["constraints"] if c["name"] == "latency")
    x_now = latency["value"]
    assert 0.45 < x_now < 0.9  # the scenario's p95 ~0.6 s
    # csf's own engine over the remote-written copy agrees with Prometheus over its own TSDB
    # (up to the samples still in the remote-write queue at that instant)
    assert reference and math.isclose(x_now, float(reference[0]["value"][1]), rel_tol=0.05)

    text = server.get("/metrics").text
    accepted = metric_value(
        text, "csf_ingested_samples_total", pipeline="pushed", protocol="remote_write", result="accepted"
    )
    assert accepted > 1000
    assert (
        metric_value(
            text, "csf_ingest_requests_total", pipeline="pushed", protocol="remote_write", code="204"
        )
        > 0
    )
    assert metric_value(text, "csf_evaluations_total", pipeline="pushed", outcome="success") >= 2
    assert metric_value(text, "csf_source_up", pipeline="pushed") == 1

    # OTLP: the SDK's own exporter; 2 counter series + a histogram (3 bounds: 4 buckets, sum, count)
    exporter = OTLPMetricExporter(endpoint=server.url + "/v1/metrics", timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "player"}), metric_readers=[reader])
    try:
        meter = provider.get_meter("csf.test")
        starts = meter.create_counter("video.starts", unit="{start}")
        starts.add(5, {"region": "eu"})
        starts.add(3, {"region": "us"})
        wait = meter.create_histogram(
            "queue.wait", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0]
        )
        for v in (0.05, 0.3, 2.0):
            wait.record(v, {"region": "eu"})
        assert reader.force_flush(timeout_millis=10_000)
        text = server.get("/metrics").text
    finally:
        provider.shutdown()  # exports once more
    assert (
        metric_value(
            text, "csf_ingested_samples_total", pipeline="pushed", protocol="otlp", result="accepted"
        )
        == 2 + 6
    )
    assert (
        metric_value(text, "csf_ingested_samples_total", pipeline="pushed", protocol="otlp", result="invalid")
        == 0
    )
    assert (
        metric_value(text, "csf_ingest_requests_total", pipeline="pushed", protocol="otlp", code="200") == 1
    )
    assert server.stop() == 0
