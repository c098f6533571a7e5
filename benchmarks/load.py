"""Load test of a real `csf serve` on loopback: ``python -m benchmarks.load --duration 180``.

Starts ``csf serve`` (a subprocess, its own port and data directory) with two pipelines:

* ``default`` — the built-in simulator and default pack (what ``make run`` serves);
* ``pushed`` — a ``push`` source fed by this test over Prometheus remote_write.

Then, for `duration` seconds, closed-loop workers (each sends its next request when the
previous one answered) run concurrently:

* **scrape** — ``GET /metrics`` (what Prometheus does every 15-60 s, here back to back);
* **status** — ``GET /api/v1/status`` (the read API; alternating between both pipelines);
* **remote_write** — ``POST /api/v1/write`` of the simulator's real platform metrics (the
  504 series of the default pack's input contract), `steps_per_write` samples per series
  per request, timestamps advancing 15 s per step from six days ago, like a Prometheus
  sending its backlog. Each writer owns a disjoint `load_writer` label, so its series
  stay in time order.

Evaluations keep running under the load (``evaluation_interval``). Every request has a
timeout; the run stops at `duration` or after `max_requests` per endpoint, whichever
comes first, and then stops the server (SIGTERM, then SIGKILL). Only 127.0.0.1 is used.

Measured: per endpoint the requests, errors (unexpected status, timeout, connection
error), requests/s and latency p50/p90/p99/max; the server's resident memory (VmRSS
every second) and CPU; the samples the server counted as accepted
(``csf_ingested_samples_total``) against the samples sent; evaluations done and failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import machine, rss_bytes

STEP_SECONDS = 15.0
"""Simulated scrape interval of the pushed data."""
REQUEST_TIMEOUT = 10.0
READY_TIMEOUT = 120.0
RW_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "csf-load/1",
}
EXPECTED_STATUS = {"scrape": 200, "status": 200, "remote_write": 204}


@dataclass(frozen=True)
class LoadConfig:
    duration: float = 180.0
    scrape_workers: int = 2
    status_workers: int = 2
    write_workers: int = 2
    steps_per_write: int = 4
    evaluation_interval: str = "15s"
    max_requests: int = 200_000
    """Per endpoint."""
    sample_interval: float = 1.0
    """Seconds between RSS/CPU samples of the server."""
    workdir: str | None = None
    """Where the server's config, data and log go (default: a temporary directory, removed)."""
    simulator: bool = True
    """Serve the ``default`` simulator pipeline too (False: only ``pushed``; starts in ~2 s)."""
    cycle_steps: int = 240
    """The pushed values repeat every `cycle_steps` steps (240: 1 h of simulated data)."""
    resend: bool = False
    """Writers re-send the same `cycle_steps` steps over and over (timestamps included): after
    the first cycle every sample is an exact duplicate (answered 204, stored once), so the
    server's memory must stay flat; a leak test of the write path."""
    synthetic_series: int = 0
    """> 0: push this many synthetic ``csf_load_series`` random walks instead of the simulator's
    metrics (no simulator start-up cost; for the smoke test)."""


@dataclass
class EndpointStats:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = f"{kind}: {detail[:300]}"

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "ok": len(lat),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "first_error": self.first_error,
            "requests_per_second": self.requests / seconds if seconds > 0 else math.nan,
            "p50_ms": percentile(lat, 50) * 1000,
            "p90_ms": percentile(lat, 90) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": (lat[-1] if lat else math.nan) * 1000,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an ascending sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def trend_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; NaN with fewer than 2 points."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return math.nan
    return sum((t - mt) * (v - mv) for t, v in points) / var * 60.0


# --------------------------------------------------------------------------- remote_write bodies


