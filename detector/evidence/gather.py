"""Evidence gathering: source -> panels -> per-constraint evidence.

`gather_evidence` reads a `Source` at one instant and returns, for every constraint
of the pack, its pressure, causal tests, guards and economics. It makes no
decision (that is `detector.decision.decide`). Missing or stale inputs are recorded as
`missing`, never replaced by a default.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from opentelemetry.trace import NoOpTracer, Tracer

from detector.evidence import causal, diagnose, economics
from detector.evidence.results import (
    CausalEvidence,
    ConstraintEvidence,
    Diagnosis,
    EvidenceSet,
    Pressure,
    SignalWindow,
)
from detector.source.frame import Labels, SeriesSurvey, SignalFrame, Source, SourceError, effective_range
from detector.spec.pack import ApplicabilityGuard, Constraint, Pack, ProtocolFloorGuard
from detector.spec.signals import Signal

_NOOP_TRACER = NoOpTracer()
log = logging.getLogger(__name__)


@dataclass
class _Reader:
    """Counts queries and samples; memoises identical queries inside one evaluation.

    Every query is first fitted to the data (`fit`): its unpinned windows are widened to
    four sample intervals of its input series, as the source reports them (`survey`).
    Sources that cannot survey (replays, test doubles) are queried as the pack says.
    """

    source: Source
    now: float = 0.0
    lookback: float = 0.0
    queries: int = 0
    samples_read: int = 0
    cache: dict[tuple[Signal, float, float, float], SignalFrame] = field(default_factory=dict)
    surveys: dict[tuple[str, tuple[tuple[str, ...], ...]], SeriesSurvey | None] = field(default_factory=dict)

    def survey(self, metric: str, matchers: tuple[tuple[str, ...], ...]) -> SeriesSurvey | None:
        key = (metric, tuple(matchers))
        if key in self.surveys:
            return self.surveys[key]
        fn = getattr(self.source, "survey", None)
        result = None
        if callable(fn):
            try:
                result = fn(metric, matchers, self.now, self.lookback)
            except SourceError as exc:
                # A source that answers range queries but not the survey's (a proxy that
                # allows query_range only) is still read, over the pack's own windows.
                log.warning("cannot survey %s: %s; using the pack's range", metric, exc)
        self.surveys[key] = result
        return result

    def interval(self, signal: Signal) -> float | None:
        """The coarsest sample interval among the series the signal's windows read."""
        found = []
        for leaf in diagnose.leaves(signal):
            if leaf.kind == "gauge":
                continue
            for metric in leaf.metrics():
                sv = self.survey(metric, leaf.matchers)
                if sv is not None and sv.sample_interval is not None:
                    found.append(sv.sample_interval)
        return max(found) if found else None

    def fit(self, signal: Signal) -> Signal:
        """`signal` with every unpinned window at least four sample intervals long."""
        if all(leaf.kind == "gauge" for leaf in diagnose.leaves(signal)):
            return signal
        iv = self.interval(signal)
        return signal if iv is None else signal.widened(effective_range(0.0, iv))

    def window(self, role: str, signal: Signal) -> SignalWindow:
        fitted = self.fit(signal)
        return SignalWindow(
            role=role,
            selector=diagnose.describe(signal),
            sample_interval=self.interval(signal),
            range=signal.range,
            effective_range=fitted.range,
            pinned=signal.pin_range,
        )

    def range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        signal = self.fit(signal)
        key = (signal, start, end, step)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        frame = self.source.query_range(signal, start, end, step)
        self.queries += 1
        self.samples_read += frame.samples_read
        self.cache[key] = frame
        return frame

    def instant(self, signal: Signal, t: float, step: float) -> SignalFrame:
        return self.range(signal, t, t, step)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def pressure_ratio(x: float, target: float, direction: str) -> float:
    if direction == "higher_is_better":
        return target / x if x > 0 else math.inf
    return x / target if target > 0 else math.inf


def _pressure(reader: _Reader, pack: Pack, c: Constraint, now: float) -> Pressure:
    assert c.signal is not None
    w = pack.windows
    sig = c.signal.platform().with_range(w.status_window)
    n_windows = max(1, int(round(w.sustained_window / w.status_window)))
    start = now - (n_windows - 1) * w.status_window
    series = reader.range(sig, start, now, w.status_window).scalar_series()
    x_now = float(series[-1]) if len(series) else float("nan")
    finite = series[np.isfinite(series)]
    ratios = np.array([pressure_ratio(float(v), c.target, c.direction) for v in finite])
    beyond = int(np.sum(ratios > 1.0))
    total = int(len(finite))
    sustained = total > 0 and beyond >= w.sustained_fraction * n_windows
    ratio = pressure_ratio(x_now, c.target, c.direction) if math.isfinite(x_now) else None
    return Pressure(
        x_now=x_now if math.isfinite(x_now) else None,
        ratio=ratio,
        sustained=bool(sustained),
        windows_beyond=beyond,
        windows_total=total,
    )


