"""Helpers for tests that run real binaries (Prometheus, promtool) and local HTTP servers.

Rule for external binaries: a test that needs one is skipped with a clear reason when
it is missing locally, and FAILS when the environment says ``CI=true`` (CI must have
every binary installed).

Every wait here is bounded; every process and server started is stopped by its owner.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"


DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "victoria-metrics": "victoria-metrics",
    "chromium": "chromium",
}


def in_ci() -> bool:
    """CI=true (any case) makes a missing binary a failure instead of a skip."""
    return os.environ.get("CI", "").lower() == "true"


def require_binary(name: str) -> str:
    """Path of an external binary (a name, or a path such as /usr/bin/promtool).

    Looks at the path itself, then PATH, then /usr/bin. Missing: skip with the Debian
    package to install, or FAIL when CI=true (CI must have every binary).
    """
    base = os.path.basename(name)
    for candidate in (name if os.sep in name else None, shutil.which(base), f"/usr/bin/{base}"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    package = DEBIAN_PACKAGES.get(base, base)
    reason = f"{base} is not installed (Debian package {package!r}; scripts/install-system-deps installs it)"
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll `check` until it is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - polled checks may fail until ready
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:g}s waiting for {what}" + (f": {last_exc!r}" if last_exc else "")
    )


class _Server:
    """A server subprocess with its log file: `log_tail`, `stop` (terminate, bounded wait,
    kill) and use as a context manager that stops it."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: Any

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusProcess(_Server):
    """A real Prometheus on 127.0.0.1:<random port>, stopped by `stop()` (or the context manager)."""

    def __init__(
        self, tmp: Path, config_yaml: str, *, data_dir: Path | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        binary = require_binary(PROMETHEUS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "prometheus.yml"
        self.config_path.write_text(config_yaml)
        self.data_dir = data_dir if data_dir is not None else tmp / "data"
        self.log_path = tmp / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            return httpx.get(self.url + "/-/ready", timeout=1.0).status_code == 200

        wait_until(ready, timeout, 0.1, "prometheus /-/ready")




VICTORIA_METRICS_REPLAY_FLAGS = (
    "-search.latencyOffset=0s",
    "-search.disableCache",
    "-search.maxLookback=5m",
)
"""Flags under which VictoriaMetrics answers exactly the grid asked for, over old data.

``-search.latencyOffset=0s``: a query does not hide the newest samples (default: 30 s;
VictoriaMetrics keeps at least 1 s). ``-search.disableCache``: every answer is computed
from the raw data, and ``query_range`` keeps the requested start and end (with the cache,
a grid of 50 points or more is moved onto multiples of the step; csf sends ``nocache=1``
for that reason too). ``-search.maxLookback=5m``: instant selectors look back 5 minutes,
as Prometheus' default ``--query.lookback-delta`` (VictoriaMetrics would otherwise derive
the lookback from the data's own interval)."""


def _prometheus_text_line(line: str) -> tuple[str, str, int] | None:
    """One OpenMetrics sample line as (Prometheus text line, series, timestamp in ms).

    None for comments (``# HELP``/``# TYPE``/``# EOF``) and blank lines. OpenMetrics stamps
    samples in (possibly fractional) seconds, the Prometheus text format in integer
    milliseconds; an exemplar (`` # {...} ...``) is dropped."""
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return None
    brace = line.rfind("}")
    if brace >= 0:
        series, rest = line[: brace + 1], line[brace + 1 :]
    else:
        series, _, rest = line.partition(" ")
    fields = rest.split(" # ", 1)[0].split()
    if len(fields) != 2:
        raise ValueError(f"expected '<series> <value> <timestamp>', got {line!r}")
    value, stamp = fields
    ms = int(round(float(stamp) * 1000))
    return f"{series} {value} {ms}", series, ms


class VictoriaMetricsProcess(_Server):
    """A real single-node VictoriaMetrics on 127.0.0.1:<random port> (Debian's victoria-metrics).

    ``-retentionPeriod=100y`` keeps the tests' old timestamps (2023). `search_flags`
    defaults to `VICTORIA_METRICS_REPLAY_FLAGS`; ``()`` runs VictoriaMetrics' own defaults,
    as a user's server would.
    """

    def __init__(self, tmp: Path, *, search_flags: tuple[str, ...] = VICTORIA_METRICS_REPLAY_FLAGS) -> None:
        binary = require_binary(VICTORIA_METRICS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "victoria-metrics.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={tmp / 'vm-data'}",
                "-retentionPeriod=100y",
                "-loggerLevel=WARN",
                *search_flags,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"victoria-metrics exited with {self.proc.returncode}: {self.log_tail()}")
            return httpx.get(self.url + "/health", timeout=1.0).status_code == 200

        wait_until(ready, timeout, 0.1, "victoria-metrics /health")

    def import_store(self, store: Any, batch_series: int = 200) -> int:
        """Import every series of a `SampleStore` (JSON-lines import API); returns the samples sent.

        Waits, bounded, until queries see every series and every sample."""
        import json

        lines: list[str] = []
        total = series = 0
        lo, hi = math.inf, -math.inf
        with httpx.Client(timeout=120.0) as client:

            def flush() -> None:
                if lines:
                    r = client.post(self.url + "/api/v1/import", content="\n".join(lines).encode())
                    assert r.status_code == 204, r.text[:500]
                    lines.clear()

            for name in store.names():
                for labels, ts, vals in store.select(name):
                    metric = {"__name__": name, **dict(labels)}
                    stamps = [int(round(t * 1000)) for t in ts]
                    lines.append(json.dumps({"metric": metric, "values": vals.tolist(), "timestamps": stamps}))
                    total += len(ts)
                    series += 1
                    if stamps:
                        lo, hi = min(lo, stamps[0]), max(hi, stamps[-1])
                    if len(lines) >= batch_series:
                        flush()
            flush()
            self._wait_searchable(client, series, total, lo, hi)
        return total

    def import_prometheus_text(self, path: Path, chunk_bytes: int = 8 << 20) -> tuple[int, int]:
        """Import an OpenMetrics (or Prometheus text) file with timestamps through
        ``/api/v1/import/prometheus``, in requests of about `chunk_bytes`; returns
        (series, samples) sent.

        Timestamps are rewritten to integer milliseconds, the unit of the Prometheus text
        format. Waits, bounded, until queries see every series and every sample."""
        series: set[str] = set()
        samples = 0
        lo, hi = math.inf, -math.inf
        buf: list[str] = []
        size = 0
        with httpx.Client(timeout=120.0) as client:

            def flush() -> None:
                nonlocal size
                if buf:
                    r = client.post(self.url + "/api/v1/import/prometheus", content="".join(buf).encode())
                    assert r.status_code == 204, f"HTTP {r.status_code}: {r.text[:500]}"
                    buf.clear()
                    size = 0

            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    converted = _prometheus_text_line(line)
                    if converted is None:
                        continue
                    text, key, ms = converted
                    series.add(key)
                    samples += 1
                    lo, hi = min(lo, ms), max(hi, ms)
                    buf.append(text + "\n")
                    size += len(text) + 1
                    if size >= chunk_bytes:
                        flush()
            flush()
            self._wait_searchable(client, len(series), samples, lo, hi)
        return len(series), samples

    def _wait_searchable(self, client: httpx.Client, series: int, samples: int, lo: float, hi: float) -> None:
        """Force the imported data into searchable parts, then poll (bounded) until a series
        count and a sample count over [lo, hi] (ms) see all of it."""
        r = client.get(self.url + "/internal/force_flush")
        assert r.status_code == 200, r.text[:500]
        if series == 0:
            return
        # count_over_time over (hi - window, hi] with the window one minute wider than the data
        window_s = int((hi - lo) / 1000) + 60
        count_query = {"query": f'sum(count_over_time({{__name__=~".+"}}[{window_s}s]))', "time": f"{hi / 1000:.3f}"}

        def visible() -> bool:
            r = client.get(self.url + "/api/v1/series/count")
            if r.status_code != 200 or int(r.json()["data"][0]) < series:
                return False
            r = client.post(self.url + "/api/v1/query", data=count_query)
            result = r.json()["data"]["result"] if r.status_code == 200 else []
            return bool(result) and int(float(result[0]["value"][1])) == samples

        try:
            wait_until(visible, 60.0, 0.2, f"victoria-metrics to serve {series} series and {samples} samples")
        except AssertionError as exc:  # e.g. samples older than -retentionPeriod: dropped, yet HTTP 204
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None




@contextlib.contextmanager
def prometheus(tmp: Path, config_yaml: str, **kwargs: Any) -> Iterator[PrometheusProcess]:
    proc = PrometheusProcess(tmp, config_yaml, **kwargs)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def serve_asgi(app: Any, timeout: float = 15.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1:<random port>; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout, 0.05, "uvicorn start")
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
