"""The benchmarks at their tiny ``smoke`` size: they run, and their figures mean what they say.

The real figures come from ``python -m benchmarks`` (BENCHMARKS.md); CI only runs this.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import __main__ as entry
from benchmarks import backtest, causal, evaluation, ingest, scaling, storage
from benchmarks.common import Measurement, fmt_value, render_table, time_calls
from tests._procs import PROMTOOL, require_binary


def by_name(rows: list[Measurement]) -> dict[str, Measurement]:
    return {r.name: r for r in rows}


def test_relative_difference_and_exponents() -> None:
    assert causal.relative_difference(1.0, 1.0) == 0.0
    assert causal.relative_difference(1.5, 1.0) == pytest.approx(0.5)
    assert causal.relative_difference(None, None) == 0.0
    assert causal.relative_difference(1.0, None) == math.inf
    assert causal.relative_difference(float("nan"), float("nan")) == 0.0
    assert causal.relative_difference(0.0, 1e-320) == 0.0  # both underflowed
    assert causal.relative_difference(math.inf, 1.0) == math.inf
    assert scaling.exponents([1, 2, 4], [3.0, 6.0, 24.0]) == pytest.approx([1.0, 2.0])
    rows = scaling._curve("s", "cost", "units", [10, 100, 1000], [1.0, 10.0, 1000.0], {})
    summary = rows[-1]
    assert summary.value == pytest.approx(2.0) and summary.met is False
    assert "100 -> 1000" in summary.note


def test_causal_benchmark_compares_fast_and_reference() -> None:
    rows = by_name(causal.run("smoke"))
    speed = rows["speed-up 9 x 288"]
    assert speed.value > 3.0  # 30x on an idle machine; loose so a busy CI host cannot fail it
    p = rows["max rel. diff p-values 9 x 288"]
    assert p.met is True and p.value <= 1e-6
    assert rows["fast path 9 x 288"].extra["same_outcomes"] is True
    assert rows["fast path 9 x 288"].extra["compared"] > 30


def test_evaluation_and_scaling_benchmarks_measure_real_work() -> None:
    rows = by_name(evaluation.run("smoke"))
    one = rows["default pack, one cold evaluation (CPU, median)"]
    assert one.value > 0 and one.extra["constraints"] == 6
    assert rows["samples read per evaluation"].value > 10_000
    steady = rows["steady state, every 60 s: one evaluation (CPU, median)"]
    assert len(steady.extra["samples_read"]) == 3 and 0 < max(steady.extra["samples_read"])
    assert 0 < rows["steady state: samples read / a cold evaluation's"].value < 0.5
    curves = scaling.run("smoke")
    units = [r for r in curves if r.name.startswith("latency constraint, CPU at")]
    assert [r.name.rsplit(" ", 2)[-2] for r in units] == ["3", "9"]
    throughput = [r for r in curves if r.name.startswith("pipeline-evaluations per minute")][0]
    assert throughput.value > 0


def test_backtest_benchmark_runs_the_cli_with_a_progress_bar(tmp_path: Path) -> None:
    rows = backtest.run("smoke", workdir=str(tmp_path))
    end_to_end = rows[0]
    assert end_to_end.extra["evaluations"] >= 10
    assert end_to_end.extra["progress_updates"] >= 1
    assert "progress bar shown" in end_to_end.note
    assert end_to_end.extra["file_lines"] > 50_000


def test_ingest_benchmark_stores_every_sample() -> None:
    rows = by_name(ingest.run("smoke"))
    rw = rows["remote_write into the store, in process (samples/s per core)"]
    assert rw.extra["accepted"] == rw.extra["expected"] > 0
    for label in ("one sample per series per minute", "bulk write"):
        per = rows[f"bytes per stored sample, {label}"].value
        assert 16.0 <= per < 64.0  # two float64 per sample, plus buffer slack and per-series overhead


def test_storage_benchmark_restarts_from_the_log_and_sizes_prometheus_blocks() -> None:
    require_binary(PROMTOOL)  # the Prometheus figure comes from promtool's blocks
    rows = by_name(storage.run("smoke"))
    samples = rows["samples stored"].value
    assert samples > 100_000
    assert 0 < rows["checkpoint (compressed chunks), bytes per sample"].value < 16.0
    assert rows["write-ahead log segments, bytes per sample"].value >= 16.0  # raw float64 pairs plus framing
    assert rows["in-memory raw store (simulator, backtest), bytes per sample"].value >= 16.0
    assert "samples)" in rows["restart with a checkpoint: first verdict"].note
    replayed = rows["restart from segments only (crash before a checkpoint): first verdict"].note
    assert f"{int(samples):,} samples" in replayed
    assert rows["Prometheus TSDB blocks (promtool), bytes per sample"].value > 0


def test_entry_point_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert entry.main(["--size", "smoke", "--only", "causal", "--output", str(out), "--no-pin"]) == 0
    printed = capsys.readouterr().out
    assert "speed-up 9 x 288" in printed and "| yes" in printed
    report = json.loads(out.read_text())
    assert report["size"] == "smoke" and report["machine"]["cores"] >= 1
    assert {r["benchmark"] for r in report["results"]} == {"causal"}
    with pytest.raises(SystemExit):
        entry.main(["--only", "nope"])


def test_table_and_timing_helpers() -> None:
    t = time_calls(lambda: sum(range(1000)), repeat=3)
    assert len(t.cpu) == 3 and t.cpu_median >= 0 and t.wall_median > 0
    assert fmt_value(0.0123, "s") == "12.3 ms" and fmt_value(3 * 2**20, "B") == "3 MiB"
    table = render_table([Measurement("b", "fig", 2.0, "x", ">= 1x", True)])
    assert table.splitlines()[2].split(" | ")[2].strip() == "2.0x"
