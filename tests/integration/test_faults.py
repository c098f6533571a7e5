"""Faults injected into a running `csf serve` (real processes on loopback), each healed again.

* the state database is unwritable, or locked by another process;
* the Prometheus source is down, slow, answers 503/422, or is stopped and restarted (a
  fault-injecting proxy in front of a real Prometheus backfilled with the simulator);
* the process is killed with SIGKILL while an evaluation waits on Prometheus, then restarted;
* Alertmanager is down in push mode while an alert resolves;
* odd samples (duplicates, conflicts, late or future samples, counter resets): the rules of
  docs/operations.md, "Data handling".

Simulator servers run a small pack (1 d lookback, hysteresis 2/2) on the ``latency_binding``
scenario at 60x speed with a 1 s evaluation interval, so each is ready in a few seconds;
Prometheus servers use the same pack with a 6 h lookback.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from detector.spec.load import default_pack_path
from tests._procs import wait_until
from tests.conftest import ServerProcess, kill_server, start_csf_server

SCENARIO = "latency_binding"
EXPECTED_BINDING = "latency"


def small_pack(
    path: Path, *, version: str = "1.0.0", enter_after: int = 2, exit_after: int = 2, lookback: str = "1d"
) -> Path:
    """The default pack with a short lookback and short hysteresis (fast start, same semantics)."""
    pack = yaml.safe_load(default_pack_path().read_text(encoding="utf-8"))
    pack["metadata"].update({"name": "small-test", "version": version})
    pack["windows"].update({"lookback": lookback, "sustained_window": "6h"})
    pack["hysteresis"].update({"enter_after": enter_after, "exit_after": exit_after})
    path.write_text(yaml.safe_dump(pack, sort_keys=False), encoding="utf-8")
    return path


def fast_config(
    tmp_path: Path,
    *,
    name: str = "csf.yaml",
    pipelines: tuple[str, ...] = ("default",),
    scenario: str = SCENARIO,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A config file: `pipelines` on the small pack, 1 s evaluations, 60x simulated speed."""
    pack = small_pack(tmp_path / "small-pack.yaml")
    doc: dict[str, Any] = {
        "evaluation_interval": "1s",
        "pipelines": [
            {"name": p, "pack": str(pack), "source": {"type": "simulator", "scenario": scenario, "speed": 60}}
            for p in pipelines
        ],
    }
    doc.update(extra or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def samples(server: ServerProcess, name: str, headers: dict[str, str] | None = None) -> list[Any]:
    text = httpx.get(server.url + "/metrics", timeout=10.0, headers=headers or {}).text
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


def metric(server: ServerProcess, name: str, headers: dict[str, str] | None = None, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    found = [s.value for s in samples(server, name, headers) if labels.items() <= s.labels.items()]
    assert found, f"{name}{labels} not exposed"
    return float(sum(found))


def successes(server: ServerProcess, pipeline: str = "default") -> float:
    return metric(server, "csf_evaluations_total", pipeline=pipeline, outcome="success")


def binding_of(server: ServerProcess, pipeline: str = "default") -> str | None:
    ones = [
        s.labels["constraint"]
        for s in samples(server, "csf_binding_constraint")
        if s.labels["pipeline"] == pipeline and s.value == 1.0
    ]
    assert len(ones) <= 1, ones
    return ones[0] if ones else None


# --------------------------------------------------------------------------- the state database


@pytest.mark.slow
def test_unwritable_state_directory_is_counted_logged_once_and_heals(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the data directory should be")  # mkdir fails even for root
    data_dir = blocker / "data"
    port_args = ["--config", str(fast_config(tmp_path))]
    server = start_csf_server(tmp_path, *port_args, "--data-dir", str(data_dir))
    try:
        server.wait_ready()  # evaluations work without a database
        wait_until(lambda: metric(server, "csf_state_write_errors_total") >= 3, 30, 0.2, "3 write errors")
        before = successes(server)
        wait_until(lambda: successes(server) >= before + 2, 30, 0.2, "evaluations to go on")
        assert server.get("/readyz").status_code == 200
        assert server.get("/api/v1/status").json()["binding"] == EXPECTED_BINDING
        history = server.get("/api/v1/history")
        assert history.status_code == 503 and "state database unavailable" in history.json()["error"]

        # heal: the path becomes a directory; the store reopens on its next write
        blocker.unlink()
        blocker.mkdir()
        wait_until(lambda: server.get("/api/v1/history").status_code == 200, 30, 0.2, "history to come back")
        wait_until(lambda: server.get("/api/v1/history").json()["count"] >= 2, 30, 0.2, "rows to be written")
        errors_after_heal = metric(server, "csf_state_write_errors_total")
        time.sleep(2.5)
        assert metric(server, "csf_state_write_errors_total") == errors_after_heal
    finally:
        server.stop()
    log = server.log()
    error_lines = [ln for ln in log.splitlines() if "level=error" in ln and 'msg="state write failed"' in ln]
    assert len(error_lines) == 1, error_lines  # once per kind at error level, not once per evaluation
    assert "kind=NotADirectoryError" in error_lines[0] or "kind=FileExistsError" in error_lines[0]
    assert "state database unavailable" in log
    assert (data_dir / "csf.db").exists()


@pytest.mark.slow
def test_database_locked_by_another_process_keeps_evaluation_and_metrics_going(tmp_path: Path) -> None:
    server = start_csf_server(tmp_path, "--config", str(fast_config(tmp_path)))
    try:
        server.wait_ready()
        db = server.data_dir / "csf.db"
        wait_until(lambda: server.get("/api/v1/history").json()["count"] >= 1, 30, 0.2, "a stored row")
        locker = sqlite3.connect(db, timeout=1.0, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # in WAL mode: blocks every other writer
            errors0 = metric(server, "csf_state_write_errors_total")
            # csf waits its 5 s busy timeout, then counts the failure; meanwhile scrapes stay fast
            deadline = time.monotonic() + 20
            slowest = 0.0
            while metric(server, "csf_state_write_errors_total") < errors0 + 1:
                assert time.monotonic() < deadline, "no SQLITE_BUSY write error within 20 s"
                started = time.monotonic()
                assert server.get("/metrics").status_code == 200
                assert server.get("/api/v1/status").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.2)
            assert slowest < 3.0, (
                f"a scrape took {slowest:.2f}s while the database was locked (busy timeout 5 s)"
            )
            rows_locked = server.get("/api/v1/history").json()["count"]  # reads still work in WAL mode
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_until(
            lambda: server.get("/api/v1/history").json()["count"] >= rows_locked + 2,
            30,
            0.2,
            "writes to resume",
        )
    finally:
        server.stop()
    log = server.log()
    assert 'msg="state write failed"' in log and "kind=SQLITE_BUSY" in log


# --------------------------------------------------------------------------- kill -9 and restart


def _integrity(db: Path) -> tuple[str, int, list[tuple[str | None, str | None, int]]]:
    conn = sqlite3.connect(db)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        count = conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        changes = conn.execute(
            "SELECT previous, binding, initial FROM binding_changes ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return check, count, changes


# --------------------------------------------------------------------------- the Prometheus source

PROM_LOOKBACK_HOURS = 6
PROM_TIMEOUT = 1.0
"""csf's per-request timeout for the Prometheus source (retries 0): a fault costs ~1 s."""


class FaultProxy:
    """A loopback HTTP proxy in front of a real Prometheus that injects one fault at a time.

    Modes: ``pass`` (forward), ``slow`` (wait `delay` s, beyond csf's timeout, then forward),
    ``status`` (answer `status` with a Prometheus-style error document), ``hold`` (block
    every query until released; `in_flight` is set when one arrives). `refuse()` closes
    the listening socket (connection refused), `accept()` reopens it on the same port.
    A failed upstream (Prometheus stopped) answers 502, as a gateway would.
    """

    def __init__(self, upstream: str) -> None:
        import threading

        self.upstream = upstream
        self.client = httpx.Client(timeout=30.0)  # shared: one client per request costs ~70 ms
        self.mode = "pass"
        self.delay = 0.0
        self.status = 200
        self.requests = 0
        self.in_flight = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: Any = None
        self.port = 0
        self.accept()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, *, delay: float = 0.0, status: int = 200) -> None:
        with self._lock:
            self.mode, self.delay, self.status = mode, delay, status

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: refuse() refuses everything

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # csf gave up waiting (the "slow" fault): nobody to answer

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests += 1
                    mode, delay, status = proxy.mode, proxy.delay, proxy.status
                if mode == "slow":
                    time.sleep(delay)
                elif mode == "hold" and self.path.startswith("/api/v1/query"):
                    proxy.in_flight.set()
                    proxy.release.wait(timeout=60)
                elif mode == "status":
                    kind = "unavailable" if status >= 500 else "execution"
                    doc = f'{{"status":"error","errorType":"{kind}","error":"injected fault {status}"}}'
                    self._send(status, doc.encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                try:
                    resp = proxy.client.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    )
                except httpx.HTTPError as exc:
                    self._send(502, f"bad gateway: {type(exc).__name__}".encode(), "text/plain")
                    return
                self._send(resp.status_code, resp.content, resp.headers.get("content-type", "text/plain"))

            do_GET = _forward
            do_POST = _forward

        return Handler

    def accept(self) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def refuse(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=10)

    def close(self) -> None:
        self.release.set()
        self.refuse()
        self.client.close()


@pytest.fixture(scope="module")
def prometheus_with_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real Prometheus serving the `latency_binding` scenario backfilled up to just after now."""
    import subprocess

    from detector.sim.metrics import METRIC_HELP
    from detector.sim.simulator import Simulator
    from detector.source.openmetrics import write_openmetrics
    from tests._procs import PROMTOOL, PrometheusProcess, require_binary

    promtool = require_binary(PROMTOOL)
    tmp = tmp_path_factory.mktemp("prom-faults")
    # Up to 10 min past now, so that the newest data never turns stale during the tests
    # (Prometheus never reads ahead of the query time; future samples are invisible until then).
    end = (time.time() // 60 + 10) * 60
    start = end - (PROM_LOOKBACK_HOURS + 2) * 3600
    om = tmp / "sim.om"
    sim = Simulator(SCENARIO, 3, origin=start, interval=60.0)
    with open(om, "w", encoding="utf-8", newline="\n") as fh:
        write_openmetrics(fh, sim.generate(start, end), help=METRIC_HELP)
    data = tmp / "tsdb"
    res = subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=96h",
            "-q",
            str(om),
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    om.unlink()
    holder: dict[str, Any] = {"tmp": tmp, "data": data}

    def start_prometheus() -> PrometheusProcess:
        proc = PrometheusProcess(
            tmp / f"run-{len(holder)}", "global:\n  scrape_interval: 1m\n", data_dir=data
        )
        proc.wait_ready()
        return proc

    holder["start"] = start_prometheus
    holder["proc"] = start_prometheus()
    try:
        yield holder
    finally:
        holder["proc"].stop()


def _prometheus_config(tmp_path: Path, url: str, extra: dict[str, Any] | None = None) -> Path:
    pack = small_pack(tmp_path / "prom-pack.yaml", lookback=f"{PROM_LOOKBACK_HOURS}h")
    doc: dict[str, Any] = {
        **(extra or {}),
        "evaluation_interval": "1s",
        "pipelines": [
            {
                "name": "default",
                "pack": str(pack),
                "source": {"type": "prometheus", "url": url, "timeout": f"{PROM_TIMEOUT:g}s", "retries": 0},
            }
        ],
    }
    path = tmp_path / "prom.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _evaluations_since(server: ServerProcess, t: float) -> list[dict[str, Any]]:
    from detector.timefmt import parse_time

    rows = server.get("/api/v1/history", params={"since": f"{t:.6f}", "limit": 1000}).json()["evaluations"]
    return [r for r in rows if parse_time(r["time"]) > t]


def _first_evaluation_after(server: ServerProcess, t: float, timeout: float = 30.0) -> dict[str, Any]:
    """The first evaluation that started after `t` (its `time` is its start, on the wall clock)."""
    wait_until(
        lambda: len(_evaluations_since(server, t)) >= 1, timeout, 0.1, "an evaluation after the change"
    )
    return _evaluations_since(server, t)[0]


def _assert_blind(server: ServerProcess, row: dict[str, Any]) -> None:
    from detector.spec.load import load_pack

    pack = load_pack(server.log_path.parent / "prom-pack.yaml")
    # every constraint read from the source is unobserved; meta (the detector's own cost) is not
    observed = {c.name for c in pack.constraints if c.kind != "meta"}
    assert observed and len(observed) == len(pack.constraints) - 1
    assert row["source_up"] is False and row["binding"] == "observability" and row["decision"] == "observe"
    assert {c["name"] for c in row["constraints"] if c["state"] == "observe"} == observed
    # the metrics say the same while that evaluation is the latest
    assert metric(server, "csf_source_up") == 0.0
    assert binding_of(server) == "observability"
    states = {
        s.labels["constraint"]
        for s in samples(server, "csf_constraint_state")
        if s.labels["state"] == "observe" and s.value == 1.0
    }
    assert states == observed


@pytest.mark.slow
def test_prometheus_down_slow_5xx_422_go_blind_and_recover_on_the_next_evaluation(
    prometheus_with_data: Any, tmp_path: Path
) -> None:
    prom = prometheus_with_data["proc"]
    proxy = FaultProxy(prom.url)
    server = start_csf_server(tmp_path, "--config", str(_prometheus_config(tmp_path, proxy.url)))
    try:
        server.wait_ready()
        wait_until(lambda: binding_of(server) == EXPECTED_BINDING, 30, 0.2, "the binding over Prometheus")
        assert metric(server, "csf_source_up") == 1.0

        def fault_then_heal(inject: Any, heal: Any, what: str) -> None:
            inject()
            t_fault = time.time()  # evaluations starting from now on meet the fault
            blind = _first_evaluation_after(server, t_fault)
            assert blind["binding"] == "observability", (what, blind["explanation"])
            _assert_blind(server, blind)
            heal()
            t_heal = time.time()  # the source is back from now on
            back = _first_evaluation_after(server, t_heal)
            # recovered on the very next evaluation: hysteresis restores the answer held before
            assert back["source_up"] is True and back["binding"] == EXPECTED_BINDING, (
                what,
                back["explanation"],
            )
            wait_until(lambda: metric(server, "csf_source_up") == 1.0, 10, 0.1, f"source_up after {what}")
            assert binding_of(server) == EXPECTED_BINDING

        fault_then_heal(proxy.refuse, proxy.accept, "connection refused")
        fault_then_heal(
            lambda: proxy.set("slow", delay=PROM_TIMEOUT + 1.5), lambda: proxy.set("pass"), "slow"
        )
        fault_then_heal(lambda: proxy.set("status", status=503), lambda: proxy.set("pass"), "503")
        fault_then_heal(lambda: proxy.set("status", status=422), lambda: proxy.set("pass"), "422")

        def restart_prometheus() -> None:
            new = prometheus_with_data["start"]()
            prometheus_with_data["proc"] = new
            proxy.upstream = new.url

        # the real Prometheus stopped (the proxy answers 502 like a gateway), then started again
        fault_then_heal(prom.stop, restart_prometheus, "prometheus stopped")

        errors = metric(server, "csf_evaluations_total", outcome="error")
        assert errors == 0.0  # an unreachable source is an outcome (observe), not a failed evaluation
    finally:
        server.stop()
        proxy.close()
    log = server.log()
    assert "Traceback" not in log
    changes = [(c["previous"], c["binding"]) for c in _changes_from_db(server.data_dir / "csf.db")]
    # each fault is exactly one change into observability and one back: no flapping in between
    assert changes == [(None, EXPECTED_BINDING)] + [
        ("observability" if i % 2 else EXPECTED_BINDING, EXPECTED_BINDING if i % 2 else "observability")
        for i in range(10)
    ]


def _changes_from_db(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        return [
            {"previous": p, "binding": b}
            for p, b in conn.execute("SELECT previous, binding FROM binding_changes ORDER BY id")
        ]
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_during_an_evaluation_then_restart(prometheus_with_data: Any, tmp_path: Path) -> None:
    """SIGKILL while an evaluation waits on Prometheus, restart: history intact, no spurious change."""
    proxy = FaultProxy(prometheus_with_data["proc"].url)
    config = _prometheus_config(tmp_path, proxy.url)
    data_dir = tmp_path / "state"
    first = start_csf_server(tmp_path, "--config", str(config), "--data-dir", str(data_dir))
    try:
        first.wait_ready()
        wait_until(lambda: first.get("/api/v1/history").json()["count"] >= 3, 30, 0.2, "three stored rows")
        seen = first.get("/api/v1/history").json()
        assert binding_of(first) == EXPECTED_BINDING
        proxy.set("hold")
        assert proxy.in_flight.wait(timeout=30), "no evaluation reached Prometheus"
        first.process.send_signal(signal.SIGKILL)  # mid-evaluation: a query is waiting on the proxy
        first.process.wait(timeout=10)
    finally:
        kill_server(first)
        proxy.set("pass")
        proxy.release.set()
    assert first.process.returncode == -signal.SIGKILL

    db = data_dir / "csf.db"
    check, count_killed, changes_killed = _integrity(db)
    assert check == "ok"
    assert count_killed >= seen["count"]  # every row the API had shown survived
    assert changes_killed == [(None, EXPECTED_BINDING, 1)]

    second = start_csf_server(tmp_path, "--config", str(config), "--data-dir", str(data_dir))
    try:
        second.wait_ready()
        # the runner warmed up (replayed the recent past): the first live answer is the same binding
        assert binding_of(second) == EXPECTED_BINDING
        wait_until(
            lambda: second.get("/api/v1/history").json()["count"] >= count_killed + 3, 30, 0.2, "new rows"
        )
        assert metric(second, "csf_binding_changes_total") == 0.0
        body = second.get("/api/v1/history", params={"limit": 10000}).json()
    finally:
        second.stop()
        proxy.close()
    times = [r["time"] for r in body["evaluations"]]
    assert times[: len(seen["evaluations"])] == [r["time"] for r in seen["evaluations"]]
    assert times == sorted(times)  # wall-clock source: the restarted process continues in time
    assert [(c["previous"], c["binding"], c["initial"]) for c in body["binding_changes"]] == [
        (None, EXPECTED_BINDING, True)
    ]
    warm = [ln for ln in second.log().splitlines() if 'msg="pipeline prepared"' in ln]
    assert len(warm) == 1 and "warm_up_evaluations=4" in warm[0]  # enter_after + exit_after
    check, count_after, changes_after = _integrity(db)
    assert check == "ok" and count_after >= count_killed + 3 and changes_after == changes_killed


# --------------------------------------------------------------------------- data handling rules
# docs/operations.md, "Data handling": what the embedded store and the push receivers do with
# odd samples. Pure and deterministic: the receivers' storing function and the native engine.

T_DATA = 1_800_000_000.0


def _series(values: list[float], start: float, step: float = 60.0, name: str = "jobs_total") -> Any:
    import numpy as np

    from detector.source.ingest.remote_write import SeriesSamples

    ts = start + step * np.arange(len(values), dtype=np.float64)
    return SeriesSamples(name, {"region": "us"}, ts, np.asarray(values, dtype=np.float64))


def test_duplicates_conflicts_and_late_samples_are_dropped_counted_and_never_rewrite_history() -> None:
    import numpy as np

    from detector.source.ingest.remote_write import store_series
    from detector.source.store import SampleStore

    store = SampleStore(retention=2 * 3600.0)
    batch = _series([float(v) for v in range(10)], T_DATA - 540)
    first = store_series(store, [batch])
    assert (first.status, first.accepted, first.duplicates, first.out_of_order) == (204, 10, 0, 0)
    # a re-sent batch (the sender timed out on a request that was stored): idempotent, 204
    again = store_series(store, [batch])
    assert (again.status, again.accepted, again.duplicates, again.out_of_order) == (204, 0, 10, 0)
    # the same timestamp with another value: dropped and counted, the stored value is kept, 400
    clash = _series([99.0], T_DATA)
    ((_, ts, vals),) = store.select("jobs_total")
    assert ts[-1] == T_DATA and vals[-1] == 9.0
    conflict = store_series(store, [clash])
    assert (conflict.status, conflict.accepted, conflict.out_of_order) == (400, 0, 1)
    # older than the newest sample of the series (late or far in the past): dropped, 400
    late = store_series(store, [_series([5.0], T_DATA - 86400)])
    assert (late.status, late.out_of_order) == (400, 1)
    ((_, ts2, vals2),) = store.select("jobs_total")
    assert np.array_equal(ts2, ts) and np.array_equal(vals2, vals)  # history never rewritten

    # a new series entirely older than the retention: stored, then dropped by the next
    # evaluation's retention pass (the feed enforces it before every evaluation)
    old = store_series(store, [_series([1.0, 2.0], T_DATA - 3 * 3600, name="old_total")])
    assert old.status == 204 and old.accepted == 2
    assert store.enforce_retention(T_DATA) == 2
    assert store.select("old_total") == []


def test_counter_reset_counts_the_value_before_the_drop_like_prometheus() -> None:
    from detector.source.native import NativeSource
    from detector.source.store import SampleStore
    from detector.spec.signals import Signal

    values = [0.0, 10.0, 20.0, 5.0, 15.0]  # a restart of the exporter between 20 and 5
    store = SampleStore(retention=None)
    start = T_DATA - 240
    batch = _series(values, start)
    store.append(batch.name, batch.labels, batch.timestamps, batch.values)
    # independent reference: every rise counts, a drop restarts from zero (so the new value counts)
    expected = sum(b - a if b >= a else b for a, b in zip(values, values[1:], strict=False))
    assert expected == 35.0
    frame = NativeSource(store).query_range(
        Signal(kind="increase", metric="jobs_total", range=300.0), T_DATA, T_DATA, 60.0
    )
    # window (T-300, T] holds all five samples; the start is not extrapolated below the counter's
    # zero point (first value 0) and the end is the last sample: no extrapolation at all
    assert frame.values.shape == (1, 1) and frame.values[0, 0] == pytest.approx(expected, rel=1e-12)
    rate = NativeSource(store).query_range(
        Signal(kind="rate", metric="jobs_total", range=300.0), T_DATA, T_DATA, 60.0
    )
    assert rate.values[0, 0] == pytest.approx(expected / 300.0, rel=1e-12)


def test_samples_beyond_the_evaluation_time_are_invisible_to_it() -> None:
    from detector.source.native import NativeSource
    from detector.source.store import SampleStore
    from detector.spec.signals import Signal

    store = SampleStore(retention=None)
    store.append("queue_depth", {"region": "us"}, [T_DATA - 60, T_DATA, T_DATA + 3600], [1.0, 2.0, 500.0])
    frame = NativeSource(store).query_range(Signal(kind="gauge", metric="queue_depth"), T_DATA, T_DATA, 60.0)
    assert frame.values[0, 0] == 2.0  # the sample an hour ahead is not read at T


def test_a_sample_from_the_far_future_is_refused_at_ingestion_and_blocks_nothing() -> None:
    """A sender whose clock is a year ahead: its samples are refused (counted as invalid), the
    series keeps its history and accepts the next real sample."""
    import numpy as np

    from detector.source.ingest.remote_write import SeriesSamples, store_series
    from detector.source.store import SampleStore

    store = SampleStore(retention=8 * 86400.0)
    ts = T_DATA - 3600 + 60 * np.arange(60, dtype=np.float64)
    store.append("jobs_total", {"region": "us"}, ts, np.arange(60, dtype=np.float64))
    now = T_DATA
    future = T_DATA + 365 * 86400 + np.arange(1, 40, dtype=np.float64)
    rep = store_series(
        store, [SeriesSamples("jobs_total", {"region": "us"}, future, np.ones(39))], not_after=now + 600
    )
    assert rep.status == 400 and rep.invalid == 39 and rep.accepted == 0
    assert "ahead of now" in rep.error
    assert store.oldest_timestamp("jobs_total") == ts[0]
    assert store.append("jobs_total", {"region": "us"}, T_DATA + 60, 61.0).accepted == 1


@pytest.mark.slow
def test_alertmanager_outage_in_push_mode_loses_no_resolve_and_no_evaluation(
    prometheus_with_data: Any, tmp_path: Path
) -> None:
    """Push mode, service level: Alertmanager stops while an alert resolves; evaluations go on,
    failed pushes are counted, and the resolve reaches Alertmanager once it is back."""
    from rules.generate import SOURCE_DOWN
    from tests.integration.test_alertmanager import _Alertmanager, _Webhook

    hook = _Webhook()
    (tmp_path / "am").mkdir()
    manager = _Alertmanager(tmp_path / "am", hook.url)
    proxy = FaultProxy(prometheus_with_data["proc"].url)
    push = {"alertmanager": {"url": None, "resend_interval": "2s", "timeout": "1s"}}
    server: ServerProcess | None = None
    try:
        manager.start()
        push["alertmanager"]["url"] = manager.url
        server = start_csf_server(tmp_path, "--config", str(_prometheus_config(tmp_path, proxy.url, push)))
        server.wait_ready()

        def notified(status: str) -> list[dict[str, Any]]:
            return [a for a in hook.alerts(status) if a["labels"]["alertname"] == SOURCE_DOWN.name]

        proxy.refuse()  # the source goes down: CSFSourceDown fires and is notified
        wait_until(lambda: len(notified("firing")) == 1, 30, 0.1, "the CSFSourceDown notification")
        (fired,) = notified("firing")

        manager.stop()  # Alertmanager goes down ...
        failures0 = metric(server, "csf_alertmanager_push_failures_total")
        proxy.accept()  # ... and the source comes back: the alert resolves while nobody listens
        healed = time.time()
        assert _first_evaluation_after(server, healed)["source_up"] is True
        wait_until(
            lambda: metric(server, "csf_alertmanager_push_failures_total") > failures0,
            30,
            0.2,
            "a failed push",
        )
        before = successes(server)
        wait_until(lambda: successes(server) >= before + 3, 30, 0.2, "evaluations during the outage")
        assert metric(server, "csf_evaluations_total", outcome="error") == 0.0
        assert notified("resolved") == []

        manager.start()  # same port and storage: the pending resolve is delivered (after the backoff)
        wait_until(lambda: len(notified("resolved")) == 1, 60, 0.2, "the resolve after the outage")
        (resolved,) = notified("resolved")
        assert resolved["fingerprint"] == fired["fingerprint"] and resolved["startsAt"] == fired["startsAt"]
        from detector.timefmt import parse_time

        assert parse_time(resolved["endsAt"]) <= healed + 1.5  # when it stopped, not when it was delivered
        active = {a["labels"]["alertname"] for a in manager.active_alerts()}
        assert SOURCE_DOWN.name not in active and "CSFBindingConstraint" in active
        assert len(notified("firing")) == 1  # no second incident
    finally:
        if server is not None:
            server.stop()
        proxy.close()
        manager.stop()
        hook.close()
    assert "Traceback" not in server.log()
