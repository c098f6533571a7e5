"""The decision layer: evidence + hysteresis counters -> one published verdict.

Pure: `decide(pack, evidence, state)` returns the evaluation and the next
hysteresis state; nothing here reads a clock or a source, so a verdict can be
replayed from the same data and counters (framework.md §4).

Rules, in order:
1. Per constraint, its *raw* state from evidence alone: ``observe`` (inputs missing
   or stale, or beyond target while the causal tests cannot decide),
   ``not_applicable`` (pack precondition false), ``proxy`` (beyond target, verdict
   proxy), candidate binding (sustained pressure > 1, causal, guards satisfied),
   ``at_limit`` (0.95 <= pressure <= 1, or beyond target but blocked by a guard or
   not yet sustained) or ``slack``.
2. The candidate c*: walk the pack's topological order; an ``observe`` constraint
   met before any candidate makes c* ``observability``; otherwise the first
   candidate (ties within one layer go to the larger revenue at risk).
3. Hysteresis: a new answer is published after it held for ``enter_after``
   consecutive evaluations; a published constraint is released only after its
   pressure stayed below ``1 - dead_band`` for ``exit_after`` evaluations (it then
   shows ``resolved``). ``observability`` is published at once (never keep
   publishing an old verdict while blind) and, when the inputs return, the
   previously published constraint is restored at once if it is still the answer.
4. Decisions: binding -> ``invest`` when causal and (ROI >= theta or an exception)
   and the one-way-door rule allows, else ``defer``; beyond-target successors of
   the binding constraint -> ``deferred``/``defer``; proxy -> ``investigate``;
   observe -> ``observe``; otherwise ``stop``. System decision: the binding
   constraint's decision, ``observe`` for observability, ``stop`` when nothing is
   binding or when no constraint's ROI clears theta and no exception applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from detector.evidence.economics import composite_pairs
from detector.evidence.results import (
    ConstraintEvidence,
    ConstraintResult,
    Diagnosis,
    Evaluation,
    EvidenceSet,
    MetaReport,
)
from detector.spec.pack import OBSERVABILITY, Constraint, Pack


@dataclass(frozen=True)
class HysteresisState:
    published: str | None = None
    pending: str | None = None
    pending_count: int = 0
    exit_count: int = 0
    before_blind: str | None = None
    """What was published before observability took over (restored at once when it is still the answer)."""
    resolved: frozenset[str] = frozenset()
    changes: int = 0
    evaluations: int = 0
    previous_ratios: tuple[tuple[str, float], ...] = ()
    previous_dau: float | None = None
    entry_revenue: float | None = None
    """Revenue at risk of the published constraint when it was published (drift trigger)."""


@dataclass(frozen=True)
class _Raw:
    state: str
    candidate: bool
    reason: str
    diagnosis: Diagnosis | None = None


def _fmt_ratio(r: float | None) -> str:
    return "unknown" if r is None or not math.isfinite(r) else f"{r:.2f}"


def _money(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "unknown"
    if abs(v) >= 1e6:
        return f"${v / 1e6:.2f}M/yr"
    if abs(v) >= 1e3:
        return f"${v / 1e3:.0f}K/yr"
    return f"${v:.0f}/yr"


def raw_state(pack: Pack, ev: ConstraintEvidence) -> _Raw:
    """A constraint's state from its own evidence (no order, no hysteresis)."""
    c = ev.constraint
    if c.kind == "meta":
        limit = pack.organisation.meta_overhead_limit
        r = ev.overhead_ratio
        if r is None:
            return _Raw("slack", False, "analysis overhead not declared; detector cost is reported in csf_meta_*")
        if r > limit:
            return _Raw("binding", True, f"analysis overhead {r:.0%} of capacity exceeds {limit:.0%}: the framework itself is the constraint")
        return _Raw("slack", False, f"analysis overhead {r:.0%} of capacity is within {limit:.0%}")
    if ev.missing:
        return _Raw("observe", False, "cannot judge: " + "; ".join(ev.missing))
    if not ev.applicable:
        return _Raw("not_applicable", False, ev.applicability_reason)
    p = ev.pressure
    ratio = p.ratio if p else None
    if ratio is None:
        return _Raw("observe", False, "cannot judge: no value for the signal")
    beyond = ratio > 1.0
    pressure_txt = f"pressure {ratio:.2f} ({p.x_now:.4g} vs target {c.target:.4g})" if p and p.x_now is not None else ""
    if beyond and p is not None:
        # Beyond target on too little history is "cannot judge yet", never healthy.
        w = pack.windows
        expected = max(1, int(round(w.sustained_window / w.status_window)))
        if not p.sustained and p.windows_total < w.sustained_fraction * expected:
            why = (
                f"{pressure_txt}, but only {p.windows_total} of the last {expected} status windows have data: "
                "not enough history to tell whether it is sustained"
            )
            return _Raw("observe", False, why, Diagnosis("too_little_history", "signal", why))
        if ev.coverage is not None and ev.coverage < w.min_coverage:
            why = (
                f"{pressure_txt}, but only {ev.coverage:.0%} of the {w.lookback / 86400:g}-day panel has data "
                f"(needs {w.min_coverage:.0%}) for the causal tests"
            )
            return _Raw("observe", False, why, Diagnosis("too_few_points", "panel", why))
    if beyond and p is not None and not p.sustained:
        return _Raw(
            "at_limit",
            False,
            f"{pressure_txt}, but beyond target in only {p.windows_beyond} of the last "
            f"{p.windows_total} status windows: not sustained",
        )
    if beyond:
        ce = ev.causal
        if ce is None or ce.verdict == "insufficient_data":
            why = ce.reason if ce else "no causal evidence"
            text = f"{pressure_txt} but the causal tests cannot decide: {why}"
            return _Raw("observe", False, text, Diagnosis("tests_undecided", "panel", text))
        if ce.verdict == "proxy":
            failed = ", ".join(ce.failed) or "none"
            return _Raw(
                "proxy",
                False,
                f"{pressure_txt} but only {ce.passed}/5 causal tests pass (failed: {failed}): "
                "likely a proxy for a confounder; investigate before investing",
            )
        if not ev.guard_ok:
            return _Raw("at_limit", False, f"{pressure_txt}, causal ({ce.passed}/5), but {ev.guard_reason}")
        return _Raw("binding", True, f"{pressure_txt}, sustained, causal ({ce.passed}/5 tests pass)")
    if ratio >= 0.95:
        return _Raw("at_limit", False, f"{pressure_txt}: at its limit")
    return _Raw("slack", False, f"{pressure_txt}: within target")


