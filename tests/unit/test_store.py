"""SampleStore: ingestion rules, stale markers, validation, retention, read safety, threads."""

from __future__ import annotations

import math
import struct
import threading

import numpy as np
import pytest

from detector.source.series import STALE_NAN, is_stale_marker
from detector.source.store import AppendResult, SampleStore


def _series(store: SampleStore, name: str, **labels: str) -> tuple[np.ndarray, np.ndarray]:
    found = [(ts, v) for lbl, ts, v in store.select(name) if dict(lbl) == labels]
    assert len(found) == 1
    return found[0]


# --------------------------------------------------------------------------- stale markers


def test_stale_nan_has_prometheus_bit_pattern() -> None:
    assert struct.pack("<d", STALE_NAN) == struct.pack("<Q", 0x7FF0000000000002)
    assert math.isnan(STALE_NAN)


def test_is_stale_marker_tells_stale_from_ordinary_nan() -> None:
    got = is_stale_marker([STALE_NAN, float("nan"), 1.0, np.inf])
    assert got.tolist() == [True, False, False, False]
    assert bool(is_stale_marker(STALE_NAN)) is True
    assert bool(is_stale_marker(float("nan"))) is False
    # works on non-contiguous input and keeps the shape
    grid = np.array([[STALE_NAN, 0.0], [1.0, STALE_NAN]])
    assert is_stale_marker(grid[:, 1]).tolist() == [False, True]


def test_stale_marker_survives_the_store_and_ordinary_nan_stays_nan() -> None:
    store = SampleStore(retention=None)
    store.append("g", {}, [1.0, 2.0, 3.0], [5.0, float("nan"), STALE_NAN])
    ts, v = _series(store, "g")
    assert ts.tolist() == [1.0, 2.0, 3.0]
    assert is_stale_marker(v).tolist() == [False, False, True]
    assert math.isnan(v[1]) and not is_stale_marker(v[1])


# --------------------------------------------------------------------------- ordering rules


def test_out_of_order_and_duplicates_within_one_batch() -> None:
    store = SampleStore(retention=None)
    # 1 ok, 2 ok, (2, 2.0) duplicate, (2, 5.0) out of order, (1, 1.0) out of order, 3 ok
    res = store.append("m", {"a": "x"}, [1, 2, 2, 2, 1, 3], [1.0, 2.0, 2.0, 5.0, 1.0, 3.0])
    assert res == AppendResult(accepted=3, out_of_order=2, duplicates=1)
    assert res.rejected == 3
    ts, v = _series(store, "m", a="x")
    assert ts.tolist() == [1.0, 2.0, 3.0]
    assert v.tolist() == [1.0, 2.0, 3.0]


def test_rules_across_batches_never_change_accepted_data() -> None:
    store = SampleStore(retention=None)
    assert store.append("m", {}, [10.0, 20.0], [1.0, 2.0]) == AppendResult(accepted=2)
    assert store.append("m", {}, 20.0, 2.0) == AppendResult(duplicates=1)
    assert store.append("m", {}, 20.0, 9.0) == AppendResult(out_of_order=1)
    assert store.append("m", {}, 15.0, 1.5) == AppendResult(out_of_order=1)
    # a duplicate of an *older* sample is out of order, not a duplicate
    assert store.append("m", {}, 10.0, 1.0) == AppendResult(out_of_order=1)
    assert store.append("m", {}, [20.0, 30.0], [2.0, 3.0]) == AppendResult(accepted=1, duplicates=1)
    ts, v = _series(store, "m")
    assert ts.tolist() == [10.0, 20.0, 30.0]
    assert v.tolist() == [1.0, 2.0, 3.0]


def test_duplicate_means_bit_identical_value() -> None:
    store = SampleStore(retention=None)
    store.append("m", {}, [1.0, 2.0], [0.0, STALE_NAN])
    assert store.append("m", {}, 2.0, STALE_NAN) == AppendResult(duplicates=1)
    assert store.append("m", {}, 2.0, float("nan")) == AppendResult(out_of_order=1)
    store.append("m", {}, 3.0, 0.0)
    assert store.append("m", {}, 3.0, -0.0) == AppendResult(out_of_order=1)