def _fresh(frame: SignalFrame, now: float, staleness: float) -> bool:
    """True when some unit has a value within the staleness window ending at now."""
    if frame.values.size == 0:
        return False
    recent = frame.times > now - staleness
    return bool(np.isfinite(frame.values[:, recent]).any())


def _panel(
    reader: _Reader, pack: Pack, c: Constraint, now: float
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...], list[Diagnosis]]:
    """Aligned, harm-oriented X and Y panels over the lookback; why a part cannot be used."""
    assert c.signal is not None and c.outcome is not None
    w = pack.windows
    n_steps = max(1, int(round(w.lookback / w.step)))
    start = now - (n_steps - 1) * w.step
    fx = reader.range(c.signal, start, now, w.step)
    fy = reader.range(c.outcome, start, now, w.step)
    problems: list[Diagnosis] = []
    for role, sig, frame in (("signal", c.signal, fx), ("outcome", c.outcome, fy)):
        found = diagnose.structural(role, sig, reader.survey, w.lookback)
        if found is None and not _fresh(frame, now, w.staleness):
            found = diagnose.empty(role, reader.fit(sig), frame, reader.survey, now, w.staleness)
        if found is not None:
            problems.append(found)
    ykeys = {u: i for i, u in enumerate(fy.units)}
    common = [u for u in fx.units if u in ykeys]
    if not problems and not common:
        problems.append(diagnose.no_common_units(fx, fy, c.signal, c.outcome))
    xkeys: dict[Labels, int] = {}
    for i, u in enumerate(fx.units):
        xkeys.setdefault(u, i)  # the first occurrence, as tuple.index (linear, not quadratic, in units)
    xi = [xkeys[u] for u in common]
    yi = [ykeys[u] for u in common]
    x = fx.values[xi, :] if common else np.empty((0, len(fx.times)))
    y = fy.values[yi, :] if common else np.empty((0, len(fy.times)))
    if c.direction == "higher_is_better":
        x = -x
    if c.outcome_direction == "higher_is_better":
        y = -y
    strata = tuple(dict(u).get(c.stratum, "") if c.stratum else "" for u in common)
    segments = tuple(dict(u).get(c.segment, "") if c.segment else "" for u in common)
    return x, y, strata, segments, problems


def _protocol_floor(
    reader: _Reader, pack: Pack, g: ProtocolFloorGuard, now: float
) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    frame = reader.instant(g.share.with_range(pack.windows.status_window), now, pack.windows.step)
    rates: dict[str, float] = {}
    for unit, row in zip(frame.units, frame.values, strict=True):
        v = float(row[-1])
        if math.isfinite(v):
            proto = dict(unit).get(g.label, "")
            rates[proto] = rates.get(proto, 0.0) + v
    total = sum(rates.values())
    if total <= 0:
        return None, ()
    floors = dict(g.floors)
    shares = {p: r / total for p, r in rates.items()}
    cumulative = 0.0
    floor: float | None = None
    for proto, fl in sorted(floors.items(), key=lambda kv: -kv[1]):
        cumulative += shares.get(proto, 0.0)
        if cumulative >= g.tail_share:
            floor = fl
            break
    figures = tuple(sorted((f"share_{p}", s) for p, s in shares.items()))
    return floor, figures


def _guards(
    reader: _Reader, pack: Pack, c: Constraint, now: float, pressure: Pressure, inputs: Mapping[str, float]
) -> tuple[bool, str, bool, str, tuple[tuple[str, float], ...], list[str]]:
    """(guard_ok, guard_reason, applicable, applicability_reason, figures, missing)."""
    ok, reason, applicable, app_reason = True, "", True, ""
    figures: list[tuple[str, float]] = []
    missing: list[str] = []
    x = pressure.x_now
    for g in c.guards:
        if isinstance(g, ProtocolFloorGuard):
            floor, shares = _protocol_floor(reader, pack, g, now)
            figures.extend(shares)
            if floor is None:
                missing.append(f"protocol mix {g.share.metric} by {g.label}")
                continue
            figures.append(("protocol_floor", floor))
            if x is None:
                continue
            limit = floor * (1.0 + g.headroom)
            figures.append(("headroom_ratio", x / floor if floor > 0 else math.inf))
            if g.mode == "needs_headroom" and x <= limit:
                ok = False
                reason = (
                    f"no software headroom: {x:.3g} is within {g.headroom:.0%} of the protocol floor "
                    f"{floor:.3g}; the limit belongs to the protocol"
                )
            elif g.mode == "needs_exhausted":
                if floor < c.target:
                    ok = False
                    reason = f"the protocol floor {floor:.3g} is below the target {c.target:.3g}: protocol is not the limit"
                elif x > limit:
                    ok = False
                    reason = (
                        f"software headroom remains: {x:.3g} is more than {g.headroom:.0%} above the "
                        f"protocol floor {floor:.3g}"
                    )
        elif isinstance(g, ApplicabilityGuard):
            num, den = inputs.get(g.numerator), inputs.get(g.denominator)
            if not _finite(num) or not _finite(den) or not den:
                missing.append(f"applicability inputs {g.numerator}/{g.denominator}")
                continue
            assert num is not None and den is not None
            r = num / den
            figures.append((f"{g.numerator}_per_{g.denominator}", r))
            if r < g.min_ratio:
                applicable = False
                app_reason = f"{g.numerator}/{g.denominator} = {r:.3%} is below {g.min_ratio:.2%}: does not apply"
    return ok, reason, applicable, app_reason, tuple(figures), missing


