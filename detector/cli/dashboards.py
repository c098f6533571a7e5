"""`csf dashboards generate`: compile a pack into a Grafana dashboard (`exporters.grafana`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    dash = sub.add_parser("dashboards", help="Grafana dashboard generation")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True)
    dgen = dash_sub.add_parser("generate", help="compile a pack into a Grafana dashboard")
    dgen.add_argument("--pack", default=None)
    dgen.add_argument("--output-dir", default="deploy/grafana/dashboards")
    dgen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from exporters.grafana import generate_cli

    return generate_cli(args)
