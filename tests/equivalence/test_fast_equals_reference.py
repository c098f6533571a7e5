"""The fast paths give the numbers of the straightforward paths they replace.

* causal: `run_causal_tests` vs the statsmodels/scipy reference on the benchmark panel
  shapes (p-values equal to 1e-6 relative, same outcomes), the vectorised matched pairs
  vs a per-unit loop;
* native engine: `increase_rows` (series sharing timestamps) vs `extrapolated_increase`
  per series, `_aggregate` (both ways of folding) vs a per-group reduction, the dense
  `bucket_quantile` vs the bucket-by-bucket loop, and whole queries on simulator data
  vs a per-series evaluation -- all bit for bit;
* OpenMetrics parser: the bulk path vs line by line, same batches and same errors.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from detector.evidence.causal import _matched_differences, average_ranks, run_causal_tests
from detector.evidence.granger import _complete_windows
from detector.evidence.panel import Unavailable, prepare_panel
from detector.source import kernels, native
from detector.source.frame import Labels
from detector.source.openmetrics import OpenMetricsError, write_openmetrics
from detector.source.openmetrics import parser as parser_module
from detector.source.openmetrics.parser import TextBlocks, _Parser
from detector.source.series import STALE_NAN
from detector.source.store import SampleStore
from detector.spec.pack import CausalSettings
from detector.spec.signals import Signal
from tests import synthetic as syn
from tests.oracles.causal_reference import run_causal_tests_reference

SETTINGS = CausalSettings()


def _rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if abs(a) < 1e-300 and abs(b) < 1e-300:
        return 0.0
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------- causal


@pytest.mark.parametrize(
    "panel",
    [
        pytest.param(lambda: syn.true_effect(units=9, steps=2016, seed=0), id="9x2016"),
        pytest.param(lambda: syn.true_effect(units=36, steps=576, seed=3), id="36x576"),
        pytest.param(lambda: syn.with_missing(syn.feedback_loop(units=9, steps=1500, seed=2), 0.2, seed=5), id="unbalanced"),
        pytest.param(lambda: syn.level_noise_null(units=9, steps=2016, seed=1), id="level-noise"),
    ],
)
def test_causal_fast_path_equals_reference(panel) -> None:  # type: ignore[no-untyped-def]
    p = panel()
    fast = run_causal_tests(p.x, p.y, p.strata, p.segments, SETTINGS)
    ref = run_causal_tests_reference(p.x, p.y, p.strata, p.segments, SETTINGS)
    assert fast.verdict == ref.verdict
    for tf, tr in zip(fast.tests, ref.tests, strict=True):
        assert (tf.name, tf.result, tf.n) == (tr.name, tr.result, tr.n)
        assert _rel(tf.p_value, tr.p_value) <= 1e-6, tf.name
        assert _rel(tf.statistic, tr.statistic) <= 1e-6, tf.name
        dr = dict(tr.details)
        assert {k for k, _ in tf.details} == set(dr)
        for key, value in tf.details:
            assert _rel(value, dr[key]) <= 1e-6, (tf.name, key)
    assert _rel(fast.gamma, ref.gamma) <= 1e-6


def test_dose_bins_with_values_on_the_edges_equal_reference() -> None:
    # X on a coarse grid: every inner dose-bin edge is a value thousands of points share, so
    # the side each tied point falls on decides the bins. (Gamma is not compared here: the
    # oracle demeans X in another floating order, which breaks the many ties of the matched
    # pairs differently; tests above compare it where X has no ties.)
    p = syn.true_effect(units=9, steps=1001, seed=4)
    x = np.round(p.x, 1)
    edges = np.quantile(x[np.isfinite(x)], np.linspace(0.0, 1.0, SETTINGS.dose_bins + 1))
    assert all((x == e).sum() > 100 for e in edges[1:-1])
    fast = dict((t.name, t) for t in run_causal_tests(x, p.y, p.strata, p.segments, SETTINGS).tests)
    ref = dict((t.name, t) for t in run_causal_tests_reference(x, p.y, p.strata, p.segments, SETTINGS).tests)
    f, r = fast["dose_response"], ref["dose_response"]
    assert (f.result, f.n) == (r.result, r.n) and f.result != "INCONCLUSIVE"
    assert dict(f.details).keys() == dict(r.details).keys()
    for key, value in f.details:
        assert _rel(value, dict(r.details)[key]) <= 1e-9, key


def _pairs_loop(mask: np.ndarray, xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
    out = []
    for u in range(mask.shape[0]):
        steps = np.flatnonzero(mask[u])
        half = steps.size // 2
        if half == 0:
            continue
        order = steps[np.argsort(xd[u, steps], kind="stable")]
        out.append(yd[u, np.sort(order[steps.size - half :])] - yd[u, np.sort(order[:half])])
    return np.concatenate(out) if out else np.zeros(0)


def test_matched_pairs_vectorised_equals_per_unit_loop() -> None:
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=(7, 301)), 1)  # many ties: the stable order matters
    y = rng.normal(size=(7, 301))
    x[rng.random(x.shape) < 0.3] = np.nan  # units with different usable counts
    x[4, :] = np.nan
    x[4, :3] = [1.0, 1.0, 1.0]  # three points: one pair
    mask = np.isfinite(x) & np.isfinite(y)
    panel = prepare_panel(np.where(mask, x, 0.0), np.where(mask, y, 0.0), mask, np.arange(7))
    assert not isinstance(panel, type(None))
    got = _matched_differences(panel)
    want = _pairs_loop(panel.mask, panel.xd, panel.yd)  # type: ignore[union-attr]
    assert got.shape == want.shape and got.size > 500
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_matched_pairs_equal_loop_on_random_ties_and_gaps(seed: int) -> None:
    # The halves are selected around two split values: ties at either split, units with odd and
    # even usable counts, a split value shared by both halves, all must pick the stable sort's steps.
    rng = np.random.default_rng(100 + seed)
    units, steps = int(rng.integers(1, 12)), int(rng.integers(2, 400))
    x = np.round(rng.normal(size=(units, steps)), int(rng.integers(0, 3)))
    y = rng.normal(size=(units, steps))
    x[rng.random(x.shape) < rng.random() * 0.6] = np.nan
    x[0, : min(steps, 9)] = 0.0  # a run of equal values
    mask = np.isfinite(x) & np.isfinite(y)
    panel = prepare_panel(np.where(mask, x, 0.0), np.where(mask, y, 0.0), mask, np.arange(units))
    assert not isinstance(panel, Unavailable)  # unit 0 has its run of usable points
    got = _matched_differences(panel)
    want = _pairs_loop(panel.mask, panel.xd, panel.yd)
    assert got.shape == want.shape
    assert np.array_equal(got, want)


def test_average_ranks_equal_scipy_rankdata() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 5, 9, 300, 5000):
        for decimals in (0, 1, 6):
            a = np.round(rng.normal(size=size), decimals)
            assert np.array_equal(average_ranks(a), stats.rankdata(a)), (size, decimals)
    assert np.array_equal(average_ranks(np.array([3.0, 3.0, 3.0])), [2.0, 2.0, 2.0])


def test_complete_windows_equal_sliding_window_all() -> None:
    rng = np.random.default_rng(11)
    for steps in (0, 1, 3, 6, 7, 8, 50, 400):
        for width in (1, 2, 7):
            m = rng.random((5, steps)) < rng.choice([0.5, 0.9, 1.0])
            want = (
                sliding_window_view(m, width, axis=1).all(axis=2) if steps >= width else np.zeros((5, 0), dtype=bool)
            )
            got = _complete_windows(m, width)
            assert got.shape == want.shape and np.array_equal(got, want), (steps, width)


# --------------------------------------------------------------------------- native kernels


def _counter(rng: np.random.Generator, n: int, resets: bool) -> np.ndarray:
    v = np.cumsum(rng.exponential(5.0, n))
    if resets:
        for k in rng.choice(n, 3, replace=False):
            v[k:] -= v[k] - rng.uniform(0, 2)  # drop to near zero, keep counting
    return v


@pytest.mark.parametrize("is_rate", [False, True])
@pytest.mark.parametrize("window", [60.0, 300.0, 3600.0])
def test_increase_rows_equals_per_series(window: float, is_rate: bool) -> None:
    rng = np.random.default_rng(int(window) + is_rate)
    n = 700
    ts = 1000.0 + np.cumsum(rng.uniform(5.0, 40.0, n))  # irregular, shared by every row
    vals = np.stack([_counter(rng, n, resets=i % 2 == 0) for i in range(6)])
    vals[3, :50] = 0.0  # a counter that starts at zero
    times = np.arange(ts[0] - 500.0, ts[-1] + 500.0, 47.0)
    got_v, got_p = kernels.increase_rows(ts, vals, times, window, is_rate=is_rate)
    for r in range(vals.shape[0]):
        want_v, want_p = kernels.extrapolated_increase(ts, vals[r], times, window, is_rate=is_rate)
        assert np.array_equal(got_p[r], want_p)
        assert np.array_equal(got_v[r], want_v, equal_nan=True)
    assert got_p.any() and not got_p.all()


def _aggregate_loop(vec: native._Vector, by: tuple[str, ...], agg: str) -> tuple[list[Labels], np.ndarray, np.ndarray]:
    groups: dict[Labels, list[int]] = {}
    for i, labels in enumerate(vec.labels):
        groups.setdefault(native._project(labels, by), []).append(i)
    keys = sorted(groups)
    values, present = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for key in keys:
            v, p = vec.values[groups[key]], vec.present[groups[key]]
            count = p.sum(axis=0)
            if agg in ("sum", "avg"):
                total = np.where(p, v, 0.0).sum(axis=0)
                values.append(total if agg == "sum" else total / count)
            elif agg == "max":
                values.append(np.fmax.reduce(np.where(p, v, np.nan), axis=0))
            else:
                values.append(np.fmin.reduce(np.where(p, v, np.nan), axis=0))
            present.append(count > 0)
    return keys, np.array(values), np.array(present)


@pytest.mark.parametrize("steps", [3, 200])  # folded by ufunc.at / by whole rows
@pytest.mark.parametrize("agg", ["sum", "avg", "max", "min"])
def test_aggregate_equals_per_group_reduction(agg: str, steps: int) -> None:
    rng = np.random.default_rng(11)
    labels = tuple(
        (("a", f"a{rng.integers(0, 4)}"), ("b", f"b{rng.integers(0, 3)}"), ("i", str(i))) for i in range(60)
    )
    values = rng.normal(size=(60, steps)) * 10 ** rng.uniform(-3, 6, size=(60, 1))
    values[rng.random(values.shape) < 0.05] = np.nan
    present = rng.random(values.shape) > 0.2
    vec = native._Vector(labels, values, present)
    for by in (("a",), ("a", "b"), (), ("i",), ("zz",)):
        got = native._aggregate(vec, by, agg)
        keys, want_v, want_p = _aggregate_loop(vec, by, agg)
        assert list(got.labels) == keys
        assert np.array_equal(got.present, want_p)
        assert np.array_equal(got.values, want_v, equal_nan=True)


def test_dense_bucket_quantile_equals_bucket_loop() -> None:
    rng = np.random.default_rng(5)
    bounds = np.array([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, np.inf])
    counts = np.cumsum(rng.exponential(3.0, size=(7, 4, 500)), axis=0)
    counts[:, 0, :40] = 0.0  # empty histogram: no quantile
    counts[3, 1, :] = counts[2, 1, :] * 0.9  # non-monotone bucket: the envelope fixes it
    present = np.ones(counts.shape, dtype=bool)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        valid = present[-1] & (present.sum(axis=0) >= 2)
        dense = kernels._bucket_quantile_dense(q, bounds, counts, present, valid)
        assert dense is not None
        loop = kernels._bucket_quantile_loop(q, bounds, counts, present, valid)
        assert np.array_equal(dense, loop, equal_nan=True)
    negative = np.array([-1.0, 0.0, 1.0, np.inf])
    c = np.cumsum(rng.exponential(1.0, size=(4, 300)), axis=0)
    p = np.ones(c.shape, dtype=bool)
    valid = p[-1].copy()
    dense = kernels._bucket_quantile_dense(0.2, negative, c, p, valid)
    assert dense is not None
    assert np.array_equal(dense, kernels._bucket_quantile_loop(0.2, negative, c, p, valid), equal_nan=True)
    # cases the dense path must leave to the loop
    p2 = p.copy()
    p2[1, 7] = False
    assert kernels._bucket_quantile_dense(0.2, negative, c, p2, valid) is None
    nan = c.copy()
    nan[2, 5] = np.nan
    assert kernels._bucket_quantile_dense(0.2, negative, nan, p, valid) is None
    # precision noise between neighbouring buckets: both paths snap it the same way
    snap = c.copy()
    snap[2] = snap[1] * (1 + 1e-13)
    snap[3, ::2] = snap[2, ::2] * (1 - 1e-13)
    dense = kernels._bucket_quantile_dense(0.2, negative, snap, p, valid)
    assert dense is not None
    assert np.array_equal(dense, kernels._bucket_quantile_loop(0.2, negative, snap, p, valid), equal_nan=True)


def _sim_store() -> tuple[SampleStore, float]:
    from detector.sim.simulator import Simulator

    origin = 1_700_000_000.0
    sim = Simulator("sequence", 1, origin=origin, history=2 * 86400)
    store = SampleStore(retention=None)
    sim.write_to(store, origin - 86400, origin + 3600)
    # a stale marker and a short, unaligned series force the per-series path for some rows
    store.append("video_starts_total", {"region": "us", "device_tier": "low", "protocol": "zz"}, [origin - 600.0, origin - 590.5, origin + 1.0], [1.0, 2.0, STALE_NAN])
    return store, origin + 3600 - 60


def test_native_queries_equal_per_series_evaluation() -> None:
    store, now = _sim_store()
    source = native.NativeSource(store)
    times = native.evaluation_times(now - 6 * 3600, now, 300.0)
    for metric, window in (("video_starts_total", 300.0), ("video_start_latency_seconds_bucket", 3600.0)):
        sig = Signal(kind="rate", metric=metric, range=window)
        got = source._rates(metric, sig, times, is_rate=True)
        selected = store.select(metric)
        assert len(got.labels) == len(selected) > 5
        for row, (labels, ts, vals) in enumerate(selected):
            want_v, want_p = kernels.extrapolated_increase(ts, vals, times, window, is_rate=True)
            assert got.labels[row] == labels
            assert np.array_equal(got.present[row], want_p)
            assert np.array_equal(got.values[row], want_v, equal_nan=True)
    # a histogram quantile: grouped rates + batched quantile vs one group at a time
    sig = Signal(kind="histogram_quantile", metric="video_start_latency_seconds", by=("region",), range=300.0, quantile=0.9)
    frame = source.query_range(sig, times[0], times[-1], 300.0)
    rates = source._rates("video_start_latency_seconds_bucket", sig, times, is_rate=True)
    summed = native._aggregate(rates, ("region", "le"), "sum")
    assert frame.units
    for unit, row in zip(frame.units, frame.values, strict=True):
        rows = [i for i, lbl in enumerate(summed.labels) if dict(lbl)["region"] == dict(unit)["region"]]
        les = [kernels.parse_le(dict(summed.labels[i])["le"]) for i in rows]
        order = np.argsort(les)
        counts = np.where(summed.present[rows], summed.values[rows], 0.0)[order]
        present = summed.present[rows][order]
        valid = present[-1] & (present.sum(axis=0) >= 2)
        want = kernels._bucket_quantile_loop(0.9, np.array(les)[order], counts, present, valid)
        assert np.array_equal(row, np.where(present.any(axis=0), want, np.nan), equal_nan=True)


# --------------------------------------------------------------------------- OpenMetrics


def _parse(
    text: str, bulk: bool, max_buffered: int = 262144, min_bulk: int = 0, blocks: bool = False
) -> list[tuple[str, tuple, np.ndarray, np.ndarray]]:
    parser = _Parser("auto", None, max_buffered)
    parser.bulk = bulk
    stream = TextBlocks(io.StringIO(text)) if blocks else io.StringIO(text)
    out = [(n, tuple(sorted(lbl.items())), ts, v) for n, lbl, ts, v in parser.run(stream)]
    assert parser.bulk_lines >= (min_bulk if bulk else 0)
    assert bulk or parser.bulk_lines == 0
    return out


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (n1, l1, t1, v1), (n2, l2, t2, v2) in zip(a, b, strict=True):
        assert (n1, l1) == (n2, l2)
        assert np.array_equal(t1, t2)
        assert np.array_equal(v1.view(np.uint64), v2.view(np.uint64))  # bit for bit, NaNs included


def _simulated_text(hours: float) -> str:
    from detector.sim.simulator import Simulator

    origin = 1_700_000_000.0
    sim = Simulator("sequence", 1, origin=origin, history=86400)
    out = io.StringIO()
    write_openmetrics(out, sim.generate(origin, origin + hours * 3600))
    return out.getvalue()


@pytest.mark.parametrize("blocks", [False, True])  # lines from the stream, or blocks of text (TextBlocks)
@pytest.mark.parametrize("max_buffered", [262144, 1000, 7])
def test_bulk_parser_equals_line_by_line_on_simulator_output(
    max_buffered: int, blocks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parser_module, "_BLOCK_CHARS", 100_003)  # many blocks, cut mid-line
    text = _simulated_text(2.0)
    bulk = _parse(text, True, max_buffered, min_bulk=text.count("\n") // 2, blocks=blocks)
    _same(bulk, _parse(text, False, max_buffered))
    assert sum(len(t) for _, _, t, _ in bulk) > 50_000


HAND = """# TYPE a counter
# HELP a spaces in label values, exemplars, _created, NaN and odd floats
a_total{path="x y"} 1 10
a_total{path="x y"} 2 11.5
a_created{path="x y"} 5 10
a_total{path="plain"} 1e3 10
a_total{path="plain"} 2.5E3 11 # {trace_id="abc"} 1 10
a_total{path="plain"} NaN 12
a_total{path="plain"} +Inf 13
a_total{path="plain"} -0.0 14
# TYPE g gauge
g 1 100
g{k="v"} 2 100
g 3 101
g{k="v"} 4 0101
g 5 102.25
g{k="é"} 6 1e2
# EOF
"""


@pytest.mark.parametrize("block_chars", [None, 7, 64])
def test_bulk_parser_equals_line_by_line_on_unusual_lines(block_chars: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = block_chars is not None
    if blocks:
        monkeypatch.setattr(parser_module, "_BLOCK_CHARS", block_chars)
    _same(_parse(HAND, True, min_bulk=4, blocks=blocks), _parse(HAND, False))
    _same(_parse(HAND, True, max_buffered=2, min_bulk=4, blocks=blocks), _parse(HAND, False, max_buffered=2))


@pytest.mark.parametrize(
    "text",
    [
        "# TYPE g gauge\n# HELP g vertical\x0btab and \x1c separators\ng 1 10\ng 2 11\n# EOF",  # no final newline
        "# TYPE g gauge\n# HELP g caf\u00e9 \u2028 line separator\ng 1 10\ng 2 11\n# EOF\n",
        "# TYPE g gauge\ng 1 10\ng 2 11\n# EOF\n\n\n",
        "# TYPE g gauge\ng 1 10\ng{k=\"a\x0cb\"} 2 11\n# EOF\n",
    ],
    ids=["ascii-breaks-no-final-newline", "unicode-breaks", "blank-lines-after-eof", "formfeed-in-label"],
)
def test_text_blocks_cut_lines_where_line_iteration_does(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # str.splitlines also cuts at \v, \f, \x1c-\x1e, \x85 and \u2028: the block reader must not
    monkeypatch.setattr(parser_module, "_BLOCK_CHARS", 5)
    assert parser_module._split_lines(text) == io.StringIO(text).readlines()
    _same(_parse(text, True, blocks=True), _parse(text, False))


def test_bulk_parser_prometheus_text_in_milliseconds() -> None:
    lines = [f'm{{i="{i % 5}"}} {i * 0.5} {1_700_000_000_000 + 1000 * (i // 5)}\n' for i in range(5000)]
    text = "".join(lines)
    got = _parse(text, True, min_bulk=4000)
    _same(got, _parse(text, False))
    assert got[0][2][0] == 1_700_000_000.0 and len(got) == 5


@pytest.mark.parametrize(
    "bad, line",
    [
        ("g 1 200\n", 70_003),  # out of order against the previous sample
        ("g 1_0 300\n", 70_003),  # underscores are no number
        ("g 1 3x0\n", 70_003),
        ('g{k="v} 1 300\n', 70_003),
    ],
)
def test_bulk_parser_reports_the_same_error_line(bad: str, line: int) -> None:
    body = "".join(f"g {i} {i + 1000}\n" for i in range(70_000))
    text = "# TYPE g gauge\n" + "g 0 200\n" + body + bad + "g 5 10000000\n# EOF\n"
    errors = []
    for bulk in (True, False):
        with pytest.raises(OpenMetricsError) as exc:
            _parse(text, bulk)
        errors.append((exc.value.line_no, exc.value.message))
    assert errors[0] == errors[1]
    assert errors[0][0] == line
