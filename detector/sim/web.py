"""A second simulated platform: an ordinary web shop, for the ``web-shop`` pack.

An HTTP API in three regions (OpenTelemetry HTTP server metrics as Prometheus exposes
them), a connection-pooled database and a job queue, each with an outcome a shop has:

====================  ===============================================  ==============================================
constraint            signal X (per unit)                               outcome Y (per unit)
====================  ===============================================  ==============================================
``api_latency``       p95 ``http_server_request_duration_seconds``      ``shop_sessions_abandoned_total`` /
                      by ``region`` x ``http_route``                    ``shop_sessions_total`` (sessions that left)
``db_pool``           p95 ``db_client_connection_wait_time_seconds``    ``shop_orders_failed_total`` /
                      by ``region`` x ``db_client_connection_pool_name``  ``shop_orders_total``
``job_queue``         p95 ``jobs_queue_wait_seconds`` by ``region`` x   ``jobs_failed_total`` / ``jobs_processed_total``
                      ``queue``
====================  ===============================================  ==============================================

Causal structure, as in the video simulator: within each unit, ``log X`` is a phase level
plus a unit offset, a daily swing and an AR(1) process; ``Y = y0 (X(t - lag) / x_ref) ^ beta``
times noise, with a 10-minute lag, so a true effect passes the five tests. ``web_confounded``
sets beta to 0 for the API and lets the route (the stratum) move X and Y together: a proxy.

Histograms and counters are expected counts (no sampling noise beyond the processes
above). Everything is computed on the grid from ``history_start``; `generate` slices it,
so samples never depend on how a time range is split into calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special
from scipy.signal import lfilter

from detector.sim.metrics import SeriesChunk, format_le

DAY = 86400.0
REGIONS = ("us", "eu", "apac")
ROUTES = ("/product", "/search", "/cart", "/checkout")
METHODS = {"/product": "GET", "/search": "GET", "/cart": "POST", "/checkout": "POST"}
POOLS = ("orders", "catalog")
QUEUES = ("email", "fulfilment")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
QUEUE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
Z95 = 1.6448536269514722

HELP: Mapping[str, str] = {
    "shop_active_sessions": "Sessions active now, per region.",
    "http_server_request_duration_seconds": "Duration of HTTP server requests (OpenTelemetry semantic conventions).",
    "shop_sessions": "Shopping sessions by the route where they ended.",
    "shop_sessions_abandoned": "Sessions that left without buying, by the route where they left.",
    "db_client_connection_wait_time_seconds": "Time to obtain a connection from the pool.",
    "shop_orders": "Orders placed, by the database pool that wrote them.",
    "shop_orders_failed": "Orders that failed, by the database pool that wrote them.",
    "jobs_queue_wait_seconds": "Time a background job waited in its queue.",
    "jobs_processed": "Background jobs processed.",
    "jobs_failed": "Background jobs that failed (timed out waiting).",
}


@dataclass(frozen=True)
class WebPhase:
    name: str
    start_day: float
    api_p95: float
    db_p95: float
    queue_p95: float
    expected_binding: str | None


SCENARIOS: dict[str, tuple[WebPhase, ...]] = {
    "web_sequence": (
        WebPhase("slow pages", 0.0, 1.2, 0.02, 40.0, "api_latency"),
        WebPhase("pool exhausted", 3.0, 0.3, 0.15, 40.0, "db_pool"),
        WebPhase("queue backlog", 6.0, 0.3, 0.02, 600.0, "job_queue"),
        WebPhase("healthy", 9.0, 0.3, 0.02, 40.0, None),
    ),
    "web_confounded": (WebPhase("confounded", 0.0, 1.2, 0.02, 40.0, None),),
    "web_healthy": (WebPhase("healthy", 0.0, 0.3, 0.02, 40.0, None),),
}
DURATION_DAYS = {"web_sequence": 12.0, "web_confounded": 4.0, "web_healthy": 4.0}


@dataclass(frozen=True)
class _Part:
    """One constraint's panel: X histogram and Y = numerator / denominator counters."""

    name: str
    x_metric: str
    buckets: tuple[float, ...]
    unit_labels: tuple[str, str]
    unit_values: tuple[tuple[str, ...], tuple[str, ...]]
    level: str  # WebPhase field holding the p95 level
    x_ref: float
    sigma: float  # log-spread of a single request / job inside a step
    beta: float
    y0: float
    den_metric: str
    num_metric: str
    den_rate: float  # per second per unit


