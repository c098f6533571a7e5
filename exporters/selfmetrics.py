"""The service's own metrics (``csf_*`` counters, gauges and histogram), all registered here.

`ServiceMetrics` owns every metric the service updates as it runs, on an injected
`CollectorRegistry` (never the global one); the runner, the push receivers, the
security middleware and the reload endpoint receive it instead of registering their own.

* Always present: the evaluation duration histogram and the evaluation,
  binding-change and state-write-error counters.
* Created (and registered) once, on first use, so that a service without the feature
  does not publish the names: `ServiceMetrics.ingest` (push pipelines:
  ``csf_ingested_samples_total``, ``csf_ingest_requests_total``),
  `ServiceMetrics.push_failures` (Alertmanager push mode:
  ``csf_alertmanager_push_failures_total``) and `ServiceMetrics.admin` (the HTTP app:
  refused requests and configuration reloads).

What the latest evaluation says is rendered at scrape time by
`exporters.collector.EvaluationCollector`, not here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from detector.source.ingest import IngestReport

DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Seconds; an evaluation reads a 7 d panel per constraint, typically 0.05-10 s."""

INGEST_PROTOCOLS: tuple[str, ...] = ("remote_write", "otlp")
INGEST_RESULTS: tuple[str, ...] = ("accepted", "out_of_order", "duplicate", "invalid")


class IngestMetrics:
    """Counters of pushed samples and requests, registered on `registry` (their only owner)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "csf_ingested_samples_total",
            "Pushed samples by outcome: accepted (stored), out_of_order and duplicate (dropped by the "
            "store), invalid (data points refused: unsupported, or stamped too far ahead of now).",
            ["pipeline", "protocol", "result"],
            registry=registry,
        )
        self.requests = Counter(
            "csf_ingest_requests_total",
            "Push requests (remote_write, otlp) by HTTP status code.",
            ["pipeline", "protocol", "code"],
            registry=registry,
        )
        self.wal_problems = Gauge(
            "csf_wal_replay_problems",
            "Damaged records or files of the push pipeline's write-ahead log skipped by the replay at start "
            "(0: every acknowledged sample was replayed). The log line 'write-ahead log damaged' says where.",
            ["pipeline"],
            registry=registry,
        )

    def replayed(self, pipeline: str, problems: int) -> None:
        """What the pipeline's write-ahead log replay found."""
        self.wal_problems.labels(pipeline).set(problems)

    def add_pipeline(self, pipeline: str) -> None:
        """Create the pipeline's sample series at zero."""
        for protocol in INGEST_PROTOCOLS:
            for result in INGEST_RESULTS:
                self.samples.labels(pipeline, protocol, result)

    def observe(self, pipeline: str, report: IngestReport) -> None:
        counts = zip(
            INGEST_RESULTS,
            (report.accepted, report.out_of_order, report.duplicates, report.invalid),
            strict=True,
        )
        for result, n in counts:
            if n:
                self.samples.labels(pipeline, report.protocol, result).inc(n)
        self.requests.labels(pipeline, report.protocol, str(report.status)).inc()


class AdminMetrics:
    """Counters of refused requests and configuration reloads, registered on `registry`.

    ``csf_http_requests_denied_total{reason}`` (``unauthorized``, ``too_large``),
    ``csf_config_reloads_total{outcome}`` (``success``, ``failure``),
    ``csf_config_last_reload_successful`` (1/0, 1 at start) and
    ``csf_config_last_reload_success_timestamp_seconds`` (start time until a reload succeeds).
    """

    def __init__(self, registry: CollectorRegistry, started: float | None = None) -> None:
        self.denied = Counter(
            "csf_http_requests_denied",
            "Requests refused before reaching an endpoint, by reason.",
            ["reason"],
            registry=registry,
        )
        self.reloads = Counter(
            "csf_config_reloads", "Configuration reloads, by outcome.", ["outcome"], registry=registry
        )
        self.last_reload_ok = Gauge(
            "csf_config_last_reload_successful",
            "1 when the last configuration reload succeeded (or none was attempted), else 0.",
            registry=registry,
        )
        self.last_reload_time = Gauge(
            "csf_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load (unix seconds).",
            registry=registry,
        )
        for reason in ("unauthorized", "too_large"):
            self.denied.labels(reason)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
        self.last_reload_ok.set(1)
        self.last_reload_time.set(time.time() if started is None else started)

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.last_reload_ok.set(1 if ok else 0)
        if ok:
            self.last_reload_time.set(time.time())


