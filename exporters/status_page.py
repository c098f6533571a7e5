"""Server-rendered status page (`GET /`): the verdict for people, no build step.

Shows the binding constraint, the decision and its explanation, every
constraint's state, the five causal tests with their reasons, revenue at risk,
and a timeline of recent evaluations. Refreshes itself. All text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from detector import __version__

_STATE_COLOURS = {
    "binding": "#c0392b", "proxy": "#d68910", "observe": "#7f8c8d", "deferred": "#2471a3",
    "at_limit": "#b9770e", "slack": "#1e8449", "resolved": "#117a65", "not_applicable": "#aab7b8",
}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1c2833;background:#fbfcfc}
h1{font-size:1.3rem;margin:0 0 .2rem} h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
.verdict{border-radius:8px;padding:1rem 1.2rem;color:#fff;background:#1e8449;max-width:70rem}
.verdict.binding{background:#c0392b} .verdict.observability{background:#7f8c8d}
.verdict .name{font-size:2rem;font-weight:700} .verdict .decision{font-size:1.1rem;opacity:.95}
.muted{color:#566573;font-size:.85rem} table{border-collapse:collapse;margin-top:.3rem}
td,th{border-bottom:1px solid #d5dbdb;padding:.35rem .6rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#eaeded} .pill{display:inline-block;border-radius:10px;padding:0 .5rem;color:#fff;font-size:.8rem}
.PASS{color:#1e8449;font-weight:600} .FAIL{color:#c0392b;font-weight:600} .INCONCLUSIVE{color:#7f8c8d}
.timeline{display:flex;gap:2px;margin-top:.4rem} .timeline span{flex:1;height:22px;border-radius:2px}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _fmt(v: Any, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "money":
        v = float(v)
        if abs(v) >= 1e6:
            return f"${v / 1e6:.2f}M"
        if abs(v) >= 1e3:
            return f"${v / 1e3:.0f}K"
        return f"${v:.0f}"
    if kind == "ratio":
        return f"{float(v):.2f}"
    if kind == "x":
        return f"{float(v):.1f}x"
    return f"{float(v):.4g}"


def _pill(state: str) -> str:
    colour = _STATE_COLOURS.get(state, "#566573")
    return f'<span class="pill" data-state="{escape(state)}" style="background:{colour}">{escape(state)}</span>'


def render_status_page(
    status: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]] = (),
    refresh_seconds: int = 30,
    pipelines: Sequence[str] = (),
) -> str:
    """HTML for one pipeline's latest evaluation (`Evaluation.to_dict()`) and recent history rows."""
    head = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>csf status</title><style>{_CSS}</style></head><body>"
    )
    if status is None:
        return head + (
            '<h1>csf</h1><div class="verdict observability" id="verdict"><div class="name" id="binding">'
            "no evaluation yet</div><div class=decision>waiting for the first evaluation</div></div></body></html>"
        )
    binding = status.get("binding")
    cls = "binding" if binding and binding != "observability" else ("observability" if binding else "")
    parts = [head, f"<h1>csf — constraint-sequence detector</h1><div class=muted>pipeline "
             f"<b>{escape(str(status.get('pipeline', '')))}</b> · evaluated {escape(str(status.get('time', '')))}"
             f" · csf {escape(__version__)}</div>"]
    if len(pipelines) > 1:
        links = " · ".join(f'<a href="/?pipeline={escape(p)}">{escape(p)}</a>' for p in pipelines)
        parts.append(f"<div class=muted>pipelines: {links}</div>")
    parts.append(
        f'<div class="verdict {cls}" id="verdict"><div class=muted style="color:#fff">binding constraint</div>'
        f'<div class="name" id="binding">{escape(binding or "none (healthy)")}</div>'
        f'<div class="decision" id="decision">decision: <b>{escape(str(status.get("decision")))}</b></div>'
        f'<p id="explanation">{escape(str(status.get("explanation", "")))}</p></div>'
    )
    parts.append("<h2>Constraints (dependency order)</h2><table id=constraints><tr><th>constraint</th>"
                 "<th>state</th><th>decision</th><th class=num>pressure</th><th class=num>tests passed</th>"
                 "<th class=num>Γ*</th><th class=num>revenue at risk / yr</th><th class=num>ROI</th>"
                 "<th class=num>θ</th><th>why</th></tr>")
    for c in status.get("constraints", []):
        causal = c.get("causal") or {}
        parts.append(
            f"<tr data-constraint=\"{escape(c['name'])}\"><td><b>{escape(c['name'])}</b><div class=muted>"
            f"{escape(c.get('layer', ''))}</div></td><td>{_pill(c['state'])}</td><td>{escape(c['decision'])}</td>"
            f"<td class=num>{_fmt(c.get('pressure'), 'ratio')}</td>"
            f"<td class=num>{escape(str(causal.get('passed', '–')))}</td>"
            f"<td class=num>{_fmt(causal.get('gamma'), 'ratio')}</td>"
            f"<td class=num>{_fmt(c.get('annual_revenue_at_risk_dollars'), 'money')}</td>"
            f"<td class=num>{_fmt(c.get('roi'), 'x')}</td><td class=num>{_fmt(c.get('theta'), 'x')}</td>"
            f"<td>{escape(c.get('explanation', ''))}</td></tr>"
        )
    parts.append("</table><h2>Causal tests</h2><table id=tests><tr><th>constraint</th><th>test</th>"
                 "<th>result</th><th class=num>statistic</th><th class=num>p</th><th class=num>n</th>"
                 "<th>reason</th></tr>")
    for c in status.get("constraints", []):
        tests = (c.get("causal") or {}).get("tests") or {}
        for name, t in tests.items():
            parts.append(
                f"<tr><td>{escape(c['name'])}</td><td>{escape(name)}</td>"
                f"<td class=\"{escape(t['result'])}\">{escape(t['result'])}</td>"
                f"<td class=num>{_fmt(t.get('statistic'))}</td><td class=num>{_fmt(t.get('p_value'))}</td>"
                f"<td class=num>{escape(str(t.get('n', '')))}</td><td>{escape(t.get('reason', ''))}</td></tr>"
            )
    parts.append("</table>")
    if history:
        parts.append("<h2>Recent evaluations</h2><div class=timeline id=timeline>")
        palette = ["#c0392b", "#2471a3", "#d68910", "#7d3c98", "#117a65", "#b03a2e", "#1f618d"]
        names = [c["name"] for c in status.get("constraints", [])]
        for row in history:
            b = row.get("binding")
            colour = "#7f8c8d" if b == "observability" else (
                palette[names.index(b) % len(palette)] if b in names else "#d5dbdb")
            parts.append(f'<span title="{escape(str(row.get("time")))}: {escape(str(b or "none"))}" '
                         f'style="background:{colour}"></span>')
        parts.append("</div><div class=muted>oldest left, newest right; grey = none or observability</div>")
    parts.append('<p class=muted>JSON: <a href="/api/v1/status">/api/v1/status</a> · '
                 '<a href="/api/v1/history">/api/v1/history</a> · <a href="/metrics">/metrics</a> · '
                 '<a href="/docs">API docs</a></p></body></html>')
    return "".join(parts)
