"""A push pipeline's write-ahead log in the service: ``kill -9`` of a real ``csf serve``
during sustained remote_write loses no acknowledged sample, a restart gives the verdict
the store gave before, and a reload keeps the pushed data.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from detector.service.config import load_config
from detector.service.config_model import PipelineConfig, SimulatorSource
from detector.service.pipelines import build_handle, warm_up_count
from detector.sim.simulator import Simulator
from tests._procs import wait_until
from tests.conftest import ServerProcess, start_csf_server
from tests.integration.test_serve_push import RW_HEADERS, remote_write_body, served

PUSH = """
evaluation_interval: 60s
pipelines:
  - name: pushed
    source: {type: push}
"""
SERIES, PER_SERIES = 10, 5
"""Each request: 10 series x 5 samples."""


def _store_stats(server: ServerProcess) -> dict[str, Any]:
    r = server.get("/api/v1/pipelines")
    r.raise_for_status()
    [p] = [p for p in r.json()["pipelines"] if p["name"] == "pushed"]
    return p["source"]["store"]


def _restart(server: ServerProcess, config: Path) -> ServerProcess:
    """`csf serve` again on the same port and data directory."""
    args = ["--port", str(server.port), "--data-dir", str(server.data_dir), "--config", str(config)]
    again = start_csf_server(config.parent, args=args)
    return dataclasses.replace(again, port=server.port, data_dir=server.data_dir)


def test_kill_9_during_sustained_remote_write_loses_no_acknowledged_sample(tmp_path: Path) -> None:
    config = tmp_path / "push.yaml"
    config.write_text(PUSH)
    server = start_csf_server(tmp_path, "--config", str(config))
    restarted: ServerProcess | None = None
    try:
        server.wait_ready()
        acked = {"samples": 0, "requests": 0}
        t0 = math.floor(time.time()) - 3600.0
        done = threading.Event()

        def send() -> None:
            with httpx.Client(base_url=server.url, timeout=10.0) as client:
                for i in range(20_000):  # bounded; the kill ends it long before
                    series = [
                        (f"load_{s}", {"instance": f"10.0.0.{s}:9100"}, [(t0 + i * 0.1 + j * 0.01, float(i)) for j in range(PER_SERIES)])
                        for s in range(SERIES)
                    ]
                    try:
                        r = client.post("/api/v1/write", content=remote_write_body(series), headers=RW_HEADERS)
                    except httpx.TransportError:
                        break
                    if r.status_code != 204:
                        break
                    acked["samples"] += SERIES * PER_SERIES
                    acked["requests"] += 1
            done.set()

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: acked["requests"] >= 300, 60, 0.02, "300 acknowledged requests")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        sender.join(timeout=30)
        assert done.is_set()

        restarted = _restart(server, config)
        restarted.wait_ready()
        stats = _store_stats(restarted)
        # every acknowledged sample is back; at most the one request in flight at the kill is extra
        assert acked["samples"] <= stats["samples"] <= acked["samples"] + SERIES * PER_SERIES, (acked, stats)
        replayed = stats["wal"]["replayed"]
        assert replayed["samples"] == stats["samples"] and replayed["problems"] == []
        assert "write-ahead log replayed" in restarted.log()
        assert 'csf_wal_replay_problems{pipeline="pushed"} 0.0' in restarted.get("/metrics").text
    finally:
        for s in (server, restarted):
            if s is not None and s.process.poll() is None:
                s.process.kill()
                s.process.wait(timeout=10)


def test_after_a_restart_the_replayed_store_gives_the_same_verdict(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, PUSH), {})
    [pc] = config.pipelines
    now = time.time()
    origin = math.floor(now / 60) * 60 - 8 * 86400
    first = build_handle(pc, 60.0, now, time.time, data_dir=config.data_dir)
    assert first.receiver is not None and first.receiver.wal is not None
    Simulator("latency_binding", seed=5, origin=origin, interval=60.0).write_to(first.receiver.store, origin, now - 30)
    first.receiver.store.commit()
    first.receiver.wal.checkpoint()  # a checkpoint, then more samples in the segment after it
    Simulator("latency_binding", seed=5, origin=origin, interval=60.0).write_to(first.receiver.store, now - 30, now)
    first.receiver.store.commit()
    first.pipeline.warm_up(now, warm_up_count(pc.pack), 60.0)  # what the runner does at start
    before = first.pipeline.evaluate(now)
    assert before.binding == "latency" and before.decision != "observe", before.explanation
    assert first.close is not None
    first.close()

    second = build_handle(pc, 60.0, now, time.time, data_dir=config.data_dir)
    try:
        assert second.receiver is not None and second.receiver.wal is not None
        replay = second.receiver.wal.replay
        assert replay is not None and replay.checkpoint is not None and replay.problems == []
        second.pipeline.warm_up(now, warm_up_count(pc.pack), 60.0)
        assert _verdict(second.pipeline.evaluate(now)) == _verdict(before)
    finally:
        assert second.close is not None
        second.close()


def _verdict(evaluation: Any) -> dict[str, Any]:
    """The evaluation without what it cost (CPU and wall seconds, process memory)."""
    d = evaluation.to_dict()
    d["meta"] = {k: d["meta"][k] for k in ("queries", "samples_read")}
    return d


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "csf.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n" + text)
    return path


def test_a_reload_that_rebuilds_a_push_pipeline_keeps_its_samples(tmp_path: Path) -> None:
    path = _write(tmp_path, PUSH)
    config = load_config(path, {})
    with served(config) as (client, runner):
        t = time.time() - 60
        r = client.post("/api/v1/write", content=remote_write_body([("up", {}, [(t, 1.0)])]), headers=RW_HEADERS)
        assert r.status_code == 204
        old = runner.handle("pushed")
        path.write_text(path.read_text().replace("{type: push}", "{type: push, wal_fsync: true}"))
        result = runner.reload(load_config(path, {}))
        assert result.rebuilt == ("pushed",)
        new = runner.handle("pushed")
        assert new is not old and new.receiver is old.receiver and new.receiver is not None
        assert new.receiver.store.sample_count() == 1
        r = client.post("/api/v1/write", content=remote_write_body([("up", {}, [(t + 1, 2.0)])]), headers=RW_HEADERS)
        assert r.status_code == 204
        assert new.receiver.store.sample_count() == 2
        wal = new.receiver.wal
        assert wal is not None and wal._fd is not None, "the log stays open for the rebuilt pipeline"
        assert wal.fsync is True


def test_a_damaged_log_is_counted_in_metrics_and_the_rest_is_served(tmp_path: Path) -> None:
    path = _write(tmp_path, PUSH)
    config = load_config(path, {})
    t = time.time() - 60
    with served(config) as (client, _runner):
        for k in range(3):
            body = remote_write_body([("up", {}, [(t + k, float(k))])])
            assert client.post("/api/v1/write", content=body, headers=RW_HEADERS).status_code == 204
    segment = max((config.data_dir / "push" / "pushed" / "wal").iterdir())
    closed = 9 + 4  # the CLOSED record a clean shutdown appended
    segment.write_bytes(segment.read_bytes()[: -(closed + 4)])  # and the last samples record torn
    with served(load_config(path, {})) as (client, runner):
        metrics = client.get("/metrics").text
        assert 'csf_wal_replay_problems{pipeline="pushed"} 1.0' in metrics
        store = runner.handle("pushed").receiver.store
        assert store.sample_count() == 2
        [entry] = client.get("/api/v1/pipelines").json()["pipelines"]
        [problem] = entry["source"]["store"]["wal"]["replayed"]["problems"]
        assert "cut short" in problem and "bytes skipped" in problem


def test_a_failed_reload_releases_the_logs_it_opened_and_leaves_the_running_one(tmp_path: Path) -> None:
    path = _write(tmp_path, PUSH)
    config = load_config(path, {})
    with served(config) as (client, runner):
        before = runner.handle("pushed")
        assert before.receiver is not None and before.receiver.wal is not None
        pushed = config.pipelines[0]
        extra = dataclasses.replace(pushed, name="extra")  # a new push pipeline: its log is opened
        rebuilt = dataclasses.replace(pushed, source=dataclasses.replace(pushed.source, wal=False))
        broken = PipelineConfig(name="zz", pack=pushed.pack, source=SimulatorSource(scenario="no-such"))
        with pytest.raises((KeyError, ValueError)):
            runner.reload(dataclasses.replace(config, pipelines=(rebuilt, extra, broken)))
        assert runner.names == ("pushed",) and runner.handle("pushed") is before
        wal = before.receiver.wal
        assert wal is not None and wal._fd is not None and before.close is not None, "the running log is untouched"
        t = time.time() - 60
        body = remote_write_body([("up", {}, [(t, 1.0)])])
        assert client.post("/api/v1/write", content=body, headers=RW_HEADERS).status_code == 204
        # the log the failed reload opened for "extra" was released: a reload can open it again
        result = runner.reload(dataclasses.replace(config, pipelines=(pushed, extra)))
        assert result.added == ("extra",)
        extra_handle = runner.handle("extra")
        assert extra_handle.receiver is not None and extra_handle.receiver.wal is not None
