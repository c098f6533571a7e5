"""Grafana dashboard generated from a pack (deterministic JSON, golden-tested).

Panels read only csf's own metrics (see README "Metrics"), so the dashboard works
for any pack: the binding constraint and decision, state timelines, pressure
against 1.0, causal tests passed, revenue at risk and ROI against theta,
evaluation cost and the meta-constraint, and input freshness. Every query
aggregates the scrape target away (``max by (pipeline, ...)``): two replicas of one
shard publish identical series, and each panel shows them once.
"""

from __future__ import annotations

import json
from typing import Any

from detector import __version__
from detector.spec.pack import DECISIONS, OBSERVABILITY, STATES, Pack

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'pipeline=~"$pipeline"'


def _target(expr: str, legend: str, ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def _panel(pid: int, title: str, kind: str, grid: tuple[int, int, int, int], targets: list[dict[str, Any]],
           description: str = "", **extra: Any) -> dict[str, Any]:
    x, y, w, h = grid
    p: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
    }
    p.update(extra)
    return p


def _value_mappings(values: list[str]) -> list[dict[str, Any]]:
    return [{"type": "value", "options": {str(i): {"text": v, "index": i}}} for i, v in enumerate(values)]


def build_dashboard(pack: Pack) -> dict[str, Any]:
    """The Grafana dashboard of `pack`: verdict at the top, evidence below, csf's own cost last."""
    panels = [*_verdict_panels(), *_timeline_panels(), *_evidence_panels(), *_meta_panels(pack)]
    for pid, panel in enumerate(panels, 1):
        panel["id"] = pid
    return _dashboard(pack, panels)


def _verdict_panels() -> list[dict[str, Any]]:
    """Binding constraint, decision and evaluation age."""
    panels: list[dict[str, Any]] = []
    panels.append(_panel(
        0, "Binding constraint", "stat", (0, 0, 8, 5),
        [_target(f"max by (pipeline, constraint) (csf_binding_constraint{{{SEL}}}) == 1", "{{constraint}}", instant=True)],
        "The one constraint limiting the platform now (after hysteresis); 'observability' when csf cannot see.",
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "textMode": "name", "colorMode": "background", "graphMode": "none"},
        fieldConfig={"defaults": {"color": {"mode": "fixed", "fixedColor": "red"}}, "overrides": []},
    ))
    panels.append(_panel(
        0, "Decision", "stat", (8, 0, 8, 5),
        [_target(f"max by (pipeline, decision) (csf_decision{{{SEL}}}) == 1", "{{decision}}", instant=True)],
        "invest / defer / investigate / stop / observe for the platform.",
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "textMode": "name", "colorMode": "background", "graphMode": "none"},
    ))
    panels.append(_panel(
        0, "Evaluation age", "stat", (16, 0, 8, 5),
        [_target(f"time() - max by (pipeline) (csf_last_evaluation_timestamp_seconds{{{SEL}}})", "{{pipeline}}", instant=True)],
        "Seconds since the last evaluation; csf_source_up shows whether the source answered.",
        fieldConfig={"defaults": {"unit": "s", "thresholds": {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "red", "value": 300}]}}, "overrides": []},
    ))
    return panels


def _timeline_panels() -> list[dict[str, Any]]:
    """The binding constraint and every constraint's state over time."""
    panels: list[dict[str, Any]] = []
    # state timeline of the binding constraint: one row per candidate, 1 while binding
    panels.append(_panel(
        0, "Binding constraint over time", "state-timeline", (0, 5, 24, 6),
        [_target(f"max by (constraint) (csf_binding_constraint{{{SEL}}})", "{{constraint}}")],
        "Each row is a constraint; filled while it was the published binding constraint.",
        fieldConfig={"defaults": {"mappings": [{"type": "value", "options": {
            "0": {"text": "-", "color": "transparent"}, "1": {"text": "binding", "color": "red"}}}]},
            "overrides": []},
        options={"showValue": "never", "mergeValues": True},
    ))
    state_index = " or ".join(
        f"({i} * (csf_constraint_state{{{SEL},state=\"{s}\"}} == 1))" for i, s in enumerate(STATES)
    )
    panels.append(_panel(
        0, "Constraint states", "state-timeline", (0, 11, 24, 8),
        [_target(f"max by (constraint) ({state_index})", "{{constraint}}")],
        "State of every constraint: " + ", ".join(STATES) + ".",
        fieldConfig={"defaults": {"mappings": _value_mappings(list(STATES))}, "overrides": []},
        options={"showValue": "auto", "mergeValues": True},
    ))
    return panels


