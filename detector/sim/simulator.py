"""The built-in platform simulator: the service's embedded default data source.

It plays the microlearning video platform of `platform-pack.md`: every metric of the
pack's input contract (`METRICS`), with exactly its names, types and label values,
generated deterministically from a seed. A scenario (`SCENARIOS`) is a timeline of
phases; each phase sets the *levels* around which the platform varies (p95 start
latency, protocol mix, transcode wait, GPU quota use, irrelevant first-session videos,
streak incidents), so the binding constraint moves from phase to phase.

Causal structure (the same in every phase: physics does not change)
--------------------------------------------------------------------
For each constraint and each unit of its panel (e.g. ``region x device_tier``):

* the signal X varies within the unit over time: a level set by the phase, a unit
  multiplier, a regional diurnal swing and a unit-specific AR(1) process (log scale);
* the outcome Y responds to the unit's *own* X with a short lag (10-15 minutes,
  i.e. 2-3 five-minute steps) as a power law, plus multiplicative white noise:
  ``Y = y0 * (X(t - lag) / x_ref) ** beta * noise``.

So a true effect passes the within-unit, stratification, segment-consistency,
Granger X -> Y and dose-response tests. Adversarial scenarios break one link on
purpose: `confounded` sets beta = 0 and lets device tier move X and Y together,
`feedback` feeds Y back into X, `missing_outcome` never emits the outcome series,
`noisy` buries the effect in heavy noise.

Histograms are expected counts: a bucket increment is rate x interval x CDF(le) of the
unit's distribution at that scrape (lognormal latency and transcode wait, Poisson
irrelevant videos, lognormal streak length). Counters and histogram series are
cumulative from the start of the simulated history and never decrease.

Determinism
-----------
Samples sit on the grid ``origin + k * interval``. Randomness is drawn in blocks of
`BLOCK_STEPS` steps, each seeded by (seed, stream, block index); AR processes restart
from zero a warm-up span before each block and have forgotten that start by the
block. Counter offsets are cumulative block totals from the history start. Hence a
sample depends only on (scenario, seed, origin, interval, timestamp), never on how a
time range is split into calls. (Counter *values* also depend on where the history
starts, ``history`` seconds before `origin`; their increases do not.)
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, TextIO

import numpy as np
from scipy import optimize, special
from scipy.signal import lfilter

from detector.timefmt import format_duration, format_time, parse_duration, parse_time

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

# --------------------------------------------------------------------------------------
# Scenarios

PRE_MIGRATION_MIX: tuple[float, float, float] = (0.96, 0.04, 0.0)
"""Start shares (tcp_hls, ll_hls, quic_moq) before the QUIC migration: the TCP floor (0.370 s) binds."""
POST_MIGRATION_MIX: tuple[float, float, float] = (0.03, 0.12, 0.85)
"""After the migration: tcp_hls < 5%, so ll_hls (0.280 s < target) sets the floor."""


@dataclass(frozen=True)
class Conditions:
    """Platform levels during a phase; the defaults are a healthy platform (every pressure < 0.85)."""

    latency_p95: float = 0.20
    """Platform p95 video start latency, s (target 0.300)."""
    protocol_share: tuple[float, float, float] = POST_MIGRATION_MIX
    """Start shares of tcp_hls, ll_hls, quic_moq."""
    transcode_p95: float = 15.0
    """Platform p95 transcode wait, s (target 30)."""
    gpu_utilization: float = 0.60
    creator_ratio: float = 0.008
    """Active creators / DAU (the supply constraint applies at >= 0.5%)."""
    irrelevant_mean: float = 0.60
    """Mean irrelevant videos per first session (target 1.0)."""
    incident_rate: float = 4e-6
    """Visible streak incidents per progress action (target 1e-5)."""
    low_tier_share: float = 0.30
    """Share of video starts from low-tier devices (mid and high split the rest 45:25)."""


@dataclass(frozen=True)
class Phase:
    name: str
    start_offset_s: float
    end_offset_s: float
    expected_binding: str | None
    """Constraint the detector should publish once the phase has settled (None = healthy)."""
    description: str = ""
    conditions: Conditions = field(default_factory=Conditions)

    def contains(self, offset_s: float) -> bool:
        return self.start_offset_s <= offset_s < self.end_offset_s


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    phases: tuple[Phase, ...]
    dau_start: float = 3e6
    dau_end: float | None = None
    """DAU at the end of the timeline (exponential growth); None = constant."""
    ramp_s: float = 2 * HOUR
    """Levels move linearly from one phase's value to the next over this span after a phase starts."""
    noise: float = 1.0
    """Multiplier on the outcome noise."""
    signal_noise: float = 1.0
    """Multiplier on the within-unit variation of every signal X."""
    feedback: float = 0.0
    """Gain of the abandonment -> latency link (log latency per unit of log abandonment)."""
    latency_effect: float = 1.0
    """Multiplier on the latency -> abandonment elasticity (0 = no within-unit effect)."""
    tier_latency: tuple[float, float, float] = (1.35, 1.0, 0.80)
    """Median latency multiplier of low, mid, high device tiers."""
    tier_extra_abandonment: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Abandonment ratio added for low, mid, high tiers whatever the latency (a tier-level confounder)."""
    omit: frozenset[str] = frozenset()
    """Contract metrics that are never emitted."""

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"scenario {self.name!r} has no phases")
        prev_end = 0.0
        for p in self.phases:
            if p.start_offset_s != prev_end or p.end_offset_s <= p.start_offset_s:
                raise ValueError(
                    f"scenario {self.name!r}: phase {p.name!r} must start where the previous ends"
                )
            prev_end = p.end_offset_s
        gain = self.feedback * ABANDON_BETA * self.latency_effect
        if not 0.0 <= gain < 0.9:
            raise ValueError(
                f"scenario {self.name!r}: feedback x elasticity = {gain:.2f} must be in [0, 0.9) for a stable loop"
            )
        unknown = set(self.omit) - set(METRICS_BY_NAME)
        if unknown:
            raise ValueError(f"scenario {self.name!r} omits unknown metrics {sorted(unknown)}")

    @property
    def duration_s(self) -> float:
        return self.phases[-1].end_offset_s

    def phase_at(self, offset_s: float) -> Phase:
        """The phase playing at `offset_s` (phase 0 before the timeline, the last one after it)."""
        for p in self.phases:
            if offset_s < p.end_offset_s:
                return p
        return self.phases[-1]


_SLOW = Conditions(latency_p95=0.60, protocol_share=PRE_MIGRATION_MIX)


def _sequence() -> ScenarioSpec:
    d = DAY
    phases = (
        Phase(
            "slow_starts",
            0,
            3 * d,
            "latency",
            "p95 start latency ~0.6 s, far above the TCP floor: software fixes can help",
            _SLOW,
        ),
        Phase(
            "tcp_floor",
            3 * d,
            6 * d,
            "protocol",
            "software fixes brought p95 to the TCP floor (~0.37 s): no software headroom left",
            Conditions(latency_p95=0.365, protocol_share=PRE_MIGRATION_MIX),
        ),
        Phase(
            "encoder_quota",
            6 * d,
            9 * d,
            "supply",
            "QUIC migration landed (tcp < 5%); uploads outgrow the GPU quota: p95 transcode ~45 s",
            Conditions(transcode_p95=45.0, gpu_utilization=0.95, creator_ratio=0.011),
        ),
        Phase(
            "cold_start",
            9 * d,
            12 * d,
            "cold_start",
            "GPU quota raised; new users see ~1.6 irrelevant videos per first session",
            Conditions(irrelevant_mean=1.6, creator_ratio=0.011),
        ),
        Phase(
            "streak_incidents",
            12 * d,
            15 * d,
            "consistency",
            "placement fixed; false streak resets at ~3e-5 per action",
            Conditions(incident_rate=3e-5, creator_ratio=0.011),
        ),
        Phase(
            "healthy",
            15 * d,
            18 * d,
            None,
            "client-side resilience shipped: every constraint within target",
            Conditions(creator_ratio=0.011),
        ),
    )
    return ScenarioSpec(
        "sequence",
        "the binding constraint moves latency -> protocol -> supply -> cold_start -> consistency -> healthy "
        "while DAU grows from 3M to 20M",
        phases,
        dau_start=3e6,
        dau_end=20e6,
    )


def _single(name: str, description: str, phase: Phase, **kw: Any) -> ScenarioSpec:
    return ScenarioSpec(name, description, (phase,), **kw)


def _build_scenarios() -> dict[str, ScenarioSpec]:
    week = 7 * DAY
    slow = Phase(
        "slow_starts", 0, week, "latency", "p95 start latency ~0.6 s; everything else healthy", _SLOW
    )
    mix = (0.15, 0.35, 0.55)
    confounded_phases = tuple(
        Phase(
            f"low_tier_{round(share * 100)}pct",
            i * week / 3,
            (i + 1) * week / 3,
            None,
            f"low-tier devices carry {share:.0%} of starts: slower and more abandoning, "
            "but within a unit abandonment ignores latency",
            Conditions(latency_p95=0.50, protocol_share=PRE_MIGRATION_MIX, low_tier_share=share),
        )
        for i, share in enumerate(mix)
    )
    scenarios = (
        _sequence(),
        _single("healthy", "every constraint within target", Phase("healthy", 0, week, None, "all healthy")),
        _single(
            "latency_binding", "latency binds: p95 ~0.6 s with a true lagged effect on abandonment", slow
        ),
        ScenarioSpec(
            "latency_recovers",
            "after the QUIC migration a player regression makes latency bind for 24 h (p95 ~0.6 s, true "
            "effect, floor 0.28 s so protocol never binds); then a fix brings p95 to ~0.2 s and the binding "
            "constraint is released (short: for paging tests)",
            (
                Phase(
                    "slow_starts",
                    0,
                    24 * HOUR,
                    "latency",
                    "p95 start latency ~0.6 s on the post-migration protocol mix",
                    Conditions(latency_p95=0.60),
                ),
                Phase(
                    "recovered",
                    24 * HOUR,
                    week,
                    None,
                    "software fix shipped: p95 ~0.2 s, every constraint within target",
                    Conditions(),
                ),
            ),
        ),
        ScenarioSpec(
            "confounded",
            "latency beyond target, but device tier drives both latency and abandonment and a tier-mix "
            "shift moves both platform-wide; within a unit abandonment does not respond (a proxy)",
            confounded_phases,
            ramp_s=week / 3,
            latency_effect=0.0,
            tier_latency=(1.8, 1.0, 0.7),
            tier_extra_abandonment=(0.012, 0.003, 0.0),
        ),
        _single(
            "missing_outcome",
            "like latency_binding, but video_start_abandonments_total is never emitted (observability)",
            Phase("slow_starts", 0, week, "observability", "the latency outcome is not measured", _SLOW),
            omit=frozenset({"video_start_abandonments_total"}),
        ),
        _single(
            "feedback",
            "like latency_binding, plus abandonment raising latency (retries): a two-way link that fails "
            "temporal precedence; the other four tests still pass",
            slow,
            feedback=0.4,
            noise=3.0,
        ),
        _single(
            "noisy",
            "like latency_binding with heavy outcome noise and volatile signals: the effect is real but weak "
            "per point",
            slow,
            noise=8.0,
            signal_noise=1.5,
        ),
    )
    return {s.name: s for s in scenarios}


# --------------------------------------------------------------------------------------
# Platform constants (synthetic, chosen to look like the case study)

REGION_SHARE = np.array([0.40, 0.35, 0.25])
"""DAU share of us, eu, apac."""
REGION_PEAK_HOUR = np.array([2.0, 19.0, 12.0])
"""UTC hour of each region's evening traffic peak."""
TRAFFIC_AMPLITUDE = 0.35
"""Diurnal swing of activity rates (relative)."""
TIER_BASE_SHARE = np.array([0.30, 0.45, 0.25])
REGION_LATENCY = np.array([0.96, 1.00, 1.05])
STARTS_PER_USER_DAY = 30.0
LATENCY_SIGMA = 0.40
"""Log-sd of start latency within a unit and scrape."""
LATENCY_DIURNAL = 0.03
ABANDON_BASE = 0.004
"""Abandonment ratio at p95 = ABANDON_REF."""
ABANDON_REF = 0.300
ABANDON_BETA = 1.5

