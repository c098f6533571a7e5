"""The constraint pack: one frozen model that the evaluator and every generator read.

`detector.spec.load` parses YAML (``apiVersion: csf/v1``) strictly into these types.
All numbers are pack fields; the defaults here mirror `detector/spec/packs/default.yaml`
and the framework's published constants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from detector.spec.signals import Signal

Direction = Literal["lower_is_better", "higher_is_better"]
LAYERS: tuple[str, ...] = ("physics", "architecture", "resource", "information", "trust", "economics", "meta")
STATES: tuple[str, ...] = (
    "observe",
    "not_applicable",
    "slack",
    "at_limit",
    "proxy",
    "deferred",
    "binding",
    "resolved",
)
DECISIONS: tuple[str, ...] = ("invest", "defer", "investigate", "stop", "observe")
OBSERVABILITY = "observability"


@dataclass(frozen=True)
class Windows:
    step: float = 300.0
    """Panel resolution in seconds (5 min)."""
    lookback: float = 7 * 86400.0
    """Panel length for causal tests (7 d)."""
    status_window: float = 3600.0
    """Window for the platform-wide X_now (1 h)."""
    sustained_window: float = 86400.0
    """How far back 'sustained' looks (24 h)."""
    sustained_fraction: float = 0.5
    """Share of status windows beyond target that makes pressure sustained."""
    staleness: float = 900.0
    """A signal whose newest point is older than this is missing (15 min)."""
    min_coverage: float = 0.5
    """Share of panel points that must be present for causal tests to run."""


@dataclass(frozen=True)
class Hysteresis:
    enter_after: int = 3
    exit_after: int = 6
    dead_band: float = 0.1


@dataclass(frozen=True)
class CausalSettings:
    alpha: float = 0.05
    lags: int = 6
    pass_required: int = 3
    segment_max_ratio: float = 3.0
    feedback_f_ratio: float = 10.0
    dose_bins: int = 5
    dose_min_rho: float = 0.9
    min_points: int = 30
    """Fewer usable (unit, step) points than this makes a test INCONCLUSIVE."""
    fragile_gamma: float = 1.5
    robust_gamma: float = 2.0


@dataclass(frozen=True)
class EconomicConstants:
    arpu_day: float = 0.0573
    """$1.72/month = $0.0573/day."""
    roi_features: float = 3.0
    """ROI of ordinary feature work; theta = max(roi_features, base_theta)."""
    base_theta: float = 3.0
    """1.0 breakeven + 0.5 each for opportunity cost, technical risk, measurement uncertainty, margin."""
    fragile_theta: float = 5.0
    composite_band: float = 0.2
    strategic_min_projected_roi: float = 5.0
    strategic_min_scale_factor: float = 2.5
    strategic_min_lead_time_months: float = 6.0
    drift_threshold: float = 0.25


@dataclass(frozen=True)
class Organisation:
    runway_months: float = 24.0
    projected_dau: float = 50e6
    dau: Signal | None = None
    """Platform DAU signal (scale transitions, projected-scale economics)."""
    dau_tiers: tuple[float, ...] = (1e6, 3e6, 10e6, 50e6)
    analysis_hours: float | None = None
    capacity_hours: float | None = None
    meta_overhead_limit: float = 0.5


@dataclass(frozen=True)
class ProtocolFloorGuard:
    """Physics floor from the protocol mix.

    Sort protocols by floor, descending; the first one whose cumulative start share
    reaches `tail_share` sets the platform floor. `mode`:
    ``needs_headroom``  -> binding only while X > floor * (1 + headroom) (software can still help);
    ``needs_exhausted`` -> binding only while floor >= target and X <= floor * (1 + headroom).
    """

    share: Signal
    label: str
    floors: tuple[tuple[str, float], ...]
    mode: Literal["needs_headroom", "needs_exhausted"]
    tail_share: float = 0.05
    headroom: float = 0.10
    type: Literal["protocol_floor"] = "protocol_floor"


@dataclass(frozen=True)
class ApplicabilityGuard:
    """Constraint applies only when input[numerator] / input[denominator] >= min_ratio."""

    numerator: str
    denominator: str
    min_ratio: float
    type: Literal["applicability"] = "applicability"


Guard = ProtocolFloorGuard | ApplicabilityGuard

EconomicModel = Literal["weibull", "creator_weibull", "loss_aversion", "none"]


@dataclass(frozen=True)
class EconomicsSpec:
    """How X turns into revenue at risk, and what a fix costs.

    model ``weibull``: revenue = input[affected] * (F(x) - F(baseline)) * arpu_day * 365,
        F the Weibull CDF with (weibull_lambda, weibull_k); baseline defaults to the target.
    model ``creator_weibull``: lost creators/yr = input[affected] * (F_c(x) - F_c(baseline));
        revenue = lost * learner_days_per_creator * arpu_day.
    model ``loss_aversion``: revenue = incidents/yr * mean M(d) over the histogram metric named
        by streak_histogram (its base name; per-bucket rates over the status window)
        * churn_per_incident * arpu_day * 365; incidents/yr = input[affected] * 365.
    ROI = (revenue + support_savings) * effectiveness * reach / cost_per_year.
    """

    model: EconomicModel = "none"
    affected: str | None = None
    weibull_lambda: float | None = None
    weibull_k: float | None = None
    baseline: float | None = None
    learner_days_per_creator: float | None = None
    loss_aversion_alpha: float = 1.2
    churn_per_incident: float | None = None
    streak_histogram: str | None = None
    effectiveness: float = 1.0
    reach: float = 1.0
    cost_per_year: float = 0.0
    support_savings_per_year: float = 0.0


@dataclass(frozen=True)
class ExceptionSpec:
    existence: bool = False
    """Below target the platform cannot exist: invest regardless of ROI."""
    one_way_door_months: float | None = None
    """Irreversible migration length; start only when runway >= 2 x this."""
    lead_time_months: float | None = None
    """Lead time for the strategic-headroom exception (needs > 6 months)."""
    enables: tuple[str, ...] = ()
    """Enabling infrastructure: constraints whose combined ROI this unlocks."""


@dataclass(frozen=True)
class Constraint:
    name: str
    layer: str
    kind: Literal["signal", "meta"] = "signal"
    description: str = ""
    predecessors: tuple[str, ...] = ()
    signal: Signal | None = None
    outcome: Signal | None = None
    target: float = 0.0
    direction: Direction = "lower_is_better"
    outcome_direction: Direction = "lower_is_better"
    """Direction of the outcome Y: abandonment, churn and exits are lower-is-better."""
    units: tuple[str, ...] = ()
    stratum: str | None = None
    segment: str | None = None
    inputs: tuple[tuple[str, Signal], ...] = ()
    """Named auxiliary signals (DAU, new users/day, shares) used by guards and economics."""
    guards: tuple[Guard, ...] = ()
    economics: EconomicsSpec = field(default_factory=EconomicsSpec)
    exceptions: ExceptionSpec = field(default_factory=ExceptionSpec)
    runbook: str | None = None

    def input(self, name: str) -> Signal:
        for key, sig in self.inputs:
            if key == name:
                return sig
        raise KeyError(f"constraint {self.name!r} has no input {name!r}")


@dataclass(frozen=True)
class Pack:
    api_version: str
    name: str
    version: str
    description: str = ""
    windows: Windows = field(default_factory=Windows)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    causal: CausalSettings = field(default_factory=CausalSettings)
    economics: EconomicConstants = field(default_factory=EconomicConstants)
    organisation: Organisation = field(default_factory=Organisation)
    constraints: tuple[Constraint, ...] = ()
    """In dependency (topological) order; the loader guarantees it and rejects cycles."""
    source: str | None = None

    def __iter__(self) -> Iterator[Constraint]:
        return iter(self.constraints)

    def constraint(self, name: str) -> Constraint:
        for c in self.constraints:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.constraints)

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Every constraint that precedes `name`, transitively, in pack order."""
        seen: set[str] = set()
        stack = list(self.constraint(name).predecessors)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.constraint(n).predecessors)
        return tuple(c.name for c in self.constraints if c.name in seen)