def test_duplicate_compares_with_newest_accepted_sample_of_the_batch() -> None:
    store = SampleStore(retention=None)
    store.append("m", {}, 5.0, 7.0)
    # (5, 7) duplicates the stored newest; (6, 1) accepted; (6, 1) duplicate of it; (6, 7) out of order
    res = store.append("m", {}, [5.0, 6.0, 6.0, 6.0], [7.0, 1.0, 1.0, 7.0])
    assert res == AppendResult(accepted=1, out_of_order=1, duplicates=2)


def test_scalars_and_array_inputs() -> None:
    store = SampleStore(retention=None)
    assert store.append("m", {}, 1, 2).accepted == 1
    assert store.append("m", {}, np.array([2.0, 3.0]), [4, 5]).accepted == 2
    assert store.append("m", {}, [], []) == AppendResult()
    ts, v = _series(store, "m")
    assert ts.dtype == np.float64 and v.dtype == np.float64
    assert v.tolist() == [2.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("ts", "vals"),
    [([1.0, 2.0], [1.0]), ([1.0, float("nan")], [1.0, 2.0]), ([1.0, np.inf], [1.0, 2.0]), ([[1.0]], [[1.0]])],
)
def test_bad_sample_arrays_raise(ts: object, vals: object) -> None:
    with pytest.raises(ValueError):
        SampleStore().append("m", {}, ts, vals)


# --------------------------------------------------------------------------- names and labels


@pytest.mark.parametrize("label", ["1abc", "a-b", "", "é", "__reserved"])
def test_bad_label_names_raise_naming_the_label(label: str) -> None:
    with pytest.raises(ValueError, match=repr(label).replace("\\", "\\\\")):
        SampleStore().append("m", {label: "x"}, 1.0, 1.0)


