"""Per-series numpy kernels of the native engine (`detector.source.native`): instant values,
``increase``/``rate`` with Prometheus' extrapolation, and ``histogram_quantile``.

The semantics are written down in `detector.source.native`'s module docstring; every kernel
evaluates a whole grid of times at once (``np.searchsorted`` over the grid), and the
fast variants (`increase_rows`, `increase_list`, `_bucket_quantile_dense`) are equal bit for
bit to the plain ones (tests/equivalence/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from detector.source.series import is_stale_marker

DEFAULT_LOOKBACK_DELTA = 300.0
"""Prometheus' default ``--query.lookback-delta`` (5 min)."""

_EXTRAPOLATION_THRESHOLD = 1.1
_PRECISION_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- per-series kernels


def clip(ts: np.ndarray, vals: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The samples with timestamps in (lo, hi] (views, no copy)."""
    i = int(np.searchsorted(ts, lo, side="right"))
    j = int(np.searchsorted(ts, hi, side="right"))
    return ts[i:j], vals[i:j]


def instant_values(
    ts: np.ndarray, vals: np.ndarray, times: np.ndarray, lookback: float = DEFAULT_LOOKBACK_DELTA
) -> tuple[np.ndarray, np.ndarray]:
    """Instant-selector values at every time: the newest sample in (t - lookback, t], not a stale marker.

    Returns ``(values, present)``.
    """
    out = np.full(len(times), np.nan)
    if len(times):
        ts, vals = clip(ts, vals, float(times[0]) - lookback, float(times[-1]))
    idx = np.searchsorted(ts, times, side="right") - 1
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    if len(ts):
        ok &= ts[safe] > times - lookback
        ok &= ~is_stale_marker(vals[safe])
    else:
        ok[:] = False
    out[ok] = vals[safe[ok]]
    return out, ok


def extrapolated_increase(
    ts: np.ndarray, vals: np.ndarray, times: np.ndarray, window: float, *, is_rate: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus ``increase``/``rate`` of one counter series at every time (rules in the module doc).

    Returns ``(values, present)``.
    """
    out = np.full(len(times), np.nan)
    present = np.zeros(len(times), dtype=bool)
    if len(times):
        ts, vals = clip(ts, vals, float(times[0]) - window, float(times[-1]))
    stale = is_stale_marker(vals)
    if stale.any():
        ts, vals = ts[~stale], vals[~stale]
    if len(ts) < 2:
        return out, present
    lo = np.searchsorted(ts, times - window, side="right")
    hi = np.searchsorted(ts, times, side="right") - 1
    ok = hi - lo >= 1
    if not ok.any():
        return out, present
    i0, i1, t = lo[ok], hi[ok], times[ok]
    first_t, last_t = ts[i0], ts[i1]
    first_v = vals[i0]
    result = vals[i1] - first_v
    drops = np.where(vals[1:] < vals[:-1], vals[:-1], 0.0)
    if drops.any():
        cum = np.concatenate(([0.0], np.cumsum(drops)))
        result = result + (cum[i1] - cum[i0])
    with np.errstate(divide="ignore", invalid="ignore"):
        to_start = first_t - (t - window)
        to_end = t - last_t
        sampled = last_t - first_t
        avg = sampled / (i1 - i0)
        threshold = avg * _EXTRAPOLATION_THRESHOLD
        to_start = np.where(to_start >= threshold, avg / 2, to_start)
        to_zero = np.where((result > 0) & (first_v >= 0), sampled * (first_v / result), to_start)
        to_start = np.where(to_zero < to_start, to_zero, to_start)
        to_end = np.where(to_end >= threshold, avg / 2, to_end)
        factor = (sampled + to_start + to_end) / sampled
        if is_rate:
            factor = factor / window
        out[ok] = result * factor
    present[ok] = True
    return out, present


def increase_rows(
    ts: np.ndarray, vals: np.ndarray, times: np.ndarray, window: float, *, is_rate: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`extrapolated_increase` of k counter series that share the timestamps `ts`.

    `vals` is (k, n) with no stale markers (the caller checks); returns (k, T) values and
    presence, equal element by element to k calls of `extrapolated_increase`.
    """
    k = vals.shape[0]
    out = np.full((k, len(times)), np.nan)
    present = np.zeros((k, len(times)), dtype=bool)
    if len(times):
        i, j = np.searchsorted(ts, [float(times[0]) - window, float(times[-1])], side="right")
        ts, vals = ts[i:j], vals[:, i:j]
    if len(ts) < 2:
        return out, present
    lo = np.searchsorted(ts, times - window, side="right")
    hi = np.searchsorted(ts, times, side="right") - 1
    ok = hi - lo >= 1
    if not ok.any():
        return out, present
    i0, i1, t = lo[ok], hi[ok], times[ok]
    first_t, last_t = ts[i0], ts[i1]
    first_v = vals[:, i0]
    result = vals[:, i1] - first_v
    falls = vals[:, 1:] < vals[:, :-1]
    reset_rows = np.flatnonzero(falls.any(axis=1))
    if reset_rows.size:
        drops = np.where(falls[reset_rows], vals[reset_rows, :-1], 0.0)
        # as `extrapolated_increase`: only rows with a non-zero drop are corrected
        keep = drops.any(axis=1)
        reset_rows, drops = reset_rows[keep], drops[keep]
    if reset_rows.size:
        cum = np.concatenate((np.zeros((reset_rows.size, 1)), np.cumsum(drops, axis=1)), axis=1)
        result[reset_rows] = result[reset_rows] + (cum[:, i1] - cum[:, i0])
    with np.errstate(divide="ignore", invalid="ignore"):
        to_start = first_t - (t - window)
        to_end = t - last_t
        sampled = last_t - first_t
        avg = sampled / (i1 - i0)
        threshold = avg * _EXTRAPOLATION_THRESHOLD
        to_start = np.where(to_start >= threshold, avg / 2, to_start)
        to_zero = np.where((result > 0) & (first_v >= 0), sampled * (first_v / result), to_start)
        to_start = np.where(to_zero < to_start, to_zero, to_start)
        to_end = np.where(to_end >= threshold, avg / 2, to_end)
        factor = (sampled + to_start + to_end) / sampled
        if is_rate:
            factor = factor / window
        out[:, ok] = result * factor
    present[:, ok] = True
    return out, present


def increase_list(
    ts: np.ndarray,
    rows: Sequence[np.ndarray],
    times: np.ndarray,
    window: float,
    *,
    is_rate: bool = False,
    resets: Sequence[bool] | None = None,
    out: np.ndarray | None = None,
    present: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`increase_rows` of k counter series sharing `ts`, given as k 1-D rows (views: no
    stacked copy of the samples, only the samples at window edges are gathered).

    `resets[r]` False promises that row r has no value below its predecessor (its reset
    correction is skipped); None checks every row. No row may hold a stale marker. Equal
    element by element to `extrapolated_increase` of each row. `out` / `present`, (k, T)
    float64 / bool arrays, receive the result when given (and are returned).
    """
    k = len(rows)
    n_t = len(times)
    if out is None:
        out = np.empty((k, n_t))
    if present is None:
        present = np.empty((k, n_t), dtype=bool)
    if n_t:
        i, j = np.searchsorted(ts, [float(times[0]) - window, float(times[-1])], side="right")
        if i != 0 or j != len(ts):
            ts = ts[i:j]
            rows = [r[i:j] for r in rows]
    if len(ts) < 2 or k == 0:
        out[:] = np.nan
        present[:] = False
        return out, present
    lo = np.searchsorted(ts, times - window, side="right")
    hi = np.searchsorted(ts, times, side="right") - 1
    ok = hi - lo >= 1
    every = bool(ok.all())
    if not every and not ok.any():
        out[:] = np.nan
        present[:] = False
        return out, present
    i0, i1, t = (lo, hi, times) if every else (lo[ok], hi[ok], times[ok])
    first_v, result = _raw_increase(rows, i0, i1, resets)
    factor = _extrapolate(ts, i0, i1, t, window, first_v, result, is_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        if every:
            # result * factor (or factor * result: the same bits) straight into `out`
            np.multiply(result, factor, out=out)
            present[:] = True
            return out, present
        if factor.ndim == 1:
            result *= factor
            factor = result
        else:
            factor *= result
    out[:] = np.nan
    out[:, ok] = factor
    present[:] = False
    present[:, ok] = True
    return out, present


def _raw_increase(
    rows: Sequence[np.ndarray], i0: np.ndarray, i1: np.ndarray, resets: Sequence[bool] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(first value, last - first + reset corrections) of every row in every window [i0, i1]."""
    k, n_ok = len(rows), len(i0)
    if 1 < k and k * len(rows[0]) <= _STACK_SAMPLES:
        return _raw_increase_stacked(np.stack(rows), i0, i1, resets)
    first_v = np.empty((k, n_ok))
    result = np.empty((k, n_ok))
    for r, row in enumerate(rows):
        row.take(i0, out=first_v[r], mode="clip")  # indices are in range; "clip" skips the check
        row.take(i1, out=result[r], mode="clip")
    result -= first_v
    for r, row in enumerate(rows):
        if resets is not None and not resets[r]:
            continue
        drops = np.where(row[1:] < row[:-1], row[:-1], 0.0)
        if drops.any():
            cum = np.concatenate(([0.0], np.cumsum(drops)))
            result[r] = result[r] + (cum[i1] - cum[i0])
    return first_v, result


_STACK_SAMPLES = 1 << 16
"""Rows this short in total (an incremental query's few windows) are stacked into one array:
a few whole-array operations instead of several per row."""


def _raw_increase_stacked(
    m: np.ndarray, i0: np.ndarray, i1: np.ndarray, resets: Sequence[bool] | None
) -> tuple[np.ndarray, np.ndarray]:
    """`_raw_increase` of the rows of `m` (the same operations per element)."""
    first_v = m[:, i0]
    result = m[:, i1]
    result -= first_v
    check = np.arange(len(m)) if resets is None else np.flatnonzero(np.asarray(resets, dtype=bool))
    if check.size:
        sub = m[check]
        drops = np.where(sub[:, 1:] < sub[:, :-1], sub[:, :-1], 0.0)
        hit = drops.any(axis=1)
        if hit.any():
            rows, drops = check[hit], drops[hit]
            cum = np.zeros((len(rows), drops.shape[1] + 1))
            np.cumsum(drops, axis=1, out=cum[:, 1:])
            result[rows] = result[rows] + (cum[:, i1] - cum[:, i0])
    return first_v, result


def _extrapolate(
    ts: np.ndarray,
    i0: np.ndarray,
    i1: np.ndarray,
    t: np.ndarray,
    window: float,
    first_v: np.ndarray,
    result: np.ndarray,
    is_rate: bool,
) -> np.ndarray:
    """The extrapolation factor of `extrapolated_increase` per window (1-D, one per step, in the
    usual case; (k, steps) when a row's zero point cuts a window start). Overwrites `first_v`."""
    first_t, last_t = ts[i0], ts[i1]
    with np.errstate(divide="ignore", invalid="ignore"):
        # The expressions of `extrapolated_increase`, in place where the operands allow
        # (a + b == b + a and a * b == b * a hold bit for bit).
        to_start = first_t - (t - window)
        to_end = t - last_t
        sampled = last_t - first_t
        avg = sampled / (i1 - i0)
        threshold = avg * _EXTRAPOLATION_THRESHOLD
        to_start = np.where(to_start >= threshold, avg / 2, to_start)
        to_end = np.where(to_end >= threshold, avg / 2, to_end)
        # to_zero = sampled * first / result replaces to_start where it is smaller (and the
        # counter could have started at zero inside the window).
        lower = result > 0
        lower &= first_v >= 0
        np.divide(first_v, result, out=first_v)
        first_v *= sampled
        lower &= first_v < to_start
        if lower.any():
            factor = np.where(lower, first_v, to_start)
            factor += sampled
        else:  # the usual case: one factor per step for every row
            factor = sampled + to_start
        factor += to_end
        factor /= sampled
        if is_rate:
            factor /= window
    return factor


# --------------------------------------------------------------------------- histogram quantile


def parse_le(text: str) -> float | None:
    """A bucket bound as Prometheus reads it ('0.5', '1e3', '+Inf'), or None when unusable."""
    if not text or text.strip() != text or "_" in text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def bucket_quantile(
    q: float, upper_bounds: np.ndarray, counts: np.ndarray, present: np.ndarray
) -> np.ndarray:
    """Prometheus ``bucketQuantile`` at every step.

    `upper_bounds` (B,) strictly increasing; `counts`/`present` (B, T) cumulative bucket
    counts and whether each bucket had a value at that step (absent buckets are left out,
    as Prometheus only sees the buckets present at a step). Returns (T,) values, NaN
    where no quantile exists. Every operation is elementwise over the trailing axes, so
    (B, G, T) arrays (G histograms sharing the bounds) give (G, T) in one call, with the
    same numbers as G separate calls.
    """
    n_b = counts.shape[0]
    shape = counts.shape[1:]
    out = np.full(shape, np.nan)
    if n_b == 0:
        return out
    any_present = present.any(axis=0)
    if math.isnan(q):
        return out
    if q < 0 or q > 1:
        out[any_present] = -np.inf if q < 0 else np.inf
        return out
    if not math.isinf(upper_bounds[-1]) or upper_bounds[-1] < 0:
        return out
    valid = present[-1].copy()
    valid &= present.sum(axis=0) >= 2
    fast = _bucket_quantile_dense(q, upper_bounds, counts, present, valid)
    if fast is not None:
        return fast
    return _bucket_quantile_loop(q, upper_bounds, counts, present, valid)


def _bucket_quantile_loop(
    q: float, upper_bounds: np.ndarray, counts: np.ndarray, present: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """The general `bucket_quantile`: bucket by bucket, vectorised over the other axes."""
    n_b = counts.shape[0]
    shape = counts.shape[1:]
    out = np.full(shape, np.nan)
    valid = valid.copy()
    # Pass 1: precision fix and monotone envelope, bucket by bucket (vectorised over steps).
    fixed = np.full((n_b, *shape), np.nan)
    have = np.zeros(shape, dtype=bool)
    prev = np.full(shape, np.nan)
    running_max = np.full(shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(n_b):
            p = present[j]
            c = counts[j]
            delta = np.abs(c - prev)
            snap = have & (delta != 0) & (delta / c <= _PRECISION_TOLERANCE)
            c = np.where(snap, prev, c)
            prev = np.where(p, c, prev)
            mono = np.where(have & (c < running_max), running_max, c)
            running_max = np.where(p, np.where(~have | (c > running_max), c, running_max), running_max)
            fixed[j] = np.where(p, mono, np.nan)
            have |= p
        # Pass 2: find the bucket holding the rank and interpolate.
        total = fixed[-1]
        valid &= total != 0
        rank = q * total
        found = np.zeros(shape, dtype=bool)
        have_prev = np.zeros(shape, dtype=bool)
        prev_ub = np.zeros(shape)
        prev_count = np.zeros(shape)
        for j in range(n_b - 1):
            p = present[j]
            ub = upper_bounds[j]
            c = fixed[j]
            hit = p & ~found & (c >= rank)
            start = np.where(have_prev, prev_ub, 0.0)
            below = np.where(have_prev, prev_count, 0.0)
            value = start + (ub - start) * ((rank - below) / (c - below))
            if ub <= 0:
                value = np.where(have_prev, value, ub)
            out = np.where(hit, value, out)
            found |= hit
            prev_ub = np.where(p, ub, prev_ub)
            prev_count = np.where(p, c, prev_count)
            have_prev |= p
    out = np.where(found, out, prev_ub)
    out[~valid] = np.nan
    return out


def _bucket_quantile_dense(
    q: float, upper_bounds: np.ndarray, counts: np.ndarray, present: np.ndarray, valid: np.ndarray
) -> np.ndarray | None:
    """`bucket_quantile` for the usual case, every bucket present and every count finite:
    the precision snap and the monotone envelope (a running maximum) bucket by bucket with
    the loop's expressions, then the bucket holding the rank found and interpolated for all
    steps at once. None when the case does not apply.
    """
    n_b = counts.shape[0]
    if n_b < 2 or not present.all() or not np.isfinite(counts).all():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.subtract(counts[1:], counts[:-1])
        np.abs(delta, out=delta)
        nonzero = delta != 0
        np.divide(delta, counts[1:], out=delta)
        nonzero &= delta <= _PRECISION_TOLERANCE
        del delta
        if not nonzero.any():
            # No count is within the tolerance of its neighbour: nothing snaps, and the
            # envelope is the running maximum the loop below computes.
            fixed = np.maximum.accumulate(counts, axis=0)
        else:
            fixed = np.empty_like(counts)
            fixed[0] = counts[0]
            prev = counts[0]
            for b in range(1, n_b):
                c = counts[b]
                delta = np.abs(c - prev)
                c = np.where((delta != 0) & (delta / c <= _PRECISION_TOLERANCE), prev, c)
                np.maximum(fixed[b - 1], c, out=fixed[b])
                prev = c
        total = fixed[-1]
        valid = valid & (total != 0)
        rank = q * total
        # The envelope is non-decreasing: the bucket holding the rank is the number of
        # (non-+Inf) buckets below it.
        j = (fixed[:-1] < rank).sum(axis=0, dtype=np.intp)
        found = j < n_b - 1
        j = np.minimum(j, n_b - 2)
        flat = fixed.reshape(n_b, -1)
        cols = np.arange(flat.shape[1])
        c = flat[j.ravel(), cols].reshape(j.shape)
        first = j == 0
        below = np.where(first, 0.0, flat[np.maximum(j - 1, 0).ravel(), cols].reshape(j.shape))
        ub = upper_bounds[j]
        start = np.where(first, 0.0, upper_bounds[np.maximum(j - 1, 0)])
        value = start + (ub - start) * ((rank - below) / (c - below))
        value = np.where(first & (ub <= 0), ub, value)
    out = np.where(found, value, upper_bounds[n_b - 2])
    out[~valid] = np.nan
    return out
