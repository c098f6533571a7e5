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

Push mode (`Runner.configure_alertmanager`, from the config's ``alertmanager`` section):
after every evaluation the pipeline's `AlertmanagerPusher` syncs Alertmanager with it
(alert times on the wall clock, never the simulated one), and a job every
`PUSH_FLUSH_INTERVAL` seconds retries failed deliveries and re-sends active alerts.
A push failure never fails the evaluation: it is logged and counted in
``csf_alertmanager_push_failures_total``. Stopping the service resolves nothing: the
pushed alerts expire in Alertmanager unless a restarted service re-sends them.

Sources (`build_handle`): a ``simulator`` pipeline plays its scenario into its own store
on a simulated clock; a ``prometheus`` pipeline queries a Prometheus-compatible API
(`detector.source.prometheus_api.PrometheusSource`) at wall-clock time and has no feed; a ``push``
pipeline owns a store fed only by the remote_write and OTLP receivers (`PushReceiver`,
mounted by the app) and evaluated at wall-clock time. A push store keeps
``history_span(pack, evaluation_interval) + 1 h`` of samples (the pack's lookback, the
warm-up span, one status window and a margin), enforced before each evaluation
(`PushFeed`). Pushed samples and requests are counted per pipeline in
``csf_ingested_samples_total{pipeline,protocol,result}`` and
``csf_ingest_requests_total{pipeline,protocol,code}`` (`exporters.selfmetrics.IngestMetrics`,
created with the first push pipeline). ``csf_source_up`` is the outcome of the latest evaluation (0 when
the source raised `SourceError`); before the first one a Prometheus pipeline probes the
server, the embedded sources are up.

`Runner.reload` swaps in a new configuration without stopping the process: pipelines
whose configuration (pack content included) is unchanged keep running with their
data and hysteresis; changed and new ones are built first (a failure leaves
everything as it was), then swapped in, prepared and warmed up on their first run;
removed ones stop. The state database is kept, and because `StateStore.record`
compares with the newest stored binding, a rebuilt pipeline that reaches the same
answer records no binding change.

Where the parts live: the feeds, clock and push receivers in `detector.service.feeds`,
`PipelineHandle` and `build_handle` in `detector.service.pipelines`, push mode in
`detector.service.alerting`, the service's metrics in `exporters.selfmetrics`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from detector.evidence.results import Evaluation
from detector.service.alerting import PUSH_FLUSH_INTERVAL, AlertPushing, PusherFactory, PusherSlot
from detector.service.config_model import AlertmanagerConfig, Config, PipelineConfig
from detector.service.feeds import Interrupted
from detector.service.pipelines import PipelineHandle, build_handle, warm_up_count
from detector.service.state import StateError, StateStore
from detector.timefmt import format_time
from exporters.collector import PipelineSnapshot
from exporters.selfmetrics import ServiceMetrics

log = logging.getLogger("csf.runner")


@dataclass(frozen=True)
class ReloadResult:
    """What `Runner.reload` did, by pipeline name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    rebuilt: tuple[str, ...] = ()
    """Pipelines whose configuration changed: rebuilt, prepared and warmed up again."""
    unchanged: tuple[str, ...] = ()
    evaluation_interval: float = 0.0
    interval_changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "rebuilt": list(self.rebuilt),
            "unchanged": list(self.unchanged),
            "evaluation_interval": self.evaluation_interval,
            "interval_changed": self.interval_changed,
        }


@dataclass
class _Runtime:
    handle: PipelineHandle
    prepared: bool = False
    latest: Evaluation | None = None
    latest_wall: float | None = None
    """Wall-clock time `latest` finished: what csf_last_evaluation_timestamp_seconds carries."""
    successes: int = 0
    errors: int = 0
    changes_seen: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    push: PusherSlot = field(default_factory=PusherSlot)
    """The pipeline's Alertmanager pusher and its failures (push mode)."""


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
        self._reload_lock = threading.Lock()
        self._configs: dict[str, PipelineConfig] = {}
        """The configuration each pipeline was built from (empty for runners built from handles)."""
        self._wall: Callable[[], float] = time.time
        self._alerts = AlertPushing(metrics, lambda: self._wall())
        for name in names:
            metrics.add_pipeline(name)
        for h in handles:
            self._attach_receiver(h)

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
        handles = [
            build_handle(
                pc, config.evaluation_interval, wall0, wall, max_body_bytes=config.max_body_bytes, data_dir=config.data_dir
            )
            for pc in config.pipelines
        ]
        runner = cls(handles, evaluation_interval=config.evaluation_interval, metrics=metrics, state=state)
        runner._configs = {pc.name: pc for pc in config.pipelines}
        runner._wall = wall
        runner.configure_alertmanager(config.alertmanager, **_push_settings(config))
        return runner

    # ------------------------------------------------------------------ Alertmanager push mode

    def configure_alertmanager(
        self,
        alertmanager: AlertmanagerConfig | None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        generator_url: str | None = None,
        factory: PusherFactory | None = None,
    ) -> None:
        """Turn push mode on (or off with None). `generator_url` may contain ``{pipeline}``.

        Pushers are built on each pipeline's next evaluation (`factory`, default an
        `AlertmanagerPusher` persisting to `state_dir`); an unchanged configuration keeps them.
        """
        self._alerts.configure(
            alertmanager, self._runtimes, state_dir=state_dir, generator_url=generator_url, factory=factory
        )

    def push_failures(self, name: str) -> int:
        """Failed Alertmanager deliveries (and pusher errors) of pipeline `name` since it was built."""
        return self._runtimes[name].push.failures

    @staticmethod
    def _close_pusher(rt: _Runtime) -> None:
        AlertPushing.close(rt.push, rt.handle.name)

    def _push(self, rt: _Runtime, evaluation: Evaluation) -> None:
        """Sync Alertmanager with `evaluation` (called with the runtime's lock held); never raises."""
        self._alerts.sync(rt.push, rt.handle.name, rt.handle.pack, evaluation)

    def flush_alertmanager(self) -> None:
        """Retry failed deliveries and re-send active alerts of every pipeline; never raises."""
        self._alerts.flush([(name, rt.push) for name, rt in list(self._runtimes.items())])

    # ------------------------------------------------------------------ reload

    def reload(self, config: Config) -> ReloadResult:
        """Swap in the pipelines of `config` (rules in the module docstring).

        Every changed or new pipeline is built before anything is swapped; an exception
        from building leaves the runner exactly as it was and propagates.
        """
        with self._reload_lock:
            old_runtimes = self._runtimes
            interval_changed = config.evaluation_interval != self.evaluation_interval
            unchanged = tuple(
                pc.name
                for pc in config.pipelines
                if pc.name in old_runtimes and self._configs.get(pc.name) == pc
            )
            built = self._build_all(config, unchanged, old_runtimes)
            removed = tuple(n for n in old_runtimes if n not in config.pipeline_names)
            added = tuple(n for n in built if n not in old_runtimes)
            rebuilt = tuple(n for n in built if n in old_runtimes)

            scheduler = self._scheduler
            if scheduler is not None:
                for name in removed:
                    self._remove_job(scheduler, name)
            self._runtimes = {
                pc.name: old_runtimes[pc.name] if pc.name in unchanged else _Runtime(built[pc.name])
                for pc in config.pipelines
            }
            self._configs = {pc.name: pc for pc in config.pipelines}
            self.evaluation_interval = config.evaluation_interval
            self.configure_alertmanager(config.alertmanager, **_push_settings(config))
            for name in added:
                self.metrics.add_pipeline(name)
            for name in built:
                takeover = built[name].takeover
                if takeover is not None:
                    takeover()
                self._attach_receiver(built[name])
            if scheduler is not None:
                for name in self._runtimes:
                    trigger = IntervalTrigger(seconds=self.evaluation_interval, timezone=UTC)
                    if name in built:
                        self._add_job(scheduler, name, replace_existing=True)
                    elif interval_changed:
                        scheduler.reschedule_job(f"evaluate:{name}", trigger=trigger)
            for name in (*removed, *rebuilt):
                self._retire(old_runtimes[name])
            result = ReloadResult(
                added=added,
                removed=removed,
                rebuilt=rebuilt,
                unchanged=unchanged,
                evaluation_interval=self.evaluation_interval,
                interval_changed=interval_changed,
            )
            log.info(
                "pipelines reloaded",
                extra={
                    "added": ",".join(added) or "-",
                    "removed": ",".join(removed) or "-",
                    "rebuilt": ",".join(rebuilt) or "-",
                    "unchanged": ",".join(unchanged) or "-",
                    "evaluation_interval": self.evaluation_interval,
                },
            )
            return result

    def _build_all(
        self, config: Config, unchanged: tuple[str, ...], old: dict[str, _Runtime]
    ) -> dict[str, PipelineHandle]:
        """Build every changed or new pipeline of `config`; if one fails, release what the
        others opened (their write-ahead logs) and re-raise: nothing has changed."""
        built: dict[str, PipelineHandle] = {}
        wall0 = self._wall()
        try:
            for pc in config.pipelines:
                if pc.name in unchanged:
                    continue
                built[pc.name] = build_handle(
                    pc,
                    config.evaluation_interval,
                    wall0,
                    self._wall,
                    max_body_bytes=config.max_body_bytes,
                    data_dir=config.data_dir,
                    previous=old[pc.name].handle if pc.name in old else None,
                )
        except BaseException:
            for h in built.values():
                self._close_handle(h)
            raise
        return built

    def _retire(self, rt: _Runtime) -> None:
        """Release what a replaced pipeline holds, after its running evaluation (if any) ends."""
        if rt.push.pusher is not None and rt.lock.acquire(timeout=30.0):
            try:
                self._close_pusher(rt)
            finally:
                rt.lock.release()
        self._close_handle(rt.handle)
        source = getattr(rt.handle.pipeline, "source", None)
        close = getattr(source, "close", None)
        if not callable(close):
            return
        if not rt.lock.acquire(timeout=30.0):
            log.warning("replaced pipeline still evaluating; its source is left to the garbage collector")
            return
        try:
            close()
        except Exception:  # closing must not fail the reload
            log.exception("closing a replaced pipeline's source failed", extra={"pipeline": rt.handle.name})
        finally:
            rt.lock.release()

    @staticmethod
    def _close_handle(h: PipelineHandle) -> None:
        """Close what the pipeline holds besides its source (once; failures are logged)."""
        close, h.close = h.close, None
        if close is None:
            return
        try:
            close()
        except Exception:
            log.exception("closing a pipeline's write-ahead log failed", extra={"pipeline": h.name})

    def _add_job(self, scheduler: BackgroundScheduler, name: str, *, replace_existing: bool = False) -> None:
        scheduler.add_job(
            self.run_once,
            IntervalTrigger(seconds=self.evaluation_interval, timezone=UTC),
            args=(name,),
            id=f"evaluate:{name}",
            name=f"evaluate {name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
            replace_existing=replace_existing,
        )

    @staticmethod
    def _remove_job(scheduler: BackgroundScheduler, name: str) -> None:
        try:
            scheduler.remove_job(f"evaluate:{name}")
        except JobLookupError:
            pass

    # ------------------------------------------------------------------ pushed samples

    def _attach_receiver(self, h: PipelineHandle) -> None:
        """Count what `h`'s push receiver ingests (no-op for other sources)."""
        if h.receiver is None:
            return
        metrics, name = self.metrics.ingest(), h.name
        metrics.add_pipeline(name)
        h.receiver.observer = lambda report: metrics.observe(name, report)
        wal = h.receiver.wal
        if wal is not None and wal.replay is not None:
            metrics.replayed(name, len(wal.replay.problems))

    @property
    def push_pipelines(self) -> tuple[str, ...]:
        """Names of the pipelines whose source is ``push``, in configuration order."""
        return tuple(n for n, rt in self._runtimes.items() if rt.handle.receiver is not None)

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
            out.append(
                PipelineSnapshot(
                    name=name, pack=rt.handle.pack, latest=latest, source_up=up, evaluated_wall=rt.latest_wall
                )
            )
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
        rt.latest, rt.latest_wall = evaluation, self._wall()
        rt.successes += 1
        rt.last_error = None
        self.metrics.evaluated(h.name, "success", duration)
        changes = h.pipeline.binding_changes
        self.metrics.binding_changed(h.name, changes - rt.changes_seen)
        rt.changes_seen = changes
        self._record(h.name, evaluation)
        self._push(rt, evaluation)
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
        if self._scheduler is not None:
            raise RuntimeError("runner already started")
        self._stop.clear()
        scheduler = BackgroundScheduler(timezone=UTC)
        with self._reload_lock:
            for name in self._runtimes:
                self._add_job(scheduler, name)
        scheduler.add_job(
            self.flush_alertmanager,
            IntervalTrigger(seconds=PUSH_FLUSH_INTERVAL, timezone=UTC),
            id="alertmanager:flush",
            name="flush pushed alerts",
            max_instances=1,
            coalesce=True,
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
        for rt in self._runtimes.values():
            self._close_pusher(rt)
            self._close_handle(rt.handle)
        if self.state is not None:
            self.state.close()
        log.info("runner stopped")


def _push_settings(config: Config) -> dict[str, Any]:
    """State directory and generator URL of push mode for `config`."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return {
        "state_dir": config.data_dir / "alertmanager",
        "generator_url": f"http://{host}:{config.port}/api/v1/status?pipeline={{pipeline}}",
    }


__all__ = [
    "ReloadResult",
    "Runner",
]