def _candidate(pack: Pack, evidence: EvidenceSet, raws: dict[str, _Raw]) -> tuple[str | None, str]:
    by_name = {e.name: e for e in evidence.constraints}
    for c in pack.constraints:
        r = raws[c.name]
        if r.state == "observe" and c.kind != "meta":
            return OBSERVABILITY, f"{c.name} cannot be judged ({r.reason}); nothing after it can be claimed"
        if r.candidate:
            # ties inside one layer go to the larger revenue at risk
            rivals = [
                o.name
                for o in pack.constraints
                if o.layer == c.layer and raws[o.name].candidate and not set(pack.ancestors(o.name)) & {c.name}
            ]
            best = max(rivals, key=lambda n: _revenue(by_name[n]))
            return best, raws[best].reason
    return None, "no constraint is beyond target with causal evidence"


def _revenue(ev: ConstraintEvidence) -> float:
    r = ev.economics.revenue_at_risk if ev.economics else None
    return r if r is not None and math.isfinite(r) else -1.0


def _hysteresis(
    pack: Pack, state: HysteresisState, candidate: str | None, ratios: dict[str, float | None]
) -> tuple[HysteresisState, bool]:
    """Next counters and whether the published binding changed."""
    h = pack.hysteresis
    pub = state.published
    new = state
    if candidate == OBSERVABILITY:
        if pub != OBSERVABILITY:
            before = pub if pub is not None else state.before_blind
            return replace(state, published=OBSERVABILITY, pending=None, pending_count=0, exit_count=0,
                           before_blind=before), True
        return state, False
    if pub == OBSERVABILITY:
        # inputs are back: restore the previous answer at once if it still holds
        if candidate is not None and candidate == state.before_blind:
            return replace(state, published=candidate, pending=None, pending_count=0, exit_count=0,
                           before_blind=None), True
        pub = state.before_blind
        new = replace(state, published=pub, before_blind=None)
        if pub is not None and candidate != pub:
            # the old answer no longer holds: count a fresh entry for the candidate
            new = replace(new, published=None)
            pub = None
        changed_from_blind = True
    else:
        changed_from_blind = False

    if candidate == pub:
        return replace(new, pending=None, pending_count=0, exit_count=0), changed_from_blind

    # a different answer (or none): count towards entering it
    if candidate is not None:
        count = new.pending_count + 1 if new.pending == candidate else 1
        if count >= h.enter_after:
            return replace(new, published=candidate, pending=None, pending_count=0, exit_count=0), True
        new = replace(new, pending=candidate, pending_count=count)
    else:
        new = replace(new, pending=None, pending_count=0)

    # release the published constraint only after it held below 1 - dead_band
    if pub is not None and pub != OBSERVABILITY:
        r = ratios.get(pub)
        if r is not None and math.isfinite(r) and r < 1.0 - h.dead_band:
            exits = new.exit_count + 1
            if exits >= h.exit_after:
                return replace(new, published=None, exit_count=0, resolved=new.resolved | {pub}), True
            new = replace(new, exit_count=exits)
        else:
            new = replace(new, exit_count=0)
    return new, changed_from_blind


