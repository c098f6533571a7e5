"""The `csf` command line. Each sub-command is a thin adapter over a module's `*_cli` function."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from detector import __version__


class _Parser(argparse.ArgumentParser):
    """No prefix matching: `--output` is never taken for `--output-dir`. Sub-parsers inherit
    the class (argparse builds them with the parent's type)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="csf", description="Constraint-sequence detector")
    p.add_argument("--version", action="version", version=f"csf {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the detector service")
    serve.add_argument("--config", help="YAML config file (default: embedded simulator + default pack)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default 9466)")
    serve.add_argument("--data-dir", default=None, help="state directory (default ./.csf)")
    serve.add_argument("--pack", default=None, help="pack file (default: the built-in platform pack)")
    serve.add_argument("--scenario", default=None, help="simulator scenario (default: sequence)")
    serve.add_argument("--seed", type=int, default=None, help="simulator seed")
    serve.add_argument("--speed", type=float, default=None, help="play simulated time N times faster")
    serve.add_argument(
        "--evaluation-interval", default=None, help="seconds or duration between evaluations (e.g. 60s, 1m)"
    )
    serve.add_argument("--log-level", default=None, help="debug, info, warning, error")
    serve.add_argument(
        "--shard", default=None, help="I/N: evaluate only the pipelines whose name hashes to shard I of N"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without an auth token (CSF_AUTH_TOKEN)",
    )

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

    pack = sub.add_parser("pack", help="constraint pack tools")
    pack_sub = pack.add_subparsers(dest="pack_command", required=True)
    val = pack_sub.add_parser("validate", help="validate pack files; exit 0 when all are valid")
    val.add_argument("files", nargs="+")
    show = pack_sub.add_parser("show", help="print a built-in pack (default: the video platform), comments included")
    show.add_argument("--pack", default=None, help="built-in pack name: microlearning-video (default), web-shop")
    show.set_defaults(files=[])
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

    rules = sub.add_parser("rules", help="Prometheus rule generation")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    gen = rules_sub.add_parser("generate", help="compile a pack into Prometheus rule files")
    gen.add_argument("--pack", default=None)
    gen.add_argument("--output-dir", default="rules/generated")
    gen.add_argument("--runbook-base-url", default=None, help="base URL for runbook_url annotations")
    gen.add_argument("--job", default=None, help="scrape job label of csf itself (default csf)")
    gen.add_argument("--evaluation-interval", default=None, help="csf's evaluation interval the alert timings follow")
    gen.add_argument(
        "--runbook-dir", default=None, help="where the constraint runbooks live (default deploy/runbooks)"
    )
    gen.add_argument(
        "--runbook-skeletons",
        default=None,
        metavar="DIR",
        help="write a runbook skeleton into DIR for every constraint without one (never overwrites)",
    )
    gen.add_argument(
        "--sample-interval",
        default=None,
        help="the platform's sample interval (e.g. 5m): recording-rule windows widen to 4 intervals, as csf does",
    )

    dash = sub.add_parser("dashboards", help="Grafana dashboard generation")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True)
    dgen = dash_sub.add_parser("generate", help="compile a pack into a Grafana dashboard")
    dgen.add_argument("--pack", default=None)
    dgen.add_argument("--output-dir", default="deploy/grafana/dashboards")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "serve":
        from detector.service.app import serve_cli

        return serve_cli(args)
    if args.command == "simulate":
        from detector.sim.simulator import simulate_cli

        return simulate_cli(args)
    if args.command == "backtest":
        from detector.decision.backtest import backtest_cli

        return backtest_cli(args)
    if args.command == "pack":
        from detector.spec.load import show_cli, validate_cli

        if args.pack_command == "validate":
            return validate_cli(args.files)
        if args.pack_command == "check":
            from detector.cli.packcheck import pack_check_cli

            return pack_check_cli(args)
        return show_cli(args.pack)
    if args.command == "rules":
        from rules.generate import generate_cli

        return generate_cli(args)
    if args.command == "dashboards":
        from exporters.grafana import generate_cli as dashboards_cli

        return dashboards_cli(args)
    return 2
