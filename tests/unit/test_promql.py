"""compile_promql: golden expressions per kind, escaping, validation, and promtool's parser."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from detector.source.promql import compile_promql, format_number, quote_string, selector
from detector.spec.signals import Signal
from tests._procs import require_binary

LATENCY = Signal(
    "histogram_quantile", "video_start_latency_seconds", by=("region", "device_tier"), quantile=0.95
)

GOLDEN: list[tuple[Signal, str]] = [
    (Signal("gauge", "daily_active_users", by=("region",)), "sum by (region) (daily_active_users)"),
    (Signal("gauge", "daily_active_users"), "sum(daily_active_users)"),
    (
        Signal(
            "gauge", "gpu_quota_utilization_ratio", by=("region",), agg="max", matchers=(("region", "us"),)
        ),
        'max by (region) (gpu_quota_utilization_ratio{region="us"})',
    ),
    (Signal("gauge", "transcode_queue_depth", agg="avg"), "avg(transcode_queue_depth)"),
    (
        Signal("rate", "video_starts_total", by=("region", "device_tier")),
        "sum by (region, device_tier) (rate(video_starts_total[5m]))",
    ),
    (
        Signal("rate", "first_sessions_total", scale=86400.0),
        "sum(rate(first_sessions_total[5m])) * 86400",
    ),
    (
        Signal("increase", "creators_churned_total", by=("region", "creator_tier"), range=3600.0),
        "sum by (region, creator_tier) (increase(creators_churned_total[1h]))",
    ),
    (
        LATENCY,
        "histogram_quantile(0.95, sum by (region, device_tier, le) (rate(video_start_latency_seconds_bucket[5m])))",
    ),
    (
        LATENCY.platform(),
        "histogram_quantile(0.95, sum by (le) (rate(video_start_latency_seconds_bucket[5m])))",
    ),
    (
        Signal(
            "histogram_quantile",
            "transcode_wait_seconds",
            quantile=0.999,
            range=90.0,
            matchers=(("creator_tier", "pro"),),
        ),
        'histogram_quantile(0.999, sum by (le) (rate(transcode_wait_seconds_bucket{creator_tier="pro"}[1m30s])))',
    ),
    (
        Signal("histogram_mean", "first_session_irrelevant_videos", by=("region", "skill_level")),
        "sum by (region, skill_level) (rate(first_session_irrelevant_videos_sum[5m]))"
        " / sum by (region, skill_level) (rate(first_session_irrelevant_videos_count[5m]))",
    ),
    (
        Signal(
            "ratio",
            numerator=Signal("rate", "video_start_abandonments_total", by=("region", "device_tier")),
            denominator=Signal("rate", "video_starts_total", by=("region", "device_tier")),
        ),
        "sum by (region, device_tier) (rate(video_start_abandonments_total[5m]))"
        " / sum by (region, device_tier) (rate(video_starts_total[5m]))",
    ),
    (
        Signal(
            "ratio",
            numerator=Signal("rate", "users_churned_total", by=("region", "client")),
            denominator=Signal("gauge", "daily_active_users", by=("region",)),
            scale=86400.0,
        ),
        "(sum by (region, client) (rate(users_churned_total[5m]))"
        " / on(region) group_left sum by (region) (daily_active_users)) * 86400",
    ),
    (
        Signal(
            "ratio",
            numerator=Signal(
                "increase", "creators_churned_total", by=("region", "creator_tier"), range=3600.0
            ),
            denominator=Signal("gauge", "active_creators", by=("region",), scale=0.5),
        ),
        "sum by (region, creator_tier) (increase(creators_churned_total[1h]))"
        " / on(region) group_left() (sum by (region) (active_creators) * 0.5)",
    ),
    (
        Signal(
            "ratio",
            numerator=Signal("histogram_mean", "lat", by=("region",), range=604800.0),
            denominator=Signal("gauge", "g", by=("region",)),
        ),
        "(sum by (region) (rate(lat_sum[7d])) / sum by (region) (rate(lat_count[7d]))) / sum by (region) (g)",
    ),
]


@pytest.mark.parametrize(("signal", "expected"), GOLDEN, ids=[g[1][:60] for g in GOLDEN])
def test_golden_expressions(signal: Signal, expected: str) -> None:
    assert compile_promql(signal) == expected


def test_override_is_returned_verbatim_and_used_inside_ratios() -> None:
    raw = 'sum(rate(x{job="a"}[2m])) or vector(0)'
    assert compile_promql(Signal("rate", "x", promql=raw)) == raw
    ratio = Signal("ratio", numerator=Signal("rate", "x", promql=raw), denominator=Signal("gauge", "y"))
    assert compile_promql(ratio) == f"({raw}) / sum(y)"


def test_numbers() -> None:
    assert format_number(86400.0) == "86400"
    assert format_number(0.95) == "0.95"
    assert format_number(1e-5) == "1e-05"
    assert format_number(-2.0) == "-2"
    assert float(format_number(0.1 + 0.2)) == 0.1 + 0.2
    with pytest.raises(ValueError):
        format_number(float("inf"))


# --------------------------------------------------------------------------- escaping

HOSTILE = [
    'a"b',
    "back\\slash",
    "new\nline",
    '"} or vector(1) or x{a="',
    "\\",
    '\\"',
    "tab\tcr\rbell\x07del\x7f",
    "unicode é ✓ \u2028",
    "",
]


def _go_unquote(literal: str) -> str:
    """Decode a double-quoted literal using only escapes Go and Python read alike."""
    assert re.fullmatch(r'"(?:[^"\\\n\r]|\\(?:[\\"nrt]|x[0-9a-f]{2}))*"', literal), literal
    return ast.literal_eval(literal)


@pytest.mark.parametrize("value", HOSTILE)
def test_label_values_are_escaped_and_round_trip(value: str) -> None:
    lit = quote_string(value)
    assert "\n" not in lit and "\r" not in lit
    assert _go_unquote(lit) == value
    sel = selector("m", (("a", value), ("b", "x")))
    # the selector has exactly two matchers: the hostile value cannot close the string early
    m = re.fullmatch(r'm\{a=("(?:[^"\\]|\\.)*"), b="x"\}', sel)
    assert m is not None, sel
    assert _go_unquote(m.group(1)) == value


def test_lone_surrogate_rejected() -> None:
    with pytest.raises(ValueError):
        quote_string("bad\ud800")


@pytest.mark.parametrize(
    "signal",
    [
        Signal("gauge", "1abc"),
        Signal("gauge", "a-b"),
        Signal("gauge", "m", by=("a-b",)),
        Signal("gauge", "m", by=("__name__",)),
        Signal("gauge", "m", matchers=(("bad label", "x"),)),
        Signal("gauge", "m", agg="median"),  # type: ignore[arg-type]
        Signal("gauge", ""),
        Signal("rate", "m", range=0.0),
        Signal("rate", "m", range=0.0001),
        Signal("histogram_quantile", "m"),
        Signal("histogram_quantile", "m", quantile=float("nan")),
        Signal("rate", "m", scale=float("nan")),
        Signal("ratio", numerator=Signal("gauge", "a")),
        Signal("ratio", numerator=Signal("gauge", "a"), denominator=Signal("gauge", "b", by=("x",))),
        Signal("nope", "m"),  # type: ignore[arg-type]
    ],
)
def test_invalid_signals_raise(signal: Signal) -> None:
    with pytest.raises(ValueError):
        compile_promql(signal)


def test_keyword_metric_names_select_by_name() -> None:
    assert compile_promql(Signal("gauge", "sum", by=("on",))) == 'sum by (on) ({__name__="sum"})'
    assert selector("Inf", (("a", "b"),)) == '{__name__="Inf", a="b"}'


# --------------------------------------------------------------------------- promtool


def _promtool() -> str:
    return require_binary("promtool")


def _all_expressions() -> list[str]:
    exprs = [compile_promql(s) for s, _ in GOLDEN]
    for i, value in enumerate(HOSTILE):
        exprs.append(
            compile_promql(
                Signal("rate", "x_total", by=("on", "bool"), matchers=(("a", value), ("b", str(i))))
            )
        )
        exprs.append(
            compile_promql(
                Signal(
                    "ratio",
                    numerator=Signal(
                        "histogram_quantile", "h", by=("a", "b"), quantile=0.5, matchers=(("a", value),)
                    ),
                    denominator=Signal("histogram_mean", "h", by=("a",), matchers=(("a", value),), scale=2.0),
                )
            )
        )
    exprs.append(compile_promql(Signal("gauge", "max", agg="min")))
    return exprs


@pytest.mark.needs_binary("promtool")
def test_every_kind_passes_promtool_check_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = [{"record": f"csf:test_{i}", "expr": e} for i, e in enumerate(_all_expressions())]
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "csf-compile-test", "rules": rules}]}, indent=1))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout + proc.stderr


@pytest.mark.needs_binary("promtool")
def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    """Guard for the test above: the same harness does fail on bad PromQL."""
    promtool = _promtool()
    path = tmp_path / "rules.yml"
    bad = "sum by (a) (x) / on(a) group_left (sum by (a) (y) * 2)"  # '(' after group_left opens a label list
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": [{"record": "r:x", "expr": bad}]}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


@pytest.mark.needs_binary("promtool")
def test_hostile_matchers_select_exactly_their_series_in_prometheus(tmp_path: Path) -> None:
    """Prometheus' own engine evaluates the compiled selectors: each matches its one series only."""
    promtool = _promtool()
    values = [v for v in HOSTILE if v]
    series = [
        {"series": "g{" + f'a={quote_string(v)}, i="{i}"' + "}", "values": f"{i + 1}x3"}
        for i, v in enumerate(values)
    ]
    tests = []
    for i, v in enumerate(values):
        expr = compile_promql(Signal("gauge", "g", by=("i",), matchers=(("a", v),)))
        tests.append(
            {"expr": expr, "eval_time": "1m", "exp_samples": [{"labels": f'{{i="{i}"}}', "value": i + 1}]}
        )
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "t.yml"
    path.write_text(json.dumps(doc, indent=1))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
