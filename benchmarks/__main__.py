"""``python -m benchmarks [--size smoke|quick|full] [--only NAME,...] [--output FILE]``

Runs the benchmarks (default: all, size ``full``), prints a table and writes JSON
(default ``benchmark-results.json``). The process pins itself to one CPU before numpy
is imported, so every in-process figure is single-core; the backtest and ingestion
benchmarks start their own processes (see their modules).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence

from benchmarks import SIZES

BENCHMARKS: tuple[str, ...] = ("causal", "evaluation", "scaling", "backtest", "ingest", "storage")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--output", default="benchmark-results.json", help="JSON file to write ('-': none)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin this process to one CPU")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")

    from benchmarks.common import pin_to_one_core

    cpu = None if args.no_pin else pin_to_one_core()
    # numpy (and its BLAS) only from here on.
    from benchmarks.common import Measurement, machine, render_table

    info = machine()
    info["pinned_cpu"] = cpu
    rows: list[Measurement] = []
    durations: dict[str, float] = {}
    for name in chosen:
        t0 = time.perf_counter()
        print(f"== {name} ({args.size}) ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        got = module.run(args.size)
        durations[name] = time.perf_counter() - t0
        rows.extend(got)
        print(render_table(got), file=sys.stderr, flush=True)
    print(render_table(rows))
    if args.output != "-":
        report = {
            "size": args.size,
            "machine": info,
            "benchmark_seconds": durations,
            "results": [r.to_dict() for r in rows],
        }
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, default=float)
            fh.write("\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
