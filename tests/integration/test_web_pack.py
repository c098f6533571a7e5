"""The second built-in pack, an ordinary web shop: valid, known answers on its simulator,
a proxy for a confounded link, and its dashboard's queries answered by a real Prometheus."""

from __future__ import annotations

import dataclasses
import time
from functools import cache
from pathlib import Path

import httpx
import pytest
import yaml

from detector.cli import main
from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation
from detector.sim.web import DURATION_DAYS, HELP, WebShopSimulator
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import BUILTIN_PACKS, builtin_pack
from detector.spec.pack import Pack
from exporters.grafana import build_dashboard, panel_queries
from tests._procs import PROMETHEUS, PrometheusProcess, require_binary
from tests.conftest import start_csf_server

ORIGIN = 1_800_000_000.0
DAY = 86400.0
GRACE = 1.5 * DAY
"""After a change of phase: up to a day before 'sustained' holds, plus the release hysteresis
(6 evaluations, 6 h apart here)."""


def _pack() -> Pack:
    pack = builtin_pack("web-shop")
    return dataclasses.replace(pack, windows=dataclasses.replace(pack.windows, lookback=2 * DAY))


@cache
def _run(scenario: str) -> tuple[WebShopSimulator, tuple[Evaluation, ...]]:
    days = DURATION_DAYS[scenario]
    sim = WebShopSimulator(scenario, 1, origin=ORIGIN, interval=300.0, history=2 * DAY)
    store = SampleStore(retention=None)
    sim.write_to(store, sim.history_start, ORIGIN + days * DAY)
    times = [ORIGIN + h * 3600 + 7 for h in range(6, int(days * 24), 6)]
    return sim, tuple(Pipeline("shop", _pack(), NativeSource(store)).replay(times))


def test_the_pack_validates_and_is_built_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert "web-shop" in BUILTIN_PACKS
    pack = builtin_pack("web-shop")
    assert pack.names == ("api_latency", "db_pool", "job_queue", "meta")
    assert main(["pack", "show", "--pack", "web-shop"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Built-in pack: an ordinary web shop.")
    path = Path(__file__).resolve().parents[2] / "detector" / "spec" / "packs" / "web-shop.yaml"
    assert main(["pack", "validate", str(path)]) == 0
    assert main(["pack", "show", "--pack", "web-shp"]) == 2
    assert "did you mean 'web-shop'?" in capsys.readouterr().err


def test_csf_finds_the_played_binding_constraint_in_every_phase() -> None:
    sim, evaluations = _run("web_sequence")
    checked = 0
    for ev in evaluations:
        phase = sim.phase_at(ev.time)
        since = ev.time - (ORIGIN + phase.start_day * DAY)
        if since < GRACE:
            continue
        checked += 1
        assert ev.binding == phase.expected_binding, (phase.name, ev.binding, ev.explanation)
    assert checked >= 20
    decisions: dict[str, set[str]] = {}
    for ev in evaluations:
        if ev.binding and ev.hold is None:  # while held for release the decision may be 'stop'
            decisions.setdefault(ev.binding, set()).add(ev.decision)
    assert decisions["api_latency"] == {"invest"}
    assert decisions["db_pool"] == {"investigate"}  # proven, no revenue model in the pack
    assert decisions["job_queue"] == {"invest"}
    latency = next(ev for ev in evaluations if ev.binding == "api_latency").constraint("api_latency")
    assert latency.causal is not None and latency.causal.verdict == "causal"
    assert latency.economics is not None and latency.economics.revenue_at_risk and latency.economics.revenue_at_risk > 1e6


def test_a_confounded_link_is_a_proxy_never_binding() -> None:
    _, evaluations = _run("web_confounded")
    for ev in evaluations:
        api = ev.constraint("api_latency")
        assert api.pressure is not None and api.pressure.ratio is not None and api.pressure.ratio > 1
        assert api.state == "proxy" and api.decision == "investigate"
        assert ev.binding is None and ev.decision != "invest"


def test_a_healthy_shop_has_no_binding_constraint() -> None:
    _, evaluations = _run("web_healthy")
    assert all(ev.binding is None and ev.decision == "stop" for ev in evaluations)


def test_simulate_cli_writes_the_web_platform(tmp_path: Path) -> None:
    out = tmp_path / "shop.om"
    argv = ["simulate", "--platform", "web", "--scenario", "web_sequence", "--days", "0.2", "--interval", "5m"]
    assert main([*argv, "--output", str(out)]) == 0
    text = out.read_text()
    assert 'http_server_request_duration_seconds_bucket{region="us",http_route="/product"' in text
    assert "# HELP shop_sessions " + HELP["shop_sessions"] in text
    assert main(["pack", "check", "--pack", "web-shop", "--input", str(out), "--lookback", "4h"]) in (0, 1)


@pytest.mark.slow
def test_every_web_dashboard_panel_returns_data_from_prometheus(tmp_path: Path) -> None:
    require_binary(PROMETHEUS.rsplit("/", 1)[-1])
    cfg = tmp_path / "csf.yaml"
    cfg.write_text(yaml.safe_dump({
        "evaluation_interval": "1s",
        "pipelines": [{"name": "shop", "pack": "web-shop",
                       "source": {"type": "simulator", "scenario": "web_sequence", "seed": 2, "interval": "5m"}}],
    }), encoding="utf-8")  # fmt: skip
    server = start_csf_server(tmp_path / "serve", "--config", str(cfg))
    try:
        server.wait_ready()
        status = server.get("/api/v1/status").json()
        assert [c["name"] for c in status["constraints"]] == ["api_latency", "db_pool", "job_queue", "meta"]
        prom_cfg = yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "csf", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}],
        })  # fmt: skip
        with PrometheusProcess(tmp_path / "prom", prom_cfg) as prom:
            prom.wait_ready()
            queries = panel_queries(build_dashboard(builtin_pack("web-shop")))
            assert len(queries) >= 12
            problems: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                problems = []
                for title, expr in queries:
                    r = httpx.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=10).json()
                    if r["status"] != "success" or not r["data"]["result"]:
                        problems.append(f"no series: {title}: {expr}")
                if not problems:
                    break
                time.sleep(0.5)
            assert not problems, "\n".join(problems)
    finally:
        assert server.stop() == 0


def test_the_web_simulator_does_not_depend_on_how_time_is_split() -> None:
    import numpy as np

    whole = WebShopSimulator("web_sequence", 3, origin=ORIGIN, interval=300.0, history=DAY)
    parts = WebShopSimulator("web_sequence", 3, origin=ORIGIN, interval=300.0, history=DAY)
    t0, t1, t2 = whole.history_start, ORIGIN + 0.3 * DAY, ORIGIN + DAY
    a = {(n, tuple(sorted(lb.items()))): v for n, _, lb, _, v in whole.generate(t0, t2)}
    b: dict = {}
    for lo, hi in ((t0, t1), (t1, t2)):
        for n, _, lb, _, v in parts.generate(lo, hi):
            key = (n, tuple(sorted(lb.items())))
            b[key] = np.concatenate([b[key], v]) if key in b else v
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
