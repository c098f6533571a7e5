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
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from scipy import optimize, special
from scipy.signal import lfilter

from detector.sim.metrics import (
    DAY,
    IRRELEVANT_BUCKETS,
    LATENCY_BUCKETS,
    METRICS,
    METRICS_BY_NAME,
    STREAK_BUCKETS,
    TRANSCODE_BUCKETS,
    MetricSpec,
    SeriesChunk,
)
from detector.sim.scenarios import ABANDON_BETA, SCENARIOS, Phase, ScenarioSpec
from detector.timefmt import format_time

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
            while len(self._blocks) > 8:
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