CREATOR_TIER_SHARE = np.array([0.80, 0.20])
UPLOADS_PER_CREATOR_DAY = np.array([0.4, 1.5])
REGION_TRANSCODE = np.array([0.95, 1.00, 1.08])
CREATOR_TIER_TRANSCODE = np.array([1.05, 0.85])
TRANSCODE_SIGMA = 0.55
TRANSCODE_DIURNAL = 0.08
CREATOR_CHURN_BASE = 0.30 / (365 * DAY)
"""Creator churn hazard per second at p95 wait = 30 s (30% a year)."""
CREATOR_CHURN_REF = 30.0
CREATOR_CHURN_BETA = 1.0
GPU_DIURNAL = 0.03

NEW_USERS_PER_DAU_DAY = 0.02
SKILL_SHARE = np.array([0.65, 0.35])
REGION_COLD = np.array([0.95, 1.00, 1.07])
SKILL_COLD = np.array([0.90, 1.20])
COLD_DIURNAL = 0.08
EARLY_EXIT_BASE = 0.15
EARLY_EXIT_REF = 1.0
EARLY_EXIT_BETA = 1.0

CLIENT_SHARE = np.array([0.36, 0.40, 0.24])
ACTIONS_PER_USER_DAY = 20.0
REGION_INCIDENTS = np.array([0.95, 1.00, 1.08])
CLIENT_INCIDENTS = np.array([1.00, 1.15, 0.80])
INCIDENT_DIURNAL = 0.04
STREAK_MEDIAN_DAYS = 6.0
STREAK_SIGMA = 1.0
USER_CHURN_BASE = 0.004 / DAY
"""Users' churn hazard per second at 1e-5 incidents per action."""
USER_CHURN_REF = 1e-5
USER_CHURN_BETA = 0.5

