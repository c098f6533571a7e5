"""Every panel query of the generated Grafana dashboard returns data from a real Prometheus.

Two `csf serve` processes share a two-pipeline config as shards 0/2 and 1/2 (each owns one
pipeline), evaluating every second; a real Prometheus scrapes both every second, shard 0
as two targets (labels ``replica="a"`` and ``"b"``), which is what two replicas of one
shard look like to Prometheus: identical series from two instances. After a bounded
number of scrapes each panel query (``exporters.grafana.panel_queries``) must return
series and each panel a finite value, no panel may show a replica twice, the panels must
say what ``/api/v1/status`` says, and every pipeline must come from exactly the shard
that owns it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detector.spec.load import default_pack
from detector.spec.pack import STATES
from exporters.grafana import build_dashboard, panel_queries
from tests._procs import PROMETHEUS, PrometheusProcess
from tests.conftest import ServerProcess, require_binary

SCRAPE_WAIT = 60.0
"""Upper bound for Prometheus to hold enough scrapes for every panel."""
MIN_SCRAPES = 4
CANDIDATE_NAMES = ("alpha", "beta", "gamma", "delta", "video-eu", "video-us", "video-apac")


def reference_shard(name: str, count: int) -> int:
    """sha256 of the name read as one big hexadecimal number, mod count (independent of the code)."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % count


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10.0)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.status_code} {r.text[:500]}"
    return list(body["data"]["result"])


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(s["value"][1]) for s in result]
    return [v for v in values if math.isfinite(v)]


@pytest.fixture
def shards(csf_server: Callable[..., ServerProcess], tmp_path: Path) -> dict[str, ServerProcess]:
    """pipeline name -> the csf serve process (shard i of 2) that owns it."""
    first = {i: next(n for n in CANDIDATE_NAMES if reference_shard(n, 2) == i) for i in (0, 1)}
    config = {
        "evaluation_interval": "1s",
        "pipelines": [
            {"name": first[i], "source": {"type": "simulator", "scenario": "sequence", "seed": i + 1}}
            for i in (0, 1)
        ],
    }
    path = tmp_path / "csf.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    servers = {first[i]: csf_server("--config", str(path), "--shard", f"{i}/2") for i in (0, 1)}
    return servers


def test_every_dashboard_panel_returns_data_from_prometheus(
    shards: dict[str, ServerProcess], tmp_path: Path
) -> None:
    require_binary(PROMETHEUS.rsplit("/", 1)[-1])
    (name0, shard0), (name1, shard1) = shards.items()
    static = [
        {"targets": [f"127.0.0.1:{shard0.port}"], "labels": {"replica": "a"}},
        {"targets": [f"127.0.0.1:{shard0.port}"], "labels": {"replica": "b"}},
        {"targets": [f"127.0.0.1:{shard1.port}"], "labels": {"replica": "a"}},
    ]
    config = yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "csf", "static_configs": static}],
    })  # fmt: skip
    with PrometheusProcess(tmp_path / "prom", config) as prom:
        for server in shards.values():
            server.wait_ready()
        prom.wait_ready()

        # bounded wait: enough scrapes of both shards, and evaluations counted between scrapes
        deadline = time.monotonic() + SCRAPE_WAIT
        enough = f"count_over_time(csf_last_evaluation_timestamp_seconds[5m]) >= {MIN_SCRAPES}"
        while time.monotonic() < deadline:
            ok = len(query(prom.url, enough)) == len(static)
            if ok and query(prom.url, "sum(increase(csf_evaluation_duration_seconds_count[1m])) > 0"):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus did not collect {MIN_SCRAPES} scrapes of both shards in {SCRAPE_WAIT:.0f}s:"
                        f"\n{prom.log_tail()}")

        # every pipeline is published by exactly the shard that owns it (shard 0 by both "replicas")
        owners = query(prom.url, "csf_last_evaluation_timestamp_seconds")
        assert sorted((s["metric"]["pipeline"], s["metric"]["instance"], s["metric"]["replica"])
                      for s in owners) == sorted([
            (name0, f"127.0.0.1:{shard0.port}", "a"), (name0, f"127.0.0.1:{shard0.port}", "b"),
            (name1, f"127.0.0.1:{shard1.port}", "a"),
        ])  # fmt: skip

        # every panel query returns series, and every panel at least one finite value (an unknown
        # figure such as an undeclared overhead ratio is NaN by contract); retried briefly
        queries = panel_queries(build_dashboard(default_pack()))
        assert len(queries) >= 12
        problems: list[str] = []
        for _ in range(10):
            results = [(title, expr, query(prom.url, expr)) for title, expr in queries]
            problems = [f"no series: {title}: {expr}" for title, expr, r in results if not r]
            finite_by_panel: dict[str, int] = {}
            for title, _, r in results:
                finite_by_panel[title] = finite_by_panel.get(title, 0) + len(finite_values(r))
            problems += [f"no finite value: panel {t}" for t, n in finite_by_panel.items() if n == 0]
            # replicas are aggregated away: no series names its scrape target
            problems += [f"shows replicas separately: {title}: {expr}" for title, expr, r in results
                         if any("replica" in s["metric"] or "instance" in s["metric"] for s in r)]
            if not problems:
                break
            time.sleep(0.5)
        assert not problems, "\n".join(problems)

        # the panels say what the API says
        titles = dict(queries)
        for name, server in shards.items():
            status = server.get("/api/v1/status", params={"pipeline": name}).json()
            binding = [s["metric"]["constraint"] for s in query(prom.url, titles["Binding constraint"])
                       if s["metric"]["pipeline"] == name]
            assert binding == [status["binding"]] if status["binding"] else binding == [], (name, binding)
            states = {s["metric"]["constraint"]: STATES[int(float(s["value"][1]))]
                      for s in query(prom.url, titles["Constraint states"].replace('".+"', f'"{name}"'))}
            assert states == {c["name"]: c["state"] for c in status["constraints"]}, name
