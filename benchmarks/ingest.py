"""Ingestion and memory.

1. remote_write into the store, in process on one core: `ingest_remote_write` (snappy,
   protobuf decoding, validation, store appends) over pre-built requests shaped like
   Prometheus' own (2,000 samples per request, one sample per series per request).
2. The same payloads over HTTP from the same client, in the same run, side by side:
   ``csf serve`` with a push pipeline, then a real ``prometheus
   --web.enable-remote-write-receiver``; each server pinned to one CPU (Prometheus
   also with GOMAXPROCS=1), the client (this process, its own CPU) with 4 connections,
   each owning its own series so that every series arrives in time order.
3. Memory per stored sample: 7 days of the default pack's series (the simulator's
   504 series, 1-minute samples) appended the way a scrape or remote_write delivers
   them (one sample per series per minute), and in one bulk write.
4. Resident memory of ``csf serve`` on the default pack (simulator source) once its
   7-day history is loaded and it evaluates.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Measurement, rss_bytes

SAMPLES_PER_REQUEST = 2000
CLIENTS = 4
REQUESTS = {"smoke": 10, "quick": 60, "full": 250}
"""Requests per client connection (each 2,000 samples)."""
STREAM_DAYS = {"smoke": 0.05, "quick": 1.0, "full": 7.0}
INGEST_TARGET = 300_000.0
BYTES_TARGET = 16.0
RSS_TARGET = 300 * 2**20
_READY_TIMEOUT = 180.0


# --------------------------------------------------------------------------- payloads


def build_requests(client: int, count: int, series: int = SAMPLES_PER_REQUEST, start_ms: int | None = None) -> list[bytes]:
    """`count` snappy-compressed WriteRequests of `series` series x 1 sample, 15 s apart.

    Series belong to `client` (label ``client``); timestamps end about now, so that a
    fresh Prometheus TSDB accepts them.
    """
    import cramjam

    from detector.source.ingest.remote_pb import messages

    msgs = messages()
    if start_ms is None:
        start_ms = int((time.time() - 15 * count - 60) * 1000)
    out = []
    for k in range(count):
        req = msgs.WriteRequest()
        t = start_ms + 15_000 * k
        for s in range(series):
            ts = req.timeseries.add()
            ts.labels.add(name="__name__", value=f"bench_metric_{s % 40}")
            ts.labels.add(name="client", value=f"c{client}")
            ts.labels.add(name="instance", value=f"host-{s // 40}:9100")
            ts.labels.add(name="job", value="node")
            ts.samples.add(timestamp=t, value=float(k * 7 + s % 13) + 0.25)
        out.append(bytes(cramjam.snappy.compress_raw(req.SerializeToString())))
    return out


def in_process(size: str) -> list[Measurement]:
    from detector.source.ingest.remote_write import SeriesCache, ingest_remote_write
    from detector.source.store import SampleStore

    store = SampleStore(retention=None)
    cache = SeriesCache()  # as `remote_write_router` keeps one per receiver
    bodies = [b for c in range(CLIENTS) for b in build_requests(c, REQUESTS[size])]
    for b in bodies[: len(bodies) // 10]:  # warm-up: series creation is a one-off cost
        ingest_remote_write(store, b, 64 * 2**20, cache)
    rest = bodies[len(bodies) // 10 :]
    c0, w0 = time.process_time(), time.perf_counter()
    accepted = 0
    for b in rest:
        accepted += ingest_remote_write(store, b, 64 * 2**20, cache).accepted
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rate = accepted / cpu
    expected = len(rest) * SAMPLES_PER_REQUEST
    return [
        Measurement(
            "ingest",
            "remote_write into the store, in process (samples/s per core)",
            rate,
            "samples/s",
            f">= {INGEST_TARGET:,.0f}",
            rate >= INGEST_TARGET if size != "smoke" else None,
            note=f"{accepted:,} of {expected:,} samples accepted, 2,000 series x 1 sample per request",
            extra={"cpu_s": cpu, "wall_s": wall, "accepted": accepted, "expected": expected},
        )
    ]


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _other_cpu() -> list[str]:
    """``taskset -c N`` for a CPU this process is not pinned to (empty when not possible)."""
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return []
    mine = os.sched_getaffinity(0)
    others = sorted(set(range(os.cpu_count() or 1)) - mine)
    return ["taskset", "-c", str(others[0])] if others else []


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = _READY_TIMEOUT) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _push(url: str, payloads: Sequence[Sequence[bytes]], params: dict[str, str] | None = None) -> dict[str, float]:
    """Send each client's payloads in order on its own connection, clients in parallel."""
    import httpx

    headers = {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    ok = [0] * len(payloads)
    bad = [0] * len(payloads)
    errors: list[str] = []

    def client(i: int) -> None:
        with httpx.Client(timeout=60.0) as c:
            for body in payloads[i]:
                r = c.post(url, content=body, headers=headers, params=params)
                if r.status_code in (200, 204):
                    ok[i] += 1
                else:
                    bad[i] += 1
                    if len(errors) < 3:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    samples = sum(ok) * SAMPLES_PER_REQUEST
    return {"wall_s": wall, "samples": samples, "rate": samples / wall, "failed_requests": sum(bad), "errors": errors}  # type: ignore[dict-item]


def side_by_side(size: str, workdir: Path) -> list[Measurement]:
    prometheus = shutil.which("prometheus")
    cpu = _other_cpu()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    out: list[Measurement] = []
    results: dict[str, dict[str, float]] = {}

    # csf serve with one push pipeline
    cfg = workdir / "push.yaml"
    cfg.write_text("evaluation_interval: 300s\npipelines:\n  - name: pushed\n    source: {type: push}\n", encoding="utf-8")
    port = _free_port()
    log = open(workdir / "csf.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*cpu, sys.executable, "-m", "detector.cli", "serve", "--config", str(cfg), "--port", str(port),
         "--data-dir", str(workdir / "csf-data")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", proc)
        payloads = [build_requests(c, REQUESTS[size]) for c in range(CLIENTS)]
        results["csf"] = _push(f"http://127.0.0.1:{port}/api/v1/write", payloads)
        results["csf"]["server_rss_bytes"] = rss_bytes(proc.pid) or 0
    finally:
        _stop(proc)
        log.close()

    if prometheus:
        pcfg = workdir / "prometheus.yml"
        pcfg.write_text("global:\n  scrape_interval: 1h\n", encoding="utf-8")
        pport = _free_port()
        plog = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
        pproc = subprocess.Popen(
            [*cpu, prometheus, f"--config.file={pcfg}", f"--storage.tsdb.path={workdir / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{pport}", "--web.enable-remote-write-receiver", "--log.level=warn"],
            stdout=plog, stderr=subprocess.STDOUT, env={**env, "GOMAXPROCS": "1"}, cwd=workdir,
        )
        try:
            _wait(f"http://127.0.0.1:{pport}/-/ready", pproc)
            payloads = [build_requests(c, REQUESTS[size]) for c in range(CLIENTS)]
            results["prometheus"] = _push(f"http://127.0.0.1:{pport}/api/v1/write", payloads)
            results["prometheus"]["server_rss_bytes"] = rss_bytes(pproc.pid) or 0
        finally:
            _stop(pproc)
            plog.close()

    ours = results["csf"]
    pinned = f"server pinned to CPU {cpu[-1]}" if cpu else "server not pinned"
    out.append(
        Measurement(
            "ingest",
            "remote_write over HTTP, csf serve (samples/s, one core)",
            ours["rate"],
            "samples/s",
            f">= {INGEST_TARGET:,.0f}",
            ours["rate"] >= INGEST_TARGET and not ours["failed_requests"],
            note=f"{ours['samples']:,.0f} samples, {ours['failed_requests']:.0f} failed requests; {pinned}",
            extra=results,
        )
    )
    if "prometheus" in results:
        theirs = results["prometheus"]
        out.append(
            Measurement(
                "ingest",
                "remote_write over HTTP, Prometheus 1 core (samples/s)",
                theirs["rate"],
                "samples/s",
                note=f"{theirs['samples']:,.0f} samples, {theirs['failed_requests']:.0f} failed requests; GOMAXPROCS=1",
            )
        )
        out.append(Measurement("ingest", "csf / Prometheus ingestion ratio", ours["rate"] / theirs["rate"], "ratio"))
    return out


# --------------------------------------------------------------------------- memory


def memory_per_sample(size: str) -> list[Measurement]:
    import numpy as np

    from benchmarks.data import DAY, ORIGIN
    from detector.sim.simulator import Simulator
    from detector.source.store import SampleStore

    days = STREAM_DAYS[size]
    sim = Simulator("sequence", 1, origin=ORIGIN, history=days * DAY + DAY)
    t0, t1 = ORIGIN - days * DAY, ORIGIN
    series = list(sim.generate(t0, t1))
    bulk = SampleStore(retention=8 * DAY)
    for name, _typ, labels, ts, vals in series:
        bulk.append(name, labels, ts, vals)
    streamed = SampleStore(retention=8 * DAY)
    rss0 = rss_bytes() or 0
    steps = len(series[0][3])
    keys = [(name, dict(labels)) for name, _typ, labels, _ts, _vals in series]
    columns = [np.asarray(vals) for *_, vals in series]
    ts = series[0][3]
    c0 = time.process_time()
    for k in range(steps):
        t = float(ts[k])
        for (name, labels), vals in zip(keys, columns, strict=True):
            streamed.append(name, labels, t, vals[k])
    cpu = time.process_time() - c0
    rss1 = rss_bytes() or 0
    out = []
    for label, store in (("one sample per series per minute", streamed), ("bulk write", bulk)):
        per = store.memory_bytes() / store.sample_count()
        out.append(
            Measurement(
                "memory",
                f"bytes per stored sample, {label}",
                per,
                "B",
                f"<= {BYTES_TARGET:g} B",
                per <= BYTES_TARGET if size != "smoke" else None,
                note=f"{store.sample_count():,} samples in {store.series_count()} series, {days:g} days",
            )
        )
    n = streamed.sample_count()
    out.append(
        Measurement(
            "memory",
            "single-sample appends per second (store only)",
            n / cpu,
            "samples/s",
            note=f"process RSS grew {(rss1 - rss0) / 2**20:,.0f} MiB for {n:,} samples",
        )
    )
    return out


def serve_rss(size: str, workdir: Path) -> list[Measurement]:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    port = _free_port()
    log = open(workdir / "serve-default.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "serve", "--port", str(port), "--data-dir", str(workdir / "serve-data"),
         "--evaluation-interval", "10s"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    try:
        t0 = time.perf_counter()
        _wait(f"http://127.0.0.1:{port}/readyz", proc)
        ready = time.perf_counter() - t0
        time.sleep(15.0 if size != "smoke" else 2.0)  # a few evaluations on the full history
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        rss = rss_bytes(proc.pid) or 0
        hwm = 0
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    finally:
        _stop(proc)
        log.close()
    samples = [ln for ln in metrics.splitlines() if ln.startswith("csf_store_samples")]
    return [
        Measurement(
            "memory",
            "csf serve RSS, default pack, 7 days retained",
            float(rss),
            "B",
            f"<= {RSS_TARGET / 2**20:.0f} MiB",
            rss <= RSS_TARGET,
            note=f"peak {hwm / 2**20:,.0f} MiB; ready after {ready:.0f}s; {samples[0] if samples else ''}",
            extra={"rss_bytes": rss, "hwm_bytes": hwm, "ready_s": ready},
        )
    ]


def run(size: str) -> list[Measurement]:
    out = [*in_process(size), *memory_per_sample(size)]
    if size == "smoke":
        return out
    with tempfile.TemporaryDirectory(prefix="csf-ingest-") as tmp:
        out += side_by_side(size, Path(tmp))
        out += serve_rss(size, Path(tmp))
    return out