def _evidence_panels() -> list[dict[str, Any]]:
    """Pressure, causal tests, revenue at risk, ROI against theta."""
    panels: list[dict[str, Any]] = []
    panels.append(_panel(
        0, "Pressure (signal / target)", "timeseries", (0, 19, 12, 8),
        [_target(f"max by (pipeline, constraint) (csf_constraint_pressure_ratio{{{SEL}}})", "{{constraint}}")],
        "Above 1.0 the constraint is beyond its target.",
        fieldConfig={"defaults": {"custom": {"thresholdsStyle": {"mode": "line"}}, "thresholds": {
            "mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}},
            "overrides": []},
    ))
    panels.append(_panel(
        0, "Causal tests passed (of 5)", "bargauge", (12, 19, 12, 8),
        [_target(f"max by (pipeline, constraint) (csf_constraint_causal_tests_passed{{{SEL}}})", "{{constraint}}", instant=True)],
        "3 or more = causal; 2 or fewer = proxy for a confounder.",
        fieldConfig={"defaults": {"min": 0, "max": 5, "thresholds": {"mode": "absolute", "steps": [
            {"color": "red", "value": None}, {"color": "green", "value": 3}]}}, "overrides": []},
    ))
    panels.append(_panel(
        0, "Annual revenue at risk", "timeseries", (0, 27, 12, 8),
        [_target(f"max by (pipeline, constraint) (csf_constraint_annual_revenue_at_risk_dollars{{{SEL}}})", "{{constraint}}")],
        "Dollars per year the constraint puts at risk (pack economics).",
        fieldConfig={"defaults": {"unit": "currencyUSD"}, "overrides": []},
    ))
    panels.append(_panel(
        0, "ROI against theta", "timeseries", (12, 27, 12, 8),
        [_target(f"max by (pipeline, constraint) (csf_constraint_roi_ratio{{{SEL}}})", "ROI {{constraint}}", "A"),
         _target(f"max by (pipeline, constraint) (csf_constraint_roi_threshold_ratio{{{SEL}}})", "theta {{constraint}}", "B")],
        "Invest only where ROI clears theta (3.0, 5.0 when the evidence is fragile) or an exception applies.",
    ))
    return panels


def _meta_panels(pack: Pack) -> list[dict[str, Any]]:
    """csf's own cost and its inputs' freshness."""
    panels: list[dict[str, Any]] = []
    panels.append(_panel(
        0, "Evaluation duration p95", "timeseries", (0, 35, 8, 7),
        [_target(f"histogram_quantile(0.95, sum by (le, pipeline) "
                 f"(rate(csf_evaluation_duration_seconds_bucket{{{SEL}}}[15m])))", "{{pipeline}}")],
        "The detector's own cost per evaluation (meta-constraint).",
        fieldConfig={"defaults": {"unit": "s"}, "overrides": []},
    ))
    panels.append(_panel(
        0, "Meta-constraint", "timeseries", (8, 35, 8, 7),
        [_target(f"max by (pipeline) (csf_meta_cpu_seconds{{{SEL}}})", "cpu s/evaluation", "A"),
         _target(f"max by (pipeline) (csf_meta_overhead_ratio{{{SEL}}})", "analysis overhead", "B")],
        f"Above {pack.organisation.meta_overhead_limit:g} analysis overhead the framework itself is the constraint.",
    ))
    panels.append(_panel(
        0, "Input freshness", "timeseries", (16, 35, 8, 7),
        [_target(f"max by (pipeline, constraint) (csf_constraint_inputs_missing{{{SEL}}})", "missing {{constraint}}", "A"),
         _target(f"max by (pipeline) (csf_source_up{{{SEL}}})", "source up", "B")],
        "1 = inputs missing or stale (constraint is observe); source up 0 = csf is blind.",
    ))
    return panels


def _dashboard(pack: Pack, panels: list[dict[str, Any]]) -> dict[str, Any]:
    binding_names = [*(c.name for c in pack.constraints), OBSERVABILITY]
    return {
        "__comment": f"generated by csf {__version__} from pack {pack.name}@{pack.version}; do not edit",
        "uid": f"csf-{pack.name}"[:40],
        "title": f"csf: binding constraint ({pack.name})",
        "tags": ["csf", "constraints"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
             "current": {}, "hide": 0},
            {"name": "pipeline", "type": "query", "datasource": DATASOURCE, "label": "Pipeline",
             "query": {"query": "label_values(csf_last_evaluation_timestamp_seconds, pipeline)", "refId": "P"},
             "definition": "label_values(csf_last_evaluation_timestamp_seconds, pipeline)",
             "includeAll": True, "multi": True, "refresh": 2, "current": {}, "hide": 0, "sort": 1},
        ]},
        "annotations": {"list": [{
            "name": "Binding changes", "datasource": DATASOURCE, "enable": True, "iconColor": "orange",
            "expr": f"changes(csf_binding_changes_total{{{SEL}}}[5m]) > 0", "titleFormat": "binding changed",
        }]},
        "panels": panels,
        "links": [],
        "description": "Decisions: " + ", ".join(DECISIONS) + ". Candidates: " + ", ".join(binding_names) + ".",
    }




def render(pack: Pack) -> str:
    return json.dumps(build_dashboard(pack), indent=2, sort_keys=True) + "\n"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, with $pipeline widened to all."""
    out = []
    for p in dashboard["panels"]:
        for t in p["targets"]:
            out.append((p["title"], t["expr"].replace('=~"$pipeline"', '=~".+"')))
    return out
