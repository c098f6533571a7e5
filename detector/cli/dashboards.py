"""`csf dashboards generate`: compile a pack into a Grafana dashboard (`exporters.grafana`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    dash = sub.add_parser("dashboards", help="Grafana dashboard generation")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True)
    dgen = dash_sub.add_parser("generate", help="compile a pack into a Grafana dashboard")
    dgen.add_argument("--pack", default=None)
    dgen.add_argument("--output-dir", default="deploy/grafana/dashboards")
    dgen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`csf dashboards generate`: write ``csf-<pack>.json`` into ``--output-dir``."""
    from detector.spec.load import PackError, resolve_pack
    from exporters.grafana import render

    try:
        pack = resolve_pack(args.pack)
    except PackError as exc:
        print(f"csf dashboards generate: invalid pack:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"csf dashboards generate: cannot read pack: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"csf-{pack.name}.json"
    path.write_text(render(pack), encoding="utf-8")
    print(f"wrote {path}")
    return 0