def _constraint_decision(pack: Pack, ev: ConstraintEvidence) -> tuple[str, str]:
    """Decision for the published binding constraint."""
    e = ev.economics
    ce = ev.causal
    if ev.constraint.kind == "meta":
        return "stop", "stop analysing: analysis overhead exceeds its limit; act on what is known"
    if e is None or ce is None:
        return "defer", "economics unknown: cannot justify spending"
    if e.one_way_door_blocked:
        months = ev.constraint.exceptions.one_way_door_months
        return "defer", (
            f"one-way door: the {months:g}-month migration needs a runway of at least {2 * (months or 0):g} months "
            f"(have {pack.organisation.runway_months:g})"
        )
    roi = e.roi
    if roi is not None and roi >= e.theta:
        return "invest", f"ROI {roi:.1f}x clears theta {e.theta:.1f} ({_money(e.revenue_at_risk)} at risk)"
    if e.exception:
        below = "is unknown" if roi is None or not math.isfinite(roi) else f"{roi:.2f}x is below theta {e.theta:.1f}"
        return "invest", f"ROI {below}, but {e.exception}: {e.exception_reason}"
    if roi is None:
        if ev.constraint.economics.model == "none":
            # A proven bottleneck the pack gives no revenue model: page it, say what is unknown.
            return "investigate", (
                "proven bottleneck without a revenue model (economics: none): csf cannot say whether relieving "
                "it pays; relieve it, or add an economics model to weigh it against theta "
                f"{e.theta:.1f}"
            )
        return "defer", "ROI cannot be computed (an economics input has no value): cannot justify spending yet"
    return "defer", (
        f"ROI {_fmt_ratio(roi)}x is below theta {e.theta:.1f} with no exception: "
        f"it pays once ROI reaches {e.theta:.1f}"
    )


def decide(
    pack: Pack,
    evidence: EvidenceSet,
    state: HysteresisState,
    meta: MetaReport,
    pipeline: str = "default",
) -> tuple[Evaluation, HysteresisState]:
    """One evaluation's verdict from its evidence (framework.md §5): each constraint's raw state
    (`raw_state`), the candidate binding constraint (the first in sequence order beyond target,
    sustained and causally proven, or `observability` when an earlier one cannot be judged),
    hysteresis over evaluations (`state` in, the next state out), each constraint's state and
    decision (binding, deferred behind a binding predecessor, at_limit, resolved, ...), and the
    system's decision with its explanation, composite pairs and re-evaluation triggers."""
    raws = {e.name: raw_state(pack, e) for e in evidence.constraints}
    by_name = {e.name: e for e in evidence.constraints}
    ratios = {e.name: e.ratio for e in evidence.constraints}
    candidate, candidate_reason = _candidate(pack, evidence, raws)
    new_state, changed = _hysteresis(pack, state, candidate, ratios)
    published = new_state.published

    # resolved marks stay until the constraint is beyond target again
    resolved = {n for n in new_state.resolved if n != published and raws[n].state in ("slack", "at_limit")}
    triggers = _triggers(pack, evidence, state, ratios)
    view = _View(pack, published, candidate, new_state, resolved, _blocked_by(pack, published))
    results = [
        _constraint_result(view, c, by_name[c.name], raws[c.name], triggers) for c in pack.constraints
    ]
    system_decision, explanation = _system_decision(pack, published, results, candidate_reason, evidence)
    composite = _composite(pack, published, results)
    new_state = _next_state(new_state, changed, published, by_name, resolved, ratios, evidence)
    drift = _drift(pack, new_state, changed, published, by_name)
    if drift is not None:
        triggers = (*triggers, drift)
        # the binding constraint's own result carries it too, like its other triggers
        results = [replace(r, triggers=(*r.triggers, drift)) if r.name == published else r for r in results]
    hold = None
    if published and published != OBSERVABILITY and published in raws and not raws[published].candidate:
        h = pack.hysteresis
        hold = (published, new_state.exit_count, h.exit_after, 1.0 - h.dead_band)
    evaluation = Evaluation(
        hold=hold,
        pipeline=pipeline,
        time=evidence.time,
        binding=published,
        decision=system_decision,
        explanation=explanation,
        constraints=tuple(results),
        meta=meta,
        candidate=candidate,
        composite=composite,
        triggers=triggers,
        source_up=evidence.source_up,
        pack=f"{pack.name}@{pack.version}",
    )
    return evaluation, new_state


