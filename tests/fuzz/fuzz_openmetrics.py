"""atheris harness: `parse_openmetrics` yields data or raises OpenMetricsError, nothing else.

Run: ``python tests/fuzz/fuzz_openmetrics.py -max_total_time=300`` (see `_common`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["detector"]):
    from detector.source.openmetrics import OpenMetricsError, parse_openmetrics

from tests.fuzz._common import run  # noqa: E402

SEEDS = [
    b'# TYPE q gauge\nq{a="1"} 1.5 1700000000\nq{a="1"} 2 1700000015\n# EOF\n',
    b'# TYPE r counter\nr_total{c="200"} 3 1700000000000\nr_total{c="200"} 4 1700000015000\n',
    b'# TYPE h histogram\nh_bucket{le="0.1"} 1 17\nh_bucket{le="+Inf"} 2 17\nh_count 2 17\nh_sum 0.3 17\n# EOF\n',
]


def one_input(data: bytes) -> None:
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    try:
        for _ in parse_openmetrics(lines, max_buffered=5):
            pass
    except OpenMetricsError as exc:
        if not 1 <= exc.line_no <= len(lines) + 1:
            raise AssertionError(f"line number {exc.line_no} outside 1..{len(lines) + 1}") from exc


if __name__ == "__main__":
    run("openmetrics", one_input, SEEDS)
