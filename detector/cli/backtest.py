"""`csf backtest`: replay the evaluation over an OpenMetrics file or a Prometheus-compatible API.

The replay itself is `detector.decision.backtest`; this module resolves the arguments (pack,
time range from the data, spacing), loads the data with a progress line, and writes the table,
JSON or plot. Domain modules are imported when the command runs, so `csf --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, TextIO


def add_parser(sub: Any) -> None:
    bt = sub.add_parser("backtest", help="replay the evaluation over recorded data")
    bt.add_argument("--input", help="OpenMetrics file with timestamps")
    bt.add_argument("--prometheus-url", help="Prometheus-compatible query API base URL")
    bt.add_argument("--pack", default=None)
    bt.add_argument("--start", default=None, help="RFC3339 (default: data start + lookback, or --end - --last)")
    bt.add_argument("--end", default=None, help="RFC3339 (default: data end, the newest sample)")
    bt.add_argument(
        "--last",
        default=None,
        help="evaluate over this span before --end (e.g. 3d); with --prometheus-url, --end defaults to the newest sample",
    )
    bt.add_argument("--every", default="1h", help="evaluation spacing (default 1h)")
    bt.add_argument("--lookback", default=None, help="override the pack's lookback (e.g. 7d)")
    bt.add_argument("--format", choices=("json", "table"), default="table")
    bt.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    bt.add_argument("--plot", default=None, help="write a PNG timeline (needs matplotlib)")
    bt.add_argument("--progress", choices=("auto", "always", "never"), default="auto")
    bt.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        default=0,
        help="processes for parsing --input and for the evaluations (default 0: one per usable CPU)",
    )
    bt.set_defaults(run=run)


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"--jobs must be an integer >= 0 (0: one per usable CPU), got {text!r}")
    return n


class _Refused(Exception):
    """A bad argument or unusable data: the message is printed after ``csf backtest: ``."""


@dataclass
class _Data:
    source: Any
    start: float
    """Oldest sample (file) or the first instant the lookback needs (Prometheus)."""
    end: float


def run(args: argparse.Namespace) -> int:
    from detector.source.openmetrics.parallel import usable_cpus
    from detector.spec.load import PackError, resolve_pack
    from detector.timefmt import parse_duration

    try:
        pack = resolve_pack(args.pack)
    except PackError as exc:
        print(f"csf backtest: invalid pack:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"csf backtest: cannot read pack: {exc}", file=sys.stderr)
        return 2
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = sys.stderr if show_progress else None
    try:
        if bool(args.input) == bool(args.prometheus_url):
            raise _Refused("give exactly one of --input FILE or --prometheus-url URL")
        if args.start and args.last:
            raise _Refused("give --start or --last, not both (--last counts back from --end)")
        every = parse_duration(args.every)
        jobs = args.jobs or usable_cpus()
        if args.lookback:
            pack = replace(pack, windows=replace(pack.windows, lookback=parse_duration(args.lookback)))
        data = _from_prometheus(args, pack) if args.prometheus_url else _from_file(args.input, progress, jobs)
        start, end = _range(args, pack, data)
    except (_Refused, ValueError) as exc:
        print(f"csf backtest: {exc}", file=sys.stderr)
        return 2
    from detector.decision.backtest import evaluation_times, run_backtest  # imported while --input parses

    evaluations = run_backtest(pack, data.source, evaluation_times(start, end, every), progress=progress, jobs=jobs)
    _write(args, pack, evaluations, every)
    if args.plot:
        try:
            from exporters.plot import plot_backtest  # optional: needs matplotlib
        except ImportError:
            print("csf backtest: --plot needs matplotlib (pip install 'csf[plot]')", file=sys.stderr)
            return 2
        plot_backtest(evaluations, args.plot)
    return 0


def _first_metric(pack: Any) -> str | None:
    """An input series name of the pack's first constraint with a signal (for the data range)."""
    for c in pack.constraints:
        if c.signal is not None and c.signal.metrics():
            return str(c.signal.metrics()[0])
    return None


