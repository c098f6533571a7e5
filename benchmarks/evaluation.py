"""One full evaluation of the default pack on native data (all constraints, 7-day lookback
at 5-minute steps): evidence from the embedded store, causal tests, economics and the
decision, i.e. `Pipeline.evaluate`, as the service runs it.

Two figures: a *cold* evaluation (``incremental=False``: every step read again, at
instants spread over the last day), and the *steady state* of a live pipeline
evaluated every 60 s, which reads only the steps it has not read before
(`detector.source.incremental`): measured over the last evaluations of a run of 70
(the hourly pressure windows come back in phase after 60)."""

from __future__ import annotations

import statistics

from benchmarks.common import Measurement
from benchmarks.data import DAY, simulated_store

REPEATS = {"smoke": 3, "quick": 15, "full": 40}
STEADY = {"smoke": 3, "quick": 5, "full": 10}
STEADY_TARGET_S = 0.030
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
    pipeline = Pipeline("bench", pack, NativeSource(data.store), incremental=False)
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
    steady_cpu, steady_samples = _steady(pack, data, STEADY[size])
    return [
        *_steady_rows(bench, steady_cpu, steady_samples, statistics.median(samples), size),
        Measurement(
            bench,
            "default pack, one cold evaluation (CPU, median)",
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


def _steady(pack: object, data: object, measured: int) -> tuple[list[float], list[int]]:
    """CPU seconds and samples read of the last `measured` of 60 + `measured` evaluations 60 s apart."""
    import time

    from detector.decision.pipeline import Pipeline
    from detector.source.native import NativeSource

    pipeline = Pipeline("steady", pack, NativeSource(data.store))  # type: ignore[arg-type, attr-defined]
    n = 60 + measured
    times = [data.now - 60.0 * (n - 1 - k) for k in range(n)]  # type: ignore[attr-defined]
    cpu: list[float] = []
    samples: list[int] = []
    for t in times:
        c0 = time.process_time()
        ev = pipeline.evaluate(t)
        cpu.append(time.process_time() - c0)
        samples.append(ev.meta.samples_read)
    return cpu[-measured:], samples[-measured:]


def _steady_rows(bench: str, cpu: list[float], samples: list[int], cold_samples: float, size: str) -> list[Measurement]:
    med = statistics.median(cpu)
    share = statistics.median(samples) / cold_samples if cold_samples else float("nan")
    full = size != "smoke"
    return [
        Measurement(
            bench,
            "steady state, every 60 s: one evaluation (CPU, median)",
            med,
            "s",
            f"<= {STEADY_TARGET_S * 1000:.0f} ms",
            med <= STEADY_TARGET_S if full else None,
            extra={"cpu_s": cpu, "samples_read": samples},
        ),
        Measurement(
            bench, "steady state: samples read / a cold evaluation's", share, "ratio", "<= 0.02", share <= 0.02 if full else None
        ),
        Measurement(bench, "steady state: pipeline-evaluations per minute per core", 60.0 / med, "evals/min", ">= 2,000",
                    60.0 / med >= 2000 if full else None),
    ]
