"""A few seconds of `benchmarks.load` against a real `csf serve`: no errors, nothing lost.

The full run (``python -m benchmarks.load --duration 180``) and its figures are in
docs/load-test.md; this keeps the harness and the server's behaviour under concurrent
scrapes, reads and remote_write honest in CI.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.load import LoadConfig, ingested, percentile, render_markdown, run_load, trend_per_minute


def test_percentile_is_nearest_rank() -> None:
    rng = np.random.default_rng(3)
    values = sorted(rng.exponential(size=101).tolist())
    for q in (1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q, method="inverted_cdf")))
    assert math.isnan(percentile([], 50))


def test_trend_per_minute_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(0.0, 120.0, 1.0)
    v = 300.0 + 0.5 * t + rng.normal(0, 0.01, len(t))  # 0.5 MiB/s = 30 MiB/min
    assert trend_per_minute(list(zip(t.tolist(), v.tolist(), strict=True))) == pytest.approx(30.0, abs=0.05)
    assert math.isnan(trend_per_minute([(0.0, 1.0)]))


def test_ingested_reads_the_counter_by_result() -> None:
    text = (
        'csf_ingested_samples_total{pipeline="pushed",protocol="remote_write",result="accepted"} 2016.0\n'
        'csf_ingested_samples_total{pipeline="pushed",protocol="otlp",result="accepted"} 4.0\n'
        'csf_ingested_samples_total{pipeline="other",protocol="otlp",result="accepted"} 99.0\n'
        'csf_ingested_samples_total{pipeline="pushed",protocol="remote_write",result="out_of_order"} 3.0\n'
    )
    assert ingested(text) == {"accepted": 2020.0, "out_of_order": 3.0}


def test_load_smoke_no_errors_nothing_lost() -> None:
    report = run_load(
        LoadConfig(
            duration=4.0,
            scrape_workers=1,
            status_workers=1,
            write_workers=1,
            steps_per_write=2,
            evaluation_interval="5s",
            max_requests=2000,
            sample_interval=0.5,
            simulator=False,
            cycle_steps=16,
            synthetic_series=200,
        )
    )
    text = render_markdown(report)
    assert report["total_errors"] == 0, text
    for name, e in report["endpoints"].items():
        assert e["requests"] > 0, (name, text)
        assert e["ok"] == e["requests"]
        assert 0 < e["p50_ms"] <= e["p99_ms"] <= e["max_ms"]
    rw = report["remote_write"]
    per_request = report["series_per_writer"] * 2
    assert rw["samples_sent"] == report["endpoints"]["remote_write"]["requests"] * per_request
    # every sample sent was counted as accepted by the server, and is in the push store
    assert rw["samples_accepted_by_server"] == rw["samples_sent"], text
    assert rw["ingest_results"].get("out_of_order", 0) == 0
    assert rw["push_store"]["samples"] == rw["samples_sent"]
    srv = report["server"]
    assert srv["alive_at_end"] and srv["exit_code"] == 0, report["log_errors"]
    assert len(srv["rss_series"]) >= 4 and all(v > 10 for _, v in srv["rss_series"])
    assert report["log_errors"] == []


def test_load_smoke_resent_batches_are_duplicates_not_errors() -> None:
    """Writers re-sending the same batches (a sender retrying): 204 every time, each sample
    stored once, the rest counted as duplicates."""
    report = run_load(
        LoadConfig(
            duration=3.0,
            scrape_workers=1,
            status_workers=1,
            write_workers=1,
            steps_per_write=2,
            evaluation_interval="5s",
            max_requests=2000,
            simulator=False,
            cycle_steps=4,
            synthetic_series=50,
            resend=True,
        )
    )
    assert report["total_errors"] == 0, render_markdown(report)
    rw = report["remote_write"]
    assert report["endpoints"]["remote_write"]["requests"] > 2  # more than one cycle
    assert rw["push_store"]["samples"] == 50 * 4
    assert rw["samples_accepted_by_server"] == 50 * 4
    assert rw["ingest_results"]["duplicate"] == rw["samples_sent"] - 50 * 4
