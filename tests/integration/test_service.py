"""The service: runner resilience, the HTTP API in-process, and a real `csf serve` end to end."""

from __future__ import annotations

import io
import json
import logging
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detector.evidence.results import Evaluation
from detector.service.app import KeyValueFormatter, create_app
from detector.service.config import Config, PipelineConfig, SimulatorSource
from detector.service.feeds import HISTORY_CHUNK, Interrupted, SimulatedClock, SimulatorFeed
from detector.service.pipelines import PipelineHandle, history_span, warm_up_count
from detector.service.runner import Runner
from detector.service.state import StateStore
from exporters.selfmetrics import ServiceMetrics
from tests.conftest import (
    ServerProcess,
    free_port,
    kill_server,
    make_evaluation,
    make_pack,
    require_binary,
    start_csf_server,
)

PACK = make_pack()
T0 = 1_800_000_000.0


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class ScriptedPipeline:
    """Stands in for `detector.decision.pipeline.Pipeline`: scripted bindings, injected failures, optional gate."""

    def __init__(
        self,
        bindings: list[str | None] | None = None,
        fail_on: set[int] | None = None,
        gate: threading.Event | None = None,
        name: str = "default",
    ) -> None:
        self.bindings = bindings or [None]
        self.fail_on = fail_on or set()
        self.gate = gate
        self.name = name
        self.calls: list[float] = []
        self.warm_ups: list[tuple[float, int, float]] = []
        self.binding_changes = 0
        self._published: str | None = None

    def evaluate(self, now: float) -> Evaluation:
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise RuntimeError("gate never opened")
        self.calls.append(now)
        if len(self.calls) in self.fail_on:
            raise RuntimeError(f"injected failure on call {len(self.calls)}")
        binding = self.bindings[min(len(self.calls), len(self.bindings)) - 1]
        if binding != self._published:
            self.binding_changes += 1
            self._published = binding
        return make_evaluation(
            now, binding=binding, decision="invest" if binding else "stop", pipeline=self.name
        )

    def warm_up(self, now: float, evaluations: int, every: float) -> None:
        self.warm_ups.append((now, evaluations, every))
        self.binding_changes += 5  # changes during replay must not reach the counter


class RecordingFeed:
    def __init__(self, fail_prepare: int = 0) -> None:
        self.prepared: list[float] = []
        self.advanced: list[float] = []
        self.fail_prepare = fail_prepare

    def prepare(self, now: float, stop: threading.Event) -> None:
        self.prepared.append(now)
        if len(self.prepared) <= self.fail_prepare:
            raise OSError("history fill failed")

    def advance(self, now: float) -> None:
        self.advanced.append(now)


class StepClock:
    """Advances by `step` simulated seconds on every read."""

    def __init__(self, start: float = T0, step: float = 60.0) -> None:
        self.t = start
        self.step = step
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.t += self.step
            return self.t


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"pipeline": "default", **labels})
    assert value is not None, (name, labels)
    return value


def _runner(
    pipeline,
    tmp_path: Path,
    *,
    feed=None,
    interval: float = 3600.0,
    state: StateStore | None = None,
    rate=1.0,
):
    registry = CollectorRegistry()
    handle = PipelineHandle("default", PACK, pipeline, StepClock(), rate=rate, feed=feed)
    runner = Runner(
        [handle],
        evaluation_interval=interval,
        metrics=ServiceMetrics(registry),
        state=state if state is not None else StateStore(tmp_path),
    )
    return runner, registry


# --------------------------------------------------------------------------- runner


def test_simulated_clock_runs_speed_times_faster():
    wall = iter([100.0, 101.5, 110.0])
    clock = SimulatedClock(origin=T0, wall0=100.0, speed=60.0, wall=lambda: next(wall))
    assert [clock(), clock(), clock()] == [T0, T0 + 90.0, T0 + 600.0]
    assert clock.rate == 60.0


