"""Signals as data: a small typed vocabulary of metric expressions.

A `Signal` is a frozen description of *what* to compute from the input metrics
(never a PromQL string built by hand). Two back ends read the same definitions:

* `detector.source.native` evaluates them with numpy over the embedded sample store;
* `detector.source.promql.compile_promql` turns them into PromQL for Prometheus sources.

Kinds
-----
``gauge``               ``agg by (by) (metric)``  (agg: sum | avg | max | min)
``rate``                ``sum by (by) (rate(metric[range]))``
``increase``            ``sum by (by) (increase(metric[range]))``
``histogram_quantile``  ``histogram_quantile(q, sum by (by, le) (rate(metric_bucket[range])))``
``histogram_mean``      ``sum by (by) (rate(metric_sum[range])) / sum by (by) (rate(metric_count[range]))``
``ratio``               ``numerator / denominator``; when the denominator has fewer ``by``
                        labels it is joined ``on(denominator.by) group_left``.

Every result is finally multiplied by ``scale`` (e.g. 86400 to turn a per-second
rate into a per-day figure).

``range`` is a floor, not a promise: data sampled every 5 minutes has one sample in a
5-minute window, so evaluation widens every window that is not pinned (``pin_range``)
to four sample intervals (`detector.source.frame.effective_range`) on every path alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

SignalKind = Literal["gauge", "rate", "increase", "histogram_quantile", "histogram_mean", "ratio"]
Aggregation = Literal["sum", "avg", "max", "min"]

SIGNAL_KINDS: tuple[str, ...] = ("gauge", "rate", "increase", "histogram_quantile", "histogram_mean", "ratio")
AGGREGATIONS: tuple[str, ...] = ("sum", "avg", "max", "min")


@dataclass(frozen=True)
class Signal:
    kind: SignalKind
    metric: str = ""
    """Series name. For histogram kinds the base name (``_bucket``/``_sum``/``_count`` are added)."""
    by: tuple[str, ...] = ()
    """Output labels, in order. Empty = one platform-wide series."""
    range: float = 300.0
    """Range-vector window in seconds for rate/increase/histogram kinds: a floor that
    evaluation widens to four sample intervals of the data (`detector.source.frame.effective_range`)."""
    pin_range: bool = False
    """Use `range` exactly, however sparse the data (the pack's ``pin_range: true``)."""
    quantile: float | None = None
    matchers: tuple[tuple[str, ...], ...] = ()
    """Label matchers applied to the input series, sorted: ``(label, value)`` for equality or
    ``(label, value, op)`` with op ``!=``, ``=~`` or ``!~`` (`detector.spec.matchers`)."""
    agg: Aggregation = "sum"
    """Aggregation used for gauges."""
    numerator: Signal | None = None
    denominator: Signal | None = None
    scale: float = 1.0
    promql: str | None = None
    """Raw PromQL override, used only by Prometheus sources."""

    def children(self) -> tuple[Signal, ...]:
        return tuple(s for s in (self.numerator, self.denominator) if s is not None)

    def metrics(self) -> tuple[str, ...]:
        """Every input series name this signal reads (histogram kinds expanded)."""
        if self.kind == "ratio":
            out: list[str] = []
            for c in self.children():
                out.extend(c.metrics())
            return tuple(dict.fromkeys(out))
        if self.kind == "histogram_quantile":
            return (self.metric + "_bucket",)
        if self.kind == "histogram_mean":
            return (self.metric + "_sum", self.metric + "_count")
        return (self.metric,)

    def labels_used(self) -> tuple[str, ...]:
        """Every label the signal groups or filters by (its own and its children's)."""
        out = list(self.by) + [m[0] for m in self.matchers]
        for c in self.children():
            out.extend(c.labels_used())
        return tuple(dict.fromkeys(out))

    def with_by(self, by: tuple[str, ...]) -> Signal:
        """The same signal grouped by `by` instead (children are regrouped to the labels they share)."""
        if self.kind == "ratio":
            assert self.numerator is not None and self.denominator is not None
            num = self.numerator.with_by(tuple(lbl for lbl in self.numerator.by if lbl in by))
            den = self.denominator.with_by(tuple(lbl for lbl in self.denominator.by if lbl in by))
            return replace(self, by=by, numerator=num, denominator=den, promql=None)
        return replace(self, by=by, promql=None)

    def platform(self) -> Signal:
        """The platform-wide form (no grouping labels)."""
        return self.with_by(())

    def widened(self, seconds: float) -> Signal:
        """The same signal with every unpinned range shorter than `seconds` set to `seconds`."""
        if self.kind == "ratio":
            assert self.numerator is not None and self.denominator is not None
            num, den = self.numerator.widened(seconds), self.denominator.widened(seconds)
            if num is self.numerator and den is self.denominator and (self.pin_range or self.range >= seconds):
                return self
            rng = self.range if self.pin_range else max(self.range, seconds)
            return replace(self, range=rng, numerator=num, denominator=den)
        if self.pin_range or self.kind == "gauge" or self.range >= seconds:
            return self
        return replace(self, range=seconds)

    def selectors(self) -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
        """Every (input series name, matchers) this signal selects (histogram kinds expanded)."""
        if self.kind == "ratio":
            out: list[tuple[str, tuple[tuple[str, ...], ...]]] = []
            for c in self.children():
                out.extend(c.selectors())
            return tuple(dict.fromkeys(out))
        return tuple((m, self.matchers) for m in self.metrics())

    def with_range(self, seconds: float) -> Signal:
        """The same signal over another range window (children included)."""
        if self.kind == "ratio":
            assert self.numerator is not None and self.denominator is not None
            return replace(
                self,
                range=seconds,
                numerator=self.numerator.with_range(seconds),
                denominator=self.denominator.with_range(seconds),
                promql=None,
            )
        return replace(self, range=seconds, promql=None)
