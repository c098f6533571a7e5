"""The video platform's metric contract as the simulator writes it: names, types, labels, buckets.

Every metric of the default pack's input contract (platform-pack.md), with exactly its
names, types and label values (`METRICS`), and the help text written next to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

FamilyType = Literal["gauge", "counter", "histogram"]
SeriesChunk = tuple[str, str, dict[str, str], np.ndarray, np.ndarray]
"""(series_name, family_type, labels, timestamps, values) as yielded by `Simulator.generate`."""

DAY = 86400.0
HOUR = 3600.0

# --------------------------------------------------------------------------------------
# The input metric contract (platform-pack.md)

REGIONS: tuple[str, ...] = ("us", "eu", "apac")
DEVICE_TIERS: tuple[str, ...] = ("low", "mid", "high")
PROTOCOLS: tuple[str, ...] = ("tcp_hls", "ll_hls", "quic_moq")
CREATOR_TIERS: tuple[str, ...] = ("hobby", "pro")
SKILL_LEVELS: tuple[str, ...] = ("beginner", "expert")
CLIENTS: tuple[str, ...] = ("ios", "android", "web")

LABEL_VALUES: Mapping[str, tuple[str, ...]] = {
    "region": REGIONS,
    "device_tier": DEVICE_TIERS,
    "protocol": PROTOCOLS,
    "creator_tier": CREATOR_TIERS,
    "skill_level": SKILL_LEVELS,
    "client": CLIENTS,
}

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)
"""Seconds; 50 ms resolution between 0.2 and 0.4 s so p95 is resolvable around 0.300 and 0.370."""
TRANSCODE_BUCKETS: tuple[float, ...] = (
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    20.0,
    25.0,
    30.0,
    35.0,
    40.0,
    50.0,
    60.0,
    90.0,
    120.0,
    300.0,
)
"""Seconds; 5 s resolution around the 30 s target."""
IRRELEVANT_BUCKETS: tuple[float, ...] = tuple(float(i) for i in range(11))
"""Videos (integers 0..10)."""
STREAK_BUCKETS: tuple[float, ...] = (1.0, 3.0, 7.0, 14.0, 30.0, 60.0)
"""Days of streak lost per incident."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the input contract."""

    name: str
    """Series name as queried (counters keep their ``_total``; histograms are the base name)."""
    type: FamilyType
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    """Finite histogram upper bounds; the ``+Inf`` bucket is implied."""

    @property
    def family(self) -> str:
        """OpenMetrics family name (counters without ``_total``)."""
        return self.name[: -len("_total")] if self.type == "counter" else self.name

    def units(self) -> tuple[dict[str, str], ...]:
        """Every label combination, first label varying slowest."""
        combos: list[dict[str, str]] = [{}]
        for label in self.labels:
            combos = [{**c, label: v} for c in combos for v in LABEL_VALUES[label]]
        return tuple(combos)

    def series(self) -> tuple[tuple[str, dict[str, str]], ...]:
        """(series name, labels) of every emitted series, in emission order.

        Histograms: per unit the buckets in ascending ``le`` (``+Inf`` last), then
        ``_count`` and ``_sum``.
        """
        out: list[tuple[str, dict[str, str]]] = []
        for unit in self.units():
            if self.type == "histogram":
                for le in (*(format_le(b) for b in self.buckets), "+Inf"):
                    out.append((self.name + "_bucket", {**unit, "le": le}))
                out.append((self.name + "_count", dict(unit)))
                out.append((self.name + "_sum", dict(unit)))
            else:
                out.append((self.name, dict(unit)))
        return tuple(out)

    @property
    def rows_per_unit(self) -> int:
        return len(self.buckets) + 3 if self.type == "histogram" else 1


def format_le(bound: float) -> str:
    """A bucket bound in OpenMetrics' canonical float form ('0.05', '1.0', '+Inf')."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("daily_active_users", "gauge", ("region",), "Daily active users per region."),
    MetricSpec(
        "video_start_latency_seconds",
        "histogram",
        ("region", "device_tier"),
        "Time from tap/swipe to the first video frame.",
        LATENCY_BUCKETS,
    ),
    MetricSpec(
        "video_starts_total",
        "counter",
        ("region", "device_tier", "protocol"),
        "Video start attempts by delivery protocol.",
    ),
    MetricSpec(
        "video_start_abandonments_total",
        "counter",
        ("region", "device_tier"),
        "Video starts the user left before the first frame.",
    ),
    MetricSpec(
        "transcode_wait_seconds",
        "histogram",
        ("region", "creator_tier"),
        "Time from upload complete to video live.",
        TRANSCODE_BUCKETS,
    ),
    MetricSpec("transcode_queue_depth", "gauge", ("region",), "Videos waiting for an encoder."),
    MetricSpec("gpu_quota_utilization_ratio", "gauge", ("region",), "GPU instances used / quota (0..1)."),
    MetricSpec(
        "active_creators", "gauge", ("region", "creator_tier"), "Creators who uploaded in the last 30 days."
    ),
    MetricSpec(
        "creators_churned_total", "counter", ("region", "creator_tier"), "Creators who stopped uploading."
    ),
    MetricSpec("first_sessions_total", "counter", ("region", "skill_level"), "First sessions of new users."),
    MetricSpec(
        "first_session_irrelevant_videos",
        "histogram",
        ("region", "skill_level"),
        "Videos skipped as the wrong level in a first session.",
        IRRELEVANT_BUCKETS,
    ),
    MetricSpec(
        "first_session_early_exits_total",
        "counter",
        ("region", "skill_level"),
        "First sessions ended before the third video.",
    ),
    MetricSpec(
        "user_actions_total",
        "counter",
        ("region", "client"),
        "Progress-bearing actions (lesson done, streak tick).",
    ),
    MetricSpec(
        "streak_reset_incidents_total",
        "counter",
        ("region", "client"),
        "User-visible false streak resets / lost progress.",
    ),
    MetricSpec(
        "streak_length_at_reset_days",
        "histogram",
        ("region", "client"),
        "Streak length lost in each incident.",
        STREAK_BUCKETS,
    ),
    MetricSpec("users_churned_total", "counter", ("region", "client"), "Users who became inactive."),
)
METRICS_BY_NAME: Mapping[str, MetricSpec] = {m.name: m for m in METRICS}
METRIC_HELP: Mapping[str, str] = {m.family: m.help for m in METRICS}
"""Help text by OpenMetrics family name (for `detector.source.openmetrics.write_openmetrics`)."""
