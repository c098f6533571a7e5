"""The `csf` command line: one module per command, each with ``add_parser(sub)`` and a ``run``.

    serve       detector.cli.serve       the service
    simulate    detector.cli.simulate    a simulated platform (file or /metrics)
    backtest    detector.cli.backtest    replay the evaluation over recorded data
    pack        detector.cli.pack        validate | show | check
    rules       detector.cli.rules       generate Prometheus rules
    dashboards  detector.cli.dashboards  generate a Grafana dashboard

A command module reads its arguments and calls domain functions with typed values; domain
modules never see an argparse object. They are imported when the command runs, so
``csf --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from detector import __version__
from detector.cli import backtest, dashboards, pack, rules, serve, simulate

COMMANDS = (serve, simulate, backtest, pack, rules, dashboards)


class _Parser(argparse.ArgumentParser):
    """No prefix matching: `--output` is never taken for `--output-dir`. Sub-parsers inherit
    the class (argparse builds them with the parent's type)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="csf", description="Constraint-sequence detector")
    p.add_argument("--version", action="version", version=f"csf {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
