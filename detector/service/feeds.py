"""Data feeds of the service's embedded sources: simulated clock, simulator and push feeds, push receivers.

A feed brings a pipeline's sample store up to date before each evaluation: a
``simulator`` pipeline's `SimulatorFeed` plays its scenario into the store (history
first, then incrementally) on a `SimulatedClock`; a ``push`` pipeline's `PushFeed`
only enforces the retention of a store written by its `PushReceiver` (the remote_write
and OTLP endpoints the app forwards the pipeline's requests to). A ``prometheus``
pipeline has no feed. Rules of each source: `detector.service.runner`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import APIRouter

from detector.source.ingest import IngestReport
from detector.source.ingest.otlp import otlp_router
from detector.source.ingest.remote_write import remote_write_router
from detector.timefmt import format_time

HISTORY_CHUNK = 6 * 3600.0
"""Simulated seconds written per step while filling history (lets shutdown interrupt it)."""


class Feed(Protocol):
    """Brings a pipeline's data up to date (embedded sources); None for external sources."""

    def prepare(self, now: float, stop: threading.Event) -> None:
        """Make the history the first evaluation needs available (may be slow)."""
        ...

    def advance(self, now: float) -> None:
        """Bring the data up to `now` and drop what is older than the retention."""
        ...


class Interrupted(Exception):
    """Shutdown was requested while a pipeline was still preparing."""


@dataclass(frozen=True)
class SimulatedClock:
    """``origin + (wall() - wall0) * speed``: simulated seconds advance `speed` times faster."""

    origin: float
    wall0: float
    speed: float = 1.0
    wall: Callable[[], float] = time.time

    def __call__(self) -> float:
        return self.origin + (self.wall() - self.wall0) * self.speed

    @property
    def rate(self) -> float:
        return self.speed


class SimulatorFeed:
    """Plays a simulator into a sample store: history first, then incrementally."""

    def __init__(self, simulator: Any, store: Any, history: float) -> None:
        self.simulator = simulator
        self.store = store
        self.history = history

    def prepare(self, now: float, stop: threading.Event) -> None:
        t = now - self.history
        while t < now:
            if stop.is_set():
                raise Interrupted("shutdown during history fill")
            t1 = min(t + HISTORY_CHUNK, now)
            self.simulator.write_to(self.store, t, t1)
            t = t1

    def advance(self, now: float) -> None:
        self.simulator.advance_to(self.store, now)
        self.store.enforce_retention(now)


class PushFeed:
    """The feed of a ``push`` pipeline: its store is written by the receivers; before each
    evaluation the samples older than the retention are dropped, and the write-ahead log
    (if any) starts a checkpoint when one is due."""

    def __init__(self, store: Any, wal: Any = None) -> None:
        self.store = store
        self.wal = wal

    def prepare(self, now: float, stop: threading.Event) -> None:
        """Nothing to fill: pushed history arrives by itself (or was replayed from the log)."""

    def advance(self, now: float) -> None:
        self.store.enforce_retention(now)
        if self.wal is not None:
            self.wal.maybe_checkpoint()


class PushReceiver:
    """The remote_write (``POST /api/v1/write``) and OTLP (``POST /v1/metrics``) endpoints of
    one ``push`` pipeline, bound to its store.

    `app` is an ASGI app (a FastAPI router holding both routes) the service forwards the
    pipeline's requests to. `observer` (set by the runner) receives every `IngestReport`.
    """

    def __init__(self, store: Any, *, max_body_bytes: int, max_decoded_bytes: int) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self.wal: Any = None
        """The store's write-ahead log (`detector.source.wal.WriteAheadLog`), None without one."""
        self.observer: Callable[[IngestReport], None] | None = None
        router = APIRouter()
        router.include_router(
            remote_write_router(
                store,
                max_body_bytes=max_body_bytes,
                max_decoded_bytes=max_decoded_bytes,
                on_ingest=self._report,
            )
        )
        router.include_router(
            otlp_router(
                store,
                max_body_bytes=max_body_bytes,
                max_decoded_bytes=max_decoded_bytes,
                on_ingest=self._report,
            )
        )
        self.app: Any = router

    def _report(self, report: IngestReport) -> None:
        observer = self.observer
        if observer is not None:
            observer(report)

    def stats(self) -> dict[str, Any]:
        """Series, samples and the newest sample time of the store (for the API)."""
        newest = self.store.newest_timestamp()
        out: dict[str, Any] = {
            "series": self.store.series_count(),
            "samples": self.store.sample_count(),
            "newest_sample": format_time(newest) if newest is not None else None,
            "retention_seconds": self.store.retention,
            "wal": None,
        }
        wal = self.wal
        if wal is not None:
            replay = wal.replay
            out["wal"] = {**wal.stats(), "replayed": replay.to_dict() if replay is not None else None}
        return out


__all__ = [
    "HISTORY_CHUNK",
    "Feed",
    "Interrupted",
    "PushFeed",
    "PushReceiver",
    "SimulatedClock",
    "SimulatorFeed",
]
