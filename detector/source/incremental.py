"""Incremental evaluation: a `Source` that keeps the frames it answered and, for the next
evaluation, asks the source under it only for the steps it has not computed yet.

Why it is exact
---------------
A signal's value at step t depends only on the samples in a window ending at t (a
range, or the lookback delta of an instant read). Samples are never rewritten (the store
refuses out-of-order samples; Prometheus' blocks are immutable), so a value computed
once stays right as long as no sample stamped before t arrives after it was computed.
`IncrementalSource` therefore re-reads the newest `overlap` seconds of a remembered
frame on every query (samples that arrive late, within that bound, are taken into
account) and reuses the older steps unchanged.

Rules
-----
* A query of fewer than `min_steps` steps goes straight to the source (instant and
  status-window reads cost little and change every time).
* A remembered frame is reused when it has the same signal (with its windows as
  fitted to the data: a changed sample interval is another signal) and step, its grid
  is the query's grid (start times a whole number of steps apart), and it covers the
  query's start and ends later than ``start + overlap``; otherwise the whole range is
  queried (a gap, a first evaluation, an evaluation time off the grid).
* Units (label sets) are merged: a unit seen only in the new steps has no value in
  the reused ones, one seen only in the reused steps none in the new ones. A cold
  query lists a unit when it has a *sample* in the range; a reused unit whose kept
  values are all missing may or may not have one (a stored NaN), so that case is
  answered by a full query (once: the frame it gives no longer lists a unit whose
  samples slid out of the range). Units are sorted by labels, as every source does.
* Times are those a cold query of the same range would have (`evaluation_times`); a
  remembered step matches a new one within a microsecond (float sums of the same grid).
* `samples_read` is what the source read for the new steps: `csf_meta_samples_read`
  shows the saving. Per (signal, step) the frames ending within one step of the newest
  are kept (one per phase when evaluations come more often than steps; at most
  `max_frames`): the query one step later reuses one of them. A (signal, step) not asked
  for during a day of evaluation time is forgotten (a signal whose windows were widened
  for a sample interval that changed since).
* A source error propagates and remembers nothing.
* A survey (`SeriesSurvey`: series, sample interval) is reused for `survey_ttl`
  seconds of evaluation time (default 5 minutes; `PrometheusSource` keeps its own for
  an hour): a changed sample interval or a new series shows at most that much later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from detector.source.frame import Labels, SeriesSurvey, SignalFrame, Source
from detector.source.native import evaluation_times
from detector.spec.signals import Signal

DEFAULT_OVERLAP = 600.0
"""Seconds of each remembered frame re-read on every query (samples arriving that late still count)."""
IDLE_FORGET = 86400.0
"""Seconds of evaluation time after which the frames of a (signal, step) not asked for are dropped."""
SURVEY_TTL = 300.0
"""Seconds of evaluation time a survey answer is reused."""
MIN_STEPS = 16
MAX_FRAMES = 256
_TOLERANCE = 1e-6


class IncrementalSource:
    """`Source` over `inner` that reuses the steps of earlier answers (rules in the module doc)."""

    def __init__(
        self,
        inner: Source,
        *,
        overlap: float = DEFAULT_OVERLAP,
        min_steps: int = MIN_STEPS,
        max_frames: int = MAX_FRAMES,
        survey_ttl: float = SURVEY_TTL,
    ) -> None:
        if not (overlap >= 0 and math.isfinite(overlap)):
            raise ValueError(f"overlap must be a finite number of seconds >= 0, got {overlap!r}")
        self.inner = inner
        self.name = inner.name
        self.overlap = float(overlap)
        self.min_steps = min_steps
        self.max_frames = max_frames
        self.survey_ttl = survey_ttl
        self._frames: dict[tuple[Signal, float], list[SignalFrame]] = {}
        self._swept = -math.inf
        self._surveys: dict[tuple[str, tuple[tuple[str, ...], ...], float], tuple[float, SeriesSurvey | None]] = {}
        self.full_queries = 0
        self.partial_queries = 0

    def __getattr__(self, name: str) -> Any:
        # survey, up, close, lookback_delta, ...: the source underneath answers
        return getattr(self.inner, name)

    def survey(
        self, metric: str, matchers: Sequence[tuple[str, ...]], end: float, lookback: float
    ) -> SeriesSurvey | None:
        """The source's survey, reused within `survey_ttl` (None: the source cannot survey)."""
        fn = getattr(self.inner, "survey", None)
        if not callable(fn):
            return None
        key = (metric, tuple(tuple(m) for m in matchers), float(lookback))
        hit = self._surveys.get(key)
        if hit is not None and 0.0 <= end - hit[0] < self.survey_ttl:
            return hit[1]
        result: SeriesSurvey | None = fn(metric, matchers, end, lookback)
        if len(self._surveys) > 4096:
            self._surveys.clear()
        self._surveys[key] = (end, result)
        return result

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        times = evaluation_times(start, end, step)
        if len(times) < self.min_steps:
            return self.inner.query_range(signal, start, end, step)
        key = (signal, float(step))
        if end - self._swept >= 3600.0:
            self._sweep(float(end))
        frame = None
        base = self._reusable(key, times, step)
        if base is not None:
            first_new = self._first_new(base, times)
            part = self.inner.query_range(signal, float(times[first_new]), end, step)
            frame = _splice(base, part, times, first_new)
            if frame is not None:
                self.partial_queries += 1
        if frame is None:
            frame = self.inner.query_range(signal, start, end, step)
            self.full_queries += 1
        self._remember(key, frame, step)
        return frame

    def _sweep(self, now: float) -> None:
        """Forget the (signal, step)s not asked for in the last `IDLE_FORGET` seconds."""
        self._swept = now
        for key in [k for k, frames in self._frames.items() if max(f.times[-1] for f in frames) < now - IDLE_FORGET]:
            del self._frames[key]

    def _reusable(self, key: tuple[Signal, float], times: np.ndarray, step: float) -> SignalFrame | None:
        """The remembered frame on the query's grid that covers its start and most steps."""
        best: SignalFrame | None = None
        start = float(times[0])
        for f in self._frames.get(key, ()):
            if not len(f.times) or f.times[0] > start + _TOLERANCE or f.times[-1] < start - _TOLERANCE:
                continue
            k = (start - float(f.times[0])) / step
            if abs(k - round(k)) * step > _TOLERANCE:
                continue
            if float(f.times[-1]) - self.overlap <= start:
                continue  # nothing would be kept
            if best is None or f.times[-1] > best.times[-1]:
                best = f
        return best

    def _first_new(self, base: SignalFrame, times: np.ndarray) -> int:
        """Index in `times` of the first step re-read: past the base's end less the overlap."""
        keep_until = float(base.times[-1]) - self.overlap
        return int(np.searchsorted(times, keep_until + _TOLERANCE, side="left"))

    def _remember(self, key: tuple[Signal, float], frame: SignalFrame, step: float) -> None:
        if not len(frame.times):
            return
        newest = float(frame.times[-1])
        # a frame is reused by the query one step later (evaluations every interval < step
        # leave one frame per phase of the step); older ones can only serve a gap
        kept = [f for f in self._frames.get(key, ()) if float(f.times[-1]) >= newest - step - _TOLERANCE and f is not frame]
        kept.append(frame)
        self._frames[key] = kept[-self.max_frames :]


