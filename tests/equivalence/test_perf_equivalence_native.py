"""The faster native query path gives the numbers of the per-series path, bit for bit.

* `increase_list` (rows as views, edges gathered, resets skipped where the store says there
  are none) equals `extrapolated_increase` row by row, and so does `increase_rows`, also
  for the sign of a zero;
* the store's per-series record of the last counter reset and stale marker
  (`SampleStore.select_views`) is what a scan of the stored samples finds;
* `NativeSource._rates` over those records equals `extrapolated_increase` per series, and
  queries inside a `NativeSource.scope` (one evaluation) equal the same queries outside,
  also when the store changes in between.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from detector.evidence.gather import gather_evidence
from detector.source import kernels, native
from detector.source.series import STALE_NAN, RefBatch, is_stale_marker, series_ref
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from detector.spec.signals import Signal


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(bits(a), bits(b)))


def counter(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    v = np.cumsum(rng.exponential(5.0, n))
    if kind == "resets":
        for k in rng.choice(n, 4, replace=False):
            v[k:] -= v[k] - rng.uniform(0, 2)
    elif kind == "zeros":
        v[: n // 3] = 0.0
    elif kind == "negative":  # falls from 0.0 only: corrections of +0.0 must not turn -0.0 into +0.0
        v = np.zeros(n)
        v[1::3] = -0.0
        v[2::3] = -1.0
    elif kind == "nan":
        v[rng.choice(n, 5, replace=False)] = np.nan
    return v


KINDS = ("plain", "resets", "zeros", "negative", "nan")


@pytest.mark.parametrize("stacked", [True, False])  # short rows stacked into one array, or row by row
@pytest.mark.parametrize("is_rate", [False, True])
@pytest.mark.parametrize("window", [60.0, 300.0, 3600.0])
def test_increase_list_and_rows_equal_extrapolated_increase(
    window: float, is_rate: bool, stacked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "_STACK_SAMPLES", 1 << 16 if stacked else 0)
    rng = np.random.default_rng(int(window) * 2 + is_rate)
    n = 900
    ts = 1000.0 + np.cumsum(rng.uniform(5.0, 40.0, n))
    rows = [counter(rng, n, KINDS[i % len(KINDS)]) for i in range(10)]
    exact = [bool((r[1:] < r[:-1]).any()) for r in rows]
    assert exact[1] and exact[3] and not exact[0]
    grids = {
        "sparse": np.arange(ts[0] - 500.0, ts[-1] + 500.0, 47.0),  # steps without two samples
        "dense": np.arange(ts[0] + 2 * window, ts[-1], window / 2),  # every step has a window
    }
    for grid, times in grids.items():
        want = [kernels.extrapolated_increase(ts, r, times, window, is_rate=is_rate) for r in rows]
        # all rows; rows that never start near zero (one extrapolation factor per step);
        # counters with resets
        for subset in (list(range(len(rows))), [0, 5], [1, 6]):
            for resets in (None, [exact[r] for r in subset]):
                got_v, got_p = kernels.increase_list(
                    ts, [rows[r] for r in subset], times, window, is_rate=is_rate, resets=resets
                )
                for k, r in enumerate(subset):
                    assert np.array_equal(got_p[k], want[r][1]), (grid, r)
                    assert same_bits(got_v[k], want[r][0]), (grid, r)
                # written into given arrays (garbage before): the same
                out = np.full(got_v.shape, 7.0)
                pres = np.ones(got_p.shape, dtype=bool)
                v2, p2 = kernels.increase_list(
                    ts,
                    [rows[r] for r in subset],
                    times,
                    window,
                    is_rate=is_rate,
                    resets=resets,
                    out=out,
                    present=pres,
                )
                assert v2 is out and p2 is pres
                assert same_bits(out, got_v) and np.array_equal(pres, got_p)
        rows_v, rows_p = kernels.increase_rows(ts, np.stack(rows), times, window, is_rate=is_rate)
        for r in range(len(rows)):
            assert np.array_equal(rows_p[r], want[r][1])
            assert same_bits(rows_v[r], want[r][0]), (grid, r)
        if grid == "dense" and window >= 300.0:
            assert all(p.all() for _, p in want)
        if grid == "sparse":
            assert not want[0][1].all() and want[0][1].any()


def test_a_fall_from_zero_keeps_the_sign_of_a_zero_increase() -> None:
    """Falls whose drop is 0.0 add no reset correction (extrapolated_increase); adding +0.0
    would turn a -0.0 increase into +0.0."""
    ts = np.array([0.0, 10.0, 20.0])
    vals = np.array([0.0, -1.0, -0.0])
    times = np.array([20.0])
    want, present = kernels.extrapolated_increase(ts, vals, times, 30.0)
    assert present[0] and want[0] == 0.0 and np.signbit(want[0])
    got, _ = kernels.increase_list(ts, [vals], times, 30.0)
    assert same_bits(got[0], want)
    got, _ = kernels.increase_rows(ts, vals[None, :], times, 30.0)
    assert same_bits(got[0], want)


def test_increase_list_edge_cases() -> None:
    ts = np.array([10.0, 20.0, 30.0])
    rows = [np.array([1.0, 2.0, 3.0])]
    v, p = kernels.increase_list(ts, [], np.array([30.0]), 60.0)
    assert v.shape == (0, 1) and p.shape == (0, 1)
    v, p = kernels.increase_list(ts[:1], [rows[0][:1]], np.array([30.0]), 60.0)
    assert np.isnan(v).all() and not p.any()
    v, p = kernels.increase_list(ts, rows, np.array([5.0, 500.0]), 60.0)  # no window holds two samples
    assert not p.any()
    out, pres = np.zeros((1, 2)), np.ones((1, 2), dtype=bool)
    kernels.increase_list(ts, rows, np.array([5.0, 500.0]), 60.0, out=out, present=pres)
    assert np.isnan(out).all() and not pres.any()
    kernels.increase_list(ts[:1], [rows[0][:1]], np.array([5.0, 500.0]), 60.0, out=out, present=pres)
    assert np.isnan(out).all() and not pres.any()


# --------------------------------------------------------------------------- store records


def scan(ts: np.ndarray, vals: np.ndarray) -> tuple[float, float]:
    falls = np.flatnonzero(vals[1:] < vals[:-1])
    stale = np.flatnonzero(is_stale_marker(vals))
    return (
        float(ts[falls[-1] + 1]) if len(falls) else -math.inf,
        float(ts[stale[-1]]) if len(stale) else -math.inf,
    )


def random_writes(store: SampleStore, rng: np.random.Generator, rounds: int) -> None:
    names = [("c", {"i": str(i)}) for i in range(5)]
    clock = [0.0] * 5
    choices = np.array([1.0, 2.0, 5.0, 0.5, 0.0, math.nan, STALE_NAN, 7.0])
    for _ in range(rounds):
        i = int(rng.integers(0, 5))
        how = int(rng.integers(0, 4))
        k = 1 if how < 2 else int(rng.integers(1, 6))
        ts = clock[i] + np.cumsum(rng.uniform(1.0, 5.0, k))
        if rng.random() < 0.1:
            ts = ts - 8.0  # some out of order: dropped by the store
        vals = rng.choice(choices, k)
        if how == 0:
            store.append(names[i][0], names[i][1], float(ts[0]), float(vals[0]))
        elif how == 3:
            store.append_refs(RefBatch([series_ref(*names[i])], [0, k], ts, vals))
        else:
            store.append(names[i][0], names[i][1], ts, vals)
        clock[i] = max(clock[i], float(ts[-1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_store_records_of_resets_and_stale_markers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = SampleStore(retention=None)
    random_writes(store, rng, 400)
    _, views = store.select_views("c")
    assert len(views) == 5
    for v in views:
        assert (v.last_drop, v.last_stale) == scan(v.timestamps, v.values)
    assert any(v.last_drop > -math.inf for v in views) and any(v.last_stale > -math.inf for v in views)


def test_store_records_stay_sound_under_retention() -> None:
    """With retention, a record may point at a sample already forgotten (harmless: it is
    older than every stored sample), never miss a reset or stale marker still stored."""
    rng = np.random.default_rng(9)
    store = SampleStore(retention=40.0)
    for step in range(20):
        random_writes(store, rng, 30)
        store.enforce_retention(10.0 * step)
        for v in store.select_views("c")[1]:
            drop, stale = scan(v.timestamps, v.values)
            assert v.last_drop >= drop and v.last_stale >= stale
            assert v.last_drop == drop or v.last_drop <= float(v.timestamps[0])
            assert v.last_stale == stale or v.last_stale < float(v.timestamps[0])


def test_version_changes_with_the_samples() -> None:
    store = SampleStore(retention=10.0)
    v0 = store.version
    store.append("m", {}, 1.0, 1.0)
    v1 = store.version
    store.append("m", {}, 1.0, 1.0)  # a duplicate changes nothing
    assert v1 != v0 and store.version == v1
    store.append_refs(RefBatch([series_ref("m", {})], [0, 1], np.array([2.0]), np.array([2.0])))
    v2 = store.version
    store.enforce_retention(100.0)
    assert len({v0, v1, v2, store.version}) == 4


# --------------------------------------------------------------------------- queries


def mixed_store() -> SampleStore:
    """Counters scraped together (shared timestamps) with resets, a stale marker, NaN, a
    series that started later, and one on its own clock."""
    rng = np.random.default_rng(3)
    store = SampleStore(retention=None)
    ts = 1_700_000_000.0 + 15.0 * np.arange(3000)
    for i in range(12):
        kind = KINDS[i % len(KINDS)]
        vals = counter(rng, len(ts), kind if kind != "nan" else "plain")
        if i == 4:
            vals[2000] = STALE_NAN
        if i == 9:
            vals[1500] = np.nan
        begin = 500 if i == 7 else 0
        store.append("reqs_total", {"i": f"{i:02d}", "le": str(i % 3)}, ts[begin:], vals[begin:])
    store.append("reqs_total", {"i": "own", "le": "0"}, ts[::2] + 3.0, np.cumsum(rng.random(1500)))
    return store


@pytest.mark.parametrize("window", [60.0, 300.0, 3600.0])
def test_rates_equal_per_series(window: float) -> None:
    store = mixed_store()
    source = native.NativeSource(store)
    for start, end, step in (
        (1_700_000_000.0, 1_700_045_000.0, 300.0),
        (1_700_030_000.0, 1_700_031_000.0, 15.0),
    ):
        times = native.evaluation_times(start, end, step)
        sig = Signal(kind="rate", metric="reqs_total", range=window)
        got = source._rates("reqs_total", sig, times, is_rate=True)
        selected = store.select("reqs_total")
        assert len(selected) == 13
        n = 0
        for row, (labels, ts, vals) in enumerate(selected):
            want_v, want_p = kernels.extrapolated_increase(ts, vals, times, window, is_rate=True)
            n += int(kernels.clip(ts, vals, float(times[0]) - window, float(times[-1]))[0].size)
            assert got.labels[row] == labels
            assert np.array_equal(got.present[row], want_p)
            assert same_bits(got.values[row], want_v), labels
        assert got.samples == n


def test_scope_gives_the_queries_of_no_scope() -> None:
    store = mixed_store()
    signals = [
        Signal(kind="rate", metric="reqs_total", by=("le",), range=300.0),
        Signal(kind="rate", metric="reqs_total", range=3600.0),
        Signal(kind="increase", metric="reqs_total", by=("i",), range=900.0),
        Signal(kind="gauge", metric="reqs_total", by=("le",), agg="max"),
        Signal(kind="histogram_quantile", metric="reqs", range=600.0, quantile=0.5),
    ]
    plain = native.NativeSource(store)
    scoped = native.NativeSource(store)
    grid = (1_700_000_000.0, 1_700_044_000.0, 300.0)

    def frames(src: native.NativeSource) -> list[tuple[object, ...]]:
        out = []
        for sig in signals:
            f = src.query_range(sig, *grid)
            out.append((f.units, bits(f.values).tolist(), f.samples_read))
        return out

    want = frames(plain)
    with scoped.scope():
        assert frames(scoped) == want
        assert frames(scoped) == want  # served from the shared selections
        # the store changes inside the scope: the next queries see it, as without a scope
        store.append("reqs_total", {"i": "new", "le": "1"}, [1_700_040_000.0, 1_700_040_015.0], [1.0, 9.0])
        assert frames(scoped) == frames(plain) != want
    assert getattr(scoped._local, "memo", None) is None


def test_evaluation_with_and_without_scope() -> None:
    from benchmarks.data import simulated_store

    data = simulated_store(2.0, days=0.25)
    pack = default_pack()

    class NoScope:
        name = "native"

        def __init__(self, inner: native.NativeSource) -> None:
            self.inner = inner

        def query_range(self, *args: object) -> object:
            return self.inner.query_range(*args)  # type: ignore[arg-type]

        def survey(self, *args: object) -> object:
            return self.inner.survey(*args)  # type: ignore[arg-type]

    for t in (data.now, data.now - 3 * 3600.0):
        a = gather_evidence(pack, native.NativeSource(data.store), t)
        b = gather_evidence(pack, NoScope(native.NativeSource(data.store)), t)  # type: ignore[arg-type]
        assert repr(a) == repr(b)
        assert a.samples_read > 1_000_000


def histogram_store() -> SampleStore:
    """Two regions' histograms; one region writes bound 1 both as '1' and '1.0' (they merge),
    one bucket series starts late (absent early on), one is reset."""
    rng = np.random.default_rng(21)
    store = SampleStore(retention=None)
    ts = 1_700_000_000.0 + 30.0 * np.arange(1200)
    for region, bounds in (("us", ("0.1", "0.5", "1", "1.0", "+Inf")), ("eu", ("0.1", "0.5", "1.0", "+Inf"))):
        cum = np.zeros(len(ts))
        for le in bounds:
            cum = cum + np.cumsum(rng.exponential(2.0, len(ts)))
            vals = cum.copy()
            begin = 0
            if region == "us" and le == "0.5":
                begin = 400
            if region == "eu" and le == "0.1":
                vals[700:] -= vals[700] - 1.0
            store.append("lat_bucket", {"region": region, "le": le}, ts[begin:], vals[begin:])
    return store


def reference_quantile(
    source: native.NativeSource, sig: Signal, times: np.ndarray
) -> dict[tuple[tuple[str, str], ...], np.ndarray]:
    """`sum by (by, le)` through `_aggregate`, equal bounds summed in label order, then the
    bucket-by-bucket quantile, one histogram at a time."""
    by = tuple(sig.by)
    rates = source._rates("lat_bucket", sig, times, is_rate=True)
    summed = native._aggregate(rates, (*by, "le"), "sum")
    masked = np.where(summed.present, summed.values, 0.0)
    groups: dict[Any, dict[float, list[int]]] = {}
    for i, lbl in enumerate(summed.labels):
        d = dict(lbl)
        ub = kernels.parse_le(d.pop("le"))
        assert ub is not None
        groups.setdefault(tuple(sorted(d.items())), {}).setdefault(ub, []).append(i)
    out = {}
    for key, per_bound in groups.items():
        bounds = sorted(per_bound)
        counts = np.array([sum_rows(masked, per_bound[b]) for b in bounds])
        present = np.array([summed.present[per_bound[b]].any(axis=0) for b in bounds])
        valid = present[-1] & (present.sum(axis=0) >= 2)
        q = kernels._bucket_quantile_loop(float(sig.quantile or 0), np.array(bounds), counts, present, valid)
        out[key] = np.where(present.any(axis=0), q, np.nan)
    return out


def sum_rows(masked: np.ndarray, rows: list[int]) -> np.ndarray:
    total = masked[rows[0]]
    for r in rows[1:]:
        total = total + masked[r]
    return total


@pytest.mark.parametrize("block", [None, 8])
@pytest.mark.parametrize("by", [("region",), ()])
def test_histogram_quantile_equals_aggregate_then_loop(
    by: tuple[str, ...], block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block is not None:  # one histogram per `bucket_quantile` call, a few rows per `increase_list`
        monkeypatch.setattr(native, "_BLOCK_SAMPLES", block)
    store = histogram_store()
    source = native.NativeSource(store)
    sig = Signal(kind="histogram_quantile", metric="lat", by=by, range=600.0, quantile=0.7)
    times = native.evaluation_times(1_700_000_000.0, 1_700_035_000.0, 300.0)
    frame = source.query_range(sig, float(times[0]), float(times[-1]), 300.0)
    want = reference_quantile(source, sig, times)
    assert sorted(frame.units) == sorted(want) and len(frame.units) == (2 if by else 1)
    for unit, row in zip(frame.units, frame.values, strict=True):
        assert same_bits(row, want[unit]), unit
        assert np.isfinite(row).sum() > 50


def test_shared_timestamps_answers_as_a_full_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrapes of three series (two always together, one sometimes apart), growth of the
    buffers, retention and compaction: the remembered comparisons never give another answer
    than comparing the whole arrays, and an unchanged store compares nothing again."""
    rng = np.random.default_rng(5)
    store = SampleStore(retention=600.0)
    matcher = native._SharedTimestamps()
    t = 0.0
    for step in range(400):
        t += float(rng.choice([10.0, 15.0]))
        apart = rng.random() < 0.05
        for name in ("a", "b", "c"):
            when = t + (0.5 if name == "c" and apart else 0.0)
            store.append("m", {"s": name}, when, float(step))
        if step % 37 == 0:
            store.enforce_retention(t)
        if step % 9:
            continue
        views = store.select_views("m")[1]
        for x in views:
            for y in views:
                want = bool(np.array_equal(x.timestamps, y.timestamps))
                assert matcher.equal(x, y) == want, (step, x.labels, y.labels)
    assert matcher.pairs
    views = store.select_views("m")[1]
    equal_pairs = [(x, y) for x in views for y in views if np.array_equal(x.timestamps, y.timestamps)]
    assert len(equal_pairs) > len(views)  # a and b at least
    assert all(matcher.equal(x, y) for x, y in equal_pairs)
    real = np.array_equal
    calls = []
    monkeypatch.setattr(native.np, "array_equal", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert all(matcher.equal(x, y) for x, y in equal_pairs)
    assert calls == []  # all remembered
