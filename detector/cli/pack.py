"""`csf pack validate | show | check`: the pack tools.

`validate` loads files with the pack loader (`detector.spec.load`, every problem listed with
file:line:column), `show` prints a built-in pack with its comments, `check` runs
`detector.decision.packcheck` against an OpenMetrics file or a Prometheus-compatible API.
Domain modules are imported when the command runs, so `csf --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any, TextIO


def add_parser(sub: Any) -> None:
    pack = sub.add_parser("pack", help="constraint pack tools")
    pack_sub = pack.add_subparsers(dest="pack_command", required=True)
    val = pack_sub.add_parser("validate", help="validate pack files; exit 0 when all are valid")
    val.add_argument("files", nargs="+")
    val.set_defaults(run=lambda args: validate(args.files))
    show_p = pack_sub.add_parser(
        "show", help="print a built-in pack (default: the video platform), comments included"
    )
    show_p.add_argument("--pack", default=None, help="built-in pack name: microlearning-video (default), web-shop")
    show_p.set_defaults(files=[], run=lambda args: show(args.pack))
    chk = pack_sub.add_parser(
        "check",
        help="check a pack against real data: series, units, sample interval, window, coverage, freshness; "
        "exit 1 when a constraint cannot be judged",
    )
    chk.add_argument("--input", default=None, help="OpenMetrics file with timestamps")
    chk.add_argument("--prometheus-url", default=None, help="Prometheus-compatible query API base URL")
    chk.add_argument("--pack", default=None, help="pack file (default: the built-in pack)")
    chk.add_argument("--time", default=None, help="RFC3339 instant to check at (default: newest sample / now)")
    chk.add_argument("--lookback", default=None, help="override the pack's lookback (e.g. 2d)")
    chk.add_argument("--format", choices=("table", "json"), default="table")
    chk.set_defaults(run=check)


def validate(paths: list[str]) -> int:
    """`csf pack validate FILE...`: 0 when every file is a valid pack, 1 otherwise."""
    from detector.spec.load import PackError, load_pack

    ok = True
    for path in paths:
        try:
            pack = load_pack(path)
        except PackError as exc:
            ok = False
            for issue in exc.issues:
                print(issue, file=sys.stderr)
        except OSError as exc:
            ok = False
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"{path}: ok ({len(pack.constraints)} constraints)")
    return 0 if ok else 1


def show(name: str | None = None) -> int:
    """`csf pack show [--pack NAME]`: print a built-in pack's YAML, comments included."""
    from detector.spec.load import PackError, builtin_pack_text

    try:
        text = builtin_pack_text(name or "default")
    except PackError as exc:
        for issue in exc.issues:
            print(f"csf pack show: {issue.message}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


class _Refused(Exception):
    """Bad arguments or unreadable data: exit 2 with the message."""


def check(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`csf pack check`: exit 0 when every constraint can be judged, 1 when not, 2 on bad input."""
    from detector.decision.packcheck import check_pack, render_table

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        pack, at = _pack_and_time(args)
        source, now = _source(args, at)
    except _Refused as exc:
        err.write(f"csf pack check: {exc}\n")
        return 2
    result = check_pack(pack, source, now)
    if args.format == "json":
        json.dump(result.to_dict(), out, indent=1)
        out.write("\n")
    else:
        render_table(result, out)
    return 0 if result.ok else 1


def _pack_and_time(args: argparse.Namespace) -> tuple[Any, float | None]:
    from detector.spec.load import PackError, resolve_pack
    from detector.timefmt import parse_duration, parse_time

    if bool(args.input) == bool(args.prometheus_url):
        raise _Refused("give exactly one of --input FILE or --prometheus-url URL")
    try:
        pack = resolve_pack(args.pack)
    except PackError as exc:
        raise _Refused(f"invalid pack:\n{exc}") from None
    except OSError as exc:
        raise _Refused(f"cannot read pack: {exc}") from None
    try:
        if args.lookback:
            pack = replace(pack, windows=replace(pack.windows, lookback=parse_duration(args.lookback)))
        at = parse_time(args.time) if args.time else None
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    return pack, at


def _source(args: argparse.Namespace, at: float | None) -> tuple[Any, float]:
    """The source to check against and the instant: --time, else the file's newest sample or now."""
    from detector.source.native import NativeSource
    from detector.source.openmetrics import OpenMetricsError, load_openmetrics
    from detector.source.prometheus_api import PrometheusSource
    from detector.source.store import SampleStore

    if args.input:
        store = SampleStore(retention=None)
        try:
            load_openmetrics(args.input, store)
        except (OSError, OpenMetricsError) as exc:
            raise _Refused(f"{args.input}: {exc}") from None
        newest = store.newest_timestamp()
        if newest is None:
            raise _Refused(f"{args.input}: no samples")
        return NativeSource(store, name=f"file {args.input}"), at if at is not None else newest
    try:
        source = PrometheusSource(args.prometheus_url, name=f"prometheus {args.prometheus_url}")
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    return source, at if at is not None else time.time()
