"""Server-rendered status page (`GET /`): the verdict for people, no build step.

Shows the binding constraint, the decision and its explanation, every
constraint's state, the five causal tests with their reasons, revenue at risk,
and a timeline of recent evaluations. Refreshes itself. All text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from detector import __version__

_STATE_COLOURS = {
    "binding": "#c0392b", "proxy": "#d68910", "observe": "#7f8c8d", "deferred": "#2471a3",
    "at_limit": "#b9770e", "slack": "#1e8449", "resolved": "#117a65", "not_applicable": "#aab7b8",
}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1c2833;background:#fbfcfc}
main{max-width:80rem}
h1{font-size:1.3rem;margin:0 0 .2rem} h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
a{color:#1f618d}
.verdict{border-radius:8px;padding:1rem 1.2rem;color:#fff;background:#1e8449;margin-top:.6rem}
.verdict.binding{background:#c0392b} .verdict.observability{background:#7f8c8d}
.verdict.binding.defer,.verdict.binding.investigate{background:#b9770e}
.verdict.binding.held{background:#5d6d7e} .verdict .hold{font-size:.95em;margin:.3em 0}
.verdict .label{font-size:.85rem;opacity:.9} .verdict .name{font-size:2rem;font-weight:700}
.verdict .decision{font-size:1.1rem;opacity:.95} .verdict p{margin:.5rem 0 0}
.muted{color:#566573;font-size:.85rem} table{border-collapse:collapse;margin-top:.3rem;width:100%}
td,th{border-bottom:1px solid #d5dbdb;padding:.35rem .6rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#eaeded} .pill{display:inline-block;border-radius:10px;padding:0 .5rem;color:#fff;font-size:.8rem}
.PASS{color:#1e8449;font-weight:600} .FAIL{color:#c0392b;font-weight:600} .INCONCLUSIVE{color:#7f8c8d}
.timeline{display:flex;gap:1px;margin-top:.4rem} .timeline span{flex:1;height:22px}
.timeline span:first-child{border-radius:3px 0 0 3px} .timeline span:last-child{border-radius:0 3px 3px 0}
.span{display:flex;justify-content:space-between} .legend span{margin-right:1rem;white-space:nowrap}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-1px}
details{border-bottom:1px solid #d5dbdb;padding:.3rem 0} summary{cursor:pointer;font-size:.92rem}
details table{margin:.3rem 0 .4rem}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
"""
_PALETTE = ("#c0392b", "#2471a3", "#d68910", "#7d3c98", "#117a65", "#b03a2e", "#1f618d")
_GREY = "#7f8c8d"
_NONE = "#d5dbdb"


def _fmt_time(value: Any) -> str:
    """RFC3339 text as 'YYYY-MM-DD HH:MM:SS UTC' (seconds precision); other text unchanged."""
    text = str(value or "")
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    if kind == "p":
        v = float(v)
        return f"{v:.2g}" if v == 0 or v >= 1e-3 else f"{v:.1e}"
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
            '<main><h1>csf</h1><div class="verdict observability" id="verdict"><div class="name" id="binding">'
            "no evaluation yet</div><div class=decision>waiting for the first evaluation</div></div>"
            "</main></body></html>"
        )
    binding = status.get("binding")
    hold = status.get("hold") or None
    cls = "binding" if binding and binding != "observability" else ("observability" if binding else "")
    if cls == "binding" and status.get("decision") in ("defer", "investigate"):
        cls += f" {status.get('decision')}"  # amber: binding, but not (yet) worth the investment
    if cls.startswith("binding") and hold:
        cls = "binding held"  # grey-amber: published by hysteresis, its own evidence no longer binds
    constraints = list(status.get("constraints", []))
    names = [str(c.get("name")) for c in constraints]
    parts = [head, "<main><h1>csf — constraint-sequence detector</h1><div class=muted>pipeline "
             f"<b>{escape(str(status.get('pipeline', '')))}</b> · evaluated "
             f"<span id=evaluated>{escape(_fmt_time(status.get('time')))}</span> · csf {escape(__version__)}</div>"]
    if len(pipelines) > 1:
        links = " · ".join(f'<a href="/?pipeline={escape(p)}">{escape(p)}</a>' for p in pipelines)
        parts.append(f"<div class=muted>pipelines: {links}</div>")
    parts.append(_verdict(status, binding, hold, cls, constraints))
    if history:
        parts.append(_timeline(history, names))
    parts.append(_constraint_table(constraints))
    parts.append(_causal_tests(constraints, binding))
    parts.append('<p class=muted>JSON: <a href="/api/v1/status">/api/v1/status</a> · '
                 '<a href="/api/v1/history">/api/v1/history</a> · <a href="/metrics">/metrics</a> · '
                 '<a href="/docs">API docs</a></p></main></body></html>')
    return "".join(parts)


