"""Helpers for tests that run real binaries (Prometheus, promtool) and local HTTP servers.

Rule for external binaries: a test that needs one is skipped with a clear reason when
it is missing locally, and FAILS when the environment says ``CI=true`` (CI must have
every binary installed).

Every wait here is bounded; every process and server started is stopped by its owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


class PrometheusProcess:
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

    def __enter__(self) -> PrometheusProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VictoriaMetricsProcess:
    """A real single-node VictoriaMetrics on 127.0.0.1:<random port> (Debian's victoria-metrics).

    Flags: ``-retentionPeriod=100y`` keeps the tests' old timestamps;
    ``-search.latencyOffset=0s`` and ``-search.disableCache`` make a query at time t see
    every sample up to t and compute every answer from the raw data, as a test over
    backfilled history needs; ``-search.maxStalenessInterval=5m`` gives instant selectors
    Prometheus' 5-minute lookback (VictoriaMetrics would otherwise derive it from the
    data's own interval).
    """

    def __init__(self, tmp: Path) -> None:
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
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-search.maxStalenessInterval=5m",
                "-loggerLevel=WARN",
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

        Waits, bounded, until a query sees every series."""
        import json

        lines: list[str] = []
        total = series = 0
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
                    if len(lines) >= batch_series:
                        flush()
            flush()
            assert client.get(self.url + "/internal/force_flush").status_code == 200

            def visible() -> bool:
                r = client.get(self.url + "/api/v1/series/count")
                return r.status_code == 200 and int(r.json()["data"][0]) >= series

            wait_until(visible, 60.0, 0.2, f"victoria-metrics to index {series} series")
        return total

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

    def __enter__(self) -> VictoriaMetricsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
