"""Diagnoses that name the real cause when a signal cannot be used.

Pure functions over what a source reported (`detector.source.frame.SeriesSurvey` per selector)
and the frames it returned. Each diagnosis has a machine-readable reason
(`detector.evidence.results.DiagnosisReason`) and a sentence that says what was found and
what to change. The checks, in the order a user would want them:

``no_series``               the selector matches no series in the lookback
``label_absent``            a label the signal groups by (a unit label) is on none of its series
``bucket_layout_mismatch``  histograms summed into one unit have different ``le`` boundaries
``too_sparse``              the series are there but the window holds fewer than two samples
``stale``                   the newest value is older than the pack's staleness
``no_common_units``         the outcome's units and the signal's units do not overlap
``no_data``                 anything else that leaves a signal without a value

The first three make a verdict wrong even when the data is fresh, so they are checked
on every evaluation, not only when a frame comes back empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from detector.evidence.results import Diagnosis
from detector.source.frame import Labels, SeriesSurvey, SignalFrame, describe_selector
from detector.spec.signals import Signal
from detector.timefmt import format_duration, format_time

Survey = Callable[[str, tuple[tuple[str, ...], ...]], SeriesSurvey | None]
"""Look-up of a selector's survey (None when the source cannot survey)."""


def leaves(signal: Signal) -> tuple[Signal, ...]:
    """The signals that select series (a ratio's numerator and denominator, recursively)."""
    if signal.kind == "ratio":
        return tuple(leaf for c in signal.children() for leaf in leaves(c))
    return (signal,)


def describe(signal: Signal) -> str:
    """A signal for messages: its selectors, with matchers (``a{x="1"}/b{x="2"}`` for a ratio)."""
    if signal.kind == "ratio" and signal.numerator is not None and signal.denominator is not None:
        return f"{describe(signal.numerator)}/{describe(signal.denominator)}"
    return describe_selector(signal.metric, signal.matchers)


def _duration(seconds: float) -> str:
    return format_duration(seconds)


def _unit_text(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels) or "the platform"


def structural(role: str, signal: Signal, survey: Survey, lookback: float) -> Diagnosis | None:
    """Problems that make the signal wrong even when it has fresh values."""
    for leaf in leaves(signal):
        for metric in leaf.metrics():
            sv = survey(metric, leaf.matchers)
            if sv is None:
                continue
            sel = describe_selector(metric, leaf.matchers)
            if sv.series == 0:
                what = "the metric name and the matchers" if leaf.matchers else "the metric name"
                return Diagnosis(
                    "no_series",
                    role,
                    f"{role} {describe(signal)}: no series matched {sel} in the last {_duration(lookback)}; "
                    f"check {what} against the source",
                    sel,
                )
            absent = [lbl for lbl in leaf.by if lbl not in sv.label_names]
            if absent:
                seen = ", ".join(sv.label_names) or "none"
                return Diagnosis(
                    "label_absent",
                    role,
                    f"{role} {describe(signal)}: unit label {', '.join(f'`{a}`' for a in absent)} absent from "
                    f"the data of {sel} ({sv.series} series; labels seen: {seen}); add the label to the metric "
                    "or change the pack's `by`/`units` to labels the data has",
                    sel,
                )
            mismatch = _bucket_mismatch(sv, leaf.by)
            if mismatch is not None:
                return Diagnosis("bucket_layout_mismatch", role, f"{role} {describe(signal)}: {mismatch}", sel)
    return None


def _bucket_mismatch(sv: SeriesSurvey, by: Sequence[str]) -> str | None:
    """Text naming two histograms of one unit whose ``le`` boundaries differ (None: all agree)."""
    per_unit: dict[Labels, dict[tuple[str, ...], Labels]] = {}
    for labels, bounds in sv.bucket_layouts:
        d = dict(labels)
        unit = tuple((k, d.get(k, "")) for k in by)
        per_unit.setdefault(unit, {}).setdefault(bounds, labels)
    for unit, layouts in sorted(per_unit.items()):
        if len(layouts) < 2:
            continue
        (b1, l1), (b2, l2) = sorted(layouts.items(), key=lambda kv: kv[1])[:2]
        diff1 = {k: v for k, v in l1 if dict(l2).get(k) != v}
        diff2 = {k: v for k, v in l2 if dict(l1).get(k) != v}
        return (
            f"histogram buckets of {sv.selector()} differ within unit {_unit_text(unit)}: "
            f"{_unit_text(tuple(sorted(diff1.items())))} has le {','.join(b1)} but "
            f"{_unit_text(tuple(sorted(diff2.items())))} has le {','.join(b2)} "
            f"({len(layouts)} layouts); summed by le they give a meaningless quantile. Give every series "
            "the same buckets, or add the label that tells them apart to the signal's `by`"
        )
    return None


def empty(
    role: str,
    signal: Signal,
    frame: SignalFrame,
    survey: Survey,
    now: float,
    staleness: float,
) -> Diagnosis:
    """Why `frame` has no fresh value (call after `structural` found nothing)."""
    finite = np.isfinite(frame.values).any(axis=0) if frame.values.size else np.zeros(len(frame.times), bool)
    if finite.any():
        last = float(frame.times[np.flatnonzero(finite)[-1]])
        return Diagnosis(
            "stale",
            role,
            f"{role} {describe(signal)}: stale since {format_time(last)}, its newest value, "
            f"{_duration(max(0.0, now - last))} before the evaluation (staleness limit {_duration(staleness)}); "
            "check that the series are still scraped or pushed",
            describe(signal),
        )
    for leaf in leaves(signal):
        for metric in leaf.metrics():
            sv = survey(metric, leaf.matchers)
            if sv is None or sv.sample_interval is None:
                continue
            sel = describe_selector(metric, leaf.matchers)
            if leaf.kind != "gauge" and leaf.range < 2 * sv.sample_interval:
                fix = (
                    f"remove `pin_range` or set range >= {_duration(4 * sv.sample_interval)}"
                    if leaf.pin_range
                    else f"set range >= {_duration(4 * sv.sample_interval)}"
                )
                return Diagnosis(
                    "too_sparse",
                    role,
                    f"{role} {describe(signal)}: series present but too sparse for the {_duration(leaf.range)} "
                    f"window: one sample per {_duration(sv.sample_interval)} in {sel} (a rate needs two samples "
                    f"in its window); {fix}",
                    sel,
                )
    return Diagnosis(
        "no_data",
        role,
        f"{role} {describe(signal)}: no value in the last {_duration(staleness)} although its series exist; "
        "check the signal's matchers and that numerator and denominator select the same units",
        describe(signal),
    )


def no_common_units(x: SignalFrame, y: SignalFrame, signal: Signal, outcome: Signal) -> Diagnosis:
    """The outcome's units and the signal's units are disjoint."""
    ex = _unit_text(x.units[0]) if x.units else "none"
    ey = _unit_text(y.units[0]) if y.units else "none"
    return Diagnosis(
        "no_common_units",
        "panel",
        f"outcome {describe(outcome)} has no units in common with the signal {describe(signal)} "
        f"({len(x.units)} signal units such as {{{ex}}}; {len(y.units)} outcome units such as {{{ey}}}); "
        "give both the same `by` labels and label values",
        "",
    )


__all__ = ["Survey", "describe", "empty", "leaves", "no_common_units", "structural"]
