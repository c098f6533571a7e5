"""Typed results: evidence per constraint and the evaluation that decides on it.

Evidence (tests, pressure, economics) is computed by pure functions; the decision
layer reads it. Every result serialises to the JSON schema of the status API and
the backtest (`to_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from detector.spec.pack import Constraint

TestOutcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
Verdict = Literal["causal", "proxy", "insufficient_data"]
TEST_NAMES: tuple[str, ...] = (
    "within_unit",
    "stratification",
    "segment_consistency",
    "temporal_precedence",
    "dose_response",
)


def _num(v: float | None) -> float | None:
    """JSON-safe number: NaN/inf become None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class TestResult:
    name: str
    result: TestOutcome
    statistic: float | None
    p_value: float | None
    n: int
    reason: str
    details: tuple[tuple[str, float], ...] = ()
    """Extra figures (per-stratum slopes, reverse F, ...), name -> value."""

    __test__ = False  # not a pytest class

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "statistic": _num(self.statistic),
            "p_value": _num(self.p_value),
            "n": int(self.n),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CausalEvidence:
    verdict: Verdict
    passed: int
    inconclusive: int
    tests: tuple[TestResult, ...]
    """In TEST_NAMES order."""
    gamma: float | None
    """Rosenbaum sensitivity Gamma* (None when it cannot be computed)."""
    reason: str

    def test(self, name: str) -> TestResult:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tests if t.result == "FAIL")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "passed": self.passed,
            "gamma": _num(self.gamma),
            "reason": self.reason,
            "tests": {t.name: t.to_dict() for t in self.tests},
        }


@dataclass(frozen=True)
class Pressure:
    x_now: float | None
    """Platform-wide signal over the status window."""
    ratio: float | None
    """x_now / target, inverted for higher-is-better signals."""
    sustained: bool
    windows_beyond: int
    windows_total: int


@dataclass(frozen=True)
class EconomicsResult:
    revenue_at_risk: float | None
    """Annual revenue at risk in dollars."""
    roi: float | None
    theta: float
    cost_per_year: float
    exception: str | None = None
    """'existence' | 'strategic_headroom' | 'enabling_infrastructure' | None."""
    exception_reason: str = ""
    one_way_door_blocked: bool = False
    details: tuple[tuple[str, float], ...] = ()


DiagnosisReason = Literal[
    "source_unavailable",
    "no_series",
    "label_absent",
    "bucket_layout_mismatch",
    "too_sparse",
    "stale",
    "no_common_units",
    "too_few_points",
    "too_little_history",
    "tests_undecided",
    "no_data",
]
DIAGNOSIS_REASONS: tuple[str, ...] = DiagnosisReason.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Diagnosis:
    """Why a constraint cannot be judged: a machine-readable reason and a sentence that
    names what was found and what to change."""

    reason: DiagnosisReason
    subject: str
    """What it is about: 'signal', 'outcome', 'guard', 'input', 'histogram', 'panel', 'source'."""
    message: str
    selector: str = ""
    """The series selector concerned (``metric{label="value"}``), when there is one."""

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "subject": self.subject, "selector": self.selector, "message": self.message}


@dataclass(frozen=True)
class SignalWindow:
    """The window a signal was evaluated over, and why."""

    role: str
    """'signal' or 'outcome'."""
    selector: str
    sample_interval: float | None
    """Coarsest sample interval among the signal's input series (seconds; None: unknown)."""
    range: float
    """The pack's range (a floor unless pinned)."""
    effective_range: float
    """The range used: at least four sample intervals unless pinned."""
    pinned: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "selector": self.selector,
            "sample_interval_seconds": _num(self.sample_interval),
            "range_seconds": self.range,
            "effective_range_seconds": self.effective_range,
            "pinned": self.pinned,
        }


