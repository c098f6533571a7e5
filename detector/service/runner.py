"""The evaluation loop: one scheduled job per pipeline, isolated from every failure.

For each configured pipeline the runner builds a data feed (for the embedded
simulator: sample store + simulator + `NativeSource`), a `Pipeline`, and a clock.
The simulator clock runs ``speed`` times faster than the wall clock:
``simulated = origin + (wall - wall0) * speed`` with ``origin = wall0``: simulated time
starts at the real start time, which is also offset 0 of the scenario (the history
before it plays the scenario's first phase).

On its first run a pipeline's job fills the simulated history the pack's lookback
needs (plus the warm-up span) and replays the recent past to rebuild hysteresis;
then every run advances the feed to now, evaluates, publishes the snapshot, records
it to the state database and updates the metrics. Any exception inside one run is
caught, logged with its traceback and counted as ``outcome="error"``; the next run
proceeds as usual. State write failures are counted and logged once per kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from detector.evidence import Evaluation
from detector.pack import Pack
from detector.service.state import StateError, StateStore
from detector.timefmt import format_time
from exporters.prometheus import PipelineSnapshot, ServiceMetrics

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from detector.service.config import Config, PipelineConfig

log = logging.getLogger("csf.runner")

HISTORY_CHUNK = 6 * 3600.0
"""Simulated seconds written per step while filling history (lets shutdown interrupt it)."""


class Evaluator(Protocol):
    """What the runner needs from `detector.pipeline.Pipeline`."""

    @property
    def binding_changes(self) -> int: ...

    def evaluate(self, now: float) -> Evaluation: ...

    def warm_up(self, now: float, evaluations: int, every: float) -> None: ...


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


@dataclass
class PipelineHandle:
    """Everything the runner drives for one pipeline."""

    name: str
    pack: Pack
    pipeline: Evaluator
    clock: Callable[[], float]
    rate: float = 1.0
    """Clock seconds per wall second (the simulator speed): spacing of warm-up evaluations."""
    feed: Feed | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    """Description of the source for the API."""
    source_up: Callable[[], bool] = lambda: True
    """Source status before the first evaluation (the embedded simulator is always up)."""


@dataclass
class _Runtime:
    handle: PipelineHandle
    prepared: bool = False
    latest: Evaluation | None = None
    successes: int = 0
    errors: int = 0
    changes_seen: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def build_handle(
    pc: PipelineConfig, evaluation_interval: float, wall0: float, wall: Callable[[], float]
) -> PipelineHandle:
    """Store + simulator + native source + pipeline for one configured simulator pipeline."""
    from detector.native import NativeSource
    from detector.pipeline import Pipeline
    from detector.service.config import SimulatorSource
    from detector.simulator import Simulator
    from detector.store import SampleStore

    src = pc.source
    if not isinstance(src, SimulatorSource):  # pragma: no cover - only simulator sources exist yet
        raise ValueError(f"pipeline {pc.name!r}: unsupported source type {src.type!r}")
    history = history_span(pc.pack, evaluation_interval * src.speed)
    clock = SimulatedClock(origin=wall0, wall0=wall0, speed=src.speed, wall=wall)
    store = SampleStore(retention=history + 3600.0)
    # Scenario offset 0 is the service start; the history before it plays the first phase.
    simulator = Simulator(src.scenario, seed=src.seed, origin=wall0, interval=src.interval, history=history)
    source = NativeSource(store)
    return PipelineHandle(
        name=pc.name,
        pack=pc.pack,
        pipeline=Pipeline(pc.name, pc.pack, source),
        clock=clock,
        rate=src.speed,
        feed=SimulatorFeed(simulator, store, history),
        source=src.describe(),
    )


def warm_up_count(pack: Pack) -> int:
    """Evaluations replayed at start to rebuild the hysteresis counters."""
    return pack.hysteresis.enter_after + pack.hysteresis.exit_after


def history_span(pack: Pack, every: float) -> float:
    """Data the first evaluation and the warm-up need: lookback + warm-up span + one status window."""
    return pack.windows.lookback + warm_up_count(pack) * every + pack.windows.status_window


class Runner:
    """Schedules and guards the evaluations of every pipeline."""

    def __init__(
        self,
        handles: Sequence[PipelineHandle],
        *,
        evaluation_interval: float,
        metrics: ServiceMetrics,
        state: StateStore | None = None,
        warm_up: bool = True,
    ) -> None:
        if not handles:
            raise ValueError("a runner needs at least one pipeline")
        names = [h.name for h in handles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pipeline names: {names}")
        if evaluation_interval <= 0:
            raise ValueError(f"evaluation_interval must be > 0, got {evaluation_interval}")
        self.evaluation_interval = evaluation_interval
        self.metrics = metrics
        self.state = state
        self._warm_up = warm_up
        self._runtimes = {h.name: _Runtime(h) for h in handles}
        self._stop = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._logged_state_errors: set[str] = set()
        self._log_lock = threading.Lock()
        for name in names:
            metrics.add_pipeline(name)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        metrics: ServiceMetrics,
        state: StateStore | None,
        wall: Callable[[], float] = time.time,
    ) -> Runner:
        wall0 = wall()
        handles = [build_handle(pc, config.evaluation_interval, wall0, wall) for pc in config.pipelines]
        return cls(handles, evaluation_interval=config.evaluation_interval, metrics=metrics, state=state)

    # ------------------------------------------------------------------ queries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._runtimes)

    def handle(self, name: str) -> PipelineHandle:
        return self._runtimes[name].handle

    def latest(self, name: str) -> Evaluation | None:
        return self._runtimes[name].latest

    def is_ready(self, name: str) -> bool:
        return self._runtimes[name].latest is not None

    @property
    def ready(self) -> bool:
        """True once every pipeline has completed one successful evaluation."""
        return all(rt.latest is not None for rt in self._runtimes.values())

    def counts(self, name: str) -> tuple[int, int]:
        """(successful, failed) evaluations of `name` since start."""
        rt = self._runtimes[name]
        return rt.successes, rt.errors

    def last_error(self, name: str) -> str | None:
        return self._runtimes[name].last_error

    def snapshots(self) -> list[PipelineSnapshot]:
        out = []
        for name, rt in self._runtimes.items():
            latest = rt.latest
            up = latest.source_up if latest is not None else rt.handle.source_up()
            out.append(PipelineSnapshot(name=name, pack=rt.handle.pack, latest=latest, source_up=up))
        return out

    # ------------------------------------------------------------------ one run

    def run_once(self, name: str) -> Evaluation | None:
        """One guarded run of pipeline `name`; returns the evaluation, or None when it failed.

        Never raises (except for an unknown name): failures are logged and counted.
        """
        rt = self._runtimes[name]
        if not rt.lock.acquire(blocking=False):
            log.debug("evaluation still running, skipped", extra={"pipeline": name})
            return None
        try:
            return self._run(rt)
        finally:
            rt.lock.release()

    def _run(self, rt: _Runtime) -> Evaluation | None:
        h = rt.handle
        duration: float | None = None
        try:
            if not rt.prepared:
                self._prepare(rt)
            now = h.clock()
            if h.feed is not None:
                h.feed.advance(now)
            started = time.perf_counter()
            try:
                evaluation = h.pipeline.evaluate(now)
            finally:
                duration = time.perf_counter() - started
        except Interrupted:
            log.info("preparation interrupted by shutdown", extra={"pipeline": h.name})
            return None
        except Exception as exc:
            rt.errors += 1
            rt.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.evaluated(h.name, "error", duration)
            log.error("evaluation failed", exc_info=True, extra={"pipeline": h.name, "error": rt.last_error})
            return None
        rt.latest = evaluation
        rt.successes += 1
        rt.last_error = None
        self.metrics.evaluated(h.name, "success", duration)
        changes = h.pipeline.binding_changes
        self.metrics.binding_changed(h.name, changes - rt.changes_seen)
        rt.changes_seen = changes
        self._record(h.name, evaluation)
        log.debug(
            "evaluated",
            extra={
                "pipeline": h.name,
                "evaluated_at": format_time(evaluation.time),
                "binding": evaluation.binding,
                "decision": evaluation.decision,
                "seconds": round(duration, 4),
            },
        )
        return evaluation

    def _prepare(self, rt: _Runtime) -> None:
        h = rt.handle
        now = h.clock()
        started = time.perf_counter()
        if h.feed is not None:
            h.feed.prepare(now, self._stop)
        filled = time.perf_counter() - started
        evaluations = warm_up_count(h.pack) if self._warm_up else 0
        if evaluations:
            h.pipeline.warm_up(now, evaluations, self.evaluation_interval * h.rate)
        rt.changes_seen = h.pipeline.binding_changes
        rt.prepared = True
        log.info(
            "pipeline prepared",
            extra={
                "pipeline": h.name,
                "history_seconds": round(filled, 3),
                "warm_up_evaluations": evaluations,
                "warm_up_seconds": round(time.perf_counter() - started - filled, 3),
            },
        )

    def _record(self, name: str, evaluation: Evaluation) -> None:
        if self.state is None:
            return
        try:
            self.state.record(evaluation)
        except StateError as exc:
            self.metrics.state_write_failed(name)
            with self._log_lock:
                first = exc.kind not in self._logged_state_errors
                self._logged_state_errors.add(exc.kind)
            # Once per kind at error level; repeats only at debug level.
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "state write failed",
                extra={"pipeline": name, "kind": exc.kind, "error": str(exc)},
            )
        except Exception:  # a bug in the store must not stop the loop either
            self.metrics.state_write_failed(name)
            log.exception("state write failed unexpectedly", extra={"pipeline": name})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start one interval job per pipeline; the first run starts immediately."""
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        if self._scheduler is not None:
            raise RuntimeError("runner already started")
        self._stop.clear()
        scheduler = BackgroundScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for name in self._runtimes:
            scheduler.add_job(
                self.run_once,
                IntervalTrigger(seconds=self.evaluation_interval, timezone=UTC),
                args=(name,),
                id=f"evaluate:{name}",
                name=f"evaluate {name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=now,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "runner started",
            extra={"pipelines": ",".join(self._runtimes), "evaluation_interval": self.evaluation_interval},
        )

    def stop(self) -> None:
        """Stop scheduling, wait for running evaluations, close the state database."""
        self._stop.set()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        if self.state is not None:
            self.state.close()
        log.info("runner stopped")


__all__ = [
    "Evaluator",
    "Feed",
    "PipelineHandle",
    "Runner",
    "SimulatedClock",
    "SimulatorFeed",
    "build_handle",
    "history_span",
    "warm_up_count",
]
