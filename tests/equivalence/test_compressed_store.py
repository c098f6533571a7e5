"""A compressed store (``chunk_samples``) holds exactly what a raw one holds.

The same appends (scrapes, batches, bulk refs, duplicates, out-of-order samples, stale
markers, NaN payloads) and the same retention passes go to a raw store and to compressed
ones; everything a reader can see must be equal, bit for bit: `select`, `select_views`
from any time on, counts, oldest and newest times; and the evaluations of the default
pack over both are the same.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.decision.pipeline import Pipeline
from detector.sim.shape import Shape, ShapedSimulator
from detector.sim.simulator import Simulator
from detector.source.native import NativeSource
from detector.source.series import STALE_NAN, RefBatch, series_ref
from detector.source.store import SampleStore
from detector.spec.load import default_pack


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


def _assert_same(raw: SampleStore, packed: SampleStore) -> None:
    assert raw.names() == packed.names()
    assert raw.sample_count() == packed.sample_count()
    assert raw.series_count() == packed.series_count()
    assert raw.oldest_timestamp() == packed.oldest_timestamp()
    assert raw.newest_timestamp() == packed.newest_timestamp()
    for name in raw.names():
        a, b = raw.select(name), packed.select(name)
        assert [x[0] for x in a] == [x[0] for x in b]
        for (_, ta, va), (_, tb, vb) in zip(a, b, strict=True):
            assert _bits(ta) == _bits(tb) and _bits(va) == _bits(vb), name


def _drive(stores: list[SampleStore], seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000.0
    refs = [series_ref("bucket", {"le": le, "pod": p}) for le in ("0.1", "+Inf") for p in ("a", "b")]
    for step in range(1500):
        t += 15.0
        for store in stores:
            store.append("up", {"job": "x"}, t, float(step % 7))  # one-sample path
        v = STALE_NAN if step % 97 == 0 else (np.nan if step % 89 == 0 else float(rng.normal()))
        for store in stores:
            store.append("gauge", {}, np.array([t]), np.array([v]))
        if step % 10 == 0:  # a batch, with a duplicate and an out-of-order sample in it
            ts = np.array([t - 14.0, t - 13.0, t - 13.0, t - 20.0, t - 12.0])
            vals = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
            for store in stores:
                store.append("batch", {"k": "v"}, ts, vals)
        bounds = np.arange(len(refs) + 1)
        batch = RefBatch(refs, bounds, np.full(len(refs), t - 1.0), np.full(len(refs), float(step)))
        for store in stores:
            store.append_batch(batch)
        if step % 300 == 299:
            for store in stores:
                store.enforce_retention(t)


@pytest.mark.parametrize("chunk", [16, 64, 256])
def test_a_compressed_store_reads_back_what_a_raw_one_holds(chunk: int) -> None:
    raw = SampleStore(retention=4 * 3600.0)
    packed = SampleStore(retention=4 * 3600.0, chunk_samples=chunk)
    _drive([raw, packed], seed=chunk)
    _assert_same(raw, packed)
    newest = raw.newest_timestamp()
    assert newest is not None
    for since in (-math.inf, newest - 3 * 3600.0, newest - 600.0, newest + 1.0):
        _, a = raw.select_views("gauge")
        _, b = packed.select_views("gauge", since=since)
        for va, vb in zip(a, b, strict=True):
            keep = va.timestamps >= since
            j = len(vb.timestamps) - int(keep.sum())
            assert j >= 0 and _bits(va.timestamps[keep]) == _bits(vb.timestamps[j:])
            assert _bits(va.values[keep]) == _bits(vb.values[j:])
            assert va.newest_real == vb.newest_real and va.last_drop == vb.last_drop


def test_evaluations_over_a_compressed_store_equal_those_over_a_raw_one() -> None:
    origin = 1_700_000_000.0
    end = origin + 8 * 86400.0
    shape = Shape(pods=2, lost_scrape_ratio=0.05, counter_resets=(end - 7200.0,))
    stores = [SampleStore(retention=None), SampleStore(retention=None, chunk_samples=256)]
    for store in stores:
        sim = ShapedSimulator(Simulator("latency_binding", seed=4, origin=origin, interval=60.0), shape)
        for name, _typ, labels, ts, vals in sim.generate(origin, end):
            store.append(name, labels, ts, vals)
    _assert_same(*stores)
    pack = default_pack()
    raw, packed = (Pipeline(f"p{i}", pack, NativeSource(s)) for i, s in enumerate(stores))
    for k in range(8):
        now = end - 600.0 + 60.0 * k
        a, b = raw.evaluate(now), packed.evaluate(now)
        da, db = a.to_dict(), b.to_dict()
        for d in (da, db):
            d.pop("meta")
            d.pop("pipeline")
        assert da == db, k
    assert raw.latest is not None and raw.latest.binding == "latency"
    assert stores[1].memory_bytes() < 0.5 * stores[0].memory_bytes()
