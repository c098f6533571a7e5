"""`csf simulate`: play a simulated platform (`detector.sim`) into an OpenMetrics file or on /metrics.

Domain modules are imported when the command runs, so `csf --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any


def add_parser(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="play a simulated platform: write OpenMetrics or serve /metrics")
    sim.add_argument(
        "--platform", choices=("video", "web"), default="video",
        help="video: the default pack's platform; web: the web-shop pack's (scenarios web_*)",
    )
    sim.add_argument("--scenario", default=None, help="scenario (default: sequence, or web_sequence with --platform web)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--days", type=float, default=None, help="days to write (default: the scenario's length)")
    sim.add_argument("--start", default=None, help="RFC3339 start of the simulated data (default: now - days)")
    sim.add_argument("--interval", default="60s", help="sample interval (default 60s)")
    sim.add_argument(
        "--history",
        default=None,
        help="with --output: also write this much of the first phase before the scenario starts (e.g. 7d, "
        "so a backtest with a 7-day lookback can evaluate from day 0)",
    )
    sim.add_argument("--output", "-o", default=None, help="OpenMetrics file to write ('-' for stdout)")
    sim.add_argument("--serve", action="store_true", help="serve the live simulated platform on /metrics")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9467)
    sim.add_argument("--speed", type=float, default=1.0)
    sim.add_argument("--list", action="store_true", help="list scenarios and exit")
    shape = sim.add_argument_group("real-world shapes (with --output)")
    shape.add_argument("--pods", type=int, default=0, help="split counters/histograms across N pods (instance/job/pod)")
    shape.add_argument("--lost-scrapes", type=float, default=0.0, help="probability that a target's scrape is lost")
    shape.add_argument("--late-unit", default=None, help="a unit that joins late, e.g. 'region=apac@2d'")
    shape.add_argument(
        "--counter-reset", action="append", default=None, help="pod 0 restarts this long after the start (repeatable)"
    )
    sim.set_defaults(run=run)


class _Refused(Exception):
    """A bad argument: exit 2 with the message after ``csf simulate: ``."""


def run(args: argparse.Namespace) -> int:
    """`csf simulate`: list scenarios, write OpenMetrics, or serve the live platform."""
    from detector.sim.scenarios import describe_scenarios

    if args.list:
        describe_scenarios(sys.stdout)
        return 0
    try:
        if args.platform == "web" or (args.scenario or "").startswith("web_"):
            return _web(args)
        if args.serve and args.output:
            raise _Refused("choose one of --output and --serve")
        if args.serve:
            return _serve(args)
        if not args.output:
            raise _Refused("nothing to do: pass --output FILE, --serve or --list")
        return _write(args)
    except (_Refused, ValueError) as exc:
        sys.stderr.write(f"csf simulate: {exc}\n")
        return 2


def _video_spec(args: argparse.Namespace) -> tuple[Any, float, float, float | None]:
    """(scenario, interval, days, start) of the video platform from the arguments."""
    from detector.sim.metrics import DAY
    from detector.sim.scenarios import SCENARIOS
    from detector.timefmt import parse_duration, parse_time

    name = args.scenario or "sequence"
    spec = SCENARIOS.get(name)
    if spec is None:
        raise _Refused(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    interval = parse_duration(args.interval)
    if interval <= 0:
        raise ValueError(f"invalid interval {args.interval!r}: must be > 0")
    days = spec.duration_s / DAY if args.days is None else float(args.days)
    if not (days > 0 and math.isfinite(days)):
        raise ValueError(f"--days must be > 0, got {args.days!r}")
    start = None if args.start is None else parse_time(args.start)
    return spec, interval, days, start


def _serve(args: argparse.Namespace) -> int:
    from detector.sim.collector import serve_simulator
    from detector.sim.simulator import DEFAULT_HISTORY_S, Simulator

    spec, interval, _, start = _video_spec(args)
    now = time.time()
    origin = now if start is None else start
    history = DEFAULT_HISTORY_S + max(0.0, origin - now)  # counters must start before the first scrape
    sim = Simulator(spec, args.seed, origin=origin, interval=interval, history=history)
    try:
        server = serve_simulator(sim, args.host, args.port, speed=args.speed, sim_start=now)
    except OSError as exc:
        sys.stderr.write(f"csf simulate: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    host, port = str(server.server_address[0]), int(server.server_address[1])
    sys.stderr.write(
        f"csf simulate: serving scenario {spec.name!r} (seed {args.seed}, x{args.speed:g}) "
        f"on http://{host}:{port}/metrics; Ctrl-C stops\n"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _shape(args: argparse.Namespace) -> Any:
    """The `Shape` of the --pods/--lost-scrapes/--late-unit/--counter-reset flags."""
    from detector.sim.shape import Shape, parse_late_unit
    from detector.timefmt import parse_duration

    late: tuple[tuple[str, str], ...] = ()
    late_after = 0.0
    if args.late_unit:
        late, after = parse_late_unit(args.late_unit)
        late_after = parse_duration(after)
    resets = tuple(sorted(parse_duration(r) for r in (args.counter_reset or ())))
    lost = args.lost_scrapes or 0.0
    if not (0.0 <= float(lost) < 1.0):
        raise ValueError(f"--lost-scrapes must be in [0, 1), got {lost!r}")
    pods = int(args.pods or 0)
    if not 0 <= pods <= 64:
        raise ValueError(f"--pods must be between 0 and 64, got {pods}")
    return Shape(
        pods=pods, lost_scrape_ratio=float(lost), late_unit=late, late_after=late_after, counter_resets=resets
    )


def _write(args: argparse.Namespace) -> int:
    from detector.sim.metrics import DAY, METRIC_HELP
    from detector.sim.shape import ShapedSimulator
    from detector.sim.simulator import DEFAULT_HISTORY_S, Simulator
    from detector.source.openmetrics import write_openmetrics
    from detector.timefmt import format_duration, format_time, parse_duration

    spec, interval, days, start = _video_spec(args)
    shape = _shape(args)
    span = days * DAY
    lead = parse_duration(args.history or 0)
    if start is None:
        start = math.floor((time.time() - span - lead) / interval) * interval
    # `lead` seconds of the first phase come before the scenario starts at `origin`, so a
    # backtest with that lookback can evaluate from the scenario's first day.
    origin = start + lead
    sim = Simulator(spec, args.seed, origin=origin, interval=interval, history=DEFAULT_HISTORY_S + lead)
    series = ShapedSimulator(sim, shape).generate(start, origin + span)
    span += lead
    if args.output == "-":
        n = write_openmetrics(sys.stdout, series, help=METRIC_HELP)
    else:
        with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
            n = write_openmetrics(fh, series, help=METRIC_HELP)
    sys.stderr.write(
        f"csf simulate: wrote {n} samples of scenario {spec.name!r} (seed {args.seed}) "
        f"from {format_time(start)} to {format_time(start + span)} every {format_duration(interval)}\n"
    )
    return 0


def _web(args: argparse.Namespace) -> int:
    """`csf simulate --platform web`: write the web shop's metrics as OpenMetrics."""
    from detector.sim.metrics import DAY
    from detector.sim.web import DURATION_DAYS, HELP, SCENARIOS, WebShopSimulator
    from detector.source.openmetrics import write_openmetrics
    from detector.timefmt import format_time, parse_duration, parse_time

    scenario = args.scenario or "web_sequence"
    if scenario not in SCENARIOS:
        raise _Refused(f"unknown web scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if args.serve or not args.output:
        raise _Refused("--platform web writes a file: pass --output FILE")
    interval = parse_duration(args.interval)
    days = DURATION_DAYS[scenario] if args.days is None else float(args.days)
    if not (days > 0 and math.isfinite(days)) or interval <= 0:
        raise ValueError("--days and --interval must be > 0")
    start = parse_time(args.start) if args.start else math.floor((time.time() - days * DAY) / interval) * interval
    sim = WebShopSimulator(scenario, args.seed, origin=start, interval=interval, history=0.0)
    with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
        n = write_openmetrics(fh, sim.generate(start, start + days * DAY), help=HELP)
    sys.stderr.write(
        f"csf simulate: wrote {n} samples of web scenario {scenario!r} (seed {args.seed}) "
        f"from {format_time(start)} every {interval:g}s\n"
    )
    return 0
