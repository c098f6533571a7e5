"""Publish evaluations as Prometheus metrics (the published metric contract).

`EvaluationCollector`, registered on an injected `CollectorRegistry` (never the global
one), renders the latest `Evaluation` of every pipeline at scrape time: build info,
binding constraint, one-hot states and decisions, pressure, causal tests, economics,
meta figures, source status. Every constraint of the pack is emitted on every scrape
(zeros included); an unknown value is NaN, never a made-up number. What accumulates
across evaluations (durations, counters) is owned by `exporters.selfmetrics.ServiceMetrics`.

Before a pipeline's first evaluation the collector publishes only
``csf_build_info`` and ``csf_source_up`` for it: there is nothing to say about its
constraints yet, and publishing "observe"/"observability" would invent an answer
that ``/readyz`` (503 until the first evaluation) already covers. Rules and alerts
should treat an absent ``csf_binding_constraint`` as "not evaluated yet".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from detector import __version__
from detector.evidence.results import DIAGNOSIS_REASONS, TEST_NAMES, ConstraintResult, Evaluation
from detector.spec.pack import DECISIONS, OBSERVABILITY, STATES, Pack

NAN = float("nan")


@dataclass(frozen=True)
class PipelineSnapshot:
    """What the collector needs to know about one pipeline at scrape time."""

    name: str
    pack: Pack
    latest: Evaluation | None
    """Latest successful evaluation (None before the first one)."""
    source_up: bool
    evaluated_wall: float | None = None
    """Wall-clock time the latest evaluation finished (None: use its evaluation time). A
    simulator or replay pipeline evaluates on its own clock; liveness is wall-clock time."""


def _num(v: float | None) -> float:
    if v is None:
        return NAN
    v = float(v)
    return v if math.isfinite(v) else NAN


class _Families:
    """The gauge families of one scrape, created in a fixed order."""

    def __init__(self) -> None:
        self._add_judgement_families()
        self._add_evidence_families()
        self._add_meta_families()

    def _add_judgement_families(self) -> None:
        """Build info, binding, states, decisions and the constraint figures (in this order)."""
        g = GaugeMetricFamily
        pc = ["pipeline", "constraint"]
        self.build_info = g(
            "csf_build_info",
            "Build and pack of each pipeline (always 1).",
            labels=["pipeline", "version", "pack", "pack_version"],
        )
        self.binding = g(
            "csf_binding_constraint",
            "1 for the published binding constraint (may be 'observability'), else 0.",
            labels=pc,
        )
        self.state = g("csf_constraint_state", "One-hot state of each constraint.", labels=[*pc, "state"])
        self.constraint_decision = g(
            "csf_constraint_decision", "One-hot decision for each constraint.", labels=[*pc, "decision"]
        )
        self.decision = g("csf_decision", "One-hot system decision.", labels=["pipeline", "decision"])
        self.pressure = g(
            "csf_constraint_pressure_ratio",
            "X_now / target, oriented so > 1 is beyond target (NaN unknown).",
            labels=pc,
        )
        self.value = g(
            "csf_constraint_value",
            "Platform-wide signal X_now over the status window (NaN unknown).",
            labels=pc,
        )
        self.target = g(
            "csf_constraint_target", "Target of the constraint's signal (NaN unknown).", labels=pc
        )

    def _add_evidence_families(self) -> None:
        """Causal tests, economics, missing inputs, diagnoses and signal windows (in this order)."""
        g = GaugeMetricFamily
        pc = ["pipeline", "constraint"]
        self.tests_passed = g(
            "csf_constraint_causal_tests_passed",
            "Causal tests passed, 0..5 (NaN when not tested).",
            labels=pc,
        )
        self.test_passed = g(
            "csf_causal_test_passed",
            "1 when the causal test passed, else 0 (NaN when not tested).",
            labels=[*pc, "test"],
        )
        self.test_inconclusive = g(
            "csf_causal_test_inconclusive",
            "1 when the causal test was inconclusive, else 0 (NaN when not tested).",
            labels=[*pc, "test"],
        )
        self.test_p = g(
            "csf_causal_test_p_value", "p-value of the causal test (NaN unknown).", labels=[*pc, "test"]
        )
        self.gamma = g(
            "csf_constraint_sensitivity_gamma", "Rosenbaum sensitivity Gamma* (NaN unknown).", labels=pc
        )
        self.revenue = g(
            "csf_constraint_annual_revenue_at_risk_dollars",
            "Annual revenue at risk in dollars (NaN unknown).",
            labels=pc,
        )
        self.roi = g(
            "csf_constraint_roi_ratio",
            "Return on investment of resolving the constraint (NaN unknown).",
            labels=pc,
        )
        self.theta = g(
            "csf_constraint_roi_threshold_ratio",
            "Invest threshold theta for the constraint (NaN unknown).",
            labels=pc,
        )
        self.missing = g(
            "csf_constraint_inputs_missing", "1 when inputs are missing or stale (state observe).", labels=pc
        )
        self.diagnosis = g(
            "csf_constraint_diagnosis",
            "One-hot: the first reason the constraint cannot be judged (all 0 when it can).",
            labels=[*pc, "reason"],
        )
        self.sample_interval = g(
            "csf_signal_sample_interval_seconds",
            "Sample interval learned from the data of the signal or outcome (NaN unknown).",
            labels=[*pc, "role"],
        )
        self.effective_range = g(
            "csf_signal_effective_range_seconds",
            "Range window the signal or outcome was evaluated over (>= 4 sample intervals unless pinned).",
            labels=[*pc, "role"],
        )

    def _add_meta_families(self) -> None:
        """Per-pipeline figures: last evaluation, source status, cost of the evaluation."""
        g = GaugeMetricFamily
        self.last = g(
            "csf_last_evaluation_timestamp_seconds",
            "Wall-clock time the latest evaluation finished (unix seconds), also for simulated and replayed clocks.",
            labels=["pipeline"],
        )
        self.source_up = g(
            "csf_source_up", "1 when the pipeline's data source answered, else 0.", labels=["pipeline"]
        )
        self.cpu = g(
            "csf_meta_cpu_seconds", "CPU seconds spent by the latest evaluation.", labels=["pipeline"]
        )
        self.samples = g(
            "csf_meta_samples_read", "Samples read by the latest evaluation.", labels=["pipeline"]
        )
        self.overhead = g(
            "csf_meta_overhead_ratio",
            "Analysis hours / capacity hours (NaN when not declared).",
            labels=["pipeline"],
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())


def _render_constraint(f: _Families, pipeline: str, name: str, c: ConstraintResult | None) -> None:
    """Every constraint series of one constraint; `c` None (absent from the evaluation) reads as observe."""
    state = c.state if c is not None else "observe"
    decision = c.decision if c is not None else "observe"
    for s in STATES:
        f.state.add_metric([pipeline, name, s], 1.0 if s == state else 0.0)
    for d in DECISIONS:
        f.constraint_decision.add_metric([pipeline, name, d], 1.0 if d == decision else 0.0)
    p = c.pressure if c is not None else None
    f.pressure.add_metric([pipeline, name], _num(p.ratio if p else None))
    f.value.add_metric([pipeline, name], _num(p.x_now if p else None))
    f.target.add_metric([pipeline, name], _num(c.target if c is not None else None))
    causal = c.causal if c is not None else None
    f.tests_passed.add_metric([pipeline, name], float(causal.passed) if causal else NAN)
    for test in TEST_NAMES:
        result = next((t for t in causal.tests if t.name == test), None) if causal else None
        labels = [pipeline, name, test]
        if result is None:
            f.test_passed.add_metric(labels, NAN)
            f.test_inconclusive.add_metric(labels, NAN)
            f.test_p.add_metric(labels, NAN)
        else:
            f.test_passed.add_metric(labels, 1.0 if result.result == "PASS" else 0.0)
            f.test_inconclusive.add_metric(labels, 1.0 if result.result == "INCONCLUSIVE" else 0.0)
            f.test_p.add_metric(labels, _num(result.p_value))
    f.gamma.add_metric([pipeline, name], _num(causal.gamma if causal else None))
    e = c.economics if c is not None else None
    f.revenue.add_metric([pipeline, name], _num(e.revenue_at_risk if e else None))
    f.roi.add_metric([pipeline, name], _num(e.roi if e else None))
    f.theta.add_metric([pipeline, name], _num(e.theta if e else None))
    f.missing.add_metric([pipeline, name], 1.0 if c is None or c.missing or c.state == "observe" else 0.0)
    first = c.diagnoses[0].reason if c is not None and c.diagnoses else None
    for reason in DIAGNOSIS_REASONS:
        f.diagnosis.add_metric([pipeline, name, reason], 1.0 if reason == first else 0.0)
    for w in c.windows if c is not None else ():
        f.sample_interval.add_metric([pipeline, name, w.role], _num(w.sample_interval))
        f.effective_range.add_metric([pipeline, name, w.role], w.effective_range)


def render(snapshots: Iterable[PipelineSnapshot], version: str = __version__) -> list[Metric]:
    """The gauge families for these pipeline snapshots (pure: no registry, no clock)."""
    f = _Families()
    for snap in snapshots:
        name = snap.name
        f.build_info.add_metric([name, version, snap.pack.name, snap.pack.version], 1.0)
        f.source_up.add_metric([name], 1.0 if snap.source_up else 0.0)
        ev = snap.latest
        if ev is None:
            continue
        results = {c.name: c for c in ev.constraints}
        constraint_names = list(snap.pack.names)
        # A constraint the evaluation reports but the pack does not name is still published.
        constraint_names += [n for n in results if n not in constraint_names and n != OBSERVABILITY]
        for cname in [*constraint_names, OBSERVABILITY]:
            f.binding.add_metric([name, cname], 1.0 if ev.binding == cname else 0.0)
        for cname in constraint_names:
            _render_constraint(f, name, cname, results.get(cname))
        for d in DECISIONS:
            f.decision.add_metric([name, d], 1.0 if d == ev.decision else 0.0)
        f.last.add_metric([name], float(snap.evaluated_wall if snap.evaluated_wall is not None else ev.time))
        f.cpu.add_metric([name], _num(ev.meta.cpu_seconds))
        f.samples.add_metric([name], float(ev.meta.samples_read))
        f.overhead.add_metric([name], _num(ev.meta.overhead_ratio))
    return f.all()


class EvaluationCollector(Collector):
    """Renders the latest evaluation snapshot of every pipeline at scrape time."""

    def __init__(
        self, snapshots: Callable[[], Sequence[PipelineSnapshot]], version: str = __version__
    ) -> None:
        self._snapshots = snapshots
        self._version = version

    def describe(self) -> list[Metric]:
        # Names only, so the registry can enforce one owner per metric name.
        return _Families().all()

    def collect(self) -> list[Metric]:
        return render(self._snapshots(), self._version)


__all__ = ["EvaluationCollector", "PipelineSnapshot", "render"]
