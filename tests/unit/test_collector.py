"""The Prometheus collector renders a constructed Evaluation exactly as the metric contract says."""

from __future__ import annotations

import math
import subprocess
from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detector.evidence.results import (
    DIAGNOSIS_REASONS,
    TEST_NAMES,
    CausalEvidence,
    Diagnosis,
    EconomicsResult,
    MetaReport,
    Pressure,
    SignalWindow,
    TestResult,
)
from detector.spec.pack import DECISIONS, OBSERVABILITY, STATES
from exporters.collector import EvaluationCollector, PipelineSnapshot
from exporters.selfmetrics import ServiceMetrics
from tests.conftest import make_evaluation, make_pack, make_result, require_binary

PACK = make_pack(("latency", "protocol", "supply", "cold_start", "meta"))

CONSTRAINT_FAMILIES = (
    "csf_constraint_pressure_ratio",
    "csf_constraint_value",
    "csf_constraint_target",
    "csf_constraint_causal_tests_passed",
    "csf_constraint_sensitivity_gamma",
    "csf_constraint_annual_revenue_at_risk_dollars",
    "csf_constraint_roi_ratio",
    "csf_constraint_roi_threshold_ratio",
    "csf_constraint_inputs_missing",
)
TEST_FAMILIES = ("csf_causal_test_passed", "csf_causal_test_inconclusive", "csf_causal_test_p_value")

OUTCOMES = {  # test name -> (result, p-value)
    "within_unit": ("PASS", 0.001),
    "stratification": ("PASS", 0.012),
    "segment_consistency": ("FAIL", 0.2),
    "temporal_precedence": ("INCONCLUSIVE", None),
    "dose_response": ("PASS", 0.03),
}


def _evaluation(binding: str | None = "latency", decision: str = "invest"):
    tests = tuple(TestResult(n, r, 1.0, p, 500, "test") for n, (r, p) in OUTCOMES.items())
    causal = CausalEvidence("causal", passed=3, inconclusive=1, tests=tests, gamma=1.8, reason="3 of 5")
    latency = make_result(
        "latency",
        state="binding",
        decision="invest",
        pressure=Pressure(x_now=0.42, ratio=1.4, sustained=True, windows_beyond=20, windows_total=24),
        target=0.3,
        causal=causal,
        economics=EconomicsResult(revenue_at_risk=380_000.0, roi=3.17, theta=3.0, cost_per_year=120_000.0),
    )
    protocol = make_result(
        "protocol",
        layer="architecture",
        state="deferred",
        decision="defer",
        pressure=Pressure(x_now=0.42, ratio=None, sustained=False, windows_beyond=0, windows_total=0),
        target=float("nan"),
    )
    supply = make_result(
        "supply",
        layer="resource",
        state="observe",
        decision="observe",
        missing=("transcode",),
        diagnoses=(
            Diagnosis("too_sparse", "signal", "signal transcode: one sample per 5m", "transcode_bucket"),
            Diagnosis("stale", "outcome", "outcome churn: stale since ...", "churn"),
        ),
        windows=(
            SignalWindow("signal", "transcode", 300.0, 300.0, 300.0, True),
            SignalWindow("outcome", "churn", None, 3600.0, 3600.0, False),
        ),
    )
    meta = make_result("meta", layer="meta", state="slack", decision="stop")
    # cold_start is in the pack but absent from the evaluation: it must still be published (as observe)
    return make_evaluation(
        1_800_000_000.0,
        binding=binding,
        decision=decision,
        constraints=[latency, protocol, supply, meta],
        meta=MetaReport(cpu_seconds=0.75, wall_seconds=1.0, queries=40, samples_read=123456, memory_bytes=1),
    )


def _scrape(*snapshots: PipelineSnapshot) -> tuple[str, dict[str, list]]:
    registry = CollectorRegistry()
    ServiceMetrics(registry, [s.name for s in snapshots])
    registry.register(EvaluationCollector(lambda: list(snapshots), version="9.9.9"))
    text = generate_latest(registry).decode()
    samples: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append(s)
    return text, samples


def _values(samples, name: str, key: str = "constraint") -> dict[str, float]:
    return {s.labels[key]: s.value for s in samples[name]}


