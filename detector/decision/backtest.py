"""Backtest: replay the evaluation over recorded data, carrying hysteresis forward.

Each evaluation at time t reads only data up to t (the native engine never looks
past its query end), so a backtest answers "what would csf have said then".
The command (`csf backtest`: arguments, data range, progress, output) is `detector.cli.backtest`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TextIO

from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation, EvidenceSet, MetaReport
from detector.source.frame import Source
from detector.source.native import NativeSource
from detector.source.openmetrics.parallel import fork_context
from detector.spec.pack import Pack
from detector.timefmt import format_time


def evaluation_times(start: float, end: float, every: float) -> list[float]:
    if every <= 0:
        raise ValueError("--every must be positive")
    n = int(math.floor((end - start) / every + 1e-9))
    return [start + k * every for k in range(n + 1)]


log = logging.getLogger(__name__)

MIN_SLICE = 24
"""Evaluations per process at least: a process's first evaluation reads the whole lookback."""


def run_backtest(
    pack: Pack,
    source: Source,
    times: Sequence[float],
    progress: TextIO | None = None,
    pipeline: str = "backtest",
    jobs: int = 1,
) -> list[Evaluation]:
    """Evaluate at each time in order, carrying hysteresis forward.

    With ``jobs`` > 1 and a source that lives in this process (`forkable`), the evidence of
    contiguous slices of `times` is gathered in forked processes while this one gathers the
    first slice; the decisions are then made here, in time order. Each slice starts with a
    cold evaluation and goes on incrementally, and both give the same evidence, so the result
    is the one-process result.
    """
    p = Pipeline(pipeline, pack, source)
    bar = _Bar(progress, len(times))
    ctx = fork_context()
    slices = _slices(len(times), jobs) if forkable(source) and ctx is not None else [(0, len(times))]
    if len(slices) > 1:
        try:
            observed = _observe_in_slices(p, source, ctx, times, slices, bar)
        except BrokenProcessPool:
            log.warning("a backtest process was lost; evaluating in this one")
            p, bar = Pipeline(pipeline, pack, source), _Bar(progress, len(times))
        else:
            bar.end()
            return [p.conclude(evidence, meta) for evidence, meta in observed]
    out = []
    for t in times:
        out.append(p.evaluate(t))
        bar.show(len(out))
    bar.end()
    return out


def _observe_in_slices(
    p: Pipeline, source: Source, ctx: Any, times: Sequence[float], slices: list[tuple[int, int]], bar: _Bar
) -> list[tuple[EvidenceSet, MetaReport]]:
    """The evidence at every time: the first slice by `p`, the others in forked processes by
    pipelines like it over `source`."""
    global _WORK
    done = ctx.Array("q", len(slices), lock=False)
    _WORK = (p.pack, source, p.name, times, done)
    try:
        with concurrent.futures.ProcessPoolExecutor(len(slices) - 1, mp_context=ctx) as pool:
            futures = [pool.submit(_observe_slice, i, a, b) for i, (a, b) in enumerate(slices) if i > 0]
            a, b = slices[0]
            observed = []
            for t in times[a:b]:
                observed.append(p.observe(t))
                bar.show(len(observed) + sum(done))
            pending = set(futures)
            while pending:
                _finished, pending = concurrent.futures.wait(pending, timeout=0.5)
                bar.show(len(observed) + sum(done))
            for f in futures:
                observed.extend(f.result())
    finally:
        _WORK = None
    return observed


def forkable(source: Source) -> bool:
    """A source whose data lives in this process (a forked process reads it as it is)."""
    return isinstance(source, NativeSource)


def _slices(n: int, jobs: int) -> list[tuple[int, int]]:
    k = max(1, min(jobs, n // MIN_SLICE))
    bounds = [n * i // k for i in range(k + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


_WORK: Any = None
"""(pack, source, pipeline name, times, shared done-counts) for the forked processes."""


def _observe_slice(slot: int, a: int, b: int) -> list[tuple[EvidenceSet, MetaReport]]:
    pack, source, name, times, done = _WORK
    p = Pipeline(name, pack, source)
    out = []
    for t in times[a:b]:
        out.append(p.observe(t))
        done[slot] += 1
    return out


class _Bar:
    """The evaluation progress bar (nothing without a stream)."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream, self.total, self.t0 = stream, total, time.monotonic()
        self.step = max(1, total // 50)
        self.shown = 0

    def show(self, i: int) -> None:
        if self.stream is None or not (i == self.total or i - self.shown >= self.step):
            return
        self.shown = i
        elapsed = time.monotonic() - self.t0
        eta = elapsed / max(i, 1) * (self.total - i)
        bar = "#" * int(30 * i / self.total)
        self.stream.write(f"\r[{bar:<30}] {i}/{self.total} evaluations, {elapsed:.1f}s elapsed, ~{eta:.0f}s left")
        self.stream.flush()

    def end(self) -> None:
        if self.stream is not None and self.total:
            self.stream.write("\n")


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