@dataclass(frozen=True)
class _View:
    """What every constraint's result is judged against in one evaluation."""

    pack: Pack
    published: str | None
    candidate: str | None
    state: HysteresisState
    resolved: set[str]
    blocked_by: dict[str, str]


def _blocked_by(pack: Pack, published: str | None) -> dict[str, str]:
    """Constraint -> the published binding constraint that precedes it in the sequence."""
    if not published or published == OBSERVABILITY:
        return {}
    return {c.name: published for c in pack.constraints if published in pack.ancestors(c.name)}


def _state_and_decision(view: _View, c: Constraint, ev: ConstraintEvidence, raw: _Raw) -> tuple[str, str, str]:
    """(state, decision, explanation) of one constraint in this evaluation."""
    pack, published, blocked_by = view.pack, view.published, view.blocked_by
    state_name, decision, why = raw.state, "stop", raw.reason
    if raw.state == "observe":
        decision = "observe"
    elif raw.state == "proxy":
        decision = "investigate"
    if c.name == published:
        decision, econ_why = _constraint_decision(pack, ev)
        why = f"binding: {raw.reason}; {econ_why}"
        if not raw.candidate:
            why += f" (held by hysteresis until pressure stays below {1 - pack.hysteresis.dead_band:.2f} for {pack.hysteresis.exit_after} evaluations)"
        return "binding", decision, why
    if raw.candidate:
        if c.name in blocked_by:
            return "deferred", "defer", f"deferred: predecessor {blocked_by[c.name]} is binding; {raw.reason}"
        if published == OBSERVABILITY:
            return "at_limit", "observe", f"{raw.reason}; not claimed while an earlier constraint cannot be judged"
        held = view.state.pending_count if view.state.pending == c.name else 0
        why = (
            f"{raw.reason}; becomes binding after {pack.hysteresis.enter_after} consecutive evaluations "
            f"(held {held})"
        )
        if view.candidate != c.name:
            why = f"{raw.reason}; an earlier constraint in the sequence takes precedence"
        return "at_limit", "defer", why
    if raw.state == "at_limit" and c.name in blocked_by and (ev.ratio or 0.0) > 1.0:
        return "deferred", "defer", f"deferred: predecessor {blocked_by[c.name]} is binding; {raw.reason}"
    if raw.state == "proxy" and c.name in blocked_by:
        return state_name, decision, f"{raw.reason} (predecessor {blocked_by[c.name]} is binding)"
    if raw.state in ("slack", "at_limit") and c.name in view.resolved:
        return "resolved", decision, f"resolved: was binding, now held within target; {raw.reason}"
    return state_name, decision, why


def _constraint_result(
    view: _View, c: Constraint, ev: ConstraintEvidence, raw: _Raw, triggers: tuple[str, ...]
) -> ConstraintResult:
    state_name, decision, why = _state_and_decision(view, c, ev, raw)
    return ConstraintResult(
        name=c.name,
        layer=c.layer,
        state=state_name,
        decision=decision,
        explanation=why,
        pressure=ev.pressure,
        target=c.target if c.kind != "meta" else view.pack.organisation.meta_overhead_limit,
        causal=ev.causal,
        economics=ev.economics,
        missing=ev.missing,
        diagnoses=ev.diagnoses + ((raw.diagnosis,) if raw.diagnosis is not None else ()),
        windows=ev.windows,
        guards=ev.guards,
        candidate=raw.candidate,
        triggers=tuple(t for t in triggers if t.startswith(c.name + ":")),
    )


