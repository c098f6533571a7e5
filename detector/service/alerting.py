"""Alertmanager push mode of the runner: one pusher per pipeline, built lazily, never failing a run.

`AlertPushing` (owned by `detector.service.runner.Runner`) holds the push configuration
and its generation; each pipeline runtime holds a `PusherSlot`. After every evaluation
`AlertPushing.sync` syncs Alertmanager with it (alert times on the wall clock), and
`AlertPushing.flush`, every `PUSH_FLUSH_INTERVAL` seconds, retries failed deliveries and
re-sends active alerts. A failure is logged and counted in
``csf_alertmanager_push_failures_total`` (rules in the runner's module docstring).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from detector.evidence.results import Evaluation
from detector.service.config_model import AlertmanagerConfig
from detector.spec.pack import Pack
from exporters.alertmanager import AlertmanagerPusher, PushResult
from exporters.selfmetrics import ServiceMetrics

log = logging.getLogger("csf.runner")

PUSH_FLUSH_INTERVAL = 5.0
"""Wall seconds between retries/re-sends of pushed alerts between evaluations."""


class Pusher(Protocol):
    """What the runner needs from `exporters.alertmanager.AlertmanagerPusher`."""

    def sync(self, evaluation: Evaluation, now: float) -> PushResult: ...

    def flush(self, now: float) -> PushResult: ...

    def close(self) -> None: ...


PusherFactory = Callable[[str, Pack], Pusher]
"""(pipeline name, pack) -> the pipeline's pusher."""


@dataclass
class PusherSlot:
    """The pusher of one pipeline runtime, the push configuration it was built for, its failures."""

    pusher: Pusher | None = None
    generation: int = 0
    failures: int = 0


class AlertPushing:
    """Push mode: the pusher factory of the current configuration and the failure counter."""

    def __init__(self, metrics: ServiceMetrics, wall: Callable[[], float]) -> None:
        self.metrics = metrics
        self.wall = wall
        self._key: tuple[object, ...] | None = None
        self._factory: PusherFactory | None = None
        self.generation = 0
        self._failures: Counter | None = None
        """Registered when push mode is first turned on; kept when it is turned off."""

    def configure(
        self,
        alertmanager: AlertmanagerConfig | None,
        pipelines: Iterable[str],
        *,
        state_dir: str | os.PathLike[str] | None = None,
        generator_url: str | None = None,
        factory: PusherFactory | None = None,
    ) -> None:
        """Turn push mode on (or off with None); see `Runner.configure_alertmanager`."""
        key = (alertmanager, str(state_dir) if state_dir is not None else None, generator_url, factory)
        if key == self._key:
            return
        self._key = key
        self.generation += 1
        if alertmanager is None:
            self._factory = None
            return
        if factory is None:
            factory = _default_factory(alertmanager, state_dir, generator_url)
        self._factory = factory
        self._failures = self.metrics.push_failures()
        for name in pipelines:
            self._failures.labels(name)
        log.info("alertmanager push mode on", extra={"url": alertmanager.url})

    def failed(self, slot: PusherSlot, name: str) -> None:
        """Count one failed delivery (or pusher error) of pipeline `name`."""
        slot.failures += 1
        if self._failures is not None:
            self._failures.labels(name).inc()

    @staticmethod
    def close(slot: PusherSlot, name: str) -> None:
        """Close and forget the slot's pusher; never raises."""
        pusher, slot.pusher = slot.pusher, None
        if pusher is not None:
            try:
                pusher.close()
            except Exception:
                log.exception("closing an Alertmanager pusher failed", extra={"pipeline": name})

    def sync(self, slot: PusherSlot, name: str, pack: Pack, evaluation: Evaluation) -> None:
        """Sync Alertmanager with `evaluation` (called with the runtime's lock held); never raises."""
        factory, generation = self._factory, self.generation
        if slot.pusher is not None and slot.generation != generation:
            self.close(slot, name)
        if factory is None:
            return
        try:
            if slot.pusher is None:
                slot.pusher = factory(name, pack)
                slot.generation = generation
            result = slot.pusher.sync(evaluation, self.wall())
        except Exception:
            self.failed(slot, name)
            log.exception("alertmanager push failed", extra={"pipeline": name})
            return
        if result.attempted and not result.delivered:
            self.failed(slot, name)  # the pusher has logged the reason

    def flush(self, slots: Iterable[tuple[str, PusherSlot]]) -> None:
        """Retry failed deliveries and re-send active alerts of every pipeline; never raises."""
        now = self.wall()
        for name, slot in slots:
            pusher = slot.pusher
            if pusher is None or slot.generation != self.generation:
                continue
            try:
                result = pusher.flush(now)
            except Exception:
                self.failed(slot, name)
                log.exception("alertmanager flush failed", extra={"pipeline": name})
                continue
            if result.attempted and not result.delivered:
                self.failed(slot, name)


def _default_factory(
    am: AlertmanagerConfig, state_dir: str | os.PathLike[str] | None, generator_url: str | None
) -> PusherFactory:
    """Pushers to `am` persisting to `state_dir`; ``{pipeline}`` in `generator_url` names the pipeline."""

    def factory(name: str, pack: Pack) -> Pusher:
        return AlertmanagerPusher(
            am.url,
            name,
            am.resend_interval,
            am.timeout,
            pack=pack,
            runbook_base_url=am.runbook_base_url,
            state_dir=state_dir,
            generator_url=generator_url.replace("{pipeline}", name) if generator_url else None,
        )

    return factory


__all__ = ["PUSH_FLUSH_INTERVAL", "AlertPushing", "Pusher", "PusherFactory", "PusherSlot"]
