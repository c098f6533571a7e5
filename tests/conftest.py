"""Shared fixtures: free loopback ports, a real `csf serve` subprocess, external binaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from detector.evidence.results import ConstraintResult, Evaluation, MetaReport
from detector.spec.pack import Constraint, Pack
from tests._procs import free_port, in_ci, require_binary  # noqa: F401 - re-exported to the tests

READY_TIMEOUT = 60.0
"""Upper bound for a service to answer /readyz 200."""
STOP_TIMEOUT = 30.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs_binary("promtool")``: skip locally / fail under CI=true when missing."""
    for mark in item.iter_markers(name="needs_binary"):
        for name in mark.args:
            require_binary(name)


@pytest.fixture
def binary() -> Callable[[str], str]:
    """``binary("promtool")`` -> its path; skips locally, fails under CI=true when missing."""
    return require_binary


@pytest.fixture
def loopback_port() -> int:
    return free_port()


@dataclass
class ServerProcess:
    """A running `csf serve` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10.0, **kwargs)  # type: ignore[arg-type]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Poll /readyz until 200 (bounded); returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"csf serve exited early with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2.0)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            else:
                if r.status_code == 200:
                    return time.monotonic() - start
                last = f"{r.status_code} {r.text[:200]}"
            time.sleep(0.2)
        pytest.fail(f"csf serve not ready within {timeout:.0f}s (last: {last}):\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` and wait (bounded) for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                pytest.fail(
                    f"csf serve did not stop within {timeout:.0f}s after signal {sig}:\n{self.log()[-4000:]}"
                )
        return int(self.process.returncode)


def start_csf_server(
    workdir: Path, *extra: str, env: dict[str, str] | None = None, args: Sequence[str] | None = None
) -> ServerProcess:
    """Start `csf serve --port <free> --data-dir <workdir>/data-N <extra>` as a subprocess.

    `args` replaces the port/data-dir arguments. CSF_* variables of the calling
    environment are not inherited; `env` adds variables. Output goes to a log file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("serve-*.log")))
    port = free_port()
    data_dir = workdir / f"data-{n}"
    log_path = workdir / f"serve-{n}.log"
    cmd = [sys.executable, "-m", "detector.cli", "serve"]
    cmd += list(args) if args is not None else ["--port", str(port), "--data-dir", str(data_dir)]
    cmd += list(extra)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    full_env.update(env or {})
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=workdir)
    return ServerProcess(proc, port, data_dir, log_path)


def kill_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture
def csf_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory fixture around `start_csf_server`; every server still running is killed at teardown."""
    started: list[ServerProcess] = []

    def start(
        *extra: str, env: dict[str, str] | None = None, args: Sequence[str] | None = None
    ) -> ServerProcess:
        server = start_csf_server(tmp_path, *extra, env=env, args=args)
        started.append(server)
        return server

    yield start
    for server in started:
        kill_server(server)


# --------------------------------------------------------------------------- constructed evaluations
# Small, hand-built packs and evaluations whose every published value is known.


def make_pack(names: Sequence[str] = ("latency", "protocol", "supply", "meta")) -> Pack:
    layers = {
        "latency": "physics",
        "protocol": "architecture",
        "supply": "resource",
        "cold_start": "information",
    }
    constraints = []
    previous: tuple[str, ...] = ()
    for name in names:
        kind = "meta" if name == "meta" else "signal"
        constraints.append(
            Constraint(
                name=name,
                layer=layers.get(name, "meta"),
                kind=kind,
                predecessors=() if kind == "meta" else previous,
                target=0.3,
            )
        )
        if kind != "meta":
            previous = (name,)
    return Pack(api_version="csf/v1", name="test-pack", version="1.2.3", constraints=tuple(constraints))


def make_result(
    name: str, state: str = "slack", decision: str = "stop", **kwargs: object
) -> ConstraintResult:
    return ConstraintResult(
        name=name,
        layer=kwargs.pop("layer", "physics"),
        state=state,
        decision=decision,
        explanation="test",
        **kwargs,
    )  # type: ignore[arg-type]


def make_evaluation(
    t: float,
    binding: str | None = None,
    decision: str = "stop",
    pipeline: str = "default",
    constraints: Sequence[ConstraintResult] | None = None,
    meta: MetaReport | None = None,
) -> Evaluation:
    if constraints is None:
        constraints = [make_result(n) for n in ("latency", "protocol", "supply", "meta")]
    return Evaluation(
        pipeline=pipeline,
        time=t,
        binding=binding,
        decision=decision,
        explanation=f"binding {binding}",
        constraints=tuple(constraints),
        meta=meta
        or MetaReport(
            cpu_seconds=0.25, wall_seconds=0.5, queries=12, samples_read=3456, memory_bytes=1 << 20
        ),
    )
