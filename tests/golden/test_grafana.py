"""The generated Grafana dashboard: golden file, structure, and every query parsed by promtool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from detector.spec.load import BUILTIN_PACKS, builtin_pack, default_pack
from exporters.grafana import build_dashboard, panel_queries, render
from tests._procs import require_binary

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "deploy/grafana/dashboards/csf-microlearning-video.json"


@pytest.mark.parametrize("name", sorted(BUILTIN_PACKS))
def test_every_built_in_packs_dashboard_matches_its_checked_in_golden(name: str) -> None:
    """Golden pairs, one per built-in pack: pack in, dashboard JSON out (`csf dashboards generate --pack NAME`)."""
    pack = builtin_pack(name)
    golden = ROOT / "deploy/grafana/dashboards" / f"csf-{pack.name}.json"
    assert golden.exists(), f"run: csf dashboards generate --pack {name}"
    assert render(pack) == golden.read_text(encoding="utf-8"), (
        f"{golden.name} is stale: run `csf dashboards generate --pack {name}`"
    )
    assert build_dashboard(pack)["uid"] == f"csf-{pack.name}"


def test_no_dashboard_without_its_pack():
    on_disk = {p.name for p in (ROOT / "deploy/grafana/dashboards").glob("*.json")}
    assert on_disk == {f"csf-{builtin_pack(n).name}.json" for n in BUILTIN_PACKS}


def test_dashboard_structure():
    d = build_dashboard(default_pack())
    assert d["uid"] == "csf-microlearning-video"
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "pipeline"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in d["panels"]}
    for needed in ("Binding constraint", "Decision", "Binding constraint over time", "Constraint states",
                   "Pressure (signal / target)", "Causal tests passed (of 5)", "Annual revenue at risk",
                   "ROI against theta", "Evaluation duration p95", "Meta-constraint", "Input freshness"):
        assert needed in titles
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            assert '$pipeline' in t["expr"], p["title"]
    # no two panels overlap on the grid
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_every_panel_query_parses_with_promtool(tmp_path):
    promtool = require_binary("promtool")
    queries = panel_queries(build_dashboard(default_pack()))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"csf:dashboard_query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    f = tmp_path / "q.yml"
    f.write_text(yaml.safe_dump(rules), encoding="utf-8")
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(queries)} rules found" in r.stdout + r.stderr


def test_provisioning_files_point_at_the_dashboard():
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/csf.yaml").read_text())
    path = dash["providers"][0]["options"]["path"]
    assert path.endswith("dashboards")
    assert json.loads(GOLDEN.read_text())["title"].startswith("csf")