def test_runner_survives_a_failing_evaluation_under_the_scheduler(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="csf.runner")
    pipe = ScriptedPipeline(bindings=[None, "latency"], fail_on={2})
    runner, registry = _runner(pipe, tmp_path, interval=0.05)
    runner.start()
    try:
        wait_for(lambda: runner.counts("default")[0] >= 3, what="three successful evaluations")
    finally:
        runner.stop()
    successes, errors = runner.counts("default")
    assert errors == 1
    assert len(pipe.calls) == successes + errors
    assert _metric(registry, "csf_evaluations_total", outcome="error") == 1
    assert _metric(registry, "csf_evaluations_total", outcome="success") == successes
    assert _metric(registry, "csf_evaluation_duration_seconds_count") == successes + errors
    # the loop continued past the failure: the latest evaluation is the last call
    latest = runner.latest("default")
    assert latest is not None and latest.time == pipe.calls[-1] > pipe.calls[1]
    failures = [r for r in caplog.records if r.getMessage() == "evaluation failed"]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None and "injected failure on call 2" in str(failures[0].exc_info[1])
    assert getattr(failures[0], "pipeline", None) == "default"
    # state: every success recorded, the failed call not; stop() closed the database
    assert runner.state is not None and not runner.state.available
    reopened = StateStore(tmp_path)
    stored = [row["time"] for row in reopened.history("default")]
    expected = [make_evaluation(t).to_dict()["time"] for i, t in enumerate(pipe.calls) if i != 1]
    assert stored == expected
    reopened.close()


def test_first_run_prepares_history_and_warms_up_once(tmp_path):
    pipe = ScriptedPipeline(bindings=[None, "latency", "latency", "protocol"])
    feed = RecordingFeed()
    runner, registry = _runner(pipe, tmp_path, feed=feed, interval=2.0, rate=60.0)
    evaluations = [runner.run_once("default") for _ in range(4)]
    assert all(ev is not None for ev in evaluations)
    assert len(feed.prepared) == 1 and len(pipe.warm_ups) == 1
    now, count, every = pipe.warm_ups[0]
    assert now == feed.prepared[0]
    assert count == PACK.hysteresis.enter_after + PACK.hysteresis.exit_after == warm_up_count(PACK) == 9
    assert every == 2.0 * 60.0  # evaluation interval in simulated seconds
    # each run brings the data up to the evaluation time, then evaluates at that time
    assert feed.advanced == pipe.calls
    # None -> latency -> protocol: two changes; the 5 made during warm-up are not counted
    assert _metric(registry, "csf_binding_changes_total") == 2
    runner.stop()


def test_failed_preparation_is_an_error_and_is_retried(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="csf.runner")
    pipe = ScriptedPipeline()
    feed = RecordingFeed(fail_prepare=1)
    runner, registry = _runner(pipe, tmp_path, feed=feed)
    assert runner.run_once("default") is None
    assert not runner.ready and "history fill failed" in (runner.last_error("default") or "")
    assert runner.run_once("default") is not None
    assert runner.ready and runner.last_error("default") is None
    assert len(feed.prepared) == 2 and len(pipe.warm_ups) == 1
    assert _metric(registry, "csf_evaluations_total", outcome="error") == 1
    assert _metric(registry, "csf_evaluations_total", outcome="success") == 1
    assert _metric(registry, "csf_evaluation_duration_seconds_count") == 1  # evaluate() ran once
    runner.stop()


def test_state_write_failures_are_counted_and_logged_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="csf.runner")
    blocker = tmp_path / "file"
    blocker.write_text("")
    state = StateStore(blocker / "data")
    runner, registry = _runner(ScriptedPipeline(), tmp_path, state=state)
    for _ in range(3):
        assert runner.run_once("default") is not None  # evaluations go on without the database
    assert _metric(registry, "csf_state_write_errors_total") == 3
    assert _metric(registry, "csf_evaluations_total", outcome="success") == 3
    failures = [r for r in caplog.records if r.getMessage() == "state write failed"]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert getattr(failures[0], "kind", None) in ("NotADirectoryError", "FileExistsError")
    runner.stop()


