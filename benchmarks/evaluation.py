"""One full evaluation of the default pack on native data (all constraints, 7-day lookback
at 5-minute steps): evidence from the embedded store, causal tests, economics and the
decision, i.e. `Pipeline.evaluate`, as the service runs it."""

from __future__ import annotations

import statistics

from benchmarks.common import Measurement
from benchmarks.data import DAY, simulated_store

REPEATS = {"smoke": 3, "quick": 15, "full": 40}
HISTORY_DAYS = {"smoke": 1.0, "quick": 8.0, "full": 8.0}
TARGET_S = 0.100


def run(size: str) -> list[Measurement]:
    import time

    from benchmarks.data import with_lookback
    from detector.decision.pipeline import Pipeline
    from detector.source.native import NativeSource
    from detector.spec.load import default_pack

    pack = default_pack()
    if size == "smoke":
        pack = with_lookback(pack, 0.5 * DAY)
    data = simulated_store(HISTORY_DAYS[size], days=1.0)
    pipeline = Pipeline("bench", pack, NativeSource(data.store))
    n = REPEATS[size]
    # Evaluate at different instants of the last day, as a running service would.
    times = [data.now - k * (DAY / n) for k in range(n)][::-1]
    pipeline.evaluate(times[0])
    cpu: list[float] = []
    wall: list[float] = []
    samples: list[int] = []
    for t in times:
        c0, w0 = time.process_time(), time.perf_counter()
        ev = pipeline.evaluate(t)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        samples.append(ev.meta.samples_read)
    med = statistics.median(cpu)
    extra = {
        "cpu_s": cpu,
        "wall_s": wall,
        "samples_read_median": statistics.median(samples),
        "store_samples": data.samples,
        "store_series": data.store.series_count(),
        "lookback_s": pack.windows.lookback,
        "step_s": pack.windows.step,
        "constraints": len(pack.constraints),
    }
    bench = "evaluation"
    return [
        Measurement(
            bench,
            "default pack, one evaluation (CPU, median)",
            med,
            "s",
            f"<= {TARGET_S * 1000:.0f} ms",
            med <= TARGET_S if size != "smoke" else None,
            note=f"{len(pack.constraints)} constraints, {statistics.median(samples):,.0f} samples read",
            extra=extra,
        ),
        Measurement(bench, "default pack, one evaluation (wall, median)", statistics.median(wall), "s"),
        Measurement(bench, "default pack, one evaluation (CPU, p90)", sorted(cpu)[int(0.9 * (len(cpu) - 1))], "s"),
        Measurement(bench, "samples read per evaluation", float(statistics.median(samples)), "samples"),
    ]
