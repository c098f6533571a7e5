"""A push pipeline's durability and storage, side by side with Prometheus on the same samples.

The default pack's platform, 7 days (+1 h) of 1-minute samples from the simulator, is
written into a push store with its write-ahead log, the way the receivers write it: one
append per series and a commit every 10 simulated minutes. Figures:

* bytes per sample of the log's segments, of a checkpoint (compressed chunks), of the
  in-memory store, and of Prometheus' TSDB for the same samples (``promtool tsdb
  create-blocks-from openmetrics``, 2 h blocks as Prometheus' head would cut them;
  its chunks, index and tombstones counted);
* the restart: opening the log (newest checkpoint + the segments after it) and then
  the runner's preparation (warm-up evaluations) and the first verdict, for a log with a
  checkpoint and for one without (a crash before the first checkpoint);
* the cost of the log on ingestion: appending the same samples with and without it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import Measurement

DAYS = {"smoke": 0.25, "quick": 2.0, "full": 7.0 + 1 / 24}
COMMIT_EVERY = 600.0
READY_TARGET_S = 30.0
BYTES_TARGET = 3.0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fill(directory: Path | None, days: float, origin: float) -> tuple[object, object, float, int]:
    """(store, wal or None, CPU seconds, samples) after writing `days` of the platform: into a
    push pipeline's store (compressed, with its log) when `directory` is given, else raw."""
    from detector.service.pipelines import PUSH_CHUNK_SAMPLES
    from detector.sim.simulator import Simulator
    from detector.source.store import SampleStore
    from detector.source.wal import WriteAheadLog

    sim = Simulator("latency_binding", 5, origin=origin, interval=60.0)
    store = SampleStore(retention=None, chunk_samples=PUSH_CHUNK_SAMPLES if directory is not None else None)
    wal = None
    if directory is not None:
        wal = WriteAheadLog(directory)
        wal.open(store)
    end = origin + days * 86400.0
    t = origin
    n = 0
    c0 = time.process_time()
    while t < end:
        t1 = min(end, t + COMMIT_EVERY)
        n += sim.write_to(store, t, t1)
        store.commit()
        t = t1
    return store, wal, time.process_time() - c0, n


def _restart(directory: Path, now: float, need_verdict: bool) -> tuple[float, float, int]:
    """(seconds to open the log, seconds to the first verdict after it, samples replayed)."""
    from detector.decision.pipeline import Pipeline
    from detector.service.pipelines import PUSH_CHUNK_SAMPLES, warm_up_count
    from detector.source.native import NativeSource
    from detector.source.store import SampleStore
    from detector.source.wal import WriteAheadLog
    from detector.spec.load import default_pack

    pack = default_pack()
    store = SampleStore(retention=None, chunk_samples=PUSH_CHUNK_SAMPLES)
    w0 = time.perf_counter()
    wal = WriteAheadLog(directory)
    report = wal.open(store)
    opened = time.perf_counter() - w0
    pipeline = Pipeline("bench", pack, NativeSource(store))
    pipeline.warm_up(now, warm_up_count(pack), 60.0)
    evaluation = pipeline.evaluate(now)
    ready = time.perf_counter() - w0
    wal.close()
    if need_verdict and evaluation.decision == "observe":
        raise RuntimeError(f"the restarted pipeline observes: {evaluation.explanation}")
    return opened, ready, report.samples


def _prometheus_bytes(days: float, origin: float, tmp: Path) -> int | None:
    """Bytes of the TSDB blocks promtool builds from the same samples (None: no promtool)."""
    from detector.sim.metrics import METRIC_HELP
    from detector.sim.simulator import Simulator
    from detector.source.openmetrics import write_openmetrics

    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    om = tmp / "samples.om"
    sim = Simulator("latency_binding", 5, origin=origin, interval=60.0)
    with open(om, "w", encoding="utf-8", newline="\n") as fh:
        write_openmetrics(fh, sim.generate(origin, origin + days * 86400.0), help=METRIC_HELP)
    blocks = tmp / "tsdb"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(blocks)],
        check=True, capture_output=True, timeout=1800,
    )
    om.unlink()
    return _dir_bytes(blocks)


