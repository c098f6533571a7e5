"""Backtest end to end, as a user runs it, in subprocesses:

    csf simulate --scenario sequence --days 18 --output f.om
    csf backtest --input f.om --every 1h --progress always

The second command is timed (wall clock, on the whole machine: no pinning), input
parsing included; its stderr must show the progress bar.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Measurement, machine_cpus, unpin

DAYS = {"smoke": 1.0, "quick": 9.0, "full": 18.0}
LOOKBACK = {"smoke": "6h", "quick": None, "full": None}
TARGET_S = 60.0
BEFORE_S = 27.7
"""The 18-day backtest before the write-ahead-log / incremental round (BENCHMARKS.md)."""


def _csf() -> list[str]:
    exe = shutil.which("csf", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "detector.cli"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(size: str, workdir: str | None = None) -> list[Measurement]:
    days = DAYS[size]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="csf-bench-") as tmp:
        data = Path(tmp) / "sequence.om"
        t0 = time.perf_counter()
        subprocess.run(
            [*_csf(), "simulate", "--scenario", "sequence", "--days", f"{days:g}", "--start",
             "2026-01-01T00:00:00Z", "--output", str(data)],
            check=True, capture_output=True, env=env, text=True,
        )
        simulate_s = time.perf_counter() - t0
        size_bytes = data.stat().st_size
        lines = 0
        with open(data, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                lines += block.count(b"\n")
        cmd = [*_csf(), "backtest", "--input", str(data), "--every", "1h", "--progress", "always",
               "--format", "json", "--output", str(Path(tmp) / "backtest.json")]
        if LOOKBACK[size]:
            cmd += ["--lookback", LOOKBACK[size]]
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, text=True, preexec_fn=unpin)
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"csf backtest failed ({proc.returncode}): {proc.stderr[-2000:]}")
        progress = proc.stderr.replace("\r", "\n")
        bars = re.findall(r"\[[# ]+\] (\d+)/(\d+) evaluations", progress)
        evaluations = int(bars[-1][1]) if bars else 0
        import json

        with open(Path(tmp) / "backtest.json", encoding="utf-8") as fh:
            result = json.load(fh)
        n_eval = len(result["evaluations"])
    extra = {
        "days": days,
        "file_bytes": size_bytes,
        "file_lines": lines,
        "simulate_wall_s": simulate_s,
        "backtest_cpu_s": cpu,
        "evaluations": n_eval,
        "progress_updates": len(bars),
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
    }
    bench = "backtest"
    met = wall <= TARGET_S if size == "full" else None
    return [
        Measurement(
            bench,
            f"csf backtest, {days:g}-day sequence, hourly (wall, end to end)",
            wall,
            "s",
            f"<= {TARGET_S:g} s (18 days)",
            met,
            note=f"{n_eval} evaluations, {lines:,} input lines ({size_bytes / 2**20:,.0f} MiB), "
            f"progress bar {'shown' if bars and evaluations == n_eval else 'MISSING'}",
            extra=extra,
        ),
        Measurement(
            bench,
            f"speed-up over the {BEFORE_S:g} s of the round before incremental evaluation",
            BEFORE_S / wall,
            "x",
            ">= 2",
            BEFORE_S / wall >= 2.0 if size == "full" else None,
            note=f"--jobs default: one process per CPU, {machine_cpus()} here",
        ),
        Measurement(bench, "csf backtest CPU (user+sys)", cpu, "s"),
        Measurement(bench, "input lines parsed per second of backtest wall", lines / wall, "lines/s"),
    ]
