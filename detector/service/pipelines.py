"""What the runner drives for one configured pipeline: `PipelineHandle` and `build_handle`.

`build_handle` turns a `PipelineConfig` into its source, feed, clock and `Pipeline`
(the rules of each source type are in the `detector.service.runner` docstring);
`warm_up_count` and `history_span` size the history the first evaluation needs.

A ``push`` pipeline with ``wal: true`` (the default) opens its write-ahead log under
``<data_dir>/push/<name>`` and replays it into its store before it is handed to the
runner, so a restart keeps every acknowledged sample. A push pipeline rebuilt by a
reload (its pack changed) takes over the store, log and receiver of the one it
replaces, when the runner calls its `PipelineHandle.takeover` (once every pipeline of
the reload was built: a reload that fails changes nothing): a reload loses no sample
either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation
from detector.service.config_model import (
    PipelineConfig,
    PrometheusSourceConfig,
    PushSourceConfig,
    SimulatorSource,
)
from detector.service.feeds import Feed, PushFeed, PushReceiver, SimulatedClock, SimulatorFeed
from detector.sim.simulator import Simulator
from detector.sim.web import WebShopSimulator
from detector.source.native import NativeSource
from detector.source.prometheus_api import PrometheusSource
from detector.source.store import SampleStore
from detector.source.wal import WriteAheadLog
from detector.spec.pack import Pack

log = logging.getLogger("csf.service")

PUSH_CHUNK_SAMPLES = 256
"""A push store compresses each series' samples 256 at a time, keeping the newest 256-768
raw (`detector.source.store`, "Compression"): ~1/3 of the raw store's memory."""


class Evaluator(Protocol):
    """What the runner needs from `detector.decision.pipeline.Pipeline`."""

    @property
    def binding_changes(self) -> int: ...

    def evaluate(self, now: float) -> Evaluation: ...

    def warm_up(self, now: float, evaluations: int, every: float) -> None: ...


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
    receiver: PushReceiver | None = None
    """The push endpoints of a ``push`` pipeline (None for other sources)."""
    close: Callable[[], None] | None = None
    """Releases what the pipeline holds besides its source (a push pipeline's write-ahead log)."""
    takeover: Callable[[], None] | None = None
    """Makes this pipeline the owner of what it shares with the one it replaces (called by
    the runner when a reload is certain; None: nothing shared)."""


def build_handle(
    pc: PipelineConfig,
    evaluation_interval: float,
    wall0: float,
    wall: Callable[[], float],
    *,
    max_body_bytes: int = 16 * 1024 * 1024,
    data_dir: Path | None = None,
    previous: PipelineHandle | None = None,
) -> PipelineHandle:
    """The source, feed, clock and pipeline of one configured pipeline (rules in the module doc).

    `max_body_bytes` bounds the request bodies of a ``push`` pipeline's receivers;
    `data_dir` holds push pipelines' write-ahead logs (None: none is kept); `previous`
    is the pipeline of the same name this one replaces in a reload.
    """
    src = pc.source
    if isinstance(src, PrometheusSourceConfig):
        return _prometheus_handle(pc, src, wall)
    if isinstance(src, PushSourceConfig):
        return _push_handle(pc, src, evaluation_interval, max_body_bytes, wall, data_dir, previous)
    if not isinstance(src, SimulatorSource):
        raise ValueError(f"pipeline {pc.name!r}: unsupported source type {src.type!r}")
    return _simulator_handle(pc, src, evaluation_interval, wall0, wall)


def _prometheus_handle(
    pc: PipelineConfig, src: PrometheusSourceConfig, wall: Callable[[], float]
) -> PipelineHandle:
    """A pipeline querying a Prometheus-compatible API at wall-clock time (or replaying its past)."""
    basic = (
        (src.basic_auth_username, src.basic_auth_password or "")
        if src.basic_auth_username is not None
        else None
    )
    prom = PrometheusSource(
        src.url,
        timeout=src.timeout,
        retries=src.retries,
        bearer_token=src.bearer_token,
        bearer_token_file=src.bearer_token_file,
        basic_auth=basic,
        tenant=src.tenant,
        verify_tls=src.tls_verify,
        name="prometheus",
    )
    clock: Callable[[], float] = wall
    rate = 1.0
    if src.replay_from is not None:
        # history watched as if live: the pipeline's clock starts at replay_from
        clock = SimulatedClock(origin=src.replay_from, wall0=wall(), speed=src.replay_speed, wall=wall)
        rate = src.replay_speed
    return PipelineHandle(
        name=pc.name,
        pack=pc.pack,
        pipeline=Pipeline(pc.name, pc.pack, prom),
        clock=clock,
        rate=rate,
        source=src.describe(),
        source_up=prom.up,
    )


