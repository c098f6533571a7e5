"""`csf rules generate`: compile a pack into Prometheus rule files (`rules.generate`), and check
that every constraint's alert links a runbook that exists (`rules.runbooks`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
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
    gen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`csf rules generate`: write the rule files for a pack into ``--output-dir``."""
    from detector.spec.load import PackError, resolve_pack
    from detector.timefmt import parse_duration
    from rules.generate import DEFAULT_JOB, generate_rules

    try:
        pack = resolve_pack(args.pack)
    except PackError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"csf rules generate: cannot read pack: {exc}", file=sys.stderr)
        return 2
    try:
        files = generate_rules(
            pack,
            runbook_base_url=args.runbook_base_url,
            job=args.job or DEFAULT_JOB,
            evaluation_interval=parse_duration(args.evaluation_interval) if args.evaluation_interval else None,
            sample_interval=parse_duration(args.sample_interval) if args.sample_interval else None,
        )
    except ValueError as exc:
        print(f"csf rules generate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        print(out / name)
    _check_runbooks(pack, args)
    return 0


def _check_runbooks(pack: Any, args: argparse.Namespace) -> None:
    """Write runbook skeletons when asked; warn about every constraint whose alert links nothing."""
    from rules.runbooks import missing_runbooks, outside, runbook_file, write_skeletons

    runbook_dir = Path(args.runbook_skeletons or args.runbook_dir or "deploy/runbooks")
    if args.runbook_skeletons:
        for path in write_skeletons(pack, runbook_dir):
            print(f"{path} (runbook skeleton: complete its TODOs)")
    for c in missing_runbooks(pack, runbook_dir):
        link = f"its `runbook: {c.runbook}` field links" if c.runbook else "its alerts link"
        if args.runbook_skeletons and outside(runbook_dir, c):
            hint = f"it points outside {runbook_dir}, so no skeleton was written there; fix the field"
        else:
            hint = f"write it, set `runbook:` on the constraint, or run with --runbook-skeletons {runbook_dir}"
        print(
            f"csf rules generate: warning: no runbook for constraint {c.name!r}: {link} "
            f"{runbook_file(c)} but {runbook_dir / (runbook_file(c) or '')} does not exist; {hint}",
            file=sys.stderr,
        )