def _grid(samples, name: str, inner: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for s in samples[name]:
        out[s.labels["constraint"]][s.labels[inner]] = s.value
    return out


def test_constructed_evaluation_is_rendered_per_contract():
    ev = _evaluation()
    _, samples = _scrape(PipelineSnapshot("default", PACK, ev, source_up=True))
    names = set(PACK.names)

    (info,) = samples["csf_build_info"]
    assert info.labels == {
        "pipeline": "default",
        "version": "9.9.9",
        "pack": "test-pack",
        "pack_version": "1.2.3",
    }
    assert info.value == 1.0

    binding = _values(samples, "csf_binding_constraint")
    assert set(binding) == names | {OBSERVABILITY}
    assert [c for c, v in binding.items() if v == 1.0] == ["latency"]
    assert sum(binding.values()) == 1.0

    expected_state = {
        "latency": "binding",
        "protocol": "deferred",
        "supply": "observe",
        "cold_start": "observe",
        "meta": "slack",
    }
    states = _grid(samples, "csf_constraint_state", "state")
    assert set(states) == names
    for c, by_state in states.items():
        assert set(by_state) == set(STATES)
        assert [s for s, v in by_state.items() if v == 1.0] == [expected_state[c]]
        assert sum(by_state.values()) == 1.0

    expected_decision = {
        "latency": "invest",
        "protocol": "defer",
        "supply": "observe",
        "cold_start": "observe",
        "meta": "stop",
    }
    decisions = _grid(samples, "csf_constraint_decision", "decision")
    assert set(decisions) == names
    for c, by_decision in decisions.items():
        assert set(by_decision) == set(DECISIONS)
        assert [d for d, v in by_decision.items() if v == 1.0] == [expected_decision[c]]
    system = _values(samples, "csf_decision", "decision")
    assert set(system) == set(DECISIONS) and [d for d, v in system.items() if v == 1.0] == ["invest"]

    for family in CONSTRAINT_FAMILIES:
        assert set(_values(samples, family)) == names, family
        assert all(s.labels["pipeline"] == "default" for s in samples[family])
    for family in TEST_FAMILIES:
        grid = _grid(samples, family, "test")
        assert set(grid) == names and all(set(g) == set(TEST_NAMES) for g in grid.values()), family

    pressure = _values(samples, "csf_constraint_pressure_ratio")
    assert pressure["latency"] == pytest.approx(1.4)
    for unknown in ("protocol", "supply", "cold_start", "meta"):
        assert math.isnan(pressure[unknown]), unknown
    value = _values(samples, "csf_constraint_value")
    assert value["latency"] == pytest.approx(0.42) and value["protocol"] == pytest.approx(0.42)
    assert math.isnan(value["supply"])
    target = _values(samples, "csf_constraint_target")
    assert target["latency"] == pytest.approx(0.3)
    assert math.isnan(target["protocol"])  # NaN in the evaluation stays NaN
    assert math.isnan(target["supply"])  # no target in the evaluation: unknown, not the pack's

    passed = _grid(samples, "csf_causal_test_passed", "test")
    inconclusive = _grid(samples, "csf_causal_test_inconclusive", "test")
    p_values = _grid(samples, "csf_causal_test_p_value", "test")
    for test, (result, p) in OUTCOMES.items():
        assert passed["latency"][test] == (1.0 if result == "PASS" else 0.0), test
        assert inconclusive["latency"][test] == (1.0 if result == "INCONCLUSIVE" else 0.0), test
        if p is None:
            assert math.isnan(p_values["latency"][test])
        else:
            assert p_values["latency"][test] == pytest.approx(p)
        for untested in ("protocol", "supply", "cold_start", "meta"):
            assert math.isnan(passed[untested][test]) and math.isnan(p_values[untested][test])
    tests_passed = _values(samples, "csf_constraint_causal_tests_passed")
    assert tests_passed["latency"] == sum(r == "PASS" for r, _ in OUTCOMES.values()) == 3
    assert math.isnan(tests_passed["protocol"])
    assert _values(samples, "csf_constraint_sensitivity_gamma")["latency"] == pytest.approx(1.8)

    assert _values(samples, "csf_constraint_annual_revenue_at_risk_dollars")["latency"] == pytest.approx(
        380_000.0
    )
    assert _values(samples, "csf_constraint_roi_ratio")["latency"] == pytest.approx(3.17)
    theta = _values(samples, "csf_constraint_roi_threshold_ratio")
    assert theta["latency"] == pytest.approx(3.0) and math.isnan(theta["supply"])

    missing = _values(samples, "csf_constraint_inputs_missing")
    assert missing == {"latency": 0.0, "protocol": 0.0, "supply": 1.0, "cold_start": 1.0, "meta": 0.0}

    assert _values(samples, "csf_last_evaluation_timestamp_seconds", "pipeline") == {
        "default": 1_800_000_000.0
    }
    assert _values(samples, "csf_source_up", "pipeline") == {"default": 1.0}
    assert _values(samples, "csf_meta_cpu_seconds", "pipeline") == {"default": 0.75}
    assert _values(samples, "csf_meta_samples_read", "pipeline") == {"default": 123456.0}
    assert math.isnan(_values(samples, "csf_meta_overhead_ratio", "pipeline")["default"])

    # counters exist at zero for both outcomes before anything happened
    evals = {s.labels["outcome"]: s.value for s in samples["csf_evaluations_total"]}
    assert evals == {"success": 0.0, "error": 0.0}


def test_last_evaluation_timestamp_is_the_wall_clock_time_of_the_evaluation():
    """A replayed or simulated clock evaluates at its own time; the liveness metric (read by
    CSFEvaluationStale as time() - it) carries the wall-clock time the evaluation finished."""
    ev = _evaluation()  # evaluated at 1_800_000_000 on the pipeline's clock
    wall = 1_700_000_123.5
    _, samples = _scrape(PipelineSnapshot("default", PACK, ev, source_up=True, evaluated_wall=wall))
    assert _values(samples, "csf_last_evaluation_timestamp_seconds", "pipeline") == {"default": wall}


def test_diagnosis_reason_and_windows_are_published():
    _, samples = _scrape(PipelineSnapshot("default", PACK, _evaluation(), source_up=True))
    diag = _grid(samples, "csf_constraint_diagnosis", "reason")
    assert set(diag) == set(PACK.names)
    assert set(diag["supply"]) == set(DIAGNOSIS_REASONS)
    assert {r for r, v in diag["supply"].items() if v == 1.0} == {"too_sparse"}  # the first reason only
    assert sum(diag["latency"].values()) == 0.0
    assert sum(diag["cold_start"].values()) == 0.0  # absent from the evaluation: observe, no reason known
    interval = _grid(samples, "csf_signal_sample_interval_seconds", "role")
    assert interval["supply"]["signal"] == 300.0 and math.isnan(interval["supply"]["outcome"])
    rng = _grid(samples, "csf_signal_effective_range_seconds", "role")
    assert rng["supply"] == {"signal": 300.0, "outcome": 3600.0}
    assert "latency" not in rng  # no windows recorded for it in this evaluation


@pytest.mark.parametrize(
    ("binding", "decision", "ones"),
    [(OBSERVABILITY, "observe", [OBSERVABILITY]), (None, "stop", []), ("protocol", "invest", ["protocol"])],
)
def test_binding_series_has_at_most_one_one(binding, decision, ones):
    _, samples = _scrape(PipelineSnapshot("default", PACK, _evaluation(binding, decision), source_up=True))
    values = _values(samples, "csf_binding_constraint")
    assert [c for c, v in values.items() if v == 1.0] == ones
    assert sum(values.values()) == len(ones)
    assert [d for d, v in _values(samples, "csf_decision", "decision").items() if v == 1.0] == [decision]


def test_before_first_evaluation_only_build_info_and_source_up():
    _, samples = _scrape(PipelineSnapshot("default", PACK, None, source_up=False))
    gauges = {
        name
        for name in samples
        if not name.startswith(("csf_evaluation", "csf_binding_changes", "csf_state_write"))
    }
    assert gauges == {"csf_build_info", "csf_source_up"}
    assert _values(samples, "csf_source_up", "pipeline") == {"default": 0.0}


def test_two_pipelines_are_kept_apart():
    other = make_pack(("latency", "meta"))
    ev_b = make_evaluation(
        5.0, binding=None, pipeline="b", constraints=[make_result("latency"), make_result("meta")]
    )
    _, samples = _scrape(
        PipelineSnapshot("a", PACK, _evaluation(), True), PipelineSnapshot("b", other, ev_b, False)
    )
    by_pipeline: dict[str, set[str]] = defaultdict(set)
    for s in samples["csf_constraint_state"]:
        by_pipeline[s.labels["pipeline"]].add(s.labels["constraint"])
    assert by_pipeline == {"a": set(PACK.names), "b": {"latency", "meta"}}
    ones = [
        (s.labels["pipeline"], s.labels["constraint"])
        for s in samples["csf_binding_constraint"]
        if s.value == 1
    ]
    assert ones == [("a", "latency")]
    assert _values(samples, "csf_source_up", "pipeline") == {"a": 1.0, "b": 0.0}


def test_one_owner_per_metric_name():
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    registry.register(EvaluationCollector(lambda: []))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(EvaluationCollector(lambda: []))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ServiceMetrics(registry)


def test_service_metrics_count_per_pipeline():
    registry = CollectorRegistry()
    m = ServiceMetrics(registry, ["a", "b"])
    m.evaluated("a", "success", 0.2)
    m.evaluated("a", "success", 3.0)
    m.evaluated("a", "error", None)
    m.binding_changed("a", 2)
    m.binding_changed("a", 0)
    m.state_write_failed("b")
    with pytest.raises(ValueError, match="outcome"):
        m.evaluated("a", "maybe", 1.0)
    get = registry.get_sample_value
    assert get("csf_evaluations_total", {"pipeline": "a", "outcome": "success"}) == 2
    assert get("csf_evaluations_total", {"pipeline": "a", "outcome": "error"}) == 1
    assert get("csf_evaluations_total", {"pipeline": "b", "outcome": "success"}) == 0
    assert get("csf_evaluation_duration_seconds_count", {"pipeline": "a"}) == 2
    assert get("csf_evaluation_duration_seconds_sum", {"pipeline": "a"}) == pytest.approx(3.2)
    assert get("csf_evaluation_duration_seconds_bucket", {"pipeline": "a", "le": "0.25"}) == 1
    assert get("csf_binding_changes_total", {"pipeline": "a"}) == 2
    assert get("csf_state_write_errors_total", {"pipeline": "b"}) == 1
    assert get("csf_state_write_errors_total", {"pipeline": "a"}) == 0


def test_promtool_check_metrics_is_clean():
    promtool = require_binary("promtool")
    text, samples = _scrape(
        PipelineSnapshot("default", PACK, _evaluation(), True),
        PipelineSnapshot("idle", PACK, None, True),
    )
    assert samples["csf_constraint_state"], "scrape is empty"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""