def _inputs(reader: _Reader, pack: Pack, c: Constraint, now: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sig in c.inputs:
        frame = reader.instant(sig.platform().with_range(pack.windows.status_window), now, pack.windows.step)
        out[name] = frame.last() if frame.units else float("nan")
    return out


def _histogram(reader: _Reader, pack: Pack, metric: str, now: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-bucket (non-cumulative) rates of a classic histogram over the status window."""
    sig = Signal(kind="rate", metric=metric + "_bucket", by=("le",), range=pack.windows.status_window)
    frame = reader.instant(sig, now, pack.windows.step)
    pairs = []
    for unit, row in zip(frame.units, frame.values, strict=True):
        le = dict(unit).get("le")
        v = float(row[-1])
        if le is None or not math.isfinite(v):
            continue
        pairs.append((float(le), v))
    if not pairs:
        return None
    pairs.sort()
    bounds = np.array([p[0] for p in pairs])
    cumulative = np.maximum.accumulate(np.array([p[1] for p in pairs]))
    counts = np.diff(np.concatenate([[0.0], cumulative]))
    return bounds, counts


def _dau(reader: _Reader, pack: Pack, now: float) -> float | None:
    sig = pack.organisation.dau
    if sig is None:
        return None
    v = reader.instant(sig.platform(), now, pack.windows.step).last()
    return v if math.isfinite(v) else None


def gather_evidence(pack: Pack, source: Source, now: float, tracer: Tracer | None = None) -> EvidenceSet:
    """Every constraint's evidence at `now`. A SourceError makes every constraint `missing`.

    With a tracer, each constraint gets a span (samples read and CPU seconds as
    attributes) with one child span per causal test.
    """
    reader = _Reader(source, now=now, lookback=pack.windows.lookback)
    # A source that can share selections between the queries of one evaluation (NativeSource).
    scope = getattr(source, "scope", None)
    try:
        with scope() if callable(scope) else contextlib.nullcontext():
            return _gather(pack, reader, now, tracer or _NOOP_TRACER)
    except SourceError as exc:
        msg = f"source {getattr(source, 'name', 'source')} unavailable: {exc}"
        down = Diagnosis("source_unavailable", "source", msg)
        return EvidenceSet(
            time=now,
            constraints=tuple(
                ConstraintEvidence(constraint=c, missing=(msg,), diagnoses=(down,)) for c in pack.constraints
            ),
            source_up=False,
            source_error=str(exc),
            queries=reader.queries,
            samples_read=reader.samples_read,
        )


def _traced(tracer: Tracer, reader: _Reader, c: Constraint, compute: Callable[[], ConstraintEvidence]) -> ConstraintEvidence:
    with tracer.start_as_current_span(f"csf.constraint {c.name}") as span:
        samples0, queries0, cpu0 = reader.samples_read, reader.queries, time.process_time()
        ev = compute()
        span.set_attribute("csf.constraint", c.name)
        span.set_attribute("csf.samples_read", reader.samples_read - samples0)
        span.set_attribute("csf.queries", reader.queries - queries0)
        span.set_attribute("csf.cpu_seconds", time.process_time() - cpu0)
        if ev.missing:
            span.set_attribute("csf.missing", list(ev.missing))
        if ev.pressure is not None and ev.pressure.ratio is not None:
            span.set_attribute("csf.pressure_ratio", ev.pressure.ratio)
        if ev.causal is not None:
            span.set_attribute("csf.causal.verdict", ev.causal.verdict)
            span.set_attribute("csf.causal.passed", ev.causal.passed)
            for t in ev.causal.tests:
                with tracer.start_as_current_span(f"csf.test {t.name}") as ts:
                    ts.set_attribute("csf.test", t.name)
                    ts.set_attribute("csf.test.result", t.result)
                    ts.set_attribute("csf.test.n", t.n)
                    if t.p_value is not None and math.isfinite(t.p_value):
                        ts.set_attribute("csf.test.p_value", t.p_value)
        return ev


def _gather(pack: Pack, reader: _Reader, now: float, tracer: Tracer) -> EvidenceSet:
    dau = _dau(reader, pack, now)
    causal_cache: dict[tuple[Signal, Signal], CausalEvidence] = {}
    first: list[ConstraintEvidence] = []
    for c in pack.constraints:
        if c.kind == "meta":
            org = pack.organisation
            ratio = None
            pressure = None
            if org.analysis_hours is not None and org.capacity_hours:
                ratio = org.analysis_hours / org.capacity_hours
                limit = org.meta_overhead_limit
                pressure = Pressure(ratio, ratio / limit if limit > 0 else math.inf, True, int(ratio > limit), 1)
            first.append(ConstraintEvidence(constraint=c, overhead_ratio=ratio, pressure=pressure))
            continue
        first.append(
            _traced(tracer, reader, c, partial(_constraint_evidence, reader, pack, c, now, dau, causal_cache))
        )
    # Second pass: exceptions that depend on other constraints' ROI (enabling infrastructure).
    rois = {e.name: (e.economics.roi if e.economics else None) for e in first}
    final = []
    for e in first:
        if e.constraint.exceptions.enables and e.pressure and e.pressure.x_now is not None:
            e = _with_economics(pack, e, dau, rois)
        final.append(e)
    return EvidenceSet(
        time=now,
        constraints=tuple(final),
        dau=dau,
        queries=reader.queries,
        samples_read=reader.samples_read,
    )


def _constraint_evidence(
    reader: _Reader,
    pack: Pack,
    c: Constraint,
    now: float,
    dau: float | None,
    causal_cache: dict[tuple[Signal, Signal], CausalEvidence],
) -> ConstraintEvidence:
    assert c.signal is not None and c.outcome is not None
    pressure = _pressure(reader, pack, c, now)
    x, y, strata, segments, problems = _panel(reader, pack, c, now)
    panel_missing = bool(problems)
    if pressure.x_now is None and not problems:
        problems.append(
            Diagnosis(
                "no_data",
                "signal",
                f"signal {diagnose.describe(c.signal)}: no platform-wide value over the "
                f"{pack.windows.status_window / 60:g}-minute status window",
                diagnose.describe(c.signal),
            )
        )
    inputs = _inputs(reader, pack, c, now)
    guard_ok, guard_reason, applicable, app_reason, figures, guard_missing = _guards(
        reader, pack, c, now, pressure, inputs
    )
    problems.extend(Diagnosis("no_data", "guard", f"no value for {m}") for m in guard_missing)
    histograms = []
    if c.economics.streak_histogram:
        h = _histogram(reader, pack, c.economics.streak_histogram, now)
        if h is None:
            name = c.economics.streak_histogram
            problems.append(Diagnosis("no_data", "histogram", f"no bucket rates for histogram {name}", name))
        else:
            histograms.append((c.economics.streak_histogram, h))
    coverage = float(np.mean(np.isfinite(x) & np.isfinite(y))) if x.size else 0.0
    key = (c.signal, c.outcome)
    ce = causal_cache.get(key)
    if ce is None and not panel_missing:
        ce = causal.run_causal_tests(x, y, strata, segments, pack.causal)
        causal_cache[key] = ce
    ev = ConstraintEvidence(
        constraint=c,
        missing=tuple(d.message for d in problems),
        diagnoses=tuple(problems),
        windows=(reader.window("signal", c.signal), reader.window("outcome", c.outcome)),
        applicable=applicable,
        applicability_reason=app_reason,
        pressure=pressure,
        causal=ce,
        guard_ok=guard_ok,
        guard_reason=guard_reason,
        guards=figures,
        inputs=tuple(sorted(inputs.items())),
        histograms=tuple(histograms),
        coverage=coverage,
    )
    if pressure.x_now is None:
        return ev
    return _with_economics(pack, ev, dau, {})


def _with_economics(
    pack: Pack, ev: ConstraintEvidence, dau: float | None, rois: Mapping[str, float | None]
) -> ConstraintEvidence:
    c = ev.constraint
    assert ev.pressure is not None and ev.pressure.x_now is not None
    inputs = dict(ev.inputs)
    histograms = dict(ev.histograms)
    result = economics.assess(
        name=c.name,
        spec=c.economics,
        exceptions=c.exceptions,
        constants=pack.economics,
        organisation=pack.organisation,
        causal_settings=pack.causal,
        x=ev.pressure.x_now,
        target=c.target,
        inputs=inputs,
        histograms=histograms,
        gamma=ev.causal.gamma if ev.causal else None,
        current_dau=dau,
        roi_of=rois,
    )
    return replace(ev, economics=result)