PARTS = (
    _Part("api_latency", "http_server_request_duration_seconds", HTTP_BUCKETS, ("region", "http_route"),
          (REGIONS, ROUTES), "api_p95", 0.5, 0.6, 1.2, 0.04, "shop_sessions_total", "shop_sessions_abandoned_total", 20.0),
    _Part("db_pool", "db_client_connection_wait_time_seconds", DB_BUCKETS, ("region", "db_client_connection_pool_name"),
          (REGIONS, POOLS), "db_p95", 0.05, 0.7, 1.0, 0.01, "shop_orders_total", "shop_orders_failed_total", 2.0),
    _Part("job_queue", "jobs_queue_wait_seconds", QUEUE_BUCKETS, ("region", "queue"),
          (REGIONS, QUEUES), "queue_p95", 120.0, 0.8, 0.9, 0.01, "jobs_processed_total", "jobs_failed_total", 5.0),
)  # fmt: skip


class WebShopSimulator:
    """Deterministic web-shop metrics for one scenario and seed (same interface as `Simulator.generate`)."""

    def __init__(self, scenario: str, seed: int = 1, *, origin: float, interval: float = 60.0,
                 history: float = 2 * DAY) -> None:  # fmt: skip
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown web scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.scenario = scenario
        self.phases = SCENARIOS[scenario]
        self.seed = int(seed)
        self.origin = float(origin)
        self.interval = float(interval)
        self.history_start = self.origin - math.ceil(history / interval) * interval
        self.lag_steps = max(1, round(600.0 / self.interval))
        self._mark: float | None = None

    def write_to(self, store: Any, t0: float, t1: float) -> int:
        """Append every sample in [t0, t1) to `store` (a `SampleStore`); returns the samples written."""
        n = 0
        for name, _typ, labels, ts, values in self.generate(t0, t1):
            store.append(name, labels, ts, values)
            n += len(ts)
        if self._mark is None or t1 > self._mark:
            self._mark = float(t1)
        return n

    def advance_to(self, store: Any, t: float) -> int:
        """Write every sample after the previous `write_to`/`advance_to` up to and including `t`."""
        if self._mark is None:
            return 0
        t_end = self.history_start + (math.floor((t - self.history_start) / self.interval + 1e-9) + 1) * self.interval
        if t_end <= self._mark:
            return 0
        return self.write_to(store, self._mark, t_end)

    def phase_at(self, t: float) -> WebPhase:
        day = (t - self.origin) / DAY
        current = self.phases[0]
        for p in self.phases:
            if day >= p.start_day:
                current = p
        return current

    # ---------------------------------------------------------------- generation

    def generate(self, t0: float, t1: float) -> Iterator[SeriesChunk]:
        """Every series over [t0, t1), family by family; histogram series of one unit together."""
        if t0 < self.history_start - 1e-9:
            raise ValueError("t0 is before the simulated history start")
        k_end = math.ceil((t1 - self.history_start) / self.interval - 1e-9)
        k_from = math.ceil((t0 - self.history_start) / self.interval - 1e-9)
        if k_end <= k_from:
            return
        ts_all = self.history_start + self.interval * np.arange(k_end, dtype=np.float64)
        ts = ts_all[k_from:]
        phase_idx = self._phase_index(ts_all)
        sessions = 150_000.0 * (1.0 + 0.3 * np.sin(2 * np.pi * ((ts_all / DAY) % 1.0)))
        yield from (
            ("shop_active_sessions", "gauge", {"region": r}, ts, (sessions * share)[k_from:])
            for r, share in zip(REGIONS, (0.45, 0.35, 0.2), strict=True)
        )
        for pi, part in enumerate(PARTS):
            yield from self._part(pi, part, ts_all, phase_idx, k_from)

    def _phase_index(self, ts: np.ndarray) -> np.ndarray:
        starts = np.array([self.origin + p.start_day * DAY for p in self.phases])
        return np.clip(np.searchsorted(starts, ts, side="right") - 1, 0, len(self.phases) - 1)

    def _part(
        self, pi: int, part: _Part, ts: np.ndarray, phase_idx: np.ndarray, k_from: int
    ) -> Iterator[SeriesChunk]:
        # one generator per quantity: each array's first rows are the same however long it is,
        # so a longer call extends a shorter one (split invariance)
        def stream(k: int) -> np.random.Generator:
            return np.random.default_rng([self.seed, 0x57E, pi, k])

        units = [(a, b) for a in part.unit_values[0] for b in part.unit_values[1]]
        n, u = len(ts), len(units)
        levels = np.array([getattr(p, part.level) for p in self.phases])[phase_idx]
        confounded = self.scenario == "web_confounded" and part.name == "api_latency"
        offsets = stream(0).normal(0.0, 0.15, u)
        phi = math.exp(-self.interval / 3600.0)
        shocks = stream(1).normal(0.0, 0.35 * math.sqrt(1 - phi * phi), (n, u))
        shocks[0] = 0.0
        ar = lfilter([1.0], [1.0, -phi], shocks, axis=0)  # ar[k] = phi * ar[k-1] + shock[k]
        diurnal = 0.15 * np.sin(2 * np.pi * ((ts / DAY) % 1.0))[:, None]
        stratum_shift = np.zeros(u)
        if confounded:  # the route moves X and Y together; within a route X does nothing
            second = part.unit_values[1]
            stratum_shift = np.array([0.5 * (second.index(b) - 1.5) for _, b in units])
        log_p95 = np.log(levels)[:, None] + offsets[None, :] + stratum_shift[None, :] + diurnal + ar
        x = np.exp(log_p95)
        lagged = np.vstack([np.repeat(x[:1], self.lag_steps, axis=0), x[: -self.lag_steps]])
        noise = np.exp(stream(2).normal(0.0, 0.05, (n, u)))
        if confounded:
            y = part.y0 * np.exp(1.2 * stratum_shift)[None, :] * noise
        else:
            y = part.y0 * (lagged / part.x_ref) ** part.beta * noise
        y = np.clip(y, 0.0, 0.9)
        count = part.den_rate * self.interval * np.ones((n, u)) * (1.0 + 0.3 * np.sin(2 * np.pi * ((ts / DAY) % 1.0)))[:, None]
        log_median = log_p95 - Z95 * part.sigma
        cdf = special.ndtr((np.log(np.array(part.buckets))[None, None, :] - log_median[:, :, None]) / part.sigma)
        mean = np.exp(log_median + 0.5 * part.sigma**2)
        cum_count = np.cumsum(count, axis=0)
        cum_buckets = np.cumsum(count[:, :, None] * cdf, axis=0)
        cum_sum = np.cumsum(count * mean, axis=0)
        cum_den = cum_count
        cum_num = np.cumsum(count * y, axis=0)
        ts_out = ts[k_from:]
        la, lb = part.unit_labels
        for j, (a, b) in enumerate(units):
            labels = {la: a, lb: b}
            if part.name == "api_latency":
                labels = {**labels, "http_request_method": METHODS[b], "http_response_status_code": "200"}
            for bi, bound in enumerate(part.buckets):
                yield part.x_metric + "_bucket", "histogram", {**labels, "le": format_le(bound)}, ts_out, cum_buckets[k_from:, j, bi]
            yield part.x_metric + "_bucket", "histogram", {**labels, "le": "+Inf"}, ts_out, cum_count[k_from:, j]
            yield part.x_metric + "_count", "histogram", labels, ts_out, cum_count[k_from:, j]
            yield part.x_metric + "_sum", "histogram", labels, ts_out, cum_sum[k_from:, j]
        for metric, cum in ((part.den_metric, cum_den), (part.num_metric, cum_num)):
            for j, (a, b) in enumerate(units):
                yield metric, "counter", {la: a, lb: b}, ts_out, cum[k_from:, j]


__all__ = ["DURATION_DAYS", "HELP", "SCENARIOS", "WebPhase", "WebShopSimulator"]