class WriteBodies:
    """Remote-write bodies of the simulator's series for one writer, in time order."""

    def __init__(
        self, writer: int, steps_per_write: int, start: float, values: list[Any], resend: bool = False
    ) -> None:
        """`values`: [(name, labels, values per step)], the steps repeating cyclically; with
        `resend` the timestamps repeat too (every cycle re-sends the same samples)."""
        self.resend = resend
        import cramjam

        from detector.source.ingest.remote_pb import messages

        self._compress = cramjam.snappy.compress_raw
        self.steps = steps_per_write
        self.next_step = 0
        self.start = start
        self.values = values  # [(name, labels, values per step, cyclic)]
        self.request = messages().WriteRequest()
        self.samples: list[Any] = []
        for name, labels, _ in values:
            ts = self.request.timeseries.add()
            ts.labels.add(name="__name__", value=name)
            for k, v in sorted({**labels, "load_writer": str(writer)}.items()):
                ts.labels.add(name=k, value=v)
            row = [ts.samples.add() for _ in range(steps_per_write)]
            self.samples.append(row)
        self.samples_per_body = len(values) * steps_per_write

    def next_body(self) -> bytes:
        k0 = self.next_step
        self.next_step += self.steps
        cycle = len(self.values[0][2]) if self.values else 1
        base = k0 % cycle if self.resend else k0
        stamps = [int((self.start + (base + j) * STEP_SECONDS) * 1000) for j in range(self.steps)]
        for (_, _, vals), row in zip(self.values, self.samples, strict=True):
            cols = [(k0 + j) % len(vals) for j in range(self.steps)]
            for sample, t_ms, c in zip(row, stamps, cols, strict=True):
                sample.timestamp = t_ms
                sample.value = vals[c]
        return bytes(self._compress(self.request.SerializeToString()))


def synthetic_values(series: int, steps: int, seed: int = 0) -> list[Any]:
    """`series` random walks over `steps` steps: [(name, labels, [float])]."""
    import numpy as np

    walks = np.cumsum(np.random.default_rng(seed).normal(size=(series, steps)), axis=1)
    return [("csf_load_series", {"series": str(i)}, walks[i].tolist()) for i in range(series)]


