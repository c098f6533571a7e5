"""Shared pieces of the benchmarks: measurements, timing, machine description, table."""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One figure of one benchmark.

    `target` is a human-readable goal (e.g. ``">= 10x"``) and `met` whether the value
    reaches it (None when the figure has no target).
    """

    benchmark: str
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            d["value"] = None
        return d


@dataclass(frozen=True)
class Timing:
    """CPU and wall seconds of repeated calls."""

    cpu: tuple[float, ...]
    wall: tuple[float, ...]

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_min(self) -> float:
        return min(self.cpu)


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 1) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeat` times timed (process CPU and wall)."""
    for _ in range(warmup):
        fn()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return Timing(tuple(cpu), tuple(wall))


def pin_to_one_core() -> int | None:
    """Restrict this process to one CPU (the last one allowed); returns it, None when not possible.

    Call before numpy is imported: OpenBLAS sizes its thread pool from the affinity mask.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if not allowed:
        return None
    cpu = allowed[-1]
    _ALLOWED[:] = allowed
    os.sched_setaffinity(0, {cpu})
    return cpu


_ALLOWED: list[int] = []
"""The CPUs this process could use before `pin_to_one_core`."""


def machine_cpus() -> int:
    """CPUs the benchmark process could use before pinning (what `unpin` gives back)."""
    if _ALLOWED:
        return len(_ALLOWED)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def unpin() -> None:
    """Give the calling process back every CPU the benchmark process had before pinning (a
    ``preexec_fn`` for commands timed as a user runs them: on the whole machine)."""
    if _ALLOWED and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(_ALLOWED))


def max_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes(pid: int | None = None) -> int | None:
    """Current resident memory of a process from /proc (None when unavailable)."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import numpy as np
    import scipy

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")  # type: ignore[call-arg]
        info = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 (informational only)
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": _memory_total(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def fmt_value(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if unit in ("x", "ratio"):
        return f"{value:.1f}x" if unit == "x" else f"{value:.3g}"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"
    if unit == "B":
        for div, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= div:
                return f"{value / div:.3g} {name}"
        return f"{value:.3g} B"
    if abs(value) >= 1e5:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def render_table(rows: Sequence[Measurement]) -> str:
    head = ("benchmark", "figure", "measured", "target", "met")
    body = [
        (
            r.benchmark,
            r.name,
            fmt_value(r.value, r.unit),
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for b in body:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))
    return "\n".join(lines)


__all__ = [
    "Measurement",
    "Timing",
    "fmt_value",
    "machine",
    "max_rss_bytes",
    "machine_cpus",
    "pin_to_one_core",
    "unpin",
    "render_table",
    "rss_bytes",
    "time_calls",
]