SIGNAL_SD = {"latency": 0.12, "supply": 0.15, "cold_start": 0.12, "consistency": 0.15}
"""Stationary log-sd of each signal's unit-level AR(1) variation."""
SIGNAL_TAU = {"latency": 1800.0, "supply": 7200.0, "cold_start": 1800.0, "consistency": 1800.0}
"""AR(1) correlation time of each signal, s (transcode queues move slowly)."""
OUTCOME_SD = 0.08
"""Log-sd of the multiplicative outcome noise per 60 s of data (scaled for other intervals)."""
LAGS_S = {"latency": 600.0, "supply": 600.0, "cold_start": 300.0, "consistency": 600.0, "feedback": 600.0}
"""Outcome response lag (and feedback lag), s: 1-2 five-minute steps."""
Z95 = 1.6448536269514722

BLOCK_STEPS = 1024
"""Steps per noise block (fixed: part of what makes samples independent of chunking)."""
DEFAULT_HISTORY_S = 10 * DAY
"""How far before `origin` the simulated history (and every counter) starts by default."""

SCENARIOS: dict[str, ScenarioSpec] = _build_scenarios()

_STREAMS = {
    ("latency", "x"): 1,
    ("latency", "y"): 2,
    ("supply", "x"): 3,
    ("supply", "y"): 4,
    ("supply", "gpu"): 5,
    ("cold_start", "x"): 6,
    ("cold_start", "y"): 7,
    ("consistency", "x"): 8,
    ("consistency", "y"): 9,
}

_MODULE_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("platform", ("daily_active_users",)),
    ("latency", ("video_start_latency_seconds", "video_starts_total", "video_start_abandonments_total")),
    (
        "supply",
        (
            "transcode_wait_seconds",
            "transcode_queue_depth",
            "gpu_quota_utilization_ratio",
            "active_creators",
            "creators_churned_total",
        ),
    ),
    (
        "cold_start",
        ("first_sessions_total", "first_session_irrelevant_videos", "first_session_early_exits_total"),
    ),
    (
        "consistency",
        (
            "user_actions_total",
            "streak_reset_incidents_total",
            "streak_length_at_reset_days",
            "users_churned_total",
        ),
    ),
)


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _mixture_quantile(q: float, log_medians: np.ndarray, weights: np.ndarray, sigma: float) -> float:
    """Quantile q of a weighted mixture of lognormals with common log-sd."""
    w = weights / weights.sum()

    def excess(log_x: float) -> float:
        return float(np.sum(w * special.ndtr((log_x - log_medians) / sigma))) - q

    lo = float(log_medians.min()) - 10 * sigma
    hi = float(log_medians.max()) + 10 * sigma
    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-12))


