"""`csf backtest`: replay the evaluation over recorded data, carrying hysteresis forward.

Each evaluation at time t reads only data up to t (the native engine never looks
past its query end), so a backtest answers "what would csf have said then".
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TextIO

from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation
from detector.source.frame import Source, SourceError
from detector.spec.pack import Pack
from detector.timefmt import format_time, parse_duration, parse_time


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


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read from it."""

    def __init__(self, raw: io.FileIO) -> None:
        self.raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.bytes_read += n or 0
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


def _size(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def load_with_progress(path: str, store: Any, progress: TextIO, every: float = 0.5) -> int:
    """`load_openmetrics` (same parser, same store appends, same errors) with a progress line
    on `progress`: share of the file read, samples loaded, elapsed time. Returns the samples."""
    from detector.source.openmetrics import parse_openmetrics

    total = os.path.getsize(path)
    counter = _CountingReader(open(path, "rb", buffering=0))  # noqa: SIM115 (closed by the wrapper)
    samples = 0
    t0 = last = time.monotonic()

    def show(end: str = "") -> None:
        share = counter.bytes_read / total if total else 1.0
        bar = "#" * int(30 * share)
        progress.write(
            f"\rloading {path}: [{bar:<30}] {share:4.0%} of {_size(total)}, {samples / 1e6:.2f} M samples, "
            f"{time.monotonic() - t0:.1f}s{end}"
        )
        progress.flush()

    with io.TextIOWrapper(io.BufferedReader(counter), encoding="utf-8") as fh:
        for name, labels, ts, vals in parse_openmetrics(fh):
            store.append(name, labels, ts, vals)
            samples += len(ts)
            now = time.monotonic()
            if now - last >= every:
                last = now
                show()
    show("\n")
    return samples


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


def _first_metric(pack: Any) -> str | None:
    """An input series name of the pack's first constraint with a signal (for the data range)."""
    for c in pack.constraints:
        if c.signal is not None and c.signal.metrics():
            return str(c.signal.metrics()[0])
    return None


def backtest_cli(args: Any) -> int:
    from detector.source.native import NativeSource
    from detector.source.openmetrics import OpenMetricsError, load_openmetrics
    from detector.source.store import SampleStore
    from detector.spec.load import PackError, resolve_pack

    try:
        pack = resolve_pack(args.pack)
    except PackError as exc:
        print(f"csf backtest: invalid pack:\n{exc}", file=sys.stderr)
        return 2
    if bool(args.input) == bool(args.prometheus_url):
        print("csf backtest: give exactly one of --input FILE or --prometheus-url URL", file=sys.stderr)
        return 2
    try:
        every = parse_duration(args.every)
        if args.lookback:
            pack = replace(pack, windows=replace(pack.windows, lookback=parse_duration(args.lookback)))
    except ValueError as exc:
        print(f"csf backtest: {exc}", file=sys.stderr)
        return 2
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = sys.stderr if show_progress else None
    if args.prometheus_url:
        try:
            from detector.source.prometheus_api import PrometheusSource  # type: ignore[import-not-found]
        except ImportError:
            print("csf backtest: --prometheus-url is not available in this build", file=sys.stderr)
            return 2
        prom = PrometheusSource(args.prometheus_url)
        source: Source = prom
        try:
            last = parse_duration(args.last) if getattr(args, "last", None) else None
            end_at = parse_time(args.end) if args.end else None
            start_at = parse_time(args.start) if args.start else None
        except ValueError as exc:
            print(f"csf backtest: {exc}", file=sys.stderr)
            return 2
        if end_at is None or (start_at is None and last is None):
            # derive what is missing from the data: the pack's first signal metric's range
            metric = _first_metric(pack)
            try:
                found = prom.data_range(metric, time.time()) if metric else None
            except SourceError as exc:
                print(f"csf backtest: {exc}", file=sys.stderr)
                return 2
            if found is None:
                print(
                    f"csf backtest: {args.prometheus_url} has no sample of {metric}; "
                    "give --start and --end (RFC3339) or --end and --last",
                    file=sys.stderr,
                )
                return 2
            oldest, newest = found
            if end_at is None:
                end_at = newest
            if start_at is None and last is None:
                start_at = oldest + pack.windows.lookback
        if start_at is None:
            assert last is not None
            start_at = end_at - last
        data_start = start_at - pack.windows.lookback
        data_end = end_at
        args.start, args.end = format_time(start_at), format_time(end_at)
    else:
        store = SampleStore(retention=None)
        try:
            if progress:
                load_with_progress(args.input, store, progress)
            else:
                load_openmetrics(args.input, store)
        except (OSError, OpenMetricsError) as exc:
            print(f"csf backtest: {args.input}: {exc}", file=sys.stderr)
            return 2
        first = store.oldest_timestamp() if hasattr(store, "oldest_timestamp") else None
        last = store.newest_timestamp()
        if last is None:
            print(f"csf backtest: {args.input}: no samples", file=sys.stderr)
            return 2
        data_start = first if first is not None else last
        data_end = last
        source = NativeSource(store)
    try:
        end = parse_time(args.end) if args.end else data_end
        if args.start:
            start = parse_time(args.start)
        elif getattr(args, "last", None):
            start = end - parse_duration(args.last)
        else:
            start = data_start + pack.windows.lookback
    except ValueError as exc:
        print(f"csf backtest: {exc}", file=sys.stderr)
        return 2
    if end < start:
        print(f"csf backtest: nothing to evaluate: start {format_time(start)} is after end {format_time(end)}"
              " (the data must cover the lookback before --start)", file=sys.stderr)
        return 2
    times = evaluation_times(start, end, every)
    evaluations = run_backtest(pack, source, times, progress=progress)
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "json":
            json.dump(to_json(pack, evaluations, every), out, indent=1)
            out.write("\n")
        else:
            render_table(evaluations, out)
            s = summary(evaluations, every)
            out.write(f"\n{s['evaluations']} evaluations, {s['binding_changes']} binding changes\n")
            for seg in s["timeline"]:
                out.write(f"  {seg['start']} .. {seg['end']}  {seg['binding']}  ({seg['evaluations']} evaluations)\n")
    finally:
        if args.output:
            out.close()
    if args.plot:
        try:
            from exporters.plot import plot_backtest  # type: ignore[import-not-found]
        except ImportError:
            print("csf backtest: --plot needs matplotlib (pip install 'csf[plot]')", file=sys.stderr)
            return 2
        plot_backtest(evaluations, args.plot)
    return 0