def test_simulator_feed_fills_history_in_contiguous_chunks_and_stops_on_request():
    class FakeSimulator:
        def __init__(self) -> None:
            self.writes: list[tuple[float, float]] = []

        def write_to(self, store, t0, t1):
            self.writes.append((t0, t1))
            return 0

    sim = FakeSimulator()
    history = 3.5 * HISTORY_CHUNK
    feed = SimulatorFeed(sim, store=None, history=history)
    feed.prepare(T0, threading.Event())
    assert sim.writes[0][0] == T0 - history and sim.writes[-1][1] == T0
    assert all(a[1] == b[0] for a, b in zip(sim.writes, sim.writes[1:], strict=False))
    assert len(sim.writes) == 4
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        SimulatorFeed(FakeSimulator(), store=None, history=history).prepare(T0, stop)


def test_history_span_covers_lookback_and_warm_up():
    every = 60.0
    assert history_span(PACK, every) == PACK.windows.lookback + 9 * every + PACK.windows.status_window


def test_key_value_log_lines():
    formatter = KeyValueFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "csf.runner", logging.ERROR, __file__, 1, "evaluation %s", ("failed",), sys.exc_info()
        )
    record.pipeline = "default"
    record.error = 'ValueError: "bad"'
    line = formatter.format(record)
    assert "\n" not in line
    fields = dict(tok.split("=", 1) for tok in shlex.split(line.replace("\\n", " ")))
    assert fields["level"] == "error" and fields["logger"] == "csf.runner"
    assert fields["msg"] == "evaluation failed" and fields["pipeline"] == "default"
    assert fields["error"] == 'ValueError: "bad"'
    assert fields["exc"].startswith("Traceback") and "ValueError: bad" in fields["exc"]


# --------------------------------------------------------------------------- app, in process