def _grid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Outer product flattened unit-major: unit (i, j) -> i * len(b) + j."""
    return np.outer(a, b).ravel()


def _lag(x: np.ndarray, steps: int) -> np.ndarray:
    """x shifted down by `steps` rows (the first rows repeat row 0; they lie in the warm-up)."""
    if steps <= 0:
        return x
    return np.concatenate([np.repeat(x[:1], steps, axis=0), x[:-steps]], axis=0)


class Store(Protocol):
    def append(self, name: str, labels: Mapping[str, str], timestamps: Any, values: Any) -> Any: ...


# --------------------------------------------------------------------------------------
# The simulator


class Simulator:
    """Deterministic generator of the platform's metrics for one scenario and seed.

    Time `origin` is the scenario's offset 0; times before it play phase 0 (a service
    can pre-fill history before its timeline starts), back to `history_start`
    (``origin - history`` rounded down to a block), where every counter starts at 0.
    """

    def __init__(
        self,
        scenario: str | ScenarioSpec,
        seed: int = 1,
        *,
        origin: float,
        interval: float = 60.0,
        history: float = DEFAULT_HISTORY_S,
    ) -> None:
        if isinstance(scenario, ScenarioSpec):
            self.spec = scenario
        elif scenario in SCENARIOS:
            self.spec = SCENARIOS[scenario]
        else:
            raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
        for label, v in (("origin", origin), ("interval", interval), ("history", history)):
            if not math.isfinite(v):
                raise ValueError(f"{label} must be finite, got {v!r}")
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if history < 0:
            raise ValueError(f"history must be >= 0 seconds, got {history!r}")
        self.seed = int(seed)
        self.origin = float(origin)
        self.interval = float(interval)
        self._anchor_block = math.floor(-history / self.interval / BLOCK_STEPS)
        self.history_start = self.origin + self._anchor_block * BLOCK_STEPS * self.interval
        self.lag_steps = {k: max(1, round(v / self.interval)) for k, v in LAGS_S.items()}
        self.phi = {m: math.exp(-self.interval / tau) for m, tau in SIGNAL_TAU.items()}
        self.warmup = {
            m: max(1, math.ceil((8 * tau + 3 * max(LAGS_S.values())) / self.interval))
            for m, tau in SIGNAL_TAU.items()
        }
        self.metrics: tuple[MetricSpec, ...] = tuple(m for m in METRICS if m.name not in self.spec.omit)
        self._levels = self._phase_levels()
        self._lock = threading.RLock()
        self._blocks: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = OrderedDict()
        self._offsets: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self._mark: float | None = None

    # ---------------------------------------------------------------- public API

    @property
    def scenario(self) -> ScenarioSpec:
        return self.spec

    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.spec.phases

    def phase_at(self, t: float) -> Phase:
        """The phase playing at unix time `t`."""
        return self.spec.phase_at(t - self.origin)

    def grid(self, t0: float, t1: float) -> np.ndarray:
        """Sample times on the interval grid with t0 <= t < t1."""
        k0, k1 = self._step_range(t0, t1)
        return self.origin + self.interval * np.arange(k0, k1, dtype=np.float64)

    def generate(self, t0: float, t1: float) -> Iterator[SeriesChunk]:
        """Every emitted series over [t0, t1): family by family (contract order), one array per series.

        Histogram series of one unit come together (buckets, ``_count``, ``_sum``).
        Raises ValueError when t0 is before `history_start`.
        """
        k0, k1 = self._step_range(t0, t1)
        if k1 <= k0:
            return
        if k0 < self._anchor_block * BLOCK_STEPS:
            raise ValueError(
                f"{format_time(t0)} is before the simulated history start {format_time(self.history_start)}; "
                "construct the Simulator with a longer history"
            )
        ts = self.origin + self.interval * np.arange(k0, k1, dtype=np.float64)
        ts.flags.writeable = False  # shared by every series of the call
        b0, b1 = k0 // BLOCK_STEPS, (k1 - 1) // BLOCK_STEPS
        for module, names in _MODULE_METRICS:
            specs = [METRICS_BY_NAME[n] for n in names if n not in self.spec.omit]
            if not specs:
                continue
            pieces: dict[str, list[np.ndarray]] = {m.name: [] for m in specs}
            for b in range(b0, b1 + 1):
                lo = max(k0 - b * BLOCK_STEPS, 0)
                hi = min(k1 - b * BLOCK_STEPS, BLOCK_STEPS)
                data = self._block(module, b)
                offsets = self._offset(module, b) if any(m.type != "gauge" for m in specs) else {}
                for m in specs:
                    arr = data[m.name]
                    if m.type != "gauge":
                        arr = offsets[m.name][:, None] + np.cumsum(arr, axis=1)
                    pieces[m.name].append(arr[:, lo:hi])
            for m in specs:
                values = np.concatenate(pieces.pop(m.name), axis=1)
                values.flags.writeable = False
                for row, (series_name, labels) in enumerate(m.series()):
                    yield series_name, m.type, labels, ts, values[row]

    def write_to(self, store: Store, t0: float, t1: float) -> int:
        """Append every sample in [t0, t1) to `store`; returns the number of samples written."""
        n = 0
        for name, _typ, labels, ts, values in self.generate(t0, t1):
            store.append(name, labels, ts, values)
            n += len(ts)
        with self._lock:
            if self._mark is None or t1 > self._mark:
                self._mark = float(t1)
        return n

    def advance_to(self, store: Store, t: float) -> int:
        """Write every sample after the previous `write_to`/`advance_to` up to and including `t`.

        Does nothing (returns 0) until a `write_to` established where the data stands.
        """
        with self._lock:
            mark = self._mark
        if mark is None:
            return 0
        k_end = math.floor((t - self.origin) / self.interval + 1e-9) + 1
        t_end = self.origin + k_end * self.interval
        if t_end <= mark:
            return 0
        return self.write_to(store, mark, t_end)

    # ---------------------------------------------------------------- grid and caches

    def _step_range(self, t0: float, t1: float) -> tuple[int, int]:
        for label, v in (("t0", t0), ("t1", t1)):
            if not math.isfinite(v):
                raise ValueError(f"{label} must be finite, got {v!r}")
        return self._ceil_step(t0), self._ceil_step(t1)

    def _ceil_step(self, t: float) -> int:
        """Smallest k with origin + k * interval >= t (float error of 1e-9 steps tolerated)."""
        x = (t - self.origin) / self.interval
        k = round(x)
        return int(k) if abs(x - k) < 1e-9 else math.ceil(x)

    def _block(self, module: str, b: int) -> dict[str, np.ndarray]:
        """Per-metric rows x BLOCK_STEPS arrays: gauge values or counter increments."""
        key = (module, b)
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                self._blocks.move_to_end(key)
                return hit
        data = getattr(self, f"_compute_{module}")(b)
        with self._lock:
            self._blocks[key] = data
            while len(self._blocks) > 32:
                self._blocks.popitem(last=False)
        return data

    def _offset(self, module: str, b: int) -> dict[str, np.ndarray]:
        """Counter values just before block b (cumulative block totals since the history start)."""
        with self._lock:
            anchor = self._anchor_block
            if b <= anchor:
                return self._zero_offsets(module)
            start = b
            while start > anchor and (module, start) not in self._offsets:
                start -= 1
            acc = self._offsets.get((module, start)) or self._zero_offsets(module)
            for j in range(start, b):
                data = self._block(module, j)
                acc = {
                    name: off + np.cumsum(data[name], axis=1)[:, -1] if data[name].shape[1] else off
                    for name, off in acc.items()
                }
                self._offsets[(module, j + 1)] = acc
            return acc

    def _zero_offsets(self, module: str) -> dict[str, np.ndarray]:
        names = dict(_MODULE_METRICS)[module]
        return {
            n: np.zeros(len(METRICS_BY_NAME[n].series())) for n in names if METRICS_BY_NAME[n].type != "gauge"
        }

    def _ext(self, module: str, b: int) -> tuple[int, np.ndarray, np.ndarray]:
        """First step, times and scenario offsets of block b extended by the module's warm-up."""
        k0 = b * BLOCK_STEPS - self.warmup[module]
        k = np.arange(k0, (b + 1) * BLOCK_STEPS, dtype=np.float64)
        t = self.origin + self.interval * k
        return k0, t, t - self.origin

    def _normals(self, module: str, stream: str, k0: int, k1: int, width: int) -> np.ndarray:
        """Standard normals for steps [k0, k1) x `width`, drawn per block from (seed, stream, block)."""
        sid = _STREAMS[(module, stream)]
        parts = []
        for j in range(k0 // BLOCK_STEPS, (k1 - 1) // BLOCK_STEPS + 1):
            ss = np.random.SeedSequence([_zigzag(self.seed), sid, _zigzag(j)])
            draws = np.random.default_rng(ss).standard_normal((BLOCK_STEPS, width))
            lo = max(k0 - j * BLOCK_STEPS, 0)
            hi = min(k1 - j * BLOCK_STEPS, BLOCK_STEPS)
            parts.append(draws[lo:hi])
        return np.concatenate(parts, axis=0)

    def _ar(self, module: str, k0: int, n: int, width: int) -> np.ndarray:
        """Unit-variance AR(1) started at 0 at step k0 (k0 is a warm-up span before the block)."""
        eps = self._normals(module, "x", k0, k0 + n, width)
        phi = self.phi[module]
        return lfilter([math.sqrt(1.0 - phi**2)], [1.0, -phi], eps, axis=0)

    def _outcome_noise(self, module: str, k0: int, n: int, width: int) -> np.ndarray:
        """Log-scale multiplicative outcome noise with mean-one factor exp(noise)."""
        sd = OUTCOME_SD * self.spec.noise * math.sqrt(60.0 / self.interval)
        return sd * self._normals(module, "y", k0, k0 + n, width) - 0.5 * sd * sd

    # ---------------------------------------------------------------- levels

    def _phase_levels(self) -> dict[str, np.ndarray]:
        """Per-phase values of every level, with calibrated scales."""
        spec = self.spec
        conds = [p.conditions for p in spec.phases]
        sx = SIGNAL_SD
        sn = spec.signal_noise
        tier_lat = np.asarray(spec.tier_latency)
        lat_log_mult = np.log(_grid(REGION_LATENCY, tier_lat))
        lat_w = _grid(REGION_SHARE, TIER_BASE_SHARE)
        lat_sigma = math.sqrt(LATENCY_SIGMA**2 + (sx["latency"] * sn) ** 2 + 0.5 * LATENCY_DIURNAL**2)
        lat_q = _mixture_quantile(0.95, lat_log_mult, lat_w, lat_sigma)

        tc_log_mult = np.log(_grid(REGION_TRANSCODE, CREATOR_TIER_TRANSCODE))
        tc_w = _grid(REGION_SHARE, CREATOR_TIER_SHARE * UPLOADS_PER_CREATOR_DAY)
        tc_sigma = math.sqrt(TRANSCODE_SIGMA**2 + (sx["supply"] * sn) ** 2 + 0.5 * TRANSCODE_DIURNAL**2)
        tc_q = _mixture_quantile(0.95, tc_log_mult, tc_w, tc_sigma)

        cold_w = _grid(REGION_SHARE, SKILL_SHARE)
        cold_mean = float(np.sum(cold_w * _grid(REGION_COLD, SKILL_COLD))) * math.exp(
            0.5 * (sx["cold_start"] * sn) ** 2
        )
        inc_w = _grid(REGION_SHARE, CLIENT_SHARE)
        inc_mean = float(np.sum(inc_w * _grid(REGION_INCIDENTS, CLIENT_INCIDENTS))) * math.exp(
            0.5 * (sx["consistency"] * sn) ** 2
        )
        return {
            "start": np.array([p.start_offset_s for p in spec.phases]),
            "latency_scale": np.array([c.latency_p95 / lat_q for c in conds]),
            "transcode_scale": np.array([c.transcode_p95 / tc_q for c in conds]),
            "cold_scale": np.array([c.irrelevant_mean / cold_mean for c in conds]),
            "incident_scale": np.array([c.incident_rate / inc_mean for c in conds]),
            "gpu": np.array([c.gpu_utilization for c in conds]),
            "creator_ratio": np.array([c.creator_ratio for c in conds]),
            "low_tier_share": np.array([c.low_tier_share for c in conds]),
            "protocol_share": np.array([c.protocol_share for c in conds], dtype=float),
        }

    def _level(self, name: str, s: np.ndarray, log: bool = False) -> np.ndarray:
        """Value of a level at scenario offsets `s`, ramping from the previous phase after each start."""
        starts = self._levels["start"]
        vals = self._levels[name]
        idx = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(starts) - 1)
        prev = np.maximum(idx - 1, 0)
        ramp = max(self.spec.ramp_s, 1e-9)
        frac = np.where(idx > 0, np.clip((s - starts[idx]) / ramp, 0.0, 1.0), 1.0)
        if vals.ndim == 2:
            frac = frac[:, None]
        cur, before = vals[idx], vals[prev]
        if log:
            return np.exp(np.log(before) + (np.log(cur) - np.log(before)) * frac)
        return before + (cur - before) * frac

    def _dau(self, s: np.ndarray) -> np.ndarray:
        """DAU per region (steps x 3)."""
        spec = self.spec
        total = np.full(len(s), spec.dau_start)
        if spec.dau_end is not None:
            frac = np.clip(s / spec.duration_s, 0.0, 1.0)
            total = spec.dau_start * (spec.dau_end / spec.dau_start) ** frac
        return total[:, None] * REGION_SHARE[None, :]

    @staticmethod
    def _diurnal(t: np.ndarray) -> np.ndarray:
        """cos of each region's time of day relative to its evening peak (steps x 3)."""
        return np.cos(2.0 * np.pi * (t[:, None] / DAY - REGION_PEAK_HOUR[None, :] / 24.0))

    # ---------------------------------------------------------------- modules

    def _compute_platform(self, b: int) -> dict[str, np.ndarray]:
        k0 = b * BLOCK_STEPS
        t = self.origin + self.interval * np.arange(k0, k0 + BLOCK_STEPS, dtype=np.float64)
        return {"daily_active_users": self._dau(t - self.origin).T.copy()}

    def _compute_latency(self, b: int) -> dict[str, np.ndarray]:
        spec = self.spec
        k0, t, s = self._ext("latency", b)
        n = len(t)
        region = np.repeat(np.arange(3), 3)
        tier = np.tile(np.arange(3), 3)
        diur = self._diurnal(t)
        scale = self._level("latency_scale", s, log=True)
        log_mult = np.log(_grid(REGION_LATENCY, np.asarray(spec.tier_latency)))
        sd = SIGNAL_SD["latency"] * spec.signal_noise
        base = np.log(scale)[:, None] + log_mult[None, :] + LATENCY_DIURNAL * diur[:, region]
        base = base + sd * self._ar("latency", k0, n, 9)
        log_y0 = np.full(9, math.log(ABANDON_BASE))
        beta = ABANDON_BETA * spec.latency_effect
        noise = self._outcome_noise("latency", k0, n, 9)
        lag = self.lag_steps["latency"]
        p95_shift = Z95 * LATENCY_SIGMA - math.log(ABANDON_REF)
        if spec.feedback == 0.0:
            log_med = base
            log_y = log_y0[None, :] + beta * (_lag(log_med, lag) + p95_shift) + noise
        else:
            # abandonment -> retries -> load -> latency: log latency responds to the deviation of
            # log abandonment from its level-only value, `fb` steps later.
            fb = self.lag_steps["feedback"]
            level = np.log(scale)[:, None] + log_mult[None, :]
            y_level = log_y0[None, :] + beta * (_lag(level, lag) + p95_shift)
            log_med = np.empty_like(base)
            log_y = np.empty_like(base)
            dev = np.zeros_like(base)
            chunk = min(lag, fb)
            for i in range(0, n, chunk):
                j = min(i + chunk, n)
                rows = np.arange(i, j)
                src = rows - fb
                fbk = np.where(src[:, None] >= 0, dev[np.maximum(src, 0)], 0.0)
                log_med[i:j] = base[i:j] + spec.feedback * fbk
                lsrc = np.maximum(rows - lag, 0)
                log_y[i:j] = log_y0[None, :] + beta * (log_med[lsrc] + p95_shift) + noise[i:j]
                dev[i:j] = log_y[i:j] - y_level[i:j]
        w = self.warmup["latency"]
        log_med, log_y, t, s, diur = log_med[w:], log_y[w:], t[w:], s[w:], diur[w:]
        low = self._level("low_tier_share", s)
        rest = (1.0 - low)[:, None] * (TIER_BASE_SHARE[1:] / TIER_BASE_SHARE[1:].sum())[None, :]
        tier_share = np.concatenate([low[:, None], rest], axis=1)
        traffic = 1.0 + TRAFFIC_AMPLITUDE * diur
        dau = self._dau(s)
        starts = (
            dau[:, region]
            * tier_share[:, tier]
            * traffic[:, region]
            * (STARTS_PER_USER_DAY / DAY * self.interval)
        )
        hist = _lognormal_hist(starts, log_med, LATENCY_SIGMA, LATENCY_BUCKETS)
        shares = self._level("protocol_share", s)
        by_protocol = starts[:, :, None] * shares[:, None, :]
        extra = np.asarray(spec.tier_extra_abandonment)[tier]
        abandon = starts * np.minimum(np.exp(log_y) + extra[None, :], 0.95)
        return {
            "video_start_latency_seconds": hist,
            "video_starts_total": by_protocol.reshape(len(s), -1).T.copy(),
            "video_start_abandonments_total": abandon.T.copy(),
        }

    def _compute_supply(self, b: int) -> dict[str, np.ndarray]:
        spec = self.spec
        k0, t, s = self._ext("supply", b)
        n = len(t)
        region = np.repeat(np.arange(3), 2)
        ctier = np.tile(np.arange(2), 3)
        diur = self._diurnal(t)
        scale = self._level("transcode_scale", s, log=True)
        log_mult = np.log(_grid(REGION_TRANSCODE, CREATOR_TIER_TRANSCODE))
        sd = SIGNAL_SD["supply"] * spec.signal_noise
        log_med = np.log(scale)[:, None] + log_mult[None, :] + TRANSCODE_DIURNAL * diur[:, region]
        log_med = log_med + sd * self._ar("supply", k0, n, 6)
        noise = self._outcome_noise("supply", k0, n, 6)
        lag = self.lag_steps["supply"]
        log_p95_rel = _lag(log_med, lag) + Z95 * TRANSCODE_SIGMA - math.log(CREATOR_CHURN_REF)
        hazard = CREATOR_CHURN_BASE * np.exp(CREATOR_CHURN_BETA * log_p95_rel + noise)
        gpu_noise = self._normals("supply", "gpu", k0, k0 + n, 3)
        phi = self.phi["supply"]
        gpu_ar = lfilter([math.sqrt(1.0 - phi**2)], [1.0, -phi], gpu_noise, axis=0)
        w = self.warmup["supply"]
        log_med, hazard, gpu_ar, s, diur = log_med[w:], hazard[w:], gpu_ar[w:], s[w:], diur[w:]
        dau = self._dau(s)
        creators = (
            dau[:, region] * self._level("creator_ratio", s)[:, None] * CREATOR_TIER_SHARE[ctier][None, :]
        )
        traffic = 1.0 + TRAFFIC_AMPLITUDE * diur
        upload_rate = creators * UPLOADS_PER_CREATOR_DAY[ctier][None, :] / DAY * traffic[:, region]
        uploads = upload_rate * self.interval
        mean_wait = np.exp(log_med + 0.5 * TRANSCODE_SIGMA**2)
        queue = (upload_rate * mean_wait).reshape(len(s), 3, 2).sum(axis=2)
        gpu = self._level("gpu", s)[:, None] * (1.0 + GPU_DIURNAL * diur) + 0.01 * gpu_ar
        return {
            "transcode_wait_seconds": _lognormal_hist(uploads, log_med, TRANSCODE_SIGMA, TRANSCODE_BUCKETS),
            "transcode_queue_depth": queue.T.copy(),
            "gpu_quota_utilization_ratio": np.clip(gpu, 0.0, 0.999).T.copy(),
            "active_creators": creators.T.copy(),
            "creators_churned_total": (creators * hazard * self.interval).T.copy(),
        }

    def _compute_cold_start(self, b: int) -> dict[str, np.ndarray]:
        spec = self.spec
        k0, t, s = self._ext("cold_start", b)
        n = len(t)
        region = np.repeat(np.arange(3), 2)
        skill = np.tile(np.arange(2), 3)
        diur = self._diurnal(t)
        scale = self._level("cold_scale", s, log=True)
        sd = SIGNAL_SD["cold_start"] * spec.signal_noise
        log_mu = np.log(scale)[:, None] + np.log(_grid(REGION_COLD, SKILL_COLD))[None, :]
        log_mu = log_mu + COLD_DIURNAL * diur[:, region] + sd * self._ar("cold_start", k0, n, 6)
        noise = self._outcome_noise("cold_start", k0, n, 6)
        lag = self.lag_steps["cold_start"]
        exit_ratio = EARLY_EXIT_BASE * np.exp(
            EARLY_EXIT_BETA * (_lag(log_mu, lag) - math.log(EARLY_EXIT_REF)) + noise
        )
        w = self.warmup["cold_start"]
        log_mu, exit_ratio, s, diur = log_mu[w:], exit_ratio[w:], s[w:], diur[w:]
        dau = self._dau(s)
        traffic = 1.0 + TRAFFIC_AMPLITUDE * diur
        sessions = (
            dau[:, region] * SKILL_SHARE[skill][None, :] * traffic[:, region] * (NEW_USERS_PER_DAU_DAY / DAY)
        ) * self.interval
        mu = np.exp(log_mu)
        cdf = special.pdtr(np.asarray(IRRELEVANT_BUCKETS)[None, None, :], mu[:, :, None])
        return {
            "first_sessions_total": sessions.T.copy(),
            "first_session_irrelevant_videos": _hist_rows(sessions, cdf, sessions * mu),
            "first_session_early_exits_total": (sessions * np.minimum(exit_ratio, 0.95)).T.copy(),
        }

    def _compute_consistency(self, b: int) -> dict[str, np.ndarray]:
        spec = self.spec
        k0, t, s = self._ext("consistency", b)
        n = len(t)
        region = np.repeat(np.arange(3), 3)
        client = np.tile(np.arange(3), 3)
        diur = self._diurnal(t)
        scale = self._level("incident_scale", s, log=True)
        sd = SIGNAL_SD["consistency"] * spec.signal_noise
        log_x = np.log(scale)[:, None] + np.log(_grid(REGION_INCIDENTS, CLIENT_INCIDENTS))[None, :]
        log_x = log_x + INCIDENT_DIURNAL * diur[:, region] + sd * self._ar("consistency", k0, n, 9)
        noise = self._outcome_noise("consistency", k0, n, 9)
        lag = self.lag_steps["consistency"]
        churn = USER_CHURN_BASE * np.exp(
            USER_CHURN_BETA * (_lag(log_x, lag) - math.log(USER_CHURN_REF)) + noise
        )
        w = self.warmup["consistency"]
        log_x, churn, s, diur = log_x[w:], churn[w:], s[w:], diur[w:]
        users = self._dau(s)[:, region] * CLIENT_SHARE[client][None, :]
        traffic = 1.0 + TRAFFIC_AMPLITUDE * diur
        actions = users * traffic[:, region] * (ACTIONS_PER_USER_DAY / DAY * self.interval)
        incidents = actions * np.exp(log_x)
        streak = _lognormal_hist(
            incidents, np.full_like(incidents, math.log(STREAK_MEDIAN_DAYS)), STREAK_SIGMA, STREAK_BUCKETS
        )
        return {
            "user_actions_total": actions.T.copy(),
            "streak_reset_incidents_total": incidents.T.copy(),
            "streak_length_at_reset_days": streak,
            "users_churned_total": (users * churn * self.interval).T.copy(),
        }