@pytest.mark.parametrize("name", ["", "1m", "a-b", "a b"])
def test_bad_metric_names_raise(name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        SampleStore().append(name, {}, 1.0, 1.0)


def test_label_value_must_be_a_string() -> None:
    with pytest.raises(ValueError, match="'region'"):
        SampleStore().append("m", {"region": 3}, 1.0, 1.0)  # type: ignore[dict-item]


def test_empty_label_value_is_no_label_and_colons_allowed_in_metric_names() -> None:
    store = SampleStore(retention=None)
    store.append("job:m:rate5m", {"a": "x", "b": ""}, 1.0, 1.0)
    store.append("job:m:rate5m", {"a": "x"}, 2.0, 2.0)
    assert store.series_count() == 1
    ((labels, ts, _),) = store.select("job:m:rate5m")
    assert labels == (("a", "x"),)
    assert ts.tolist() == [1.0, 2.0]


# --------------------------------------------------------------------------- select


def test_select_matchers_sorting_and_absent_label_matcher() -> None:
    store = SampleStore(retention=None)
    store.append("m", {"region": "us", "tier": "low"}, 1.0, 1.0)
    store.append("m", {"region": "eu", "tier": "low"}, 1.0, 2.0)
    store.append("m", {"region": "eu", "tier": "high"}, 1.0, 3.0)
    store.append("m", {"region": "eu"}, 1.0, 4.0)
    store.append("other", {"region": "eu"}, 1.0, 5.0)
    all_labels = [lbl for lbl, _, _ in store.select("m")]
    assert all_labels == sorted(all_labels)
    assert len(all_labels) == 4
    eu_low = store.select("m", [("region", "eu"), ("tier", "low")])
    assert [v.tolist() for _, _, v in eu_low] == [[2.0]]
    no_tier = store.select("m", [("tier", "")])
    assert [lbl for lbl, _, _ in no_tier] == [(("region", "eu"),)]
    assert store.select("m", [("region", "apac")]) == []
    assert store.select("missing") == []
    assert store.names() == ["m", "other"]


def test_selected_arrays_are_read_only_and_unchanged_by_later_writes() -> None:
    store = SampleStore(retention=100.0)
    store.append("m", {}, np.arange(10.0), np.arange(10.0))
    ((_, ts, v),) = store.select("m")
    with pytest.raises(ValueError):
        v[0] = 99.0
    # many appends force buffer growth and self-compaction; then explicit retention
    for k in range(10, 500):
        store.append("m", {}, float(k), float(-k))
    store.enforce_retention(now=550.0)
    assert ts.tolist() == list(np.arange(10.0))
    assert v.tolist() == list(np.arange(10.0))
    ((_, ts2, v2),) = store.select("m")
    assert ts2[0] == 450.0 and v2[-1] == -499.0


# --------------------------------------------------------------------------- counts and retention


def test_counts_and_newest_timestamp_ignore_stale_markers() -> None:
    store = SampleStore(retention=None)
    assert store.newest_timestamp() is None
    store.append("a", {"x": "1"}, [1.0, 2.0], [1.0, 1.0])
    store.append("a", {"x": "2"}, [5.0, 9.0], [1.0, STALE_NAN])
    store.append("b", {}, [3.0], [1.0])
    assert store.series_count() == 3
    assert store.sample_count() == 5
    assert store.newest_timestamp("a") == 5.0
    assert store.newest_timestamp("b") == 3.0
    assert store.newest_timestamp() == 5.0
    assert store.newest_timestamp("nope") is None
    assert store.oldest_timestamp() == 1.0
    assert store.oldest_timestamp("a") == 1.0
    assert store.oldest_timestamp("b") == 3.0
    assert store.oldest_timestamp("nope") is None
    assert store.memory_bytes() >= 16 * 5


def test_enforce_retention_drops_older_than_cutoff_and_forgets_empty_series() -> None:
    store = SampleStore(retention=100.0)
    store.append("m", {"s": "old"}, [10.0, 20.0], [1.0, 2.0])
    store.append("m", {"s": "new"}, [50.0, 100.0, 150.0], [1.0, 2.0, 3.0])
    # cutoff = 150 - 100 = 50: the sample at exactly 50 is kept
    assert store.enforce_retention(now=150.0) == 2
    assert store.series_count() == 1
    ts, _ = _series(store, "m", s="new")
    assert ts.tolist() == [50.0, 100.0, 150.0]
    assert store.enforce_retention(now=201.0) == 2
    assert store.sample_count() == 1
    assert store.enforce_retention(now=1000.0) == 1
    assert store.series_count() == 0 and store.names() == []
    assert SampleStore(retention=None).enforce_retention(now=1e12) == 0


def test_memory_stays_bounded_without_explicit_retention() -> None:
    store = SampleStore(retention=600.0)
    for k in range(0, 20000, 50):
        store.append("m", {}, np.arange(k, k + 50, dtype=float), np.ones(50))
    # only ~600 s of data should survive growth-time compaction (at most 2x capacity slack)
    assert store.sample_count() <= 2 * 650
    ts, _ = _series(store, "m")
    assert ts[-1] == 19999.0
    assert np.all(np.diff(ts) == 1.0)
    assert store.memory_bytes() < 16 * 8 * 650 + 1024


def test_invalid_retention_raises() -> None:
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="retention"):
            SampleStore(retention=bad)


def test_concurrent_appends_lose_nothing() -> None:
    store = SampleStore(retention=None)
    n_threads, per_thread = 4, 2000
    results: list[AppendResult] = []
    lock = threading.Lock()

    def writer(idx: int) -> None:
        local = []
        for k in range(per_thread):
            local.append(store.append("m", {"w": str(idx)}, float(k), float(k)))
            local.append(store.append("shared", {}, float(k), float(k)))
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert store.sample_count() == n_threads * per_thread + per_thread
    shared_ts, shared_v = _series(store, "shared")
    assert shared_ts.tolist() == [float(k) for k in range(per_thread)]
    accepted = sum(r.accepted for r in results)
    dups = sum(r.duplicates for r in results)
    ooo = sum(r.out_of_order for r in results)
    assert accepted == store.sample_count()
    # every rejected write to 'shared' repeated an accepted (t, v) or came late: all are accounted for
    assert accepted + dups + ooo == 2 * n_threads * per_thread
