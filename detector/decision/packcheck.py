"""Pack check: a pack against real data, before waiting hours for verdicts (`csf pack check`,
whose arguments `detector.cli.pack` reads).

For every constraint and every signal it reads (signal, outcome, inputs, guard shares,
the organisation's DAU), against the real source at one instant:

* per selector: series found, label names, and which of the constraint's declared
  unit / stratum / segment labels are missing from them;
* per signal: units it yields, sample interval learned from the data, the effective
  range it is evaluated over (`detector.source.frame.effective_range`), coverage over the
  lookback (share of the (unit, step) points that have a value), and freshness
  (time of the newest value);
* per constraint: whether it can be judged, from one evaluation of the pack (the same
  `gather_evidence` + `decide` the service runs), with the diagnoses when it cannot.

The check is a report, not a verdict: a constraint "can be judged" when its state is
anything but ``observe``. Exit code 0 when every constraint can be judged, 1 when one
cannot (a Prometheus that does not answer makes every constraint `source_unavailable`),
2 on bad arguments, an invalid pack or an unreadable file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from detector.decision.decide import HysteresisState, decide
from detector.evidence import diagnose
from detector.evidence.gather import gather_evidence
from detector.evidence.results import EMPTY_META, Diagnosis
from detector.source.frame import SeriesSurvey, Source, SourceError, describe_selector, effective_range
from detector.spec.pack import Constraint, Pack, ProtocolFloorGuard
from detector.spec.signals import Signal
from detector.timefmt import format_duration, format_time


@dataclass(frozen=True)
class SelectorCheck:
    selector: str
    series: int
    label_names: tuple[str, ...]
    missing_labels: tuple[str, ...]
    sample_interval: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "series": self.series,
            "label_names": list(self.label_names),
            "missing_labels": list(self.missing_labels),
            "sample_interval_seconds": self.sample_interval,
        }


@dataclass(frozen=True)
class SignalCheck:
    role: str
    """'signal', 'outcome', 'input <name>', 'guard <label> share' or 'dau'."""
    description: str
    selectors: tuple[SelectorCheck, ...]
    units: int
    unit_example: str
    sample_interval: float | None
    range: float | None
    effective_range: float | None
    coverage: float
    newest: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "signal": self.description,
            "selectors": [s.to_dict() for s in self.selectors],
            "units": self.units,
            "unit_example": self.unit_example,
            "sample_interval_seconds": self.sample_interval,
            "range_seconds": self.range,
            "effective_range_seconds": self.effective_range,
            "coverage": self.coverage,
            "newest": format_time(self.newest) if self.newest is not None else None,
        }


@dataclass(frozen=True)
class ConstraintCheck:
    name: str
    state: str
    judged: bool
    explanation: str
    signals: tuple[SignalCheck, ...]
    diagnoses: tuple[Diagnosis, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "can_be_judged": self.judged,
            "state": self.state,
            "explanation": self.explanation,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "signals": [s.to_dict() for s in self.signals],
        }


@dataclass(frozen=True)
class PackCheck:
    pack: str
    source: str
    time: float
    lookback: float
    constraints: tuple[ConstraintCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.judged for c in self.constraints)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "source": self.source,
            "time": format_time(self.time),
            "lookback_seconds": self.lookback,
            "ok": self.ok,
            "constraints": [c.to_dict() for c in self.constraints],
        }


def _survey(source: Source, metric: str, matchers: Any, now: float, lookback: float) -> SeriesSurvey | None:
    fn = getattr(source, "survey", None)
    if not callable(fn):
        return None
    try:
        result = fn(metric, matchers, now, lookback)
    except SourceError:
        return None
    return result if isinstance(result, SeriesSurvey) else None


def _declared_labels(c: Constraint) -> tuple[str, ...]:
    labels = [*c.units, *(x for x in (c.stratum, c.segment) if x)]
    return tuple(dict.fromkeys(labels))


def check_signal(
    source: Source, pack: Pack, role: str, signal: Signal, now: float, declared: Sequence[str] = ()
) -> SignalCheck:
    """Series, labels, interval, window, units, coverage and freshness of one signal."""
    w = pack.windows
    selectors: list[SelectorCheck] = []
    intervals: list[float] = []
    for leaf in diagnose.leaves(signal):
        for metric in leaf.metrics():
            sv = _survey(source, metric, leaf.matchers, now, w.lookback)
            if sv is None:
                selectors.append(SelectorCheck(describe_selector(metric, leaf.matchers), -1, (), (), None))
                continue
            wanted = [*leaf.by, *(lbl for lbl in declared if lbl in leaf.by)]
            missing = tuple(dict.fromkeys(lbl for lbl in wanted if lbl not in sv.label_names))
            selectors.append(
                SelectorCheck(sv.selector(), sv.series, sv.label_names, missing, sv.sample_interval)
            )
            if sv.sample_interval is not None and leaf.kind != "gauge":
                intervals.append(sv.sample_interval)
    interval = max(intervals) if intervals else None
    ranged = any(leaf.kind != "gauge" for leaf in diagnose.leaves(signal))
    fitted = signal.widened(effective_range(0.0, interval)) if ranged and interval is not None else signal
    n_steps = max(1, int(round(w.lookback / w.step)))
    start = now - (n_steps - 1) * w.step
    try:
        frame = source.query_range(fitted, start, now, w.step)
    except SourceError:
        frame = None
    units = len(frame.units) if frame is not None else 0
    coverage = 0.0
    newest: float | None = None
    if frame is not None and frame.values.size:
        finite = np.isfinite(frame.values)
        coverage = float(finite.mean())
        any_t = finite.any(axis=0)
        if any_t.any():
            newest = float(frame.times[np.flatnonzero(any_t)[-1]])
    example = ", ".join(f"{k}={v}" for k, v in frame.units[0]) if frame is not None and frame.units else ""
    return SignalCheck(
        role=role,
        description=diagnose.describe(signal),
        selectors=tuple(selectors),
        units=units,
        unit_example=example,
        sample_interval=interval,
        range=signal.range if ranged else None,
        effective_range=fitted.range if ranged else None,
        coverage=coverage,
        newest=newest,
    )


def check_pack(pack: Pack, source: Source, now: float) -> PackCheck:
    """Every constraint of `pack` against `source` at `now` (see the module docstring)."""
    evidence = gather_evidence(pack, source, now)
    evaluation, _ = decide(pack, evidence, HysteresisState(), EMPTY_META, "check")
    results = {r.name: r for r in evaluation.constraints}
    checks: list[ConstraintCheck] = []
    for c in pack.constraints:
        r = results.get(c.name)
        signals: list[SignalCheck] = []
        if c.kind != "meta":
            declared = _declared_labels(c)
            roles: list[tuple[str, Signal | None]] = [("signal", c.signal), ("outcome", c.outcome)]
            roles += [(f"input {name}", sig.platform()) for name, sig in c.inputs]
            roles += [
                (f"guard {g.label} share", g.share.with_range(pack.windows.status_window))
                for g in c.guards
                if isinstance(g, ProtocolFloorGuard)
            ]
            for role, sig in roles:
                if sig is not None:
                    signals.append(check_signal(source, pack, role, sig, now, declared))
        state = r.state if r is not None else "observe"
        checks.append(
            ConstraintCheck(
                name=c.name,
                state=state,
                judged=state != "observe",
                explanation=r.explanation if r is not None else "not evaluated",
                signals=tuple(signals),
                diagnoses=r.diagnoses if r is not None else (),
            )
        )
    return PackCheck(pack.name, getattr(source, "name", "source"), now, pack.windows.lookback, tuple(checks))


# --------------------------------------------------------------------------- rendering


def _dur(v: float | None) -> str:
    return format_duration(v) if v is not None and math.isfinite(v) else "-"


def render_table(check: PackCheck, out: TextIO) -> None:
    out.write(
        f"pack {check.pack} against {check.source} at {format_time(check.time)} "
        f"(lookback {_dur(check.lookback)})\n\n"
    )
    head = f"{'constraint':<13} {'role':<30} {'series':>6} {'units':>5} {'interval':>9} {'window':>8} {'coverage':>8}  {'newest':<20}  signal"
    out.write(head + "\n")
    for c in check.constraints:
        for s in c.signals:
            series = (
                sum(max(0, x.series) for x in s.selectors) if all(x.series >= 0 for x in s.selectors) else -1
            )
            window = (
                f"{_dur(s.range)}>{_dur(s.effective_range)}"
                if s.range != s.effective_range
                else _dur(s.range)
            )
            newest = format_time(s.newest) if s.newest is not None else "never"
            out.write(
                f"{c.name:<13} {s.role[:30]:<30} {series if series >= 0 else '?':>6} {s.units:>5} "
                f"{_dur(s.sample_interval):>9} {window:>8} {s.coverage:>8.0%}  {newest:<20}  {s.description}\n"
            )
            for sel in s.selectors:
                if sel.series == 0:
                    out.write(f"{'':<13}   no series match {sel.selector}\n")
                elif sel.missing_labels:
                    out.write(
                        f"{'':<13}   {sel.selector}: declared label(s) {', '.join(sel.missing_labels)} absent "
                        f"(labels seen: {', '.join(sel.label_names) or 'none'})\n"
                    )
    out.write("\n")
    for c in check.constraints:
        if c.judged:
            out.write(f"ok      {c.name}: can be judged (state {c.state})\n")
        else:
            if not c.diagnoses:
                out.write(f"CANNOT  {c.name}: {c.explanation}\n")
            for i, d in enumerate(c.diagnoses):
                lead = f"CANNOT  {c.name}:" if i == 0 else " " * (len(c.name) + 9)
                out.write(f"{lead} [{d.reason}] {d.message}\n")
    verdict = "every constraint can be judged" if check.ok else "some constraints cannot be judged"
    out.write(f"\n{verdict}\n")


__all__ = [
    "ConstraintCheck",
    "PackCheck",
    "SelectorCheck",
    "SignalCheck",
    "check_pack",
    "check_signal",
]