class ServiceMetrics:
    """Every ``csf_*`` metric of the running service, registered on `registry` exactly once.

    The per-evaluation counters and histogram are registered at once (a second
    `ServiceMetrics` on the same registry raises ValueError); the feature groups on the
    first call of `ingest`, `push_failures` or `admin`, which later calls return again.
    """

    def __init__(self, registry: CollectorRegistry, pipelines: Sequence[str] = ()) -> None:
        self.registry = registry
        self.duration = Histogram(
            "csf_evaluation_duration_seconds",
            "Wall time of one evaluation.",
            ["pipeline"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.evaluations = Counter(
            "csf_evaluations_total",
            "Evaluations by outcome (success, error).",
            ["pipeline", "outcome"],
            registry=registry,
        )
        self.binding_changes = Counter(
            "csf_binding_changes_total",
            "Changes of the published binding constraint.",
            ["pipeline"],
            registry=registry,
        )
        self.state_write_errors = Counter(
            "csf_state_write_errors_total",
            "Evaluations that could not be written to the state database.",
            ["pipeline"],
            registry=registry,
        )
        self._lock = threading.Lock()
        self._ingest: IngestMetrics | None = None
        self._push_failures: Counter | None = None
        self._admin: AdminMetrics | None = None
        for name in pipelines:
            self.add_pipeline(name)

    def add_pipeline(self, pipeline: str) -> None:
        """Create the pipeline's series at zero, so rates exist before the first event."""
        self.duration.labels(pipeline)
        for outcome in ("success", "error"):
            self.evaluations.labels(pipeline, outcome)
        self.binding_changes.labels(pipeline)
        self.state_write_errors.labels(pipeline)

    def evaluated(self, pipeline: str, outcome: str, duration: float | None) -> None:
        if outcome not in ("success", "error"):
            raise ValueError(f"outcome must be success or error, got {outcome!r}")
        self.evaluations.labels(pipeline, outcome).inc()
        if duration is not None:
            self.duration.labels(pipeline).observe(duration)

    def binding_changed(self, pipeline: str, count: int = 1) -> None:
        if count > 0:
            self.binding_changes.labels(pipeline).inc(count)

    def state_write_failed(self, pipeline: str) -> None:
        self.state_write_errors.labels(pipeline).inc()

    # ------------------------------------------------------------------ feature groups

    def ingest(self) -> IngestMetrics:
        """The counters of pushed samples and requests (registered with the first push pipeline)."""
        with self._lock:
            if self._ingest is None:
                self._ingest = IngestMetrics(self.registry)
            return self._ingest

    def push_failures(self) -> Counter:
        """``csf_alertmanager_push_failures_total{pipeline}`` (registered when push mode is first on)."""
        with self._lock:
            if self._push_failures is None:
                self._push_failures = Counter(
                    "csf_alertmanager_push_failures_total",
                    "Failed deliveries of pushed alerts to Alertmanager (push mode).",
                    ["pipeline"],
                    registry=self.registry,
                )
            return self._push_failures

    def admin(self, started: float | None = None) -> AdminMetrics:
        """Refused requests and configuration reloads (registered by the HTTP app)."""
        with self._lock:
            if self._admin is None:
                self._admin = AdminMetrics(self.registry, started)
            return self._admin


__all__ = [
    "DURATION_BUCKETS",
    "INGEST_PROTOCOLS",
    "INGEST_RESULTS",
    "AdminMetrics",
    "IngestMetrics",
    "ServiceMetrics",
]