def _from_prometheus(args: argparse.Namespace, pack: Any) -> _Data:
    """The API as source; what --start/--end/--last leave open comes from the pack's first metric's
    oldest and newest samples. Sets ``args.start``/``args.end`` to the range found."""
    from detector.source.frame import SourceError
    from detector.source.prometheus_api import PrometheusSource
    from detector.timefmt import format_time, parse_duration, parse_time

    prom = PrometheusSource(args.prometheus_url)
    last = parse_duration(args.last) if args.last else None
    end_at = parse_time(args.end) if args.end else None
    start_at = parse_time(args.start) if args.start else None
    if end_at is None or (start_at is None and last is None):
        metric = _first_metric(pack)
        try:
            found = prom.data_range(metric, time.time()) if metric else None
        except SourceError as exc:
            raise _Refused(str(exc)) from None
        if found is None:
            raise _Refused(
                f"{args.prometheus_url} has no sample of {metric}; "
                "give --start and --end (RFC3339) or --end and --last"
            )
        oldest, newest = found
        if end_at is None:
            end_at = newest
        if start_at is None and last is None:
            start_at = oldest + pack.windows.lookback
    if start_at is None:
        assert last is not None
        start_at = end_at - last
    args.start, args.end = format_time(start_at), format_time(end_at)
    return _Data(prom, start_at - pack.windows.lookback, end_at)


def _from_file(path: str, progress: TextIO | None, jobs: int) -> _Data:
    from detector.source.native import NativeSource
    from detector.source.openmetrics import OpenMetricsError
    from detector.source.openmetrics.parallel import load_file
    from detector.source.store import SampleStore

    store = SampleStore(retention=None)
    try:
        if progress:
            load_with_progress(path, store, progress, jobs)
        else:
            load_file(path, store, jobs=jobs, while_parsing=_import_evaluation)
    except (OSError, OpenMetricsError) as exc:
        raise _Refused(f"{path}: {exc}") from None
    first = store.oldest_timestamp() if hasattr(store, "oldest_timestamp") else None
    last = store.newest_timestamp()
    if last is None:
        raise _Refused(f"{path}: no samples")
    return _Data(NativeSource(store), first if first is not None else last, last)


def _range(args: argparse.Namespace, pack: Any, data: _Data) -> tuple[float, float]:
    """(start, end) of the evaluations: the arguments, else the data less the pack's lookback."""
    from detector.timefmt import format_time, parse_duration, parse_time

    end = parse_time(args.end) if args.end else data.end
    if args.start:
        start = parse_time(args.start)
    elif args.last:
        start = end - parse_duration(args.last)
    else:
        start = data.start + pack.windows.lookback
    if end < start:
        raise _Refused(
            f"nothing to evaluate: start {format_time(start)} is after end {format_time(end)}"
            " (the data must cover the lookback before --start)"
        )
    return start, end


def _write(args: argparse.Namespace, pack: Any, evaluations: list[Any], every: float) -> None:
    import json

    from detector.decision.backtest import render_table, summary, to_json

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


def _size(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _import_evaluation() -> None:
    """The evaluation's modules (scipy among them: most of a second) load while the file parses."""
    importlib.import_module("detector.decision.backtest")


def load_with_progress(path: str, store: Any, progress: TextIO, jobs: int = 1, every: float = 0.5) -> int:
    """`load_file` (the same store, the same errors) with a progress line on `progress`: share
    of the file read, samples loaded, elapsed time. Returns the samples."""
    from detector.source.openmetrics.parallel import load_file

    t0 = last = time.monotonic()
    size = os.path.getsize(path)
    state = [0, size, 0]  # bytes read, file size, samples

    def show(end: str = "") -> None:
        done, total, samples = state
        share = done / total if total else 1.0
        bar = "#" * int(30 * share)
        loaded = f"{samples / 1e6:.2f} M samples, " if samples else ""
        progress.write(
            f"\rloading {path}: [{bar:<30}] {share:4.0%} of {_size(total)}, {loaded}{time.monotonic() - t0:.1f}s{end}"
        )
        progress.flush()

    def on_progress(done: int, total: int, samples: int) -> None:
        nonlocal last
        state[:] = [done, total, samples]
        now = time.monotonic()
        if now - last >= every:
            last = now
            show()

    stats = load_file(path, store, jobs=jobs, on_progress=on_progress, while_parsing=_import_evaluation)
    state[:] = [size, size, stats.samples]
    show("\n")
    return stats.samples