@dataclass(frozen=True)
class ConstraintResult:
    name: str
    layer: str
    state: str
    decision: str
    explanation: str
    pressure: Pressure | None = None
    target: float | None = None
    causal: CausalEvidence | None = None
    economics: EconomicsResult | None = None
    missing: tuple[str, ...] = ()
    """Inputs that were missing or stale (non-empty means state 'observe')."""
    guards: tuple[tuple[str, float], ...] = ()
    """Guard figures (floor, headroom, applicability ratio)."""
    candidate: bool = False
    """Binding on this evaluation's evidence alone, before hysteresis."""
    triggers: tuple[str, ...] = ()
    diagnoses: tuple[Diagnosis, ...] = ()
    """Why the constraint cannot be judged (reasons behind `missing` and other observe states)."""
    windows: tuple[SignalWindow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        p = self.pressure
        e = self.economics
        return {
            "name": self.name,
            "layer": self.layer,
            "state": self.state,
            "decision": self.decision,
            "pressure": _num(p.ratio) if p else None,
            "value": _num(p.x_now) if p else None,
            "target": _num(self.target),
            "sustained": bool(p.sustained) if p else False,
            "causal": self.causal.to_dict() if self.causal else None,
            "annual_revenue_at_risk_dollars": _num(e.revenue_at_risk) if e else None,
            "roi": _num(e.roi) if e else None,
            "theta": _num(e.theta) if e else None,
            "exception": e.exception if e else None,
            "missing": list(self.missing),
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "windows": [w.to_dict() for w in self.windows],
            "guards": {k: _num(v) for k, v in self.guards},
            "triggers": list(self.triggers),
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class MetaReport:
    cpu_seconds: float
    wall_seconds: float
    queries: int
    samples_read: int
    memory_bytes: int
    overhead_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds,
            "queries": self.queries,
            "samples_read": self.samples_read,
            "memory_bytes": self.memory_bytes,
            "overhead_ratio": _num(self.overhead_ratio),
        }


@dataclass(frozen=True)
class Evaluation:
    pipeline: str
    time: float
    """Evaluation time, unix seconds."""
    binding: str | None
    """Published binding constraint (after hysteresis), 'observability', or None."""
    decision: str
    """System decision: the binding constraint's decision, or 'stop' when healthy."""
    explanation: str
    constraints: tuple[ConstraintResult, ...]
    meta: MetaReport
    candidate: str | None = None
    """Binding on this evaluation's evidence alone (before hysteresis)."""
    composite: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    source_up: bool = True
    pack: str = ""
    hold: tuple[str, int, int, float] | None = None
    """The published binding held by hysteresis while its own evidence no longer makes it
    one: (constraint, evaluations below the release level so far, evaluations needed,
    release pressure level). None when nothing is held."""

    def constraint(self, name: str) -> ConstraintResult:
        for c in self.constraints:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z"),
            "binding": self.binding,
            "candidate": self.candidate,
            "decision": self.decision,
            "explanation": self.explanation,
            "composite": list(self.composite),
            "triggers": list(self.triggers),
            "source_up": self.source_up,
            "hold": (
                {
                    "constraint": self.hold[0],
                    "evaluations_below": self.hold[1],
                    "needed": self.hold[2],
                    "release_below": self.hold[3],
                }
                if self.hold
                else None
            ),
            "constraints": [c.to_dict() for c in self.constraints],
            "meta": self.meta.to_dict(),
        }


@dataclass(frozen=True)
class ConstraintEvidence:
    constraint: Constraint
    missing: tuple[str, ...] = ()
    """Messages of the blocking `diagnoses` (any makes the constraint `observe`)."""
    diagnoses: tuple[Diagnosis, ...] = ()
    windows: tuple[SignalWindow, ...] = ()
    applicable: bool = True
    applicability_reason: str = ""
    pressure: Pressure | None = None
    causal: CausalEvidence | None = None
    economics: EconomicsResult | None = None
    guard_ok: bool = True
    guard_reason: str = ""
    guards: tuple[tuple[str, float], ...] = ()
    inputs: tuple[tuple[str, float], ...] = ()
    overhead_ratio: float | None = None
    coverage: float | None = None
    """Share of the panel's (unit, step) points where both X and Y have a value."""
    histograms: tuple[tuple[str, tuple[np.ndarray, np.ndarray]], ...] = ()
    """Per-bucket rates (upper bounds, counts) of histograms the economics model reads."""

    @property
    def name(self) -> str:
        return self.constraint.name

    @property
    def ratio(self) -> float | None:
        return self.pressure.ratio if self.pressure else None

    def input(self, name: str) -> float | None:
        for k, v in self.inputs:
            if k == name:
                return v
        return None


@dataclass(frozen=True)
class EvidenceSet:
    time: float
    constraints: tuple[ConstraintEvidence, ...]
    source_up: bool = True
    source_error: str = ""
    dau: float | None = None
    queries: int = 0
    samples_read: int = 0

    def get(self, name: str) -> ConstraintEvidence:
        for c in self.constraints:
            if c.name == name:
                return c
        raise KeyError(name)


EMPTY_META = MetaReport(0.0, 0.0, 0, 0, 0)

__all__ = [
    "TEST_NAMES",
    "CausalEvidence",
    "ConstraintResult",
    "EMPTY_META",
    "ConstraintEvidence",
    "DIAGNOSIS_REASONS",
    "Diagnosis",
    "DiagnosisReason",
    "EvidenceSet",
    "EconomicsResult",
    "Evaluation",
    "MetaReport",
    "Pressure",
    "SignalWindow",
    "TestResult",
]
