"""Evaluate signals over the embedded `SampleStore` with Prometheus semantics, in numpy.

`NativeSource.query_range` gives the same numbers a Prometheus 3.x server would give
for the PromQL that `detector.source.promql.compile_promql` emits for the same signal, up to
float rounding. Every kernel works on a whole evaluation grid at once per series
(``np.searchsorted`` over the grid): there is no Python loop over steps or samples.

Semantics (Prometheus 3.x)
--------------------------
* Range windows are left-open: ``rate(m[r])`` at ``t`` reads the samples with
  timestamps in ``(t - r, t]``; instant selectors read the newest sample in
  ``(t - lookback_delta, t]`` (default 5 min) and give no value when that sample is a
  stale marker. Stale markers are never part of a range window.
* ``increase``/``rate`` follow ``extrapolatedRate`` (promql/functions.go): at least two
  samples; every drop adds the value before it (counter reset); the increase between
  the first and last sample is extrapolated to each window edge when the gap to that
  edge is below 1.1 x the average sample interval, otherwise by half an average
  interval; the start is never extrapolated past the counter's zero point
  (``sampled_interval * first / increase``, applied after the 1.1 x rule as in
  Prometheus 3). ``rate = increase / r``.
* ``histogram_quantile`` follows ``bucketQuantile`` (promql/quantile.go): buckets summed
  by (by, le), sorted by ``le``, equal bounds merged, near-equal counts (relative
  difference <= 1e-12) flattened, then made monotone; a ``+Inf`` bucket and at least
  two buckets are required; NaN when the total count is 0; linear interpolation in
  the bucket holding rank ``q * total``; the lowest bucket interpolates from 0 when
  its upper bound is > 0 (else returns that bound); a rank in the ``+Inf`` bucket
  returns the highest finite bound; ``q < 0`` -> -Inf, ``q > 1`` -> +Inf. Bucket
  series whose ``le`` is missing or not a number are ignored.
* Aggregations (``sum``/``avg``/``max``/``min`` by ``by``) only see series that have a
  value at the step; a group with no such series has no value. ``max``/``min`` skip
  NaN values unless all are NaN, as Prometheus does.
* ``histogram_mean`` and ``ratio`` divide vectors matched on their labels (``ratio``:
  on the denominator's ``by`` labels with ``group_left`` when it has fewer; the output
  carries the numerator's labels, and a denominator grouped by a label the numerator
  lacks is a ``ValueError``, see `ratio_join_labels`). Children carry their own
  ``scale``. Deviation: Prometheus returns +-Inf or NaN for division by zero; here
  any non-finite quotient is *missing*, because an infinite ratio is no usable
  measurement.
* Times are float seconds; Prometheus works in integer milliseconds, so results agree
  exactly for millisecond-aligned data and up to rounding otherwise.

Frames: ``units`` are the output label sets (only ``by`` labels) that have a sample
(possibly NaN) at one step at least, sorted; missing points are NaN; ``scale`` is
applied last. ``samples_read`` counts the stored samples inside the windows the
query touched (stale markers included).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from detector.source.frame import (
    PROBE_MIN_SAMPLES,
    PROBE_WINDOWS,
    Labels,
    SeriesSurvey,
    SignalFrame,
    Source,
    survey_series,
)
from detector.source.kernels import (
    DEFAULT_LOOKBACK_DELTA,
    bucket_quantile,
    clip,
    extrapolated_increase,
    increase_list,
    instant_values,
    parse_le,
)
from detector.source.series import is_stale_marker
from detector.source.store import SampleStore, SeriesView
from detector.spec.signals import AGGREGATIONS, Signal

_BLOCK_SAMPLES = 1 << 20
"""Samples per block of series evaluated together by `increase_rows`."""


# --------------------------------------------------------------------------- grid


def evaluation_times(start: float, end: float, step: float) -> np.ndarray:
    """The grid start, start+step, ... <= end (a tolerance of 1e-9 steps absorbs float error)."""
    for label, v in (("start", start), ("end", end), ("step", step)):
        if not math.isfinite(v):
            raise ValueError(f"{label} must be finite, got {v!r}")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    if end < start:
        raise ValueError(f"end {end!r} is before start {start!r}")
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    return start + step * np.arange(n, dtype=np.float64)


# --------------------------------------------------------------------------- vectors


@dataclass(frozen=True)
class _Vector:
    """A range of instant vectors: row i is label set `labels[i]` over the grid."""

    labels: tuple[Labels, ...]
    values: np.ndarray
    present: np.ndarray
    samples: int = 0


def _project(labels: Labels, by: Sequence[str]) -> Labels:
    d = dict(labels)
    return tuple(sorted((k, d[k]) for k in by if k in d))


def _project_all(label_sets: Sequence[Labels], by: Sequence[str]) -> list[Labels]:
    """`_project` of every label set: a filter on the label names when `by` names each label once
    (label sets never repeat a name, so the two agree), which is half the cost per series."""
    keep = frozenset(by)
    if len(keep) != len(by):
        return [_project(labels, by) for labels in label_sets]
    return [tuple(sorted([pair for pair in labels if pair[0] in keep])) for labels in label_sets]


def _stack(rows: list[tuple[np.ndarray, np.ndarray]], n_t: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.empty((0, n_t)), np.empty((0, n_t), dtype=bool)
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


_FOLD_AT_STEPS = 16
"""Up to this many steps, `_aggregate` folds rows in with ``ufunc.at`` (per element: cheap on
short rows, ~20x slower than whole-row folds on a 7-day panel)."""


def _aggregate(vec: _Vector, by: Sequence[str], agg: str) -> _Vector:
    if agg not in ("sum", "avg", "max", "min"):
        raise ValueError(f"unknown aggregation {agg!r}; expected one of {AGGREGATIONS}")
    projected = _project_all(vec.labels, by)
    keys = sorted(set(projected))
    n_t = vec.values.shape[1]
    if not keys:
        return _Vector((), np.full((0, n_t), np.nan), np.zeros((0, n_t), dtype=bool), vec.samples)
    slot = {key: g for g, key in enumerate(keys)}
    group = np.fromiter((slot[key] for key in projected), dtype=np.intp, count=len(projected))
    # The j-th row (input order) of every group is folded in at round j: each group's rows
    # are combined in the same order as a row-by-row reduction of that group would.
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(len(keys)))
    fill = 0.0 if agg in ("sum", "avg") else np.nan
    if len(keys) == len(group) and agg != "avg":
        # One row per group (e.g. buckets summed by all their labels): the reduction is a
        # relabelling; the same values as below, without the temporaries.
        values = vec.values[order]
        present = vec.present[order]
        np.copyto(values, fill, where=~present)
        return _Vector(tuple(keys), values, present, vec.samples)
    with np.errstate(divide="ignore", invalid="ignore"):
        masked = np.where(vec.present, vec.values, fill)
        first = order[starts]
        acc = masked[first]
        count = vec.present[first].astype(np.intp)
        fold = np.add if agg in ("sum", "avg") else np.fmax if agg == "max" else np.fmin
        if n_t <= _FOLD_AT_STEPS:
            # A few steps (an incremental query): fold the other rows in one by one, in input
            # order (ufunc.at is unbuffered), at a per-element cost.
            rest = np.ones(len(group), dtype=bool)
            rest[first] = False
            rows = np.flatnonzero(rest)
            fold.at(acc, group[rows], masked[rows])
            np.add.at(count, group[rows], vec.present[rows])
        else:
            rank = np.empty(len(group), dtype=np.intp)
            rank[order] = np.arange(len(group)) - starts[group[order]]
            for j in range(1, int(rank.max()) + 1):
                rows = np.flatnonzero(rank == j)
                g = group[rows]
                acc[g] = fold(acc[g], masked[rows])
                count[g] += vec.present[rows]
        values = acc / count if agg == "avg" else acc
    return _Vector(tuple(keys), values, count > 0, vec.samples)


def _divide(num: _Vector, den: _Vector, on: Sequence[str] | None) -> _Vector:
    """num / den matched one-to-one on all labels (`on` None) or many-to-one on `on` labels."""

    def key(labels: Labels) -> object:
        if on is None:
            return labels
        d = dict(labels)
        return tuple(d.get(k, "") for k in on)

    index = {key(lbl): i for i, lbl in enumerate(den.labels)}
    labels: list[Labels] = []
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, lbl in enumerate(num.labels):
            j = index.get(key(lbl))
            if j is None:
                continue
            q = num.values[i] / den.values[j]
            labels.append(lbl)
            rows.append((q, num.present[i] & den.present[j] & np.isfinite(q)))
    values, present = _stack(rows, num.values.shape[1])
    return _Vector(tuple(labels), values, present, num.samples + den.samples)


# --------------------------------------------------------------------------- source


class _Selection:
    """What `SampleStore.select_views` returned for one (metric, matchers), at one store
    version, with its series grouped by equal timestamps (computed on first use)."""

    __slots__ = ("version", "views", "since", "_blocks")

    def __init__(self, version: int, views: list[SeriesView], since: float = -math.inf) -> None:
        self.version = version
        self.views = views
        self.since = since
        """Every view holds at least the samples at or after this time."""
        self._blocks: list[tuple[np.ndarray, list[int]]] | None = None

    def blocks(self, same: _SharedTimestamps) -> list[tuple[np.ndarray, list[int]]]:
        """(timestamps, indices of the series with exactly these timestamps): each series joins
        the first block whose first series has its timestamps, else starts one."""
        if self._blocks is None:
            views = self.views
            keyed: dict[tuple[int, float, float], list[int]] = {}
            for i, v in enumerate(views):
                ts = v.timestamps
                keyed.setdefault((len(ts), float(ts[0]), float(ts[-1])), []).append(i)
            blocks: list[tuple[np.ndarray, list[int]]] = []
            for members in keyed.values():
                groups: list[tuple[SeriesView, list[int]]] = []
                for i in members:
                    for leader, group in groups:
                        if same.equal(leader, views[i]):
                            group.append(i)
                            break
                    else:
                        groups.append((views[i], [i]))
                blocks.extend((leader.timestamps, group) for leader, group in groups)
            self._blocks = blocks
        return self._blocks


class _SharedTimestamps:
    """Equality of two series' timestamps, remembering what was verified.

    A stored range of a store buffer never changes (`SeriesView.buffer_id`), so once the
    timestamps of two series were found equal over some range of their buffers, a later
    comparison of the same buffers (at the same relative offset) only compares what lies
    outside that range: after new samples, the new ones; with retention, nothing. The
    answer is always that of comparing the whole arrays.
    """

    __slots__ = ("pairs", "max_pairs")

    def __init__(self, max_pairs: int = 1 << 16) -> None:
        self.pairs: dict[tuple[int, int], tuple[object, object, int, int, int]] = {}
        """(id a, id b) -> (buffer a, buffer b, offset b - offset a, [lo, hi) verified in a's buffer)."""
        self.max_pairs = max_pairs

    def equal(self, a: SeriesView, b: SeriesView) -> bool:
        ta, tb = a.timestamps, b.timestamps
        n = len(ta)
        if n != len(tb):
            return False
        if ta is tb:
            return True
        key = (id(a.buffer_id), id(b.buffer_id))
        shift = b.offset - a.offset
        lo_need, hi_need = a.offset, a.offset + n
        known = self.pairs.get(key)
        if (
            known is not None
            and known[0] is a.buffer_id
            and known[1] is b.buffer_id
            and known[2] == shift
            and lo_need <= known[4]
            and known[3] <= hi_need
        ):
            lo, hi = known[3], known[4]
            if lo_need < lo and not _same(ta[: lo - lo_need], tb[: lo - lo_need]):
                return False
            if hi < hi_need and not _same(ta[hi - lo_need :], tb[hi - lo_need :]):
                return False
            if lo_need < lo or hi < hi_need:
                self.pairs[key] = (a.buffer_id, b.buffer_id, shift, min(lo, lo_need), max(hi, hi_need))
            return True
        if not np.array_equal(ta, tb):
            return False
        if len(self.pairs) >= self.max_pairs:
            self.pairs.clear()
        self.pairs[key] = (a.buffer_id, b.buffer_id, shift, lo_need, hi_need)
        return True


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` of two equally long timestamp arrays; the few newly arrived ones
    (the usual case) compared as Python floats, ~10x cheaper than the numpy call."""
    if len(a) <= 64:
        return bool(a.tolist() == b.tolist())
    return bool(np.array_equal(a, b))


def _presence(view: SeriesView, lo: float, end: float, since: float) -> bool | None:
    """Whether the series has a sample other than a stale marker in ``(lo, end]``, from a
    view holding its samples at or after `since` and the store's newest real sample time;
    None when those cannot tell (real samples after `end` hide whether one lies in
    ``(lo, since)``, which the view does not hold)."""
    ts = view.timestamps
    i = int(np.searchsorted(ts, lo, side="right"))
    j = int(np.searchsorted(ts, end, side="right"))
    if j > i and not (view.last_stale >= ts[i] and is_stale_marker(view.values[i:j]).all()):
        return True
    if since <= lo or (len(ts) and ts[0] <= lo):
        return False  # the view holds all of (lo, end]
    newest = view.newest_real
    if newest is not None and newest > end:
        return None
    # nothing real in [since, end] and none after `end`: the newest real sample decides
    return newest is not None and newest > lo


def _probe_windows(
    stamps: list[np.ndarray], end: float, windows: Sequence[float]
) -> list[tuple[float, list[np.ndarray]]]:
    """Per probe window, each series' timestamps inside it (an array shared by several series
    is cut once)."""
    out = []
    for w in windows:
        cut: dict[int, np.ndarray] = {}
        row = []
        for t in stamps:
            inside = cut.get(id(t))
            if inside is None:
                inside = cut[id(t)] = t[np.searchsorted(t, end - w, side="right") :]
            row.append(inside)
        out.append((w, row))
    return out


class NativeSource:
    """`Source` over an embedded `SampleStore`."""

    def __init__(
        self, store: SampleStore, *, lookback_delta: float = DEFAULT_LOOKBACK_DELTA, name: str = "native"
    ) -> None:
        if not lookback_delta > 0:
            raise ValueError(f"lookback_delta must be > 0, got {lookback_delta!r}")
        self.store = store
        self.lookback_delta = float(lookback_delta)
        self.name = name
        self._local = threading.local()
        self._shared_ts = _SharedTimestamps()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Queries inside share their selections: a metric read by several queries (a panel,
        its pressure windows, an instant) is selected from the store and grouped by shared
        timestamps once, for as long as the store's `version` is unchanged, so every query
        sees what it would have selected itself. One evaluation opens one scope
        (`detector.evidence.gather.gather_evidence`); per thread, nestable."""
        outer = getattr(self._local, "memo", None)
        self._local.memo = {}
        try:
            yield
        finally:
            self._local.memo = outer

    def _select(self, metric: str, matchers: Sequence[tuple[str, ...]], since: float = -math.inf) -> _Selection:
        """The series of a selector, each holding at least its samples at or after `since`
        (a compressed store decodes only those; a raw one always hands out everything)."""
        if not self.store.chunk_samples:
            since = -math.inf
        memo: dict[tuple[str, tuple[tuple[str, ...], ...]], _Selection] | None = getattr(self._local, "memo", None)
        key = (metric, tuple(matchers))
        if memo is not None:
            hit = memo.get(key)
            if hit is not None and hit.version == self.store.version and hit.since <= since:
                return hit
        version, views = self.store.select_views(metric, matchers, since)
        sel = _Selection(version, views, since)
        if memo is not None:
            memo[key] = sel
        return sel

    def survey(
        self, metric: str, matchers: Sequence[tuple[str, ...]], end: float, lookback: float
    ) -> SeriesSurvey:
        """What the store holds for the selector (`detector.source.frame.survey_series`): series
        with a real sample in ``(end - lookback, end]``, and their spacing near `end`."""
        lo = end - lookback
        # Probe windows shortest first, as `survey_series` reads them: a compressed store
        # decodes only what the window that settles the interval needs (dense data: an hour).
        for n, window in enumerate(PROBE_WINDOWS, 1):
            sel = self._select(metric, matchers, max(lo, end - window))
            if sel.since > lo and any(_presence(v, lo, end, sel.since) is None for v in sel.views):
                sel = self._select(metric, matchers, lo)  # a series with samples after `end` only in view
            label_sets, stamps = self._probe(metric, sel, lo, end, window)
            probe = _probe_windows(stamps, end, PROBE_WINDOWS[:n])
            counts = [len(t) for t in probe[-1][1]]
            if n == len(PROBE_WINDOWS) or (counts and float(np.median(counts)) >= PROBE_MIN_SAMPLES):
                break
        return survey_series(metric, matchers, label_sets, probe)

    def _probe(
        self, metric: str, sel: _Selection, lo: float, end: float, window: float
    ) -> tuple[list[Labels], list[np.ndarray]]:
        """Label sets of the series present in ``(lo, end]`` and their real sample times in
        the probe `window` before `end` (one array for the series scraped together)."""
        label_sets: list[Labels] = []
        stamps: list[np.ndarray] = []
        views = sel.views
        # series with the same timestamps are cut once (the blocks are shared with the range
        # queries of the same evaluation)
        cuts: dict[int, tuple[int, int, np.ndarray]] = {}
        for full_ts, members in sel.blocks(self._shared_ts):
            i, j, k = (int(x) for x in np.searchsorted(full_ts, [lo, end, end - window], side="right"))
            cut = (i, j, full_ts[max(i, k) : j])
            cuts.update((r, cut) for r in members)
        # histogram buckets are probed on their le="+Inf" series, as PrometheusSource does
        probe_inf = metric.endswith("_bucket") and any(("le", "+Inf") in v.labels for v in views)
        for r, view in enumerate(views):
            i, j, t = cuts[r]
            ts = view.timestamps
            stale = view.last_stale >= (ts[i] if i < len(ts) else math.inf)
            if j > i and not stale:
                present: bool | None = True
            else:
                present = _presence(view, lo, end, sel.since)
            if not present:
                continue  # nothing in the lookback, or stale markers only
            label_sets.append(view.labels)
            if probe_inf and ("le", "+Inf") not in view.labels:
                continue
            if view.last_stale >= (t[0] if len(t) else math.inf):
                t = t[~is_stale_marker(view.values[j - len(t) : j])]
            stamps.append(t)
        return label_sets, stamps

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        times = evaluation_times(start, end, step)
        vec = self._evaluate(signal, times)
        keep = np.asarray(vec.present.any(axis=1), dtype=bool)
        order = sorted((lbl, i) for i, lbl in enumerate(vec.labels) if keep[i])
        units = tuple(lbl for lbl, _ in order)
        rows = [i for _, i in order]
        values = np.where(vec.present[rows], vec.values[rows], np.nan).reshape(len(rows), len(times))
        return SignalFrame(units=units, times=times, values=values, samples_read=vec.samples)

    # -- kinds

    def _evaluate(self, signal: Signal, times: np.ndarray) -> _Vector:
        kind = signal.kind
        if kind == "ratio":
            vec = self._ratio(signal, times)
        else:
            if not signal.metric:
                raise ValueError(f"{kind} signal needs a metric")
            if kind == "gauge":
                if signal.agg not in AGGREGATIONS:
                    raise ValueError(f"unknown aggregation {signal.agg!r}; expected one of {AGGREGATIONS}")
                vec = _aggregate(self._instant(signal.metric, signal.matchers, times), signal.by, signal.agg)
            elif kind in ("rate", "increase"):
                vec = self._sum_rate(signal.metric, signal, times, is_rate=kind == "rate")
            elif kind == "histogram_quantile":
                vec = self._histogram_quantile(signal, times)
            elif kind == "histogram_mean":
                sums = self._sum_rate(signal.metric + "_sum", signal, times, is_rate=True)
                counts = self._sum_rate(signal.metric + "_count", signal, times, is_rate=True)
                vec = _divide(sums, counts, None)
            else:
                raise ValueError(f"unknown signal kind {kind!r}")
        if signal.scale != 1.0:
            vec = _Vector(vec.labels, vec.values * signal.scale, vec.present, vec.samples)
        return vec

    def _instant(self, metric: str, matchers: Sequence[tuple[str, ...]], times: np.ndarray) -> _Vector:
        labels: list[Labels] = []
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        samples = 0
        for lbl, ts, vals, *_ in self._select(metric, matchers, float(times[0]) - self.lookback_delta).views:
            ts, vals = clip(ts, vals, float(times[0]) - self.lookback_delta, float(times[-1]))
            labels.append(lbl)
            rows.append(instant_values(ts, vals, times, self.lookback_delta))
            samples += len(ts)
        values, present = _stack(rows, len(times))
        return _Vector(tuple(labels), values, present, samples)

    def _rates(self, metric: str, signal: Signal, times: np.ndarray, *, is_rate: bool) -> _Vector:
        window = _check_range(signal)
        sel = self._select(metric, signal.matchers, float(times[0]) - window)
        views = sel.views
        n = len(views)
        values = np.full((n, len(times)), np.nan)
        present = np.zeros((n, len(times)), dtype=bool)
        samples = 0
        lo_t, hi_t = float(times[0]) - window, float(times[-1])
        # Series scraped together share their timestamps: each such block is clipped once and
        # evaluated by `increase_list` (the arithmetic of `extrapolated_increase`, per element).
        for full_ts, members in sel.blocks(self._shared_ts):
            i, j = (int(x) for x in np.searchsorted(full_ts, [lo_t, hi_t], side="right"))
            ts = full_ts[i:j]
            samples += (j - i) * len(members)
            rows: list[np.ndarray] = []
            idx: list[int] = []
            resets: list[bool] = []
            first = float(ts[0]) if len(ts) else math.inf
            for r in members:
                v = views[r]
                vals = v.values[i:j]
                if len(members) == 1 or len(ts) < 2 or (v.last_stale >= first and is_stale_marker(vals).any()):
                    values[r], present[r] = extrapolated_increase(ts, vals, times, window, is_rate=is_rate)
                    continue
                rows.append(vals)
                idx.append(r)
                # the store's record of the last counter reset: none after the first sample here
                resets.append(v.last_drop > first)
            size = max(1, _BLOCK_SAMPLES // max(1, len(times)))
            for b0 in range(0, len(rows), size):
                part = idx[b0 : b0 + size]
                if part[-1] - part[0] == len(part) - 1 and all(b > a for a, b in zip(part, part[1:], strict=False)):
                    # consecutive rows of the output: written in place
                    dest = slice(part[0], part[-1] + 1)
                    increase_list(
                        ts, rows[b0 : b0 + size], times, window, is_rate=is_rate,
                        resets=resets[b0 : b0 + size], out=values[dest], present=present[dest],
                    )
                    continue
                values[part], present[part] = increase_list(
                    ts, rows[b0 : b0 + size], times, window, is_rate=is_rate, resets=resets[b0 : b0 + size]
                )
        return _Vector(tuple(v.labels for v in views), values, present, samples)

    def _sum_rate(self, metric: str, signal: Signal, times: np.ndarray, *, is_rate: bool) -> _Vector:
        return _aggregate(self._rates(metric, signal, times, is_rate=is_rate), signal.by, "sum")

    def _histogram_quantile(self, signal: Signal, times: np.ndarray) -> _Vector:
        if signal.quantile is None:
            raise ValueError(f"histogram_quantile signal on {signal.metric!r} needs a quantile")
        by = tuple(k for k in signal.by if k != "le")
        rates = self._rates(signal.metric + "_bucket", signal, times, is_rate=True)
        keys = _project_all(rates.labels, (*by, "le"))
        rows_in_order: Sequence[int]
        if len(set(keys)) == len(keys):
            # Every bucket series is its own (by, le) group: `sum by (by, le)` is a relabelling,
            # so the rows of `rates` are used as they are (in the order `_aggregate` gives).
            rows_in_order = sorted(range(len(keys)), key=keys.__getitem__)
            sum_labels: Sequence[Labels] = [keys[i] for i in rows_in_order]
            sum_values, sum_present, absent_is_nan = rates.values, rates.present, True
        else:
            summed = _aggregate(rates, (*by, "le"), "sum")
            rows_in_order = range(len(summed.labels))
            sum_labels = summed.labels
            # a "sum" aggregate holds +0.0 wherever a group has no value
            sum_values, sum_present, absent_is_nan = summed.values, summed.present, False
        # group -> upper bound -> rows of the sums; equal bounds ('1' and '1.0') merge.
        groups: dict[Labels, dict[float, list[int]]] = {}
        for i, lbl in zip(rows_in_order, sum_labels, strict=True):
            d = dict(lbl)
            ub = parse_le(d.pop("le", ""))
            if ub is None:
                continue
            groups.setdefault(tuple(sorted(d.items())), {}).setdefault(ub, []).append(i)
        labels = sorted(groups)
        values = np.full((len(labels), len(times)), np.nan)
        present_rows = np.zeros((len(labels), len(times)), dtype=bool)
        # Histograms with the same bucket bounds go through `bucket_quantile` together.
        by_bounds: dict[tuple[float, ...], list[int]] = {}
        for g, key in enumerate(labels):
            by_bounds.setdefault(tuple(sorted(groups[key])), []).append(g)
        q = float(signal.quantile)
        for bounds, all_members in by_bounds.items():
            # `bucket_quantile` is elementwise over histograms: a few at a time keeps its
            # temporaries in cache (thousands of histograms would stream gigabytes).
            chunk = max(1, _BLOCK_SAMPLES // (len(bounds) * max(1, len(times))))
            for c0 in range(0, len(all_members), chunk):
                members = all_members[c0 : c0 + chunk]
                counts, present = self._bucket_counts(groups, labels, bounds, members, sum_values, sum_present, absent_is_nan, len(times))
                values[members] = bucket_quantile(q, np.array(bounds), counts, present)
                present_rows[members] = present.any(axis=0)
        return _Vector(tuple(labels), values, present_rows, rates.samples)

    @staticmethod
    def _bucket_counts(
        groups: dict[Labels, dict[float, list[int]]],
        labels: list[Labels],
        bounds: tuple[float, ...],
        members: list[int],
        sum_values: np.ndarray,
        sum_present: np.ndarray,
        absent_is_nan: bool,
        n_t: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, G, T) cumulative bucket counts and presence of the histograms `members`."""
        rows = [[groups[labels[g]][b] for g in members] for b in bounds]
        if all(len(r) == 1 for per_bound in rows for r in per_bound):
            idx = np.array([[r[0] for r in per_bound] for per_bound in rows])  # (B, G)
            counts, present = sum_values[idx], sum_present[idx]
            if absent_is_nan:
                np.copyto(counts, 0.0, where=~present)
        else:
            counts = np.zeros((len(bounds), len(members), n_t))
            present = np.zeros((len(bounds), len(members), n_t), dtype=bool)
            for bi, per_bound in enumerate(rows):
                for gi, rs in enumerate(per_bound):
                    if absent_is_nan:
                        total = np.where(sum_present[rs[0]], sum_values[rs[0]], 0.0)
                        for r in rs[1:]:
                            total = total + np.where(sum_present[r], sum_values[r], 0.0)
                    else:
                        total = sum_values[rs[0]]
                        for r in rs[1:]:
                            total = total + sum_values[r]
                    counts[bi, gi] = total
                    present[bi, gi] = sum_present[rs].any(axis=0)
        return counts, present

    def _ratio(self, signal: Signal, times: np.ndarray) -> _Vector:
        if signal.numerator is None or signal.denominator is None:
            raise ValueError("ratio signal needs a numerator and a denominator")
        on = ratio_join_labels(signal)
        num = self._evaluate(signal.numerator, times)
        den = self._evaluate(signal.denominator, times)
        return _divide(num, den, on)


def ratio_join_labels(signal: Signal) -> tuple[str, ...] | None:
    """None for a one-to-one ratio, else the denominator's labels to join ``on(...) group_left``.

    Raises ValueError when the denominator groups by a label the numerator lacks.
    """
    if signal.numerator is None or signal.denominator is None:
        raise ValueError("ratio signal needs a numerator and a denominator")
    num_by, den_by = set(signal.numerator.by), set(signal.denominator.by)
    if num_by == den_by:
        return None
    if den_by < num_by:
        return tuple(signal.denominator.by)
    extra = sorted(den_by - num_by)
    raise ValueError(f"ratio denominator groups by {extra} which the numerator does not; cannot join")


def _check_range(signal: Signal) -> float:
    if not (signal.range > 0 and math.isfinite(signal.range)):
        raise ValueError(
            f"{signal.kind} signal on {signal.metric!r} needs a positive range, got {signal.range!r}"
        )
    return float(signal.range)


def evaluate_instant(source: Source, signal: Signal, t: float) -> SignalFrame:
    """The signal at the single time `t` (a one-point `query_range`)."""
    return source.query_range(signal, t, t, 1.0)
