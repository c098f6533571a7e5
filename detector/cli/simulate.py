"""`csf simulate`: play a simulated platform (`detector.sim`) into an OpenMetrics file or on /metrics."""

from __future__ import annotations

import argparse
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


def run(args: argparse.Namespace) -> int:
    from detector.sim.simulator import simulate_cli

    return simulate_cli(args)
