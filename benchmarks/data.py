"""Data the benchmarks evaluate: the simulator's platform, and a latency panel with N units."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import ndtr

from detector.source.store import SampleStore
from detector.spec.pack import Pack

DAY = 86400.0
ORIGIN = 1_700_000_000.0
"""Simulated time 0 (fixed, so every run sees the same data)."""


@dataclass(frozen=True)
class Simulated:
    store: SampleStore
    now: float
    """The newest whole minute with data."""
    samples: int


def simulated_store(history_days: float, days: float = 1.0, scenario: str = "sequence", seed: int = 1) -> Simulated:
    """The simulator's platform (every metric of the default pack, 1-minute samples) from
    ``ORIGIN - history_days`` to ``ORIGIN + days``."""
    from detector.sim.simulator import Simulator

    sim = Simulator(scenario, seed, origin=ORIGIN, history=history_days * DAY + DAY)
    store = SampleStore(retention=None)
    end = ORIGIN + days * DAY
    n = sim.write_to(store, ORIGIN - history_days * DAY, end)
    return Simulated(store, end - 60.0, n)


LE_BOUNDS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 2.0)
TIERS = ("low", "mid", "high")


def latency_units_store(units: int, days: float, interval: float = 150.0, seed: int = 0) -> Simulated:
    """`units` units (regions r0, r1, ... x device tiers) of the latency constraint's metrics.

    Per unit: a start-latency histogram whose median follows a unit level, a daily cycle
    and AR(1) noise; start counters; abandonments that rise with the latency of the
    previous steps (a true lagged effect); DAU per region; starts by protocol. Samples
    every `interval` seconds (150 s keeps two samples in each 5-minute rate window).
    """
    rng = np.random.default_rng(seed)
    steps = int(round(days * DAY / interval)) + 1
    t0 = ORIGIN - (steps - 1) * interval
    ts = t0 + interval * np.arange(steps, dtype=np.float64)
    phase = 2 * np.pi * (ts % DAY) / DAY
    store = SampleStore(retention=None)
    n_samples = 0
    regions = (units + len(TIERS) - 1) // len(TIERS)
    phi = 0.9
    for u in range(units):
        region, tier = f"r{u // len(TIERS)}", TIERS[u % len(TIERS)]
        labels = {"region": region, "device_tier": tier}
        noise = np.empty(steps)
        e = rng.normal(0.0, 0.05, steps)
        noise[0] = e[0]
        for k in range(1, steps):  # AR(1), per unit: cheap next to the store writes
            noise[k] = phi * noise[k - 1] + e[k]
        log_median = np.log(0.2 + 0.03 * rng.standard_normal()) + 0.1 * np.sin(phase) + noise
        starts = (100.0 + 40.0 * np.sin(phase) + 5.0 * rng.random()) * interval / 60.0
        cum_starts = np.cumsum(starts)
        sigma = 0.45
        z = (np.log(np.asarray(LE_BOUNDS))[:, None] - log_median[None, :]) / sigma
        frac = ndtr(z)
        for le, row in zip(LE_BOUNDS, frac, strict=True):
            store.append("video_start_latency_seconds_bucket", {**labels, "le": repr(le)}, ts, np.cumsum(starts * row))
        store.append("video_start_latency_seconds_bucket", {**labels, "le": "+Inf"}, ts, cum_starts)
        store.append("video_start_latency_seconds_count", labels, ts, cum_starts)
        p95 = np.exp(log_median + 1.645 * sigma)
        lagged = np.concatenate([p95[:3], p95[:-3]])
        share = np.clip(0.004 + 0.02 * (lagged - 0.32) + 0.0005 * rng.standard_normal(steps), 0.0, 1.0)
        store.append("video_start_abandonments_total", labels, ts, np.cumsum(starts * share))
        store.append("video_starts_total", {**labels, "protocol": "ll_hls"}, ts, cum_starts)
        n_samples += steps * (len(LE_BOUNDS) + 4)
    for r in range(regions):
        store.append("daily_active_users", {"region": f"r{r}"}, ts, np.full(steps, 1_000_000.0))
        n_samples += steps
    return Simulated(store, float(ts[-1]), n_samples)


def latency_only(pack: Pack, lookback: float | None = None) -> Pack:
    """The pack with its `latency` constraint only (optionally another lookback)."""
    out = replace(pack, constraints=(pack.constraint("latency"),))
    if lookback is not None:
        out = replace(out, windows=replace(out.windows, lookback=lookback))
    return out


def with_lookback(pack: Pack, lookback: float) -> Pack:
    return replace(pack, windows=replace(pack.windows, lookback=lookback))
