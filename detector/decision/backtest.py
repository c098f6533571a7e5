"""Backtest: replay the evaluation over recorded data, carrying hysteresis forward.

Each evaluation at time t reads only data up to t (the native engine never looks
past its query end), so a backtest answers "what would csf have said then".
The command (`csf backtest`: arguments, data range, progress, output) is `detector.cli.backtest`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation
from detector.source.frame import Source
from detector.spec.pack import Pack
from detector.timefmt import format_time


def evaluation_times(start: float, end: float, every: float) -> list[float]:
    if every <= 0:
        raise ValueError("--every must be positive")
    n = int(math.floor((end - start) / every + 1e-9))
    return [start + k * every for k in range(n + 1)]


def run_backtest(
    pack: Pack,
    source: Source,
    times: Sequence[float],
    progress: TextIO | None = None,
    pipeline: str = "backtest",
) -> list[Evaluation]:
    p = Pipeline(pipeline, pack, source)
    out: list[Evaluation] = []
    t0 = time.monotonic()
    total = len(times)
    for i, t in enumerate(times, 1):
        out.append(p.evaluate(t))
        if progress is not None and (i == total or i % max(1, total // 50) == 0):
            elapsed = time.monotonic() - t0
            eta = elapsed / i * (total - i)
            bar = "#" * int(30 * i / total)
            progress.write(f"\r[{bar:<30}] {i}/{total} evaluations, {elapsed:.1f}s elapsed, ~{eta:.0f}s left")
            progress.flush()
    if progress is not None and total:
        progress.write("\n")
    return out


def summary(evaluations: Sequence[Evaluation], every: float) -> dict[str, Any]:
    changes = 0
    prev: str | None | bool = False
    time_in: dict[str, float] = {}
    decisions: Counter[str] = Counter()
    for ev in evaluations:
        key = ev.binding or "none"
        time_in[key] = time_in.get(key, 0.0) + every
        decisions[ev.decision] += 1
        if prev is not False and ev.binding != prev:
            changes += 1
        prev = ev.binding
    segments: list[dict[str, Any]] = []
    for ev in evaluations:
        key = ev.binding or "none"
        if segments and segments[-1]["binding"] == key:
            segments[-1]["end"] = format_time(ev.time)
            segments[-1]["evaluations"] += 1
        else:
            segments.append({"binding": key, "start": format_time(ev.time), "end": format_time(ev.time), "evaluations": 1})
    return {
        "evaluations": len(evaluations),
        "binding_changes": changes,
        "time_in_state": {k: v for k, v in sorted(time_in.items())},
        "decisions": dict(sorted(decisions.items())),
        "timeline": segments,
    }


def to_json(pack: Pack, evaluations: Sequence[Evaluation], every: float) -> dict[str, Any]:
    return {
        "pack": {"name": pack.name, "version": pack.version},
        "evaluations": [ev.to_dict() for ev in evaluations],
        "summary": summary(evaluations, every),
    }


def render_table(evaluations: Sequence[Evaluation], out: TextIO) -> None:
    names = [c.name for c in evaluations[0].constraints] if evaluations else []
    header = f"{'time':<20} {'binding':<14} {'decision':<11} " + " ".join(f"{n[:11]:>11}" for n in names)
    out.write(header + "\n")
    abbrev = {
        "observe": "observe", "not_applicable": "n/a", "slack": "slack", "at_limit": "at_limit",
        "proxy": "PROXY", "deferred": "deferred", "binding": "BINDING", "resolved": "resolved",
    }
    for ev in evaluations:
        cells = []
        for c in ev.constraints:
            r = c.pressure.ratio if c.pressure and c.pressure.ratio is not None else None
            ptxt = f"{r:.2f}" if r is not None and math.isfinite(r) else "-"
            cells.append(f"{abbrev.get(c.state, c.state)[:6]:>6} {ptxt:>4}")
        out.write(f"{format_time(ev.time):<20} {(ev.binding or '-'):<14} {ev.decision:<11} " + " ".join(cells) + "\n")
