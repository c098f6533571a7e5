"""Configuration reload: ``POST /-/reload`` and SIGHUP validate first, refuse what is invalid, and swap
pipelines without losing the process, its state database or the unchanged pipelines."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from detector.service.config import PipelineConfig, SimulatorSource, load_config
from detector.service.runner import Runner
from detector.service.state import StateStore
from exporters.selfmetrics import ServiceMetrics
from tests._procs import wait_until
from tests.conftest import ServerProcess, start_csf_server
from tests.integration.test_faults import EXPECTED_BINDING, SCENARIO, metric, small_pack, successes


def _config_doc(packs: dict[str, Path], **top: Any) -> dict[str, Any]:
    return {
        "evaluation_interval": "1s",
        **top,
        "pipelines": [
            {
                "name": name,
                "pack": str(pack),
                "source": {"type": "simulator", "scenario": SCENARIO, "speed": 60},
            }
            for name, pack in packs.items()
        ],
    }


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- Runner.reload, in process


def _runner(tmp_path: Path, config: Any) -> tuple[Runner, CollectorRegistry]:
    registry = CollectorRegistry()
    runner = Runner.from_config(
        config, metrics=ServiceMetrics(registry), state=StateStore(tmp_path / "state")
    )
    return runner, registry


def test_reload_keeps_unchanged_pipelines_rebuilds_changed_adds_and_removes(tmp_path: Path) -> None:
    a = small_pack(tmp_path / "a.yaml")
    b = small_pack(tmp_path / "b.yaml")
    cfg_path = _write(tmp_path / "csf.yaml", _config_doc({"one": a, "two": b, "three": b}))
    runner, registry = _runner(tmp_path, load_config(cfg_path, {}))
    before = {name: runner.handle(name) for name in runner.names}

    # the same file again: nothing is rebuilt, the very same pipeline objects keep running
    same = runner.reload(load_config(cfg_path, {}))
    assert same.unchanged == ("one", "two", "three") and not (same.added or same.removed or same.rebuilt)
    assert all(runner.handle(n) is before[n] for n in runner.names)

    # pack "a" changes content (hysteresis), "three" goes, "four" comes
    small_pack(a, version="1.0.1", enter_after=3)
    cfg_path = _write(tmp_path / "csf.yaml", _config_doc({"one": a, "two": b, "four": b}))
    result = runner.reload(load_config(cfg_path, {}))
    assert result.rebuilt == ("one",) and result.unchanged == ("two",)
    assert result.added == ("four",) and result.removed == ("three",)
    assert runner.names == ("one", "two", "four")
    assert runner.handle("two") is before["two"]
    assert runner.handle("one") is not before["one"]
    assert (
        runner.handle("one").pack.version == "1.0.1" and runner.handle("one").pack.hysteresis.enter_after == 3
    )
    # the added pipeline has its counters from the start
    assert (
        registry.get_sample_value("csf_evaluations_total", {"pipeline": "four", "outcome": "success"}) == 0.0
    )
    runner.stop()


def test_a_pipeline_that_cannot_be_built_leaves_the_runner_untouched(tmp_path: Path) -> None:
    cfg = load_config(
        _write(tmp_path / "csf.yaml", _config_doc({"one": small_pack(tmp_path / "p.yaml")})), {}
    )
    runner, _ = _runner(tmp_path, cfg)
    before = runner.handle("one")
    # bypass config validation: a scenario the simulator does not know fails while building
    broken = PipelineConfig(
        name="two", pack=cfg.pipelines[0].pack, source=SimulatorSource(scenario="no-such")
    )
    with pytest.raises((KeyError, ValueError)):
        runner.reload(replace(cfg, pipelines=(*cfg.pipelines, broken)))
    assert runner.names == ("one",) and runner.handle("one") is before
    assert runner.evaluation_interval == cfg.evaluation_interval
    runner.stop()


# --------------------------------------------------------------------------- csf serve, end to end


def _post_reload(server: ServerProcess) -> Any:
    import httpx

    return httpx.post(server.url + "/-/reload", timeout=30.0)


def _pipelines(server: ServerProcess) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in server.get("/api/v1/pipelines").json()["pipelines"]}


@pytest.mark.slow
def test_reload_over_http_and_sighup(tmp_path: Path) -> None:
    pack_one = small_pack(tmp_path / "one.yaml")
    pack_two = small_pack(tmp_path / "two.yaml")
    cfg = _write(tmp_path / "csf.yaml", _config_doc({"default": pack_one}))
    server = start_csf_server(tmp_path, "--config", str(cfg))
    try:
        server.wait_ready()
        pid = server.process.pid
        assert metric(server, "csf_config_last_reload_successful") == 1.0

        # 1. invalid configurations are refused with the reason; the running one stays
        good_text = cfg.read_text()
        cfg.write_text(good_text + "pipelines: [\n")
        r = _post_reload(server)
        assert r.status_code == 400 and r.json()["status"] == "error"
        assert r.json()["error"].startswith(f"{cfg}:") and "invalid YAML" in r.json()["error"]
        _write(cfg, {**_config_doc({"default": pack_one}), "evaluation_interval": "fast"})
        r = _post_reload(server)
        assert (
            r.status_code == 400
            and f"{cfg}:1:" in r.json()["error"]
            and "evaluation_interval" in r.json()["error"]
        )
        _write(cfg, _config_doc({"default": pack_one, "second": tmp_path / "missing-pack.yaml"}))
        r = _post_reload(server)
        assert r.status_code == 400 and "missing-pack.yaml" in r.json()["error"]
        bad_pack = tmp_path / "bad-pack.yaml"
        bad_pack.write_text(pack_two.read_text().replace("enter_after: 2", "enter_after: many"))
        _write(cfg, _config_doc({"default": pack_one, "second": bad_pack}))
        r = _post_reload(server)
        assert (
            r.status_code == 400
            and "invalid pack" in r.json()["error"]
            and "enter_after" in r.json()["error"]
        )
        assert metric(server, "csf_config_reloads_total", outcome="failure") == 4.0
        assert metric(server, "csf_config_last_reload_successful") == 0.0
        assert list(_pipelines(server)) == ["default"]
        before = successes(server)
        wait_until(lambda: successes(server) >= before + 2, 30, 0.2, "evaluations to go on after refusals")

        # 2. a valid one: the new pipeline is added, the running one is untouched
        rows_before = server.get("/api/v1/history").json()["count"]
        _write(cfg, _config_doc({"default": pack_one, "second": pack_two}))
        r = _post_reload(server)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["pipelines"]["added"] == ["second"] and body["pipelines"]["unchanged"] == ["default"]
        assert body["pipelines"]["rebuilt"] == [] and body["restart_required"] == []
        assert metric(server, "csf_config_last_reload_successful") == 1.0
        wait_until(
            lambda: server.get("/readyz").status_code == 200, 30, 0.2, "the added pipeline to be ready"
        )
        assert (
            server.get("/api/v1/status", params={"pipeline": "second"}).json()["binding"] == EXPECTED_BINDING
        )
        # the same database, still written by the running pipeline (its next evaluation may be a second away)
        wait_until(
            lambda: server.get("/api/v1/history").json()["count"] > rows_before, 30, 0.2, "history to grow"
        )
        history = server.get("/api/v1/history").json()
        assert [c["initial"] for c in history["binding_changes"]] == [True]  # no spurious change

        # 3. SIGHUP: pack "one" changes (a new version): only "default" is rebuilt
        small_pack(pack_one, version="1.0.1")
        second_evals = metric(server, "csf_evaluations_total", pipeline="second", outcome="success")
        server.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: _pipelines(server)["default"]["pack"]["version"] == "1.0.1", 30, 0.2, "the SIGHUP reload"
        )
        wait_until(
            lambda: _pipelines(server)["default"]["ready"], 30, 0.2, "the rebuilt pipeline to be ready"
        )
        # the unchanged pipeline kept its counters (it was not rebuilt)
        assert metric(server, "csf_evaluations_total", pipeline="second", outcome="success") >= second_evals
        assert server.get("/api/v1/status").json()["binding"] == EXPECTED_BINDING
        changes = server.get("/api/v1/history").json()["binding_changes"]
        assert [(c["binding"], c["initial"]) for c in changes] == [(EXPECTED_BINDING, True)]

        # 4. a setting that needs a restart is reported, not applied
        # (port and data_dir come from the command line here, which wins over the file)
        _write(cfg, {**_config_doc({"default": pack_one, "second": pack_two}), "host": "localhost"})
        r = _post_reload(server)
        assert r.status_code == 200 and r.json()["restart_required"] == ["host"]
        assert r.json()["pipelines"]["unchanged"] == ["default", "second"]
        assert server.get("/healthz").status_code == 200  # still on the old listener
        assert metric(server, "csf_config_reloads_total", outcome="success") == 3.0
        assert server.process.poll() is None and server.process.pid == pid and os.getpid() != pid
    finally:
        assert server.stop() == 0
    log = server.log()
    assert log.count('msg="configuration reload refused; the running configuration stays"') == 4
    assert log.count('msg="configuration reloaded"') == 3
    assert 'msg="settings that need a restart were not applied" settings=host' in log
    assert "Traceback" not in log


def test_an_app_without_a_configuration_source_answers_409(tmp_path: Path) -> None:
    import httpx

    from detector.service.app import create_app
    from tests._procs import serve_asgi

    cfg = load_config(
        _write(tmp_path / "csf.yaml", _config_doc({"one": small_pack(tmp_path / "p.yaml")})), {}
    )
    app = create_app(replace(cfg, data_dir=tmp_path / "data"))
    with serve_asgi(app) as base:  # lifespan off: the runner is not started, the routes answer
        r = httpx.post(base + "/-/reload", timeout=10.0)
    assert r.status_code == 409 and "no configuration source" in r.json()["error"]
    app.state.runner.stop()