def simulator_values(origin: float, steps: int) -> list[Any]:
    """Every series of the default scenario over `steps` steps: [(name, labels, [float])]."""
    from detector.sim.simulator import Simulator

    sim = Simulator("sequence", 1, origin=origin, interval=STEP_SECONDS)
    t0 = origin
    out = []
    for name, _typ, labels, _ts, values in sim.generate(t0, t0 + steps * STEP_SECONDS):
        out.append((name, dict(labels), [float(v) for v in values]))
    return out


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_server(workdir: Path, evaluation_interval: str, simulator: bool = True) -> Server:
    port = free_port()
    config = workdir / "csf.yaml"
    config.write_text(
        "host: 127.0.0.1\n"
        f"port: {port}\n"
        "data_dir: ./data\n"
        f"evaluation_interval: {evaluation_interval}\n"
        "log_level: warning\n"
        "pipelines:\n"
        + ("  - name: default\n    source: {type: simulator}\n" if simulator else "")
        + "  - name: pushed\n    source: {type: push}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    log_path = workdir / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector.cli", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
        )
    return Server(proc, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(f"csf serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"csf serve not ready within {timeout:.0f}s:\n{server.log_tail()}")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (None when unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingested(metrics_text: str, pipeline: str = "pushed") -> dict[str, float]:
    """csf_ingested_samples_total of `pipeline` by result, from a /metrics exposition."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("csf_ingested_samples_total{") and f'pipeline="{pipeline}"' in line:
            labels, _, value = line.rpartition(" ")
            result = labels.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(value)
    return out


# --------------------------------------------------------------------------- the load


async def _worker(
    client: httpx.AsyncClient,
    stats: EndpointStats,
    deadline: float,
    budget: list[int],
    make_request: Any,
) -> None:
    expected = EXPECTED_STATUS[stats.name]
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        method, path, kwargs = make_request()
        t0 = time.perf_counter()
        try:
            r = await client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            stats.error("timeout", repr(exc))
            continue
        except httpx.TransportError as exc:
            stats.error("transport", repr(exc))
            await asyncio.sleep(0.05)
            continue
        elapsed = time.perf_counter() - t0
        if r.status_code != expected:
            stats.error(f"http_{r.status_code}", r.text)
        else:
            stats.latencies.append(elapsed)


async def _sample_server(
    pid: int, deadline: float, interval: float, t_start: float, out: list[dict[str, float]]
) -> None:
    while True:
        rss = rss_bytes(pid)
        cpu = cpu_seconds(pid)
        if rss is not None and cpu is not None:
            out.append({"t": time.monotonic() - t_start, "rss_mib": rss / 2**20, "cpu_s": cpu})
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def _drive(server: Server, cfg: LoadConfig, bodies: list[WriteBodies]) -> dict[str, Any]:
    stats = {name: EndpointStats(name) for name in EXPECTED_STATUS}
    budgets = {name: [cfg.max_requests] for name in EXPECTED_STATUS}
    sent_samples = [0]
    status_turn = [0]

    def scrape() -> tuple[str, str, dict[str, Any]]:
        return "GET", "/metrics", {}

    def status() -> tuple[str, str, dict[str, Any]]:
        status_turn[0] += 1
        pipeline = "default" if cfg.simulator and status_turn[0] % 2 else "pushed"
        return "GET", "/api/v1/status", {"params": {"pipeline": pipeline}}

    def writer(b: WriteBodies) -> Any:
        def make() -> tuple[str, str, dict[str, Any]]:
            sent_samples[0] += b.samples_per_body
            return "POST", "/api/v1/write", {"content": b.next_body(), "headers": RW_HEADERS}

        return make

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    samples: list[dict[str, float]] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
        client_cpu0 = time.process_time()
        t_start = time.monotonic()
        deadline = t_start + cfg.duration
        tasks = [
            asyncio.create_task(
                _sample_server(server.process.pid, deadline, cfg.sample_interval, t_start, samples)
            )
        ]
        tasks += [
            asyncio.create_task(_worker(client, stats["scrape"], deadline, budgets["scrape"], scrape))
            for _ in range(cfg.scrape_workers)
        ]
        tasks += [
            asyncio.create_task(_worker(client, stats["status"], deadline, budgets["status"], status))
            for _ in range(cfg.status_workers)
        ]
        tasks += [
            asyncio.create_task(
                _worker(client, stats["remote_write"], deadline, budgets["remote_write"], writer(b))
            )
            for b in bodies
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=cfg.duration + 4 * REQUEST_TIMEOUT)
        elapsed = time.monotonic() - t_start
        client_cpu = time.process_time() - client_cpu0
        after = await client.get("/metrics")
        pipelines = (await client.get("/api/v1/pipelines")).json()
    return {
        "elapsed": elapsed,
        "client_cpu_percent": client_cpu / elapsed * 100.0 if elapsed > 0 else math.nan,
        "stats": stats,
        "samples": samples,
        "sent_samples": sent_samples[0],
        "ingested": ingested(after.text),
        "pipelines": pipelines,
    }


def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Start a server, drive the load, stop the server; returns the report (see `render_markdown`)."""
    if cfg.resend and cfg.cycle_steps % cfg.steps_per_write:
        raise ValueError("with resend, cycle_steps must be a multiple of steps_per_write")
    own_dir = cfg.workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="csf-load-") if own_dir else None
    workdir = Path(tmp.name if tmp is not None else str(cfg.workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    origin = time.time() - 6 * 86400.0
    if cfg.write_workers <= 0:
        values = []
    elif cfg.synthetic_series > 0:
        values = synthetic_values(cfg.synthetic_series, cfg.cycle_steps)
    else:
        values = simulator_values(origin, cfg.cycle_steps)
    bodies = [
        WriteBodies(w, cfg.steps_per_write, origin, values, cfg.resend) for w in range(cfg.write_workers)
    ]
    server = start_server(workdir, cfg.evaluation_interval, cfg.simulator)
    try:
        ready_s = wait_ready(server)
        rss_ready = rss_bytes(server.process.pid)
        before = httpx.get(server.url + "/api/v1/pipelines", timeout=REQUEST_TIMEOUT).json()
        result = asyncio.run(_drive(server, cfg, bodies))
        alive = server.process.poll() is None
    finally:
        exit_code = server.stop()
        log_tail = server.log_tail(4000)
        if tmp is not None:
            tmp.cleanup()
    return summarise(cfg, result, before, ready_s, rss_ready, alive, exit_code, log_tail, len(values))


def _evaluations(pipelines: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {p["name"]: dict(p["evaluations"]) for p in pipelines.get("pipelines", [])}


def summarise(
    cfg: LoadConfig,
    result: dict[str, Any],
    before: dict[str, Any],
    ready_s: float,
    rss_ready: int | None,
    alive: bool,
    exit_code: int,
    log_tail: str,
    series: int,
) -> dict[str, Any]:
    elapsed = result["elapsed"]
    samples = result["samples"]
    endpoints = {name: s.summary(elapsed) for name, s in result["stats"].items()}
    rss = [(p["t"], p["rss_mib"]) for p in samples]
    second_half = [(t, v) for t, v in rss if t >= elapsed / 2]
    cpu = [(p["t"], p["cpu_s"]) for p in samples]
    cpu_pct = (
        (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]) * 100.0
        if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]
        else math.nan
    )
    ev_before, ev_after = _evaluations(before), _evaluations(result["pipelines"])
    evaluations = {
        name: {k: ev_after[name][k] - ev_before.get(name, {}).get(k, 0) for k in ev_after[name]}
        for name in ev_after
    }
    stored = next(
        (p["source"].get("store") for p in result["pipelines"]["pipelines"] if p["name"] == "pushed"), None
    )
    checkpoints = {}
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        if rss:
            t_want = frac * elapsed
            checkpoints[f"{int(frac * 100)}%"] = min(rss, key=lambda p: abs(p[0] - t_want))[1]
    accepted = result["ingested"].get("accepted", 0.0)
    stored_mib = (stored or {}).get("samples", 0) * 16 / 2**20
    rss_end = rss[-1][1] if rss else math.nan
    return {
        "config": asdict(cfg),
        "elapsed_s": elapsed,
        "ready_s": ready_s,
        "series_per_writer": series,
        "endpoints": endpoints,
        "total_errors": sum(e["errors"] for e in endpoints.values()),
        "remote_write": {
            "samples_sent": result["sent_samples"],
            "samples_accepted_by_server": accepted,
            "ingest_results": result["ingested"],
            "samples_per_second": accepted / elapsed if elapsed > 0 else math.nan,
            "push_store": stored,
        },
        "server": {
            "rss_at_ready_mib": (rss_ready or 0) / 2**20,
            "rss_mib": checkpoints,
            "rss_max_mib": max((v for _, v in rss), default=math.nan),
            "rss_trend_second_half_mib_per_min": trend_per_minute(second_half),
            "cpu_percent": cpu_pct,
            "rss_growth_mib": rss_end - (rss_ready or 0) / 2**20,
            "stored_sample_mib": stored_mib,
            "alive_at_end": alive,
            "exit_code": exit_code,
            "rss_series": [[round(t, 1), round(v, 1)] for t, v in rss],
        },
        "evaluations": evaluations,
        "client_cpu_percent": result["client_cpu_percent"],
        "load_average": list(os.getloadavg()),
        "log_errors": [line for line in log_tail.splitlines() if "level=error" in line][-5:],
    }


# --------------------------------------------------------------------------- report


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:,.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    rows = [
        "| endpoint | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, e in report["endpoints"].items():
        rows.append(
            f"| {name} | {e['requests']:,} | {e['errors']} | {_fmt(e['requests_per_second'])} | "
            f"{_fmt(e['p50_ms'])} | {_fmt(e['p90_ms'])} | {_fmt(e['p99_ms'])} | {_fmt(e['max_ms'])} |"
        )
    srv = report["server"]
    rw = report["remote_write"]
    rss = ", ".join(f"{k} {_fmt(v)}" for k, v in srv["rss_mib"].items())
    lines = [
        *rows,
        "",
        f"- duration {_fmt(report['elapsed_s'])} s; server ready after {_fmt(report['ready_s'])} s; "
        f"errors {report['total_errors']}",
        f"- remote_write: {rw['samples_sent']:,} samples sent, {rw['samples_accepted_by_server']:,.0f} accepted "
        f"by the server ({_fmt(rw['samples_per_second'], 0)} samples/s; {report['series_per_writer']} series "
        f"x {report['config']['write_workers']} writers, {report['config']['steps_per_write']} samples per series "
        "per request)",
        f"- server RSS (MiB): at ready {_fmt(srv['rss_at_ready_mib'])}; {rss}; max {_fmt(srv['rss_max_mib'])}; "
        f"trend over the second half {_fmt(srv['rss_trend_second_half_mib_per_min'], 2)} MiB/min; "
        f"growth since ready {_fmt(srv['rss_growth_mib'])} MiB for {_fmt(srv['stored_sample_mib'])} MiB of "
        "pushed samples stored (16 bytes each)",
        f"- server CPU {_fmt(srv['cpu_percent'])} % of one core, load generator CPU "
        f"{_fmt(report['client_cpu_percent'])} %; load average at the end "
        f"{', '.join(_fmt(x, 2) for x in report['load_average'])}; alive at the end: {srv['alive_at_end']}; "
        f"exit code after SIGTERM {srv['exit_code']}",
        f"- evaluations during the run: {json.dumps(report['evaluations'])}",
    ]
    if report["log_errors"]:
        lines.append(f"- server log errors: {report['log_errors']}")
    for name, e in report["endpoints"].items():
        if e["first_error"]:
            lines.append(f"- first {name} error: {e['first_error']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    defaults = LoadConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds of load")
    parser.add_argument("--scrape-workers", type=int, default=defaults.scrape_workers)
    parser.add_argument("--status-workers", type=int, default=defaults.status_workers)
    parser.add_argument("--write-workers", type=int, default=defaults.write_workers)
    parser.add_argument("--steps-per-write", type=int, default=defaults.steps_per_write)
    parser.add_argument("--evaluation-interval", default=defaults.evaluation_interval)
    parser.add_argument("--max-requests", type=int, default=defaults.max_requests, help="per endpoint")
    parser.add_argument("--workdir", default=None, help="keep the server's config, data and log here")
    parser.add_argument(
        "--resend",
        action="store_true",
        help="writers re-send one cycle of samples (duplicates after the first)",
    )
    parser.add_argument(
        "--no-simulator", action="store_true", help="serve only the push pipeline (no simulator pipeline)"
    )
    parser.add_argument("--json", default=None, help="write the full report (with the RSS series) here")
    args = parser.parse_args(argv)
    if not (0 < args.duration <= 3600):
        parser.error("--duration must be in (0, 3600] seconds")
    cfg = LoadConfig(
        duration=args.duration,
        scrape_workers=args.scrape_workers,
        status_workers=args.status_workers,
        write_workers=args.write_workers,
        steps_per_write=args.steps_per_write,
        evaluation_interval=args.evaluation_interval,
        max_requests=args.max_requests,
        workdir=args.workdir,
        simulator=not args.no_simulator,
        resend=args.resend,
    )
    report = run_load(cfg)
    report["machine"] = machine()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(render_markdown(report))
    return 0 if report["total_errors"] == 0 and report["server"]["alive_at_end"] else 1


if __name__ == "__main__":
    sys.exit(main())