def _composite(pack: Pack, published: str | None, results: list[ConstraintResult]) -> tuple[str, ...]:
    """The published constraint and its ROI twin when their ROIs lie within the composite band."""
    rois = {r.name: (r.economics.roi if r.economics else None) for r in results}
    if published and published != OBSERVABILITY and rois.get(published) is not None:
        for a, b in composite_pairs(rois, pack.economics.composite_band):
            if published in (a, b):
                return tuple(sorted((a, b)))
    return ()


def _next_state(
    new_state: HysteresisState,
    changed: bool,
    published: str | None,
    by_name: dict[str, ConstraintEvidence],
    resolved: set[str],
    ratios: dict[str, float | None],
    evidence: EvidenceSet,
) -> HysteresisState:
    """The hysteresis state carried to the next evaluation."""
    if changed:
        new_state = replace(new_state, changes=new_state.changes + 1)
        pub_ev = by_name.get(published) if published and published != OBSERVABILITY else None
        new_state = replace(
            new_state,
            entry_revenue=pub_ev.economics.revenue_at_risk if pub_ev and pub_ev.economics else None,
        )
    return replace(
        new_state,
        resolved=frozenset(resolved),
        evaluations=new_state.evaluations + 1,
        previous_ratios=tuple(sorted((k, v) for k, v in ratios.items() if v is not None)),
        previous_dau=evidence.dau,
    )


def _drift(
    pack: Pack,
    new_state: HysteresisState,
    changed: bool,
    published: str | None,
    by_name: dict[str, ConstraintEvidence],
) -> str | None:
    """``<binding>:parameter_drift`` when its revenue at risk moved beyond the drift threshold
    since it became binding."""
    if published and published != OBSERVABILITY and new_state.entry_revenue and not changed:
        rev = _revenue(by_name[published])
        if rev > 0 and abs(rev - new_state.entry_revenue) / new_state.entry_revenue > pack.economics.drift_threshold:
            return f"{published}:parameter_drift"
    return None


def _triggers(
    pack: Pack, evidence: EvidenceSet, state: HysteresisState, ratios: dict[str, float | None]
) -> tuple[str, ...]:
    out: list[str] = []
    prev = dict(state.previous_ratios)
    for name, r in ratios.items():
        p = prev.get(name)
        if r is not None and p is not None and p <= 1.0 < r:
            out.append(f"{name}:slo_regression")
    if evidence.dau is not None and state.previous_dau is not None:
        for tier in pack.organisation.dau_tiers:
            lo, hi = sorted((state.previous_dau, evidence.dau))
            if lo < tier <= hi:
                out.append(f"platform:scale_transition:{tier:.0f}")
    return tuple(out)


def _system_decision(
    pack: Pack,
    published: str | None,
    results: Sequence[ConstraintResult],
    candidate_reason: str,
    evidence: EvidenceSet,
) -> tuple[str, str]:
    if published == OBSERVABILITY:
        if not evidence.source_up:
            return "observe", f"the source is down ({evidence.source_error}): every constraint is unobserved"
        blind = next((r for r in results if r.state == "observe"), None)
        what = f"{blind.name}: {blind.explanation}" if blind else candidate_reason
        return "observe", f"observability first: {what}"
    if published is None:
        proxies = [r.name for r in results if r.state == "proxy"]
        extra = f"; beyond target but unproven: {', '.join(proxies)} (investigate)" if proxies else ""
        return "stop", f"healthy: nothing is binding, optimisation paused until conditions change{extra}"
    binding = next(r for r in results if r.name == published)
    if binding.decision in ("invest", "investigate"):
        return binding.decision, f"{published} is the binding constraint: {binding.explanation}"
    rois = [r.economics.roi for r in results if r.economics and r.economics.roi is not None]
    theta = binding.economics.theta if binding.economics else pack.economics.base_theta
    any_exception = any(r.economics and r.economics.exception for r in results)
    if rois and max(rois) < theta and not any_exception:
        return "stop", (
            f"{published} is binding but no constraint's ROI clears theta {theta:.1f} "
            f"(best {max(rois):.2f}x): optimisation paused; {binding.explanation}"
        )
    return binding.decision, f"{published} is the binding constraint: {binding.explanation}"