def run(size: str) -> list[Measurement]:
    days = DAYS[size]
    origin = 1_700_000_000.0
    bench = "storage"
    with tempfile.TemporaryDirectory(prefix="csf-bench-storage-") as name:
        tmp = Path(name)
        raw, _, plain_cpu, _ = _fill(None, days, origin)
        raw_memory = raw.memory_bytes()  # type: ignore[attr-defined]
        del raw
        store, wal, wal_cpu, samples = _fill(tmp / "wal", days, origin)
        segments = _dir_bytes(tmp / "wal" / "wal")
        now = origin + days * 86400.0 - 30.0
        wal.close()  # type: ignore[attr-defined]
        seg_open, seg_ready, seg_replayed = _restart(tmp / "wal", now, size == "full")  # segments only (a crash, no checkpoint)
        from detector.source.store import SampleStore
        from detector.source.wal import WriteAheadLog

        wal2 = WriteAheadLog(tmp / "wal")
        wal2.open(SampleStore(retention=None))
        c0 = time.perf_counter()
        checkpoint = wal2.checkpoint()
        checkpoint_s = time.perf_counter() - c0
        wal2.close()
        checkpoint_bytes = (tmp / "wal" / checkpoint).stat().st_size
        ck_open, ck_ready, ck_replayed = _restart(tmp / "wal", now, size == "full")
        memory = store.memory_bytes()  # type: ignore[attr-defined]
        prom = _prometheus_bytes(days, origin, tmp)
    per = checkpoint_bytes / samples
    full = size == "full"
    rows = [
        Measurement(bench, "samples stored", float(samples), "samples", note=f"{days:g} days of the default pack's platform"),
        Measurement(bench, "checkpoint (compressed chunks), bytes per sample", per, "B",
                    f"<= {BYTES_TARGET:g} B", per <= BYTES_TARGET if full else None,
                    note=f"{checkpoint_bytes / 2**20:.1f} MiB, written in {checkpoint_s:.2f} s"),
        Measurement(bench, "write-ahead log segments, bytes per sample", segments / samples, "B"),
        Measurement(bench, "in-memory push store (compressed chunks + raw head + decode cache), bytes per sample",
                    memory / samples, "B", f"<= {BYTES_TARGET:g} B", memory / samples <= BYTES_TARGET if full else None,
                    note=f"{memory / 2**20:.1f} MiB"),
        Measurement(bench, "in-memory raw store (simulator, backtest), bytes per sample", raw_memory / samples, "B",
                    note=f"{raw_memory / 2**20:.1f} MiB"),
        Measurement(bench, "restart with a checkpoint: first verdict", ck_ready, "s",
                    f"<= {READY_TARGET_S:g} s", ck_ready <= READY_TARGET_S if full else None,
                    note=f"log opened in {ck_open:.2f} s ({ck_replayed:,} samples), then warm-up and evaluation"),
        Measurement(bench, "restart from segments only (crash before a checkpoint): first verdict", seg_ready, "s",
                    f"<= {READY_TARGET_S:g} s", seg_ready <= READY_TARGET_S if full else None,
                    note=f"log replayed in {seg_open:.2f} s ({seg_replayed:,} samples)"),
        Measurement(bench, "ingestion CPU, push store (log + compression) / raw store", wal_cpu / plain_cpu, "ratio",
                    note=f"{wal_cpu:.2f} s vs {plain_cpu:.2f} s for {samples:,} samples (simulator time included)"),
    ]
    if prom is not None:
        rows.append(Measurement(bench, "Prometheus TSDB blocks (promtool), bytes per sample", prom / samples, "B",
                                note=f"{prom / 2**20:.1f} MiB for the same samples"))
    return rows