@contextmanager
def serve_in_thread(app) -> Iterator[httpx.Client]:
    """Run `app` on a real uvicorn server in a thread (lifespan included); yields a client for it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), what="uvicorn start")
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"


def _config(tmp_path: Path) -> Config:
    return Config(pipelines=(PipelineConfig("default", PACK, SimulatorSource()),), data_dir=tmp_path)


def test_api_before_and_after_the_first_evaluation(tmp_path):
    gate = threading.Event()
    pipe = ScriptedPipeline(bindings=["latency"], gate=gate)
    runner, registry = _runner(pipe, tmp_path)
    app = create_app(_config(tmp_path), runner=runner)
    try:
        with serve_in_thread(app) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json() == {
                "ready": False,
                "pipelines": {"default": False},
            }
            status = client.get("/api/v1/status")
            assert status.status_code == 503
            assert (
                status.json()["error"] == "no successful evaluation yet"
                and status.json()["pipeline"] == "default"
            )
            metrics = client.get("/metrics")
            assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert 'csf_build_info{pack="test-pack"' in metrics.text
            assert "csf_binding_constraint{" not in metrics.text

            gate.set()
            wait_for(lambda: runner.ready, what="first evaluation")
            assert client.get("/readyz").status_code == 200
            status = client.get("/api/v1/status")
            assert status.status_code == 200
            latest = runner.latest("default")
            assert latest is not None and status.json() == json.loads(json.dumps(latest.to_dict()))

            ones = [
                s
                for f in text_string_to_metric_families(client.get("/metrics").text)
                for s in f.samples
                if s.name == "csf_binding_constraint" and s.value == 1
            ]
            assert [s.labels["constraint"] for s in ones] == ["latency"]
            om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.endswith("# EOF\n")

            history = client.get("/api/v1/history", params={"since": "2020-01-01T00:00:00Z", "limit": 5})
            assert history.status_code == 200
            body = history.json()
            assert body["count"] == 1 and body["evaluations"][0]["binding"] == "latency"
            assert body["binding_changes"] == [
                {"time": latest.to_dict()["time"], "previous": None, "binding": "latency", "initial": True}
            ]
            future = client.get("/api/v1/history", params={"since": "2100-01-01T00:00:00Z"}).json()
            assert future["count"] == 0

            bad_since = client.get("/api/v1/history", params={"since": "yesterday"})
            assert bad_since.status_code == 400 and "since" in bad_since.json()["error"]
            assert "RFC3339" in bad_since.json()["error"]
            bad_limit = client.get("/api/v1/history", params={"limit": 0})
            assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["error"]
            unknown = client.get("/api/v1/status", params={"pipeline": "nope"})
            assert unknown.status_code == 404 and unknown.json()["pipelines"] == ["default"]

            pipelines = client.get("/api/v1/pipelines").json()["pipelines"]
            assert [p["name"] for p in pipelines] == ["default"]
            assert pipelines[0]["ready"] is True and pipelines[0]["binding"] == "latency"
            assert pipelines[0]["pack"]["constraints"] == list(PACK.names)
    finally:
        gate.set()
    assert runner.state is not None and not runner.state.available  # lifespan stopped the runner


def test_create_app_rejects_a_foreign_registry(tmp_path):
    runner, _ = _runner(ScriptedPipeline(), tmp_path)
    with pytest.raises(ValueError, match="registry"):
        create_app(_config(tmp_path), runner=runner, registry=CollectorRegistry())
    runner.stop()


def test_two_pipelines_select_with_query_parameter(tmp_path):
    registry = CollectorRegistry()
    handles = [
        PipelineHandle(name, PACK, ScriptedPipeline(bindings=[b], name=name), StepClock())
        for name, b in (("a", "latency"), ("b", None))
    ]
    runner = Runner(
        handles, evaluation_interval=3600, metrics=ServiceMetrics(registry), state=StateStore(tmp_path)
    )
    config = Config(
        pipelines=tuple(PipelineConfig(n, PACK, SimulatorSource()) for n in ("a", "b")), data_dir=tmp_path
    )
    with serve_in_thread(create_app(config, runner=runner)) as client:
        wait_for(lambda: runner.ready, what="both pipelines")
        assert client.get("/api/v1/status").json()["pipeline"] == "a"  # default: the first
        assert client.get("/api/v1/status", params={"pipeline": "b"}).json()["binding"] is None
        assert (
            client.get("/api/v1/history", params={"pipeline": "b"}).json()["evaluations"][0]["pipeline"]
            == "b"
        )
    text = generate_latest(registry).decode()
    assert 'csf_binding_constraint{constraint="latency",pipeline="a"} 1.0' in text
    assert 'csf_binding_constraint{constraint="latency",pipeline="b"} 0.0' in text


# --------------------------------------------------------------------------- csf serve, start-up errors


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detector.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_serve_exits_2_with_one_message_on_a_bad_env_value():
    result = _serve(env={"CSF_PORT": "abc"})
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "csf serve: error: environment variable CSF_PORT='abc': must be an integer"
    )


def test_serve_exits_2_on_a_bad_config_file(tmp_path):
    cfg = tmp_path / "csf.yaml"
    cfg.write_text("port: 1\nhots: x\n")
    result = _serve("--config", str(cfg))
    assert result.returncode == 2
    assert result.stderr.startswith(f"csf serve: error: {cfg}:2:1: hots: unknown key")
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_exits_1_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert 'msg="runner stopped"' in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- csf serve, end to end


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_csf_server(
        tmp_path_factory.mktemp("serve"), "--evaluation-interval", "1s", "--speed", "60"
    )
    try:
        server.ready_seconds = server.wait_ready()  # type: ignore[attr-defined]
        yield server
    finally:
        kill_server(server)


def _families(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


@pytest.mark.slow
def test_e2e_metrics_have_exactly_one_binding(live_server: ServerProcess):
    r = live_server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = _families(r.text)
    binding = samples["csf_binding_constraint"]
    ones = [s for s in binding if s.value == 1.0]
    assert len(ones) == 1, [(s.labels, s.value) for s in binding]
    # the service starts at offset 0 of the 'sequence' scenario, whose history plays its first
    # phase: the answer the simulator was built to produce there is latency
    from detector.sim.scenarios import SCENARIOS

    assert ones[0].labels["constraint"] == SCENARIOS["sequence"].phases[0].expected_binding == "latency"
    assert all(s.labels["pipeline"] == "default" for s in binding)
    from detector.spec.load import default_pack

    pack = default_pack()
    assert {s.labels["constraint"] for s in binding} == {*pack.names, "observability"}
    states = {}
    for s in samples["csf_constraint_state"]:
        states[s.labels["constraint"]] = states.get(s.labels["constraint"], 0.0) + s.value
    assert states == dict.fromkeys(pack.names, 1.0)
    (info,) = samples["csf_build_info"]
    assert info.labels["pack"] == pack.name and info.labels["pack_version"] == pack.version


@pytest.mark.slow
def test_e2e_scrape_passes_promtool(live_server: ServerProcess):
    promtool = require_binary("promtool")
    text = live_server.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.decode().strip() == "", result.stdout.decode()


@pytest.mark.slow
def test_e2e_status_history_pipelines_and_openapi(live_server: ServerProcess):
    status = live_server.get("/api/v1/status")
    assert status.status_code == 200
    body = status.json()
    assert {"time", "binding", "decision", "constraints"} <= set(body)
    assert body["pipeline"] == "default" and body["time"].endswith("Z")
    assert isinstance(body["constraints"], list) and body["constraints"]

    # evaluations keep coming on schedule (1 s wall apart = 60 s simulated)
    def successes() -> float:
        samples = _families(live_server.get("/metrics").text)["csf_evaluations_total"]
        return next(s.value for s in samples if s.labels["outcome"] == "success")

    first = successes()
    wait_for(lambda: successes() >= first + 1, timeout=30, what="another evaluation")

    history = live_server.get("/api/v1/history", params={"since": "2000-01-01T00:00:00Z"})
    assert history.status_code == 200
    rows = history.json()["evaluations"]
    assert len(rows) >= 2
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert history.json()["binding_changes"][0]["initial"] is True
    assert live_server.get("/api/v1/history", params={"since": "not-a-time"}).status_code == 400

    pipelines = live_server.get("/api/v1/pipelines").json()["pipelines"]
    assert pipelines[0]["name"] == "default" and pipelines[0]["source"]["speed"] == 60.0

    paths = set(live_server.get("/openapi.json").json()["paths"])
    assert {
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/status",
        "/api/v1/history",
        "/api/v1/pipelines",
    } <= paths


@pytest.mark.slow
def test_e2e_sigterm_stops_cleanly(live_server: ServerProcess):
    assert live_server.get("/healthz").status_code == 200
    assert live_server.stop(signal.SIGTERM) == 0
    log = live_server.log()
    assert 'msg="runner stopped"' in log and "msg=stopped" in log
    assert "Traceback" not in log, log[-3000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(live_server.url + "/healthz", timeout=2.0)
    # the state database was closed cleanly and holds the evaluations
    store = StateStore(live_server.data_dir)
    assert len(store.history("default")) >= 2
    store.close()


def test_logging_goes_to_the_given_stream():
    from detector.service.app import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    scheduler_level = logging.getLogger("apscheduler").level
    try:
        configure_logging("warning", stream)
        logging.getLogger("csf.test").info("hidden")
        logging.getLogger("csf.test").warning("shown", extra={"pipeline": "x y"})
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("apscheduler").setLevel(scheduler_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and 'msg=shown pipeline="x y"' in lines[0] and "level=warning" in lines[0]
