"""Signal frames and the source protocol shared by every data source.

A source answers one question: the values of a `Signal` on a regular time grid.
The embedded store (`detector.source.native`), Prometheus (`detector.source.prometheus_api`) and
replayed files all implement `Source`, so the evaluator has one code path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from detector.errors import CsfError
from detector.spec.matchers import describe
from detector.spec.signals import Signal

Labels = tuple[tuple[str, str], ...]
"""A label set as sorted (name, value) pairs: hashable and ordered."""


def labels_key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class SignalFrame:
    """Values of one signal: `values[u, t]` for unit `units[u]` at `times[t]` (NaN = no value)."""

    units: tuple[Labels, ...]
    times: np.ndarray
    values: np.ndarray
    samples_read: int = 0

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.units), len(self.times)):
            raise ValueError(f"frame values shape {self.values.shape} != ({len(self.units)}, {len(self.times)})")

    def unit_values(self, label: str) -> tuple[str, ...]:
        """The value of `label` for each unit ('' when absent)."""
        return tuple(dict(u).get(label, "") for u in self.units)

    def scalar_series(self) -> np.ndarray:
        """For a platform-wide frame (one unit, no labels): the values over time; all-NaN when empty."""
        if not self.units:
            return np.full(len(self.times), np.nan)
        if len(self.units) != 1:
            raise ValueError(f"expected one platform-wide series, got {len(self.units)}")
        return self.values[0]

    def last(self) -> float:
        """Newest value of a platform-wide frame (NaN when missing)."""
        s = self.scalar_series()
        return float(s[-1]) if len(s) else float("nan")


PROBE_WINDOWS: tuple[float, ...] = (3600.0, 6 * 3600.0, 86400.0)
"""Windows (ending at the evaluation time) a sample interval is learned over, shortest
first: the first in which the typical series has at least `PROBE_MIN_SAMPLES` samples
wins, so dense data is probed over one hour and sparse data over up to a day."""
PROBE_MIN_SAMPLES = 3
RANGE_INTERVALS = 4
"""A rate/increase/quantile window spans at least this many sample intervals (the rule of
Grafana's ``$__rate_interval``): enough samples for a rate even when a scrape is lost."""


@dataclass(frozen=True)
class SeriesSurvey:
    """What a source holds for one selector around an evaluation time.

    Every source computes it with `survey_series` from raw samples and label sets, so the
    native store, Prometheus and VictoriaMetrics learn the same interval from the same data.
    """

    metric: str
    matchers: tuple[tuple[str, ...], ...]
    series: int
    """Series of the selector with samples in the lookback (0: nothing matched)."""
    label_names: tuple[str, ...]
    """Every label name those series carry (sorted, ``__name__`` excluded)."""
    sample_interval: float | None
    """Median over series of the median spacing of their samples in `probe_window`
    (seconds, rounded to the millisecond); None when no series has two samples there."""
    probe_window: float
    bucket_layouts: tuple[tuple[Labels, tuple[str, ...]], ...] = ()
    """For ``*_bucket`` selectors: each histogram's labels (without ``le``) and its sorted ``le`` values."""

    def selector(self) -> str:
        return describe_selector(self.metric, self.matchers)


def describe_selector(metric: str, matchers: Sequence[tuple[str, ...]] = ()) -> str:
    """``metric{a="b", c=~"5.."}`` for messages (no escaping: never sent as a query)."""
    if not matchers:
        return metric
    return metric + "{" + describe(matchers) + "}"


def learn_interval(timestamps: Iterable[np.ndarray]) -> float | None:
    """Median over series of the median spacing of each series' timestamps (None: no series has two)."""
    by_length: dict[int, list[np.ndarray]] = {}
    for ts in timestamps:
        if len(ts) >= 2:
            by_length.setdefault(len(ts), []).append(ts)
    if not by_length:
        return None
    # series scraped together have equal lengths: one vectorised median per length
    per_series = np.concatenate(
        [np.median(np.diff(np.stack(group), axis=1), axis=1) for group in by_length.values()]
    )
    return round(float(np.median(per_series)), 3)


def survey_series(
    metric: str,
    matchers: Sequence[tuple[str, ...]],
    label_sets: Sequence[Labels],
    probe: Sequence[tuple[float, Sequence[np.ndarray]]],
) -> SeriesSurvey:
    """A `SeriesSurvey` from the label sets seen in the lookback and, per probe window (in
    `PROBE_WINDOWS` order), the timestamps of each series' samples inside it. Probing stops
    at the first window whose median series has `PROBE_MIN_SAMPLES` samples."""
    names = sorted({k for labels in label_sets for k, _ in labels if k != "__name__"})
    interval: float | None = None
    window = probe[0][0] if probe else PROBE_WINDOWS[0]
    for probe_window, stamps in probe:
        window = probe_window
        counts = [len(ts) for ts in stamps]
        interval = learn_interval(stamps)
        if counts and float(np.median(counts)) >= PROBE_MIN_SAMPLES:
            break
    layouts: tuple[tuple[Labels, tuple[str, ...]], ...] = ()
    if metric.endswith("_bucket"):
        groups: dict[Labels, set[str]] = {}
        for labels in label_sets:
            le = dict(labels).get("le")
            if le is None:
                continue
            key = tuple((k, v) for k, v in labels if k not in ("le", "__name__"))
            groups.setdefault(key, set()).add(le)
        layouts = tuple(sorted((k, tuple(sorted(v, key=_le_order))) for k, v in groups.items()))
    return SeriesSurvey(
        metric=metric,
        matchers=tuple(matchers),
        series=len(label_sets),
        label_names=tuple(names),
        sample_interval=interval,
        probe_window=window,
        bucket_layouts=layouts,
    )


def _le_order(le: str) -> float:
    try:
        return float(le)
    except ValueError:
        return math.inf


def effective_range(range_s: float, interval: float | None, pinned: bool = False) -> float:
    """The window a rate over samples `interval` apart needs: at least `RANGE_INTERVALS`
    intervals, never shorter than `range_s`, rounded up to a whole second; `range_s` itself
    when pinned or when the interval is unknown."""
    if pinned or interval is None or not math.isfinite(interval) or interval <= 0:
        return range_s
    need = RANGE_INTERVALS * interval
    if need <= range_s:
        return range_s
    return float(math.ceil(need - 1e-6))


class SourceError(CsfError):
    """The source could not answer (down, timeout, bad response). Makes constraints `observe`."""


class Source(Protocol):
    name: str

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        """Evaluate `signal` at start, start+step, ..., <= end. Raises SourceError when unavailable."""
        ...


class SurveyingSource(Source, Protocol):
    """A source that can also say what it holds for a selector (`SeriesSurvey`)."""

    def survey(
        self, metric: str, matchers: Sequence[tuple[str, ...]], end: float, lookback: float
    ) -> SeriesSurvey:
        """Label sets in ``(end - lookback, end]`` and the sample interval near `end`. Raises SourceError."""
        ...