def _hist_rows(count: np.ndarray, cdf: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Histogram increments as rows: per unit the finite buckets, +Inf, _count, _sum.

    `count` and `total` are (steps, units); `cdf` is (steps, units, buckets).
    """
    n, u = count.shape
    out = np.empty((n, u, cdf.shape[2] + 3))
    out[:, :, :-3] = count[:, :, None] * cdf
    out[:, :, -3] = count
    out[:, :, -2] = count
    out[:, :, -1] = total
    return out.reshape(n, -1).T.copy()


def _lognormal_hist(
    count: np.ndarray, log_median: np.ndarray, sigma: float, bounds: tuple[float, ...]
) -> np.ndarray:
    cdf = special.ndtr((np.log(np.asarray(bounds))[None, None, :] - log_median[:, :, None]) / sigma)
    return _hist_rows(count, cdf, count * np.exp(log_median + 0.5 * sigma * sigma))


# --------------------------------------------------------------------------------------
# Serving the live platform


class SimulatorCollector:
    """prometheus_client collector rendering the simulator's cumulative values at the simulated now.

    Simulated time runs `speed` times faster than `clock` from `wall_start`, where it
    equals `sim_start`.
    """

    def __init__(
        self,
        sim: Simulator,
        *,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
        sim_start: float | None = None,
        wall_start: float | None = None,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.sim = sim
        self.clock = clock
        self.speed = float(speed)
        self.wall_start = clock() if wall_start is None else float(wall_start)
        self.sim_start = self.wall_start if sim_start is None else float(sim_start)

    def now(self) -> float:
        """Simulated time of the newest sample being served (on the interval grid)."""
        t = self.sim_start + (self.clock() - self.wall_start) * self.speed
        sim = self.sim
        k = math.floor((t - sim.origin) / sim.interval + 1e-9)
        return sim.origin + k * sim.interval

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        t = self.now()
        families: dict[str, Any] = {}
        pending: dict[tuple[str, tuple[str, ...]], list[tuple[str, float]]] = {}
        for name, typ, labels, _ts, values in self.sim.generate(t, t + self.sim.interval):
            if typ == "histogram":
                base = name.rsplit("_", 1)[0]
                spec = METRICS_BY_NAME[base]
                fam = families.get(base)
                if fam is None:
                    fam = families[base] = HistogramMetricFamily(base, spec.help, labels=list(spec.labels))
                key = (base, tuple(labels[lbl] for lbl in spec.labels))
                if name.endswith("_bucket"):
                    pending.setdefault(key, []).append((labels["le"], float(values[0])))
                elif name.endswith("_sum"):
                    fam.add_metric(list(key[1]), buckets=pending.pop(key), sum_value=float(values[0]))
                continue
            spec = METRICS_BY_NAME[name]
            fam = families.get(name)
            if fam is None:
                cls = CounterMetricFamily if typ == "counter" else GaugeMetricFamily
                fam = families[name] = cls(spec.family, spec.help, labels=list(spec.labels))
            fam.add_metric([labels[lbl] for lbl in spec.labels], float(values[0]))
        yield from families.values()


def serve_simulator(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 9467,
    *,
    speed: float = 1.0,
    clock: Callable[[], float] = time.time,
    sim_start: float | None = None,
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) exposing the live simulated platform on /metrics.

    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()``/``server_close()``.
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    collector = SimulatorCollector(sim, clock=clock, speed=speed, sim_start=sim_start)
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server API)
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


# --------------------------------------------------------------------------------------
# Command line


def describe_scenarios(out: TextIO) -> None:
    """Print every scenario with its phases (`csf simulate --list`)."""
    for spec in SCENARIOS.values():
        dau = f"{spec.dau_start / 1e6:g}M" + (f" -> {spec.dau_end / 1e6:g}M" if spec.dau_end else "")
        out.write(f"{spec.name}  ({format_duration(spec.duration_s)}, DAU {dau})\n    {spec.description}\n")
        for p in spec.phases:
            span = f"{format_duration(p.start_offset_s) if p.start_offset_s else '0s'}..{format_duration(p.end_offset_s)}"
            out.write(
                f"    {span:>12}  {p.name:<18} expect {p.expected_binding or 'healthy':<13} {p.description}\n"
            )
        out.write("\n")


def simulate_cli(args: Any) -> int:
    """`csf simulate`: list scenarios, write OpenMetrics, or serve the live platform."""
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    if getattr(args, "list", False):
        describe_scenarios(out)
        return 0
    if getattr(args, "platform", "video") == "web" or (args.scenario or "").startswith("web_"):
        from detector.sim.web import web_simulate_cli

        return web_simulate_cli(args)
    if args.scenario is None:
        args.scenario = "sequence"
    spec = SCENARIOS.get(args.scenario)
    if spec is None:
        err.write(f"csf simulate: unknown scenario {args.scenario!r}; choose one of {', '.join(SCENARIOS)}\n")
        return 2
    try:
        interval = parse_duration(args.interval)
        if interval <= 0:
            raise ValueError(f"invalid interval {args.interval!r}: must be > 0")
        days = spec.duration_s / DAY if args.days is None else float(args.days)
        if not (days > 0 and math.isfinite(days)):
            raise ValueError(f"--days must be > 0, got {args.days!r}")
        start = None if args.start is None else parse_time(args.start)
    except ValueError as exc:
        err.write(f"csf simulate: {exc}\n")
        return 2
    if args.serve and args.output:
        err.write("csf simulate: choose one of --output and --serve\n")
        return 2
    if args.serve:
        now = time.time()
        origin = now if start is None else start
        history = DEFAULT_HISTORY_S + max(0.0, origin - now)  # counters must start before the first scrape
        sim = Simulator(spec, args.seed, origin=origin, interval=interval, history=history)
        try:
            server = serve_simulator(sim, args.host, args.port, speed=args.speed, sim_start=now)
        except OSError as exc:
            err.write(f"csf simulate: cannot listen on {args.host}:{args.port}: {exc}\n")
            return 1
        host, port = str(server.server_address[0]), int(server.server_address[1])
        err.write(
            f"csf simulate: serving scenario {spec.name!r} (seed {args.seed}, x{args.speed:g}) "
            f"on http://{host}:{port}/metrics; Ctrl-C stops\n"
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    if not args.output:
        err.write("csf simulate: nothing to do: pass --output FILE, --serve or --list\n")
        return 2
    from detector.sim.shape import ShapedSimulator, shape_from_args
    from detector.source.openmetrics import write_openmetrics

    try:
        shape = shape_from_args(args, parse_duration)
    except ValueError as exc:
        err.write(f"csf simulate: {exc}\n")
        return 2
    span = days * DAY
    lead = parse_duration(getattr(args, "history", None) or 0)
    if start is None:
        start = math.floor((time.time() - span - lead) / interval) * interval
    # `lead` seconds of the first phase come before the scenario starts at `origin`, so a
    # backtest with that lookback can evaluate from the scenario's first day.
    origin = start + lead
    sim = Simulator(spec, args.seed, origin=origin, interval=interval, history=DEFAULT_HISTORY_S + lead)
    series = ShapedSimulator(sim, shape).generate(start, origin + span)
    span += lead
    if args.output == "-":
        n = write_openmetrics(out, series, help=METRIC_HELP)
    else:
        with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
            n = write_openmetrics(fh, series, help=METRIC_HELP)
    err.write(
        f"csf simulate: wrote {n} samples of scenario {spec.name!r} (seed {args.seed}) "
        f"from {format_time(start)} to {format_time(start + span)} every {format_duration(interval)}\n"
    )
    return 0
