"""NativeSource: Prometheus semantics on hand-computed cases, plus a loop reference and promtool."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.source.frame import SignalFrame
from detector.source.kernels import bucket_quantile, extrapolated_increase, parse_le
from detector.source.native import NativeSource, evaluate_instant, evaluation_times
from detector.source.promql import compile_promql
from detector.source.series import STALE_NAN, is_stale_marker
from detector.source.store import SampleStore
from detector.spec.signals import Signal
from tests._procs import require_binary


def _store(*series: tuple[str, dict[str, str], list[float], list[float]]) -> SampleStore:
    store = SampleStore(retention=None)
    for name, labels, ts, vals in series:
        res = store.append(name, labels, ts, vals)
        assert res.accepted == len(ts)
    return store


def _at(store: SampleStore, signal: Signal, t: float) -> SignalFrame:
    return evaluate_instant(NativeSource(store), signal, t)


def _one(store: SampleStore, signal: Signal, t: float) -> float:
    return _at(store, signal, t).last()


T4 = [10.0, 20.0, 30.0, 40.0]


# --------------------------------------------------------------------------- grid


def test_evaluation_grid_is_inclusive_and_tolerant() -> None:
    assert evaluation_times(0.0, 600.0, 300.0).tolist() == [0.0, 300.0, 600.0]
    assert evaluation_times(0.0, 599.0, 300.0).tolist() == [0.0, 300.0]
    assert len(evaluation_times(0.1, 0.1 + 0.3 * 10, 0.3)) == 11
    assert evaluation_times(5.0, 5.0, 60.0).tolist() == [5.0]
    for args in ((10.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, float("nan"), 1.0)):
        with pytest.raises(ValueError):
            evaluation_times(*args)


# --------------------------------------------------------------------------- rate / increase


def test_increase_extrapolates_to_both_edges() -> None:
    # window (5, 45]: first sample 5 s after the start, last 5 s before the end, avg interval 10 s
    store = _store(("c_total", {}, T4, [100.0, 110.0, 120.0, 130.0]))
    assert _one(store, Signal("increase", "c_total", range=40.0), 45.0) == pytest.approx(40.0, rel=1e-12)
    assert _one(store, Signal("rate", "c_total", range=40.0), 45.0) == pytest.approx(1.0, rel=1e-12)


def test_gap_beyond_1_1_average_intervals_extrapolates_half_an_interval() -> None:
    # window (0, 60]: start gap 10 s (< 11, full), end gap 20 s (>= 11 -> 5 s): 30 * 45 / 30 = 45
    store = _store(("c_total", {}, T4, [100.0, 110.0, 120.0, 130.0]))
    assert _one(store, Signal("increase", "c_total", range=60.0), 60.0) == pytest.approx(45.0, rel=1e-12)
    assert _one(store, Signal("rate", "c_total", range=60.0), 60.0) == pytest.approx(0.75, rel=1e-12)
    # both gaps too long: window (-15, 65]: 25 s and 25 s -> 5 + 5
    assert _one(store, Signal("increase", "c_total", range=80.0), 65.0) == pytest.approx(40.0, rel=1e-12)


def test_counter_zero_point_limits_start_extrapolation() -> None:
    # values 1, 11, 21, 31: zero reached 1 s before the first sample (30 * 1/30), so the start
    # extrapolates 1 s instead of 5 s: 30 * (30 + 1 + 5) / 30 = 36
    store = _store(("c_total", {}, T4, [1.0, 11.0, 21.0, 31.0]))
    assert _one(store, Signal("increase", "c_total", range=40.0), 45.0) == pytest.approx(36.0, rel=1e-12)
    # a counter starting at 0 never extrapolates backwards: 30 * (30 + 0 + 5) / 30 = 35
    store0 = _store(("c_total", {}, T4, [0.0, 10.0, 20.0, 30.0]))
    assert _one(store0, Signal("increase", "c_total", range=40.0), 45.0) == pytest.approx(35.0, rel=1e-12)


def test_zero_point_applies_after_the_threshold_rule() -> None:
    # window (-20, 40]: start gap 30 s >= 11 -> 5 s; zero point 30 * 4/30 = 4 s < 5 s -> 4 s;
    # end gap 0.  (Prometheus 3 order; the old order would keep 4 s too, but via another path.)
    store = _store(("c_total", {}, T4, [4.0, 14.0, 24.0, 34.0]))
    assert _one(store, Signal("increase", "c_total", range=60.0), 40.0) == pytest.approx(34.0, rel=1e-12)
    # zero point 30 * 8/30 = 8 s lies between avg/2 (5 s) and the threshold (11 s): Prometheus 3
    # takes min(5, 8) = 5 s -> 35 (the 2.x order would have taken 8 s -> 38)
    store8 = _store(("c_total", {}, T4, [8.0, 18.0, 28.0, 38.0]))
    assert _one(store8, Signal("increase", "c_total", range=60.0), 40.0) == pytest.approx(35.0, rel=1e-12)


def test_counter_reset_adds_the_value_before_the_drop() -> None:
    # 100 -> 110 -> (reset) 5 -> 15: raw 15 - 100 + 110 = 25, extrapolated by 40/30
    store = _store(("c_total", {}, T4, [100.0, 110.0, 5.0, 15.0]))
    assert _one(store, Signal("increase", "c_total", range=40.0), 45.0) == pytest.approx(100.0 / 3, rel=1e-12)
    # two resets: 100, 110, 5, 15, 3 at 10..50, window (5, 55]: 3 - 100 + 110 + 15 = 28 -> 28 * 50/40
    store2 = _store(("c_total", {}, [*T4, 50.0], [100.0, 110.0, 5.0, 15.0, 3.0]))
    assert _one(store2, Signal("increase", "c_total", range=50.0), 55.0) == pytest.approx(35.0, rel=1e-12)


def test_reset_before_the_window_is_not_counted() -> None:
    # the drop 110 -> 5 happens between 20 and 30; window (25, 45] holds 5, 15 only
    store = _store(("c_total", {}, T4, [100.0, 110.0, 5.0, 15.0]))
    # 2 samples, sampled 10, avg 10: start gap 5, zero point 10 * 5/10 = 5, end gap 5 -> 10 * 20/10
    assert _one(store, Signal("increase", "c_total", range=20.0), 45.0) == pytest.approx(20.0, rel=1e-12)


def test_fewer_than_two_samples_is_missing_and_window_is_left_open() -> None:
    store = _store(("c_total", {}, T4, [100.0, 110.0, 120.0, 130.0]))
    # window (30, 40] holds one sample only
    frame = _at(store, Signal("rate", "c_total", range=10.0), 40.0)
    assert frame.units == ()
    assert math.isnan(frame.last())
    # window (10, 40]: the sample at exactly 10 is outside -> 20, 30, 40; gaps 10 (<11) and 0
    assert _one(store, Signal("increase", "c_total", range=30.0), 40.0) == pytest.approx(30.0, rel=1e-12)


def test_stale_markers_are_not_part_of_range_windows() -> None:
    store = _store(("c_total", {}, [*T4, 50.0], [100.0, 110.0, STALE_NAN, 130.0, 140.0]))
    # window (5, 55]: samples 10, 20, 40, 50 -> increase 40 over 40 s, avg 13.33, gaps 5 and 5
    assert _one(store, Signal("increase", "c_total", range=50.0), 55.0) == pytest.approx(50.0, rel=1e-12)


def test_rate_sums_by_labels_and_respects_matchers_and_scale() -> None:
    ts = [float(t) for t in range(0, 301, 10)]
    lin = lambda slope: [1000.0 + slope * t for t in ts]  # noqa: E731
    store = _store(
        ("req_total", {"region": "us", "code": "200"}, ts, lin(1.0)),
        ("req_total", {"region": "us", "code": "500"}, ts, lin(0.5)),
        ("req_total", {"region": "eu", "code": "200"}, ts, lin(2.0)),
        ("req_total", {"region": "eu", "code": "500"}, ts, lin(0.25)),
    )
    # window (0, 300]: 10 .. 300, start gap 10 (< 11) -> the full 300 s; rates are exact slopes
    frame = _at(store, Signal("rate", "req_total", by=("region",), range=300.0), 300.0)
    assert frame.units == ((("region", "eu"),), (("region", "us"),))
    np.testing.assert_allclose(frame.values[:, 0], [2.25, 1.5], rtol=1e-12)
    only_500 = Signal("rate", "req_total", by=("region",), matchers=(("code", "500"),), scale=86400.0)
    np.testing.assert_allclose(
        _at(store, only_500, 300.0).values[:, 0], [0.25 * 86400, 0.5 * 86400], rtol=1e-12
    )
    assert _one(store, Signal("increase", "req_total", range=300.0), 300.0) == pytest.approx(
        3.75 * 300, rel=1e-12
    )


# --------------------------------------------------------------------------- gauges


def test_gauge_lookback_is_five_minutes_left_open() -> None:
    store = _store(("g", {}, [100.0], [7.0]))
    sig = Signal("gauge", "g")
    frame = NativeSource(store).query_range(sig, 0.0, 500.0, 50.0)
    # present in [100, 400) i.e. t - 300 < 100 <= t
    expected = [np.nan, np.nan, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(frame.values[0], expected)
    assert frame.samples_read == 1


def test_gauge_stale_marker_ends_the_series_until_the_next_sample() -> None:
    store = _store(("g", {}, [0.0, 60.0, 120.0], [1.0, STALE_NAN, 3.0]))
    frame = NativeSource(store).query_range(Signal("gauge", "g"), 0.0, 150.0, 30.0)
    np.testing.assert_array_equal(frame.values[0], [1.0, 1.0, np.nan, np.nan, 3.0, 3.0])


def test_gauge_aggregations_and_nan_values() -> None:
    store = _store(
        ("g", {"region": "us", "k": "a"}, [0.0], [1.0]),
        ("g", {"region": "us", "k": "b"}, [0.0], [5.0]),
        ("g", {"region": "eu", "k": "a"}, [0.0], [2.0]),
        ("g", {"region": "eu", "k": "b"}, [0.0], [float("nan")]),
        ("g", {"region": "eu", "k": "c"}, [-400.0], [100.0]),  # too old: not seen
    )
    by = ("region",)
    got = {
        agg: _at(store, Signal("gauge", "g", by=by, agg=agg), 10.0).values[:, 0]
        for agg in ("sum", "avg", "max", "min")
    }
    # units sorted: eu, us.  eu holds 2 and NaN: sum/avg are NaN (missing), max/min skip the NaN
    np.testing.assert_array_equal(got["sum"], [np.nan, 6.0])
    np.testing.assert_array_equal(got["avg"], [np.nan, 3.0])
    np.testing.assert_array_equal(got["max"], [2.0, 5.0])
    np.testing.assert_array_equal(got["min"], [2.0, 1.0])
    assert _one(store, Signal("gauge", "g", matchers=(("k", "b"), ("region", "us"))), 10.0) == 5.0
    assert _one(store, Signal("gauge", "g", agg="max"), 10.0) == 5.0


def test_units_are_only_by_labels_and_only_series_with_a_value() -> None:
    store = _store(
        ("g", {"region": "us", "pod": "1"}, [0.0], [1.0]),
        ("g", {"region": "us", "pod": "2"}, [0.0], [2.0]),
        ("g", {"pod": "3"}, [0.0], [4.0]),
        ("g", {"region": "eu", "pod": "4"}, [-1000.0], [8.0]),
    )
    frame = _at(store, Signal("gauge", "g", by=("region",)), 0.0)
    assert frame.units == ((), (("region", "us"),))
    assert frame.values[:, 0].tolist() == [4.0, 3.0]
    assert frame.unit_values("region") == ("", "us")


# --------------------------------------------------------------------------- histogram_quantile


BOUNDS = np.array([0.1, 0.5, 1.0, np.inf])


def _bq(q: float, counts: list[float], bounds: np.ndarray = BOUNDS) -> float:
    c = np.array(counts, dtype=float)[:, None]
    return float(bucket_quantile(q, bounds, c, np.ones_like(c, dtype=bool))[0])


def test_bucket_quantile_interpolates_inside_a_bucket() -> None:
    # cumulative 10, 30, 40, 40: rank 20 lies 10/20 into (0.1, 0.5]
    assert _bq(0.5, [10, 30, 40, 40]) == pytest.approx(0.3, rel=1e-12)
    assert _bq(0.75, [10, 30, 40, 40]) == pytest.approx(0.5, rel=1e-12)
    assert _bq(0.875, [10, 30, 40, 40]) == pytest.approx(0.75, rel=1e-12)


def test_bucket_quantile_lowest_bucket_interpolates_from_zero() -> None:
    assert _bq(0.1, [10, 30, 40, 40]) == pytest.approx(0.04, rel=1e-12)
    assert _bq(0.25, [10, 30, 40, 40]) == pytest.approx(0.1, rel=1e-12)
    # a lowest bound <= 0 is returned as is
    assert _bq(0.1, [10, 30, 40], np.array([-1.0, 2.0, np.inf])) == -1.0
    # ... but the next bucket interpolates from it: rank 20 -> -1 + 3 * 10/20
    assert _bq(0.5, [10, 30, 40], np.array([-1.0, 2.0, np.inf])) == pytest.approx(0.5, rel=1e-12)


def test_bucket_quantile_in_inf_bucket_returns_highest_finite_bound() -> None:
    assert _bq(0.9, [10, 30, 40, 50]) == 1.0
    assert _bq(0.99, [0, 0, 0, 5]) == 1.0


def test_bucket_quantile_fixes_non_monotone_counts() -> None:
    # 10, 8, 40, 40 is made 10, 10, 40, 40: rank 20 -> 0.5 + 0.5 * 10/30 (unfixed: 0.5 + 0.5 * 12/32)
    assert _bq(0.5, [10, 8, 40, 40]) == pytest.approx(0.5 + 0.5 / 3, rel=1e-12)


def test_bucket_quantile_flattens_precision_noise() -> None:
    # 100, 100 + 1e-11, 100 + 1e-11 differ by 1e-13 relative: all become 100, so q=1 lies in the
    # first bucket (1.0); without the fix the rank would fall in the second (2.0)
    bounds = np.array([1.0, 2.0, np.inf])
    assert _bq(1.0, [100.0, 100.0 + 1e-11, 100.0 + 1e-11], bounds) == pytest.approx(1.0, rel=1e-12)


def test_bucket_quantile_special_cases() -> None:
    assert math.isnan(_bq(0.5, [0, 0, 0, 0]))
    assert math.isnan(_bq(0.5, [10, 30, 40], np.array([0.1, 0.5, 1.0])))  # no +Inf bucket
    assert math.isnan(_bq(0.5, [10], np.array([np.inf])))  # fewer than 2 buckets
    assert _bq(-0.1, [10, 30, 40, 40]) == -np.inf
    assert _bq(1.5, [10, 30, 40, 40]) == np.inf
    assert math.isnan(_bq(float("nan"), [10, 30, 40, 40]))


def test_bucket_quantile_only_sees_buckets_present_at_each_step() -> None:
    counts = np.array([[10.0, 10.0, 10.0], [30.0, 30.0, 30.0], [40.0, 40.0, 40.0], [40.0, 40.0, 40.0]])
    present = np.ones_like(counts, dtype=bool)
    present[1, 1] = False  # 0.5 bucket missing at step 1: rank 20 falls in (0.1, 1.0]
    present[3, 2] = False  # +Inf missing at step 2: no quantile
    got = bucket_quantile(0.5, BOUNDS, counts, present)
    assert got[0] == pytest.approx(0.3, rel=1e-12)
    assert got[1] == pytest.approx(0.1 + 0.9 * 10 / 30, rel=1e-12)
    assert math.isnan(got[2])


def test_parse_le() -> None:
    assert parse_le("0.5") == 0.5
    assert parse_le("+Inf") == np.inf
    assert parse_le("1e3") == 1000.0
    for bad in ("", "abc", "NaN", " 1", "1_0"):
        assert parse_le(bad) is None


def _histogram_store(
    metric: str, slopes: dict[str, dict[str, float]], sum_slope: dict[str, float] | None = None
) -> SampleStore:
    """Bucket counters growing linearly from 1000 * slope, one sample per 10 s over [0, 600]."""
    ts = [float(t) for t in range(0, 601, 10)]
    store = SampleStore(retention=None)
    for region, buckets in slopes.items():
        for le, slope in buckets.items():
            store.append(
                f"{metric}_bucket", {"region": region, "le": le}, ts, [1000.0 * slope + slope * t for t in ts]
            )
        total = buckets["+Inf"]
        store.append(f"{metric}_count", {"region": region}, ts, [1000.0 * total + total * t for t in ts])
        s = (sum_slope or {}).get(region, 0.0)
        store.append(f"{metric}_sum", {"region": region}, ts, [1000.0 * s + s * t for t in ts])
    return store


def test_histogram_quantile_end_to_end_by_unit_and_platform() -> None:
    store = _histogram_store(
        "lat_seconds",
        {
            "us": {"0.1": 1.0, "0.5": 3.0, "1": 4.0, "+Inf": 4.0},
            "eu": {"0.1": 0.0, "0.5": 1.0, "1.0": 3.0, "+Inf": 4.0},
        },
    )
    sig = Signal("histogram_quantile", "lat_seconds", by=("region",), quantile=0.5, range=300.0)
    frame = _at(store, sig, 600.0)
    assert frame.units == ((("region", "eu"),), (("region", "us"),))
    # eu: 0, 1, 3, 4 -> rank 2 in (0.5, 1]: 0.5 + 0.5 * 1/2; us: 1, 3, 4, 4 -> 0.3
    np.testing.assert_allclose(frame.values[:, 0], [0.75, 0.3], rtol=1e-9)
    # platform: '1' and '1.0' are the same bound: 1, 4, 7, 8 -> rank 4 in (0.1, 0.5] at its top
    assert _one(store, sig.platform(), 600.0) == pytest.approx(0.5, rel=1e-9)
    only_us = Signal(
        "histogram_quantile", "lat_seconds", quantile=0.9, range=300.0, matchers=(("region", "us"),)
    )
    # us rank 3.6 in (0.5, 1]: 0.5 + 0.5 * 0.6
    assert _one(store, only_us, 600.0) == pytest.approx(0.8, rel=1e-9)


def test_histogram_mean_is_sum_rate_over_count_rate() -> None:
    store = _histogram_store(
        "lat_seconds",
        {"us": {"1": 4.0, "+Inf": 4.0}, "eu": {"1": 2.0, "+Inf": 2.0}},
        sum_slope={"us": 2.0, "eu": 3.0},
    )
    sig = Signal("histogram_mean", "lat_seconds", by=("region",), range=300.0)
    frame = _at(store, sig, 600.0)
    np.testing.assert_allclose(frame.values[:, 0], [1.5, 0.5], rtol=1e-9)
    assert _one(store, sig.platform(), 600.0) == pytest.approx(5.0 / 6.0, rel=1e-9)


# --------------------------------------------------------------------------- ratio


def test_ratio_joins_group_left_on_the_denominator_labels() -> None:
    ts = [float(t) for t in range(0, 301, 10)]
    store = _store(
        ("churn_total", {"region": "us", "tier": "pro"}, ts, [100.0 + 1.0 * t for t in ts]),
        ("churn_total", {"region": "us", "tier": "hobby"}, ts, [100.0 + 3.0 * t for t in ts]),
        ("churn_total", {"region": "eu", "tier": "pro"}, ts, [100.0 + 2.0 * t for t in ts]),
        ("churn_total", {"region": "apac", "tier": "pro"}, ts, [100.0 + 2.0 * t for t in ts]),
        ("creators", {"region": "us"}, [290.0], [600.0]),
        ("creators", {"region": "eu"}, [290.0], [0.0]),
    )
    num = Signal("rate", "churn_total", by=("region", "tier"), range=300.0)
    den = Signal("gauge", "creators", by=("region",))
    frame = _at(store, Signal("ratio", numerator=num, denominator=den, scale=100.0), 300.0)
    # us: 1/600, 3/600 (x100); eu: 2/0 -> missing (no unit); apac: no denominator -> dropped
    assert frame.units == ((("region", "us"), ("tier", "hobby")), (("region", "us"), ("tier", "pro")))
    np.testing.assert_allclose(frame.values[:, 0], [0.5, 1.0 / 6.0], rtol=1e-12)


def test_ratio_one_to_one_and_invalid_join() -> None:
    store = _store(
        ("a", {"region": "us"}, [0.0], [3.0]),
        ("a", {"region": "eu"}, [0.0], [1.0]),
        ("b", {"region": "us"}, [0.0], [4.0]),
        ("b", {"region": "eu"}, [0.0], [0.0]),
    )
    num = Signal("gauge", "a", by=("region",))
    den = Signal("gauge", "b", by=("region",))
    frame = _at(store, Signal("ratio", numerator=num, denominator=den), 0.0)
    assert frame.units == ((("region", "us"),),)
    assert frame.values[0, 0] == 0.75
    platform = Signal("ratio", numerator=num, denominator=den).platform()
    assert _one(store, platform, 0.0) == pytest.approx(1.0, rel=1e-12)
    bad = Signal("ratio", numerator=num.platform(), denominator=den)
    with pytest.raises(ValueError, match="denominator"):
        _at(store, bad, 0.0)


# --------------------------------------------------------------------------- bookkeeping


def test_samples_read_counts_samples_inside_the_touched_windows() -> None:
    ts = [float(t) for t in range(0, 1001, 10)]
    store = _store(("c_total", {}, ts, ts), ("g", {}, ts, ts))
    frame = NativeSource(store).query_range(Signal("rate", "c_total", range=100.0), 500.0, 700.0, 100.0)
    assert frame.samples_read == 30  # (400, 700]
    frame = NativeSource(store).query_range(Signal("gauge", "g"), 500.0, 500.0, 60.0)
    assert frame.samples_read == 30  # (200, 500]


def test_invalid_signals_raise() -> None:
    store = _store(("g", {}, [0.0], [1.0]))
    for sig in (
        Signal("rate", ""),
        Signal("histogram_quantile", "g"),
        Signal("rate", "g", range=0.0),
        Signal("gauge", "g", agg="median"),  # type: ignore[arg-type]
        Signal("ratio", numerator=Signal("gauge", "g")),
    ):
        with pytest.raises(ValueError):
            _at(store, sig, 0.0)


# --------------------------------------------------------------------------- loop reference


def _reference_increase(ts: np.ndarray, vals: np.ndarray, t: float, rng: float, is_rate: bool) -> float:
    """A direct, per-step transcription of Prometheus 3 extrapolatedRate for floats."""
    pts = [(a, b) for a, b in zip(ts, vals, strict=True) if t - rng < a <= t and not is_stale_marker(b)]
    if len(pts) < 2:
        return float("nan")
    result = pts[-1][1] - pts[0][1]
    for (_, prev), (_, cur) in zip(pts, pts[1:], strict=False):
        if cur < prev:
            result += prev
    to_start = pts[0][0] - (t - rng)
    to_end = t - pts[-1][0]
    sampled = pts[-1][0] - pts[0][0]
    avg = sampled / (len(pts) - 1)
    if to_start >= avg * 1.1:
        to_start = avg / 2
    if result > 0 and pts[0][1] >= 0:
        to_zero = sampled * (pts[0][1] / result)
        if to_zero < to_start:
            to_start = to_zero
    if to_end >= avg * 1.1:
        to_end = avg / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= rng
    return result * factor


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_increase_matches_a_per_step_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    ts = np.cumsum(rng.choice([5.0, 10.0, 15.0, 60.0], size=n, p=[0.3, 0.4, 0.2, 0.1]))
    vals = np.cumsum(rng.exponential(3.0, size=n)) + rng.uniform(0, 50)
    resets = rng.random(n) < 0.05
    for i in np.flatnonzero(resets):
        vals[i:] -= vals[i] - rng.uniform(0, 5)
    vals[rng.random(n) < 0.03] = STALE_NAN
    times = np.arange(ts[0] - 30, ts[-1] + 30, 7.0)
    for window, is_rate in ((30.0, False), (60.0, True), (300.0, True)):
        got, present = extrapolated_increase(ts, vals, times, window, is_rate=is_rate)
        ref = np.array([_reference_increase(ts, vals, t, window, is_rate) for t in times])
        np.testing.assert_array_equal(present, ~np.isnan(ref))
        np.testing.assert_allclose(got[present], ref[present], rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- promtool cross-check

PROMTOOL = "/usr/bin/promtool"


def _promtool_or_skip() -> str:
    return require_binary("promtool")


_GOT = re.compile(r"got:\s*\[?(.*?)\]?\s*$", re.MULTILINE)
_SAMPLE = re.compile(r"(\{[^}]*\})\s+([-+0-9.eEInfNa]+)")


def _promtool_values(
    promtool: str, tmp: Path, input_series: list[tuple[str, str]], expr: str, t: str
) -> dict[str, float]:
    """Values promtool computes for `expr` at `t` (read from its failure report against an empty expectation)."""
    lines = ["rule_files: []", "evaluation_interval: 1m", "tests:", "  - interval: 1m", "    input_series:"]
    for series, values in input_series:
        lines += [f"      - series: '{series}'", f"        values: '{values}'"]
    lines += [
        "    promql_expr_test:",
        f"      - expr: '{expr}'",
        f"        eval_time: {t}",
        "        exp_samples: []",
    ]
    path = tmp / "t.yml"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    m = _GOT.search(out)
    if m is None:
        assert proc.returncode == 0, out
        return {}
    return {labels: float(v) for labels, v in _SAMPLE.findall(m.group(1))}


@pytest.mark.needs_binary("promtool")
def test_matches_promtool_on_boundary_free_data(tmp_path: Path) -> None:
    """Prometheus itself (promtool's engine) agrees where 2.x and 3.x semantics coincide.

    Samples every minute from 0; evaluation at 20m30s keeps every window edge off a sample,
    and counters start high so the zero-point rule (whose order changed in 3.x) is inactive.
    """
    promtool = _promtool_or_skip()
    series = [
        ('req_total{region="us",code="200"}', "1000+10x12 5+7x12"),
        ('req_total{region="eu",code="200"}', "2000+3x25"),
        ('lat_bucket{region="us",le="0.1"}', "500+2x25"),
        ('lat_bucket{region="us",le="0.5"}', "900+5x25"),
        ('lat_bucket{region="us",le="+Inf"}', "1200+6x25"),
        ('lat_bucket{region="eu",le="0.1"}', "500+1x25"),
        ('lat_bucket{region="eu",le="0.5"}', "900+4x25"),
        ('lat_bucket{region="eu",le="+Inf"}', "1200+9x25"),
        ('lat_sum{region="us"}', "100+0.7x25"),
        ('lat_count{region="us"}', "300+6x25"),
        ('g{region="us"}', "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21"),
        ('g{region="eu"}', "5 stale"),
    ]
    store = SampleStore(retention=None)
    for text, values in series:
        name, rest = text.split("{", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        vals: list[float] = []
        for part in values.split():
            if part == "stale":
                vals.append(STALE_NAN)
            elif "x" in part:
                start, rest2 = part.split("+")
                inc, count = rest2.split("x")
                vals += [float(start) + float(inc) * k for k in range(int(count) + 1)]
            else:
                vals.append(float(part))
        store.append(name, labels, [60.0 * k for k in range(len(vals))], vals)
    t = 20 * 60 + 30.0
    num = Signal("rate", "req_total", by=("region",), range=300.0)
    den = Signal("gauge", "g", by=("region",))
    signals = [
        num,
        Signal("increase", "req_total", by=("region",), range=600.0),
        Signal("histogram_quantile", "lat", by=("region",), quantile=0.9, range=300.0),
        Signal("histogram_quantile", "lat", quantile=0.5, range=300.0),
        Signal("histogram_mean", "lat", by=("region",), range=300.0),
        Signal("gauge", "g", by=("region",), agg="max"),
        Signal("ratio", numerator=num, denominator=den.platform(), scale=60.0),
    ]
    for sig in signals:
        expr = compile_promql(sig)
        expected = _promtool_values(promtool, tmp_path, series, expr, "20m30s")
        frame = _at(store, sig, t)
        got = {
            "{" + ", ".join(f'{k}="{v}"' for k, v in unit) + "}": float(frame.values[i, 0])
            for i, unit in enumerate(frame.units)
            if not math.isnan(frame.values[i, 0])
        }
        assert expected, expr
        assert set(got) == set(expected), expr
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-9), (expr, key)
