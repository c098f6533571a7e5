"""`prometheus` pipelines: configuration, secrets, and `csf serve` against a real Prometheus.

* The configuration parser: every key, errors naming file:line:column and field, secrets
  never in messages, ``repr`` or `describe`.
* The wiring: credentials and tenant reach the query API (a recording fake), never the
  logs or the API; ``csf_source_up`` follows the latest evaluation.
* End to end: a real Prometheus scrapes `csf simulate --serve`; `csf serve` evaluates it
  at wall-clock time, reports the source down when Prometheus stops and recovers when it
  starts again on the same port and data directory.
"""

from __future__ import annotations

import base64
import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from detector.service.app import KeyValueFormatter, create_app
from detector.service.config import ConfigError, PrometheusSourceConfig, load_config
from detector.service.pipelines import build_handle
from detector.service.runner import Runner
from exporters.selfmetrics import ServiceMetrics
from tests._procs import PROMETHEUS, free_port, require_binary, serve_asgi, wait_until
from tests.conftest import ServerProcess

PASSWORD = "s3cret-Passw0rd-value"
TOKEN = "bearer-token-value-0123456789"


def metric_value(text: str, sample: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {sample}{labels}")


def write(tmp_path: Path, text: str, name: str = "csf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- configuration


def test_every_key_is_parsed_and_secrets_are_redacted(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "token").write_text(TOKEN)
    path = write(
        tmp_path,
        """
pipelines:
  - name: mimir
    source:
      type: prometheus
      url: https://mimir.example:8080/prometheus/
      timeout: 3s
      retries: 0
      basic_auth: {username: csf, password_file: password}
      tenant: team-a
      tls_verify: false
  - name: thanos
    source: {type: prometheus, url: 'http://thanos:10902', bearer_token_file: token}
  - name: inline
    source: {type: prometheus, url: 'http://prom:9090', bearer_token: '"""
        + TOKEN
        + """'}
""",
    )
    config = load_config(path, {})
    mimir, thanos, inline = (p.source for p in config.pipelines)
    assert mimir == PrometheusSourceConfig(
        url="https://mimir.example:8080/prometheus",
        timeout=3.0,
        retries=0,
        basic_auth_username="csf",
        basic_auth_password=PASSWORD,
        basic_auth_password_file=str(tmp_path / "password"),
        tenant="team-a",
        tls_verify=False,
    )
    assert thanos == PrometheusSourceConfig(
        url="http://thanos:10902", bearer_token_file=str(tmp_path / "token")
    )
    assert (thanos.timeout, thanos.retries, thanos.tls_verify, thanos.tenant) == (10.0, 2, True, None)
    assert inline.bearer_token == TOKEN
    assert mimir.describe() == {
        "type": "prometheus",
        "url": "https://mimir.example:8080/prometheus",
        "timeout": 3.0,
        "retries": 0,
        "basic_auth": {
            "username": "csf",
            "password": "<redacted>",
            "password_file": str(tmp_path / "password"),
        },
        "tenant": "team-a",
        "tls_verify": False,
    }
    assert inline.describe()["bearer_token"] == "<redacted>"
    for shown in (repr(config), repr(mimir), repr(inline), str(mimir.describe()), str(inline.describe())):
        assert PASSWORD not in shown and TOKEN not in shown


@pytest.mark.parametrize(
    ("source", "where", "message"),
    [
        ("{type: prometheus}", "pipelines[0].source.url", "missing"),
        ("{type: prometheus, url: 'ftp://x'}", "pipelines[0].source.url", "http:// or https://"),
        (
            "{type: prometheus, url: 'http://csf:" + PASSWORD + "@prom:9090'}",
            "pipelines[0].source.url",
            "must not contain credentials",
        ),
        ("{type: prometheus, url: 'http://p', timeout: 0s}", "pipelines[0].source.timeout", "positive"),
        (
            "{type: prometheus, url: 'http://p', retries: 11}",
            "pipelines[0].source.retries",
            "between 0 and 10",
        ),
        (
            "{type: prometheus, url: 'http://p', tls_verify: 'no'}",
            "pipelines[0].source.tls_verify",
            "true or false",
        ),
        ("{type: prometheus, url: 'http://p', tenant: ''}", "pipelines[0].source.tenant", "non-empty"),
        ("{type: prometheus, url: 'http://p', scenario: x}", "pipelines[0].source.scenario", "unknown key"),
        (
            "{type: prometheus, url: 'http://p', bearer_token: '" + TOKEN + "', bearer_token_file: t}",
            "pipelines[0].source.bearer_token_file",
            "not both",
        ),
        (
            "{type: prometheus, url: 'http://p', bearer_token: '" + TOKEN + "', basic_auth: {username: u}}",
            "pipelines[0].source.basic_auth",
            "not both",
        ),
        (
            "{type: prometheus, url: 'http://p', basic_auth: {password: '" + PASSWORD + "'}}",
            "pipelines[0].source.basic_auth.username",
            "missing",
        ),
        (
            "{type: prometheus, url: 'http://p', basic_auth: {username: u}}",
            "pipelines[0].source.basic_auth.password",
            "exactly one",
        ),
        (
            "{type: prometheus, url: 'http://p', basic_auth: {username: u, password_file: nowhere}}",
            "pipelines[0].source.basic_auth.password_file",
            "not found",
        ),
        (
            "{type: prometheus, url: 'http://p', bearer_token: \"" + TOKEN + '\\u0001"}',
            "pipelines[0].source.bearer_token",
            "control characters",
        ),
        ("{type: push, max_decoded_bytes: 10}", "pipelines[0].source.max_decoded_bytes", "between"),
        ("{type: push, url: 'http://p'}", "pipelines[0].source.url", "unknown key"),
        ("{type: pull}", "pipelines[0].source.type", "known: prometheus, push, simulator"),
    ],
)
def test_errors_name_the_file_line_and_field_and_never_a_secret(
    tmp_path: Path, source: str, where: str, message: str
) -> None:
    path = write(tmp_path, f"evaluation_interval: 60s\npipelines:\n  - name: p\n    source: {source}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    text = str(info.value)
    assert text.startswith(f"{path}:4:"), text
    assert f": {where}: " in text and message in text, text
    assert PASSWORD not in text and TOKEN not in text


# --------------------------------------------------------------------------- wiring (a recording fake)


class FakeQueryAPI:
    """A Prometheus-compatible query API that records the headers it sees; `healthy` toggles 503."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.healthy = True
        self.app = FastAPI()
        self.app.add_api_route("/{prefix:path}/api/v1/query_range", self.query_range, methods=["POST"])
        self.app.add_api_route("/{prefix:path}/-/ready", self.ready, methods=["GET"])

    async def query_range(self, request: Request) -> JSONResponse:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if not self.healthy:
            return JSONResponse({"status": "error", "errorType": "unavailable", "error": "down"}, 503)
        return JSONResponse({"status": "success", "data": {"resultType": "matrix", "result": []}})

    async def ready(self) -> JSONResponse:
        return JSONResponse({}, 200 if self.healthy else 503)


@contextmanager
def fake_api() -> Iterator[tuple[FakeQueryAPI, str]]:
    fake = FakeQueryAPI()
    with serve_asgi(fake.app) as url:
        yield fake, url


def test_credentials_and_tenant_reach_the_api_but_never_the_logs_or_the_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "token").write_text(TOKEN)
    caplog.set_level(logging.DEBUG)
    with fake_api() as (fake, url):
        path = write(
            tmp_path,
            f"""
data_dir: data
evaluation_interval: 60s
pipelines:
  - name: basic
    source:
      type: prometheus
      url: {url}/mimir/prometheus
      retries: 0
      basic_auth: {{username: csf, password_file: password}}
      tenant: team-a
  - name: bearer
    source: {{type: prometheus, url: '{url}/thanos', retries: 0, bearer_token_file: token}}
""",
        )
        config = load_config(path, {})
        # the service's own handles and runner, without the warm-up replay (one evaluation per run)
        handles = [build_handle(pc, 60.0, time.time(), time.time) for pc in config.pipelines]
        registry = CollectorRegistry()
        runner = Runner(handles, evaluation_interval=60.0, metrics=ServiceMetrics(registry), warm_up=False)
        app = create_app(config, runner=runner)
        try:
            with serve_asgi(app) as csf:
                before = httpx.get(csf + "/metrics", timeout=10).text
                # before any evaluation a prometheus pipeline probes /-/ready
                assert metric_value(before, "csf_source_up", pipeline="basic") == 1
                basic = runner.run_once("basic")
                n_basic = len(fake.headers)
                bearer = runner.run_once("bearer")
                assert basic is not None and bearer is not None
                assert basic.source_up and bearer.source_up
                # no data at all: every signal constraint is unobserved, observability binds
                assert basic.binding == "observability" and basic.decision == "observe"
                sent_basic, sent_bearer = fake.headers[:n_basic], fake.headers[n_basic:]
                expected = "Basic " + base64.b64encode(f"csf:{PASSWORD}".encode()).decode()
                assert sent_basic and all(h["authorization"] == expected for h in sent_basic)
                assert all(h["x-scope-orgid"] == "team-a" for h in sent_basic)
                assert sent_bearer and all(h["authorization"] == f"Bearer {TOKEN}" for h in sent_bearer)
                assert all("x-scope-orgid" not in h for h in sent_bearer)

                fake.healthy = False  # the API fails: the next evaluation reports the source down
                down = runner.run_once("basic")
                assert down is not None and not down.source_up
                assert down.binding == "observability" and down.decision == "observe"
                assert all(c.state == "observe" for c in down.constraints if c.name != "meta")
                shown = [
                    httpx.get(csf + p, timeout=10).text
                    for p in ("/metrics", "/api/v1/pipelines", "/api/v1/status?pipeline=basic", "/")
                ]
                assert metric_value(shown[0], "csf_source_up", pipeline="basic") == 0
                assert metric_value(shown[0], "csf_source_up", pipeline="bearer") == 1
                assert '"password": "<redacted>"' in shown[1].replace('":"', '": "')
        finally:
            runner.stop()
    formatter = KeyValueFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert "unavailable" in logged or "503" in logged  # the failure was logged...
    for text in (*shown, logged):
        assert PASSWORD not in text and TOKEN not in text  # ...without a secret


# --------------------------------------------------------------------------- end to end


class LocalPrometheus:
    """A real Prometheus on a fixed port and data directory (so it can be restarted in place)."""

    def __init__(self, workdir: Path, port: int, target: str) -> None:
        self.binary = require_binary(PROMETHEUS)
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms}\n"
            "scrape_configs:\n"
            f"  - job_name: platform\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"prometheus-{self.starts}.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(
            lambda: httpx.get(self.url + "/-/ready", timeout=1.0).status_code == 200,
            timeout,
            0.1,
            "prometheus ready",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@contextmanager
def simulate_serve(port: int) -> Iterator[str]:
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
            "latency_binding",
            "--speed",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _status(server: ServerProcess) -> dict[str, Any]:
    r = server.get("/api/v1/status")
    assert r.status_code == 200, r.text
    return r.json()


def _latency(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["constraints"] if c["name"] == "latency")


def _source_up(server: ServerProcess) -> float:
    return metric_value(server.get("/metrics").text, "csf_source_up", pipeline="prom")


def test_csf_serve_evaluates_a_live_prometheus_and_follows_it_down_and_up(tmp_path: Path, csf_server) -> None:
    prom_port = free_port()
    config = write(
        tmp_path,
        "evaluation_interval: 1s\n"
        "pipelines:\n"
        "  - name: prom\n"
        f"    source: {{type: prometheus, url: 'http://127.0.0.1:{prom_port}', timeout: 5s, retries: 0}}\n",
        "prometheus-source.yaml",
    )
    with simulate_serve(free_port()) as target:
        prom = LocalPrometheus(tmp_path / "prom", prom_port, target)
        prom.start()
        server: ServerProcess = csf_server("--config", str(config))
        try:
            prom.wait_ready()
            server.wait_ready()
            # 1. a few seconds of live data: latency is measured (two scrapes make a rate)...
            wait_until(lambda: _latency(_status(server))["value"] is not None, 40, 0.3, "a latency value")
            status = _status(server)
            assert _source_up(server) == 1
            latency = _latency(status)
            reference = httpx.get(
                prom.url + "/api/v1/query",
                params={
                    "query": "histogram_quantile(0.95, sum by (le) (rate(video_start_latency_seconds_bucket[1h])))",
                    "time": status["time"],
                },
                timeout=10,
            ).json()["data"]["result"]
            # Equal up to a scrape in flight at the evaluation time: Prometheus stamps a sample with
            # the scrape's start and stores it when the scrape ends, so a query made later for the
            # same instant can see one more sample (on seconds of history that moves p95 a little).
            assert reference and math.isclose(latency["value"], float(reference[0]["value"][1]), rel_tol=0.05)
            assert 0.45 < latency["value"] < 0.9  # the scenario's p95 ~0.6 s, beyond the 0.3 s target
            assert latency["pressure"] > 1
            # ...but seconds of history cannot show a sustained problem, so nothing is called binding
            assert not latency["sustained"] and latency["state"] != "binding"
            assert status["binding"] != "latency" and status["decision"] != "invest"

            # 2. Prometheus goes away: the source is down, every constraint is unobserved
            prom.stop()
            wait_until(lambda: _source_up(server) == 0, 20, 0.2, "csf_source_up 0")
            down = _status(server)
            assert down["binding"] == "observability" and down["decision"] == "observe"
            assert all(c["state"] == "observe" for c in down["constraints"] if c["name"] != "meta")
            assert "source" in down["explanation"] and "down" in down["explanation"]

            # 3. it comes back (same port, same data): csf recovers without a restart
            prom.start()
            prom.wait_ready()
            wait_until(lambda: _source_up(server) == 1, 30, 0.2, "csf_source_up 1 again")
            wait_until(lambda: _latency(_status(server))["value"] is not None, 20, 0.3, "latency again")
            assert 0.45 < _latency(_status(server))["value"] < 0.9
            metrics = server.get("/metrics").text
            assert metric_value(metrics, "csf_evaluations_total", pipeline="prom", outcome="error") == 0
        finally:
            prom.stop()
        assert server.stop() == 0