def _splice(base: SignalFrame, part: SignalFrame, times: np.ndarray, first_new: int) -> SignalFrame | None:
    """`base`'s values for ``times[:first_new]`` and `part`'s for the rest (None: ambiguous, see module doc)."""
    n_old = first_new
    if len(part.times) != len(times) - n_old:
        return None
    offset = int(round((float(times[0]) - float(base.times[0])) / (float(times[1]) - float(times[0]))))
    if offset + n_old > len(base.times):
        return None
    old_rows = {u: base.values[i, offset : offset + n_old] for i, u in enumerate(base.units)}
    new_rows = {u: part.values[i] for i, u in enumerate(part.units)}
    units: list[Labels] = []
    for u in sorted(set(old_rows) | set(new_rows)):
        if u not in new_rows and np.isnan(old_rows[u]).all():
            return None  # listed by a cold query only if it has a (NaN) sample: ask the source
        units.append(u)
    values = np.full((len(units), len(times)), np.nan)
    for r, u in enumerate(units):
        if u in old_rows:
            values[r, :n_old] = old_rows[u]
        if u in new_rows:
            values[r, n_old:] = new_rows[u]
    return SignalFrame(units=tuple(units), times=times, values=values, samples_read=part.samples_read)


__all__ = ["DEFAULT_OVERLAP", "IncrementalSource"]
