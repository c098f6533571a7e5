"""Incremental evaluation gives the verdict of a cold one, and reads a fraction of the samples.

Two pipelines over one store, one reading through `IncrementalSource` (the default) and
one cold (``incremental=False``), evaluated at the same times: live every minute while
the simulator writes (pods, lost scrapes, a counter reset: units that come and go), and
over a whole hourly replay (what `csf backtest` does). Everything but the cost figures
must be equal; the steady-state incremental evaluations must read <= 2% of the samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from detector.decision.pipeline import Pipeline
from detector.evidence.results import Evaluation
from detector.sim.shape import Shape, ShapedSimulator
from detector.sim.simulator import Simulator
from detector.source.frame import SignalFrame
from detector.source.incremental import IncrementalSource
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from detector.spec.signals import Signal

ORIGIN = 1_700_000_000.0


def verdict(ev: Evaluation) -> dict[str, Any]:
    """The evaluation without its cost figures (time, memory, samples read)."""
    d = ev.to_dict()
    d.pop("meta", None)
    d.pop("pipeline", None)
    return d


def test_live_evaluations_every_minute_equal_cold_ones_and_read_under_2_percent() -> None:
    pack = default_pack()
    store = SampleStore(retention=None)
    start = ORIGIN + 8 * 86400
    shape = Shape(pods=3, lost_scrape_ratio=0.05, counter_resets=(start + 600.0,))
    sim = ShapedSimulator(Simulator("latency_binding", seed=11, origin=ORIGIN, interval=60.0), shape)
    for name, _typ, labels, ts, vals in sim.generate(ORIGIN, start):
        store.append(name, labels, ts, vals)
    incremental = Pipeline("inc", pack, NativeSource(store))
    cold = Pipeline("cold", pack, NativeSource(store), incremental=False)
    assert isinstance(incremental.source, IncrementalSource)
    written = start
    reads: list[tuple[int, int]] = []
    for k in range(66):  # one hour: the hourly pressure frames come back in phase
        now = start + 60.0 * k + 17.25  # off the sample grid, fractional like a wall clock
        for name, _typ, labels, ts, vals in sim.generate(written, now):
            store.append(name, labels, ts, vals)
        written = now
        a, b = incremental.evaluate(now), cold.evaluate(now)
        assert verdict(a) == verdict(b), f"evaluation {k}"
        reads.append((a.meta.samples_read, b.meta.samples_read))
        if k == 60:
            full_before = incremental.source.full_queries  # type: ignore[attr-defined]
    assert cold.latest is not None and cold.latest.binding == "latency"  # something binds: not two empty answers
    steady = reads[-5:]
    ratio = sum(i for i, _ in steady) / sum(c for _, c in steady)
    print(f"steady-state samples read: {ratio:.4%} of a cold evaluation")
    assert ratio <= 0.02, steady
    src = incremental.source
    assert isinstance(src, IncrementalSource) and src.full_queries == full_before, "steady state: no full query"


def test_an_hourly_replay_equals_a_cold_replay() -> None:
    pack = default_pack()
    store = SampleStore(retention=None)
    Simulator("sequence", seed=3, origin=ORIGIN, interval=60.0).write_to(store, ORIGIN, ORIGIN + 10 * 86400)
    times = [ORIGIN + 7 * 86400 + 3600.0 * k for k in range(60)]
    inc = Pipeline("inc", pack, NativeSource(store)).replay(times)
    cold = Pipeline("cold", pack, NativeSource(store), incremental=False).replay(times)
    assert [verdict(a) for a in inc] == [verdict(b) for b in cold]
    assert len({e.binding for e in cold}) > 1, "the replay crosses a change of binding"
    assert sum(e.meta.samples_read for e in inc[5:]) <= 0.1 * sum(e.meta.samples_read for e in cold[5:])


class _Frames:
    """A source answering from a table of frames (what the incremental layer asked for is kept)."""

    name = "table"

    def __init__(self, values: dict[float, dict[tuple[tuple[str, str], ...], float]]) -> None:
        self.values = values
        self.asked: list[tuple[float, float]] = []

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        self.asked.append((start, end))
        times = start + step * np.arange(int(math.floor((end - start) / step + 1e-9)) + 1)
        units = sorted({u for t in times for u in self.values.get(float(t), {})})
        vals = np.array([[self.values.get(float(t), {}).get(u, np.nan) for t in times] for u in units])
        return SignalFrame(tuple(units), times, vals.reshape(len(units), len(times)), samples_read=len(times))


A, B = (("pod", "a"),), (("pod", "b"),)


def test_units_that_come_and_go_and_the_overlap_are_handled_like_a_cold_query() -> None:
    step = 60.0
    table: dict[float, dict[Any, float]] = {}
    for k in range(200):
        t = 60.0 * k
        table[t] = {A: float(k)}
        if 50 <= k < 120:
            table[t][B] = 2.0 * k  # unit b appears at step 50, leaves at 120
    inner = _Frames(table)
    src = IncrementalSource(inner, overlap=120.0)
    sig = Signal(kind="gauge", metric="x")
    for end_k in range(40, 200, 7):
        end = 60.0 * end_k
        start = end - 30 * step
        got = src.query_range(sig, start, end, step)
        want = _Frames(table).query_range(sig, start, end, step)
        assert got.units == want.units and np.array_equal(got.values, want.values, equal_nan=True), end_k
        assert np.array_equal(got.times, want.times)
    # the first query is full; later ones re-read the overlap (2 steps) plus the 7 new steps
    assert inner.asked[0] == (60.0 * 10, 60.0 * 40)
    assert any(e - s == 8 * step for s, e in inner.asked[1:])


def test_a_late_sample_within_the_overlap_is_seen_one_beyond_it_is_documented_as_missed() -> None:
    step = 60.0
    table: dict[float, dict[Any, float]] = {60.0 * k: {A: 1.0} for k in range(100)}
    src = IncrementalSource(_Frames(table), overlap=300.0)
    sig = Signal(kind="gauge", metric="x")
    src.query_range(sig, 60.0 * 20, 60.0 * 60, step)
    table[60.0 * 57] = {A: 5.0}  # arrives late, 3 steps (180 s) behind the newest step read
    table[60.0 * 50] = {A: 9.0}  # 10 steps behind: beyond the overlap
    got = src.query_range(sig, 60.0 * 21, 60.0 * 61, step)
    assert got.values[0, list(got.times).index(60.0 * 57)] == 5.0
    assert got.values[0, list(got.times).index(60.0 * 50)] == 1.0


@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_a_query_off_the_remembered_grid_is_a_full_query(offset: float) -> None:
    table = {60.0 * k: {A: float(k)} for k in range(100)}
    inner = _Frames(table)
    src = IncrementalSource(inner)
    sig = Signal(kind="gauge", metric="x")
    src.query_range(sig, 600.0, 3000.0, 60.0)
    src.query_range(sig, 660.0 + offset, 3060.0 + offset, 60.0)
    assert (src.partial_queries, src.full_queries) == ((1, 1) if offset == 0.0 else (0, 2))


def test_frames_of_a_signal_no_longer_asked_for_are_forgotten_after_a_day() -> None:
    table = {60.0 * k: {A: 1.0} for k in range(4000)}
    src = IncrementalSource(_Frames(table))
    old, new = Signal(kind="gauge", metric="x"), Signal(kind="gauge", metric="y")
    src.query_range(old, 0.0, 1800.0, 60.0)
    for end in range(3600, 3600 * 27, 3600):
        src.query_range(new, end - 1800.0, float(end), 60.0)
    assert (old, 60.0) not in src._frames and (new, 60.0) in src._frames