def _hold_reason(hold: Mapping[str, Any], constraints: Sequence[Mapping[str, Any]], binding: Any) -> str:
    """Why a held constraint no longer binds on its own: back within target, or beyond target but
    no longer passing the other conditions (sustained, causal)."""
    pressure = next((c.get("pressure") for c in constraints if c.get("name") == binding), None)
    if isinstance(pressure, int | float) and pressure > 1.0:
        return (
            f"its pressure is still beyond target ({pressure:.2f}x) but it no longer binds on its own "
            "evidence (see its row below)"
        )
    return "its pressure is back within target"


def _verdict(
    status: Mapping[str, Any], binding: Any, hold: Any, cls: str, constraints: Sequence[Mapping[str, Any]]
) -> str:
    label = "binding constraint"
    hold_line = ""
    if cls == "binding held" and hold:
        label = "binding constraint — held, being released"
        hold_line = (
            f'<div class="hold" id="hold">held as binding by hysteresis: {escape(_hold_reason(hold, constraints, binding))}; '
            f"released after {int(hold.get('needed', 0))} consecutive evaluations below "
            f"{float(hold.get('release_below', 0.9)):.2f} ({int(hold.get('evaluations_below', 0))} so far)</div>"
        )
    return (
        f'<div class="verdict {cls}" id="verdict"><div class=label>{escape(label)}</div>'
        f'<div class="name" id="binding">{escape(binding or "none (healthy)")}</div>'
        f"{hold_line}"
        f'<div class="decision" id="decision">decision: <b>{escape(str(status.get("decision")))}</b></div>'
        f'<p id="explanation">{escape(str(status.get("explanation", "")))}</p></div>'
    )


def _constraint_table(constraints: Sequence[Mapping[str, Any]]) -> str:
    parts = ["<h2>Constraints (dependency order)</h2><table id=constraints><tr><th>constraint</th>"
             "<th>state</th><th>decision</th><th class=num>pressure</th><th class=num>tests passed</th>"
             "<th class=num>Γ*</th><th class=num>revenue at risk / yr</th><th class=num>ROI</th>"
             "<th class=num>θ</th><th>why</th></tr>"]
    for c in constraints:
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
    parts.append("</table>")
    return "".join(parts)


def _causal_tests(constraints: Sequence[Mapping[str, Any]], binding: Any) -> str:
    parts = ["<h2>Causal tests</h2><div id=tests>"]
    for c in constraints:
        tests = (c.get("causal") or {}).get("tests") or {}
        if not tests:
            continue
        passed = sum(1 for t in tests.values() if t.get("result") == "PASS")
        verdict = (c.get("causal") or {}).get("verdict") or ""
        # the constraints the verdict is about are open; the others fold away
        opened = " open" if c.get("state") in ("binding", "proxy") or c.get("name") == binding else ""
        parts.append(
            f"<details data-constraint=\"{escape(c['name'])}\"{opened}><summary><b>{escape(c['name'])}</b> · "
            f"{passed} of {len(tests)} pass · {escape(str(verdict))}</summary><table><tr><th>test</th>"
            "<th>result</th><th class=num>statistic</th><th class=num>p</th><th class=num>n</th>"
            "<th>reason</th></tr>"
        )
        for name, t in tests.items():
            parts.append(
                f"<tr><td>{escape(name)}</td>"
                f"<td class=\"{escape(t['result'])}\">{escape(t['result'])}</td>"
                f"<td class=num>{_fmt(t.get('statistic'))}</td><td class=num>{_fmt(t.get('p_value'), 'p')}</td>"
                f"<td class=num>{escape(str(t.get('n', '')))}</td><td>{escape(t.get('reason', ''))}</td></tr>"
            )
        parts.append("</table></details>")
    parts.append("</div>")
    return "".join(parts)


def _colour(binding: Any, names: Sequence[str]) -> str:
    if binding == "observability":
        return _GREY
    if binding in names:
        return _PALETTE[list(names).index(binding) % len(_PALETTE)]
    return _NONE


def _timeline(history: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """One bar per stored evaluation (oldest left), coloured by its binding constraint, with a legend."""
    parts = [f"<h2>Recent evaluations ({len(history)})</h2><div class=timeline id=timeline>"]
    seen: list[str] = []
    for row in history:
        b = row.get("binding")
        key = str(b) if b else "none"
        if key not in seen:
            seen.append(key)
        parts.append(f'<span data-binding="{escape(key)}" title="{escape(_fmt_time(row.get("time")))}: '
                     f'{escape(key)}" style="background:{_colour(b, names)}"></span>')
    parts.append(f"</div><div class=\"muted span\" id=timeline-span><span>{escape(_fmt_time(history[0].get('time')))}"
                 f"</span> <span>{escape(_fmt_time(history[-1].get('time')))}</span></div>"
                 "<div class=\"muted legend\" id=timeline-legend>")
    for key in seen:
        parts.append(f'<span><i style="background:{_colour(None if key == "none" else key, names)}"></i>'
                     f"{escape(key)}</span> ")
    parts.append("</div>")
    return "".join(parts)