def _push_handle(
    pc: PipelineConfig,
    src: PushSourceConfig,
    evaluation_interval: float,
    max_body_bytes: int,
    wall: Callable[[], float],
    data_dir: Path | None,
    previous: PipelineHandle | None,
) -> PipelineHandle:
    """A pipeline evaluating, at wall-clock time, a store fed only by its push receivers."""
    retention = history_span(pc.pack, evaluation_interval) + 3600.0
    wal_dir = Path(data_dir) / "push" / pc.name if src.wal and data_dir is not None else None
    old = previous.receiver if previous is not None else None
    if old is None or previous is None:
        store = SampleStore(retention=retention, chunk_samples=PUSH_CHUNK_SAMPLES)
        wal = _open_wal(pc.name, wal_dir, src.wal_fsync, store) if wal_dir is not None else None
        receiver = PushReceiver(store, max_body_bytes=max_body_bytes, max_decoded_bytes=src.max_decoded_bytes)
        receiver.wal = wal
        return _push(pc, src, store, wal, receiver, wall)
    # A reload: share the running pipeline's store (and receiver, when its limits are the
    # same: it keeps its series cache and OTLP delta state); the log changes hands in takeover.
    store = old.store
    same_limits = (old.max_body_bytes, old.max_decoded_bytes) == (max_body_bytes, src.max_decoded_bytes)
    receiver = old if same_limits else PushReceiver(store, max_body_bytes=max_body_bytes, max_decoded_bytes=src.max_decoded_bytes)
    handle = _push(pc, src, store, None, receiver, wall)
    replaced = previous

    def takeover() -> None:
        store.retention = retention
        wal = old.wal
        replaced.close = None  # the log is this pipeline's now (or closed here)
        if wal is not None and wal_dir is None:
            wal.close()
            wal = None
        if wal is None and wal_dir is not None:
            wal = _open_wal(pc.name, wal_dir, src.wal_fsync, store)
        if wal is not None:
            wal.fsync = src.wal_fsync
        receiver.wal = old.wal = wal
        handle.feed = PushFeed(store, wal)
        handle.close = wal.close if wal is not None else None

    handle.takeover = takeover
    return handle


def _push(
    pc: PipelineConfig,
    src: PushSourceConfig,
    store: SampleStore,
    wal: WriteAheadLog | None,
    receiver: PushReceiver,
    wall: Callable[[], float],
) -> PipelineHandle:
    return PipelineHandle(
        name=pc.name,
        pack=pc.pack,
        pipeline=Pipeline(pc.name, pc.pack, NativeSource(store)),
        clock=wall,
        feed=PushFeed(store, wal),
        source=src.describe(),
        receiver=receiver,
        close=wal.close if wal is not None else None,
    )


def _open_wal(name: str, directory: Path, fsync: bool, store: SampleStore) -> WriteAheadLog:
    """Open and replay a push pipeline's write-ahead log into `store` (a checkpoint follows when
    segments were replayed)."""
    wal = WriteAheadLog(directory, fsync=fsync)
    report = wal.open(store)
    log.info("write-ahead log replayed", extra={"pipeline": name, **report.to_dict(), "problems": len(report.problems)})
    if report.segments and report.samples:
        wal.start_checkpoint()
    return wal


def _simulator_handle(
    pc: PipelineConfig,
    src: SimulatorSource,
    evaluation_interval: float,
    wall0: float,
    wall: Callable[[], float],
) -> PipelineHandle:
    """A pipeline playing its scenario into its own store on a simulated clock."""
    history = history_span(pc.pack, evaluation_interval * src.speed)
    clock = SimulatedClock(origin=wall0, wall0=wall0, speed=src.speed, wall=wall)
    store = SampleStore(retention=history + 3600.0)
    # Scenario offset 0 is the service start; the history before it plays the first phase.
    simulator: Any
    if src.scenario.startswith("web_"):
        # the web-shop platform (pack web-shop)
        simulator = WebShopSimulator(
            src.scenario, src.seed, origin=wall0, interval=src.interval, history=history
        )
    else:
        simulator = Simulator(
            src.scenario, seed=src.seed, origin=wall0, interval=src.interval, history=history
        )
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


__all__ = ["Evaluator", "PipelineHandle", "build_handle", "history_span", "warm_up_count"]
