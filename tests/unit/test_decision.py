"""The decision layer on hand-built evidence: order, gates, hysteresis, invariants."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.decision.decide import HysteresisState, decide, raw_state
from detector.evidence.results import (
    TEST_NAMES,
    CausalEvidence,
    ConstraintEvidence,
    EconomicsResult,
    EvidenceSet,
    MetaReport,
    Pressure,
    TestResult,
)
from detector.spec.pack import OBSERVABILITY, Constraint, ExceptionSpec, Hysteresis, Pack
from detector.spec.signals import Signal

META = MetaReport(0.0, 0.0, 0, 0, 0)
SIG = Signal(kind="gauge", metric="x", by=("u",))


def _pack(enter: int = 3, exit_: int = 6) -> Pack:
    names = [("a", "physics"), ("b", "architecture"), ("c", "resource")]
    cons = []
    prev: tuple[str, ...] = ()
    for n, layer in names:
        cons.append(Constraint(name=n, layer=layer, predecessors=prev, signal=SIG, outcome=SIG, target=1.0, units=("u",)))
        prev = (n,)
    return Pack(api_version="csf/v1", name="t", version="1", constraints=tuple(cons),
                hysteresis=Hysteresis(enter_after=enter, exit_after=exit_, dead_band=0.1))


def _causal(passed: int, inconclusive: int = 0) -> CausalEvidence:
    results = ["PASS"] * passed + ["INCONCLUSIVE"] * inconclusive
    results += ["FAIL"] * (5 - len(results))
    tests = tuple(TestResult(n, r, 1.0, 0.01, 100, "r") for n, r in zip(TEST_NAMES, results, strict=True))  # type: ignore[arg-type]
    if passed >= 3:
        verdict = "causal"
    elif inconclusive <= 1:
        verdict = "proxy"
    else:
        verdict = "insufficient_data"
    return CausalEvidence(verdict, passed, inconclusive, tests, 2.5, "r")  # type: ignore[arg-type]


def _ev(c: Constraint, ratio: float | None, passed: int = 5, missing: tuple[str, ...] = (), roi: float = 10.0,
        inconclusive: int = 0, exception: str | None = None, sustained: bool = True) -> ConstraintEvidence:
    p = None if ratio is None else Pressure(ratio * c.target, ratio, sustained, 24 if ratio > 1 else 0, 24)
    econ = EconomicsResult(revenue_at_risk=1e6 * roi, roi=roi, theta=3.0, cost_per_year=1e5, exception=exception,
                           exception_reason="because" if exception else "")
    return ConstraintEvidence(constraint=c, missing=missing, pressure=p, causal=_causal(passed, inconclusive),
                              economics=econ)


def _evidence(pack: Pack, t: float, **ratios: float | None) -> EvidenceSet:
    return EvidenceSet(time=t, constraints=tuple(_ev(c, ratios.get(c.name, 0.5)) for c in pack.constraints))


def _run(pack: Pack, seq: list[dict[str, float | None]]) -> list:
    state = HysteresisState()
    out = []
    for i, ratios in enumerate(seq):
        ev, state = decide(pack, _evidence(pack, float(i), **ratios), state, META)
        out.append(ev)
    return out


def test_first_binding_in_order_wins_and_successors_are_deferred():
    pack = _pack(enter=1)
    ev = _run(pack, [{"a": 1.5, "b": 2.0, "c": 3.0}])[0]
    assert ev.binding == "a"
    assert ev.decision == "invest"
    states = {c.name: c.state for c in ev.constraints}
    assert states == {"a": "binding", "b": "deferred", "c": "deferred"}
    assert "predecessor a is binding" in ev.constraint("b").explanation


def test_enter_after_consecutive_evaluations():
    pack = _pack(enter=3)
    evs = _run(pack, [{"b": 1.5}] * 4)
    assert [e.binding for e in evs] == [None, None, "b", "b"]
    assert [e.candidate for e in evs] == ["b"] * 4
    assert evs[0].constraint("b").state == "at_limit"


def test_release_needs_pressure_below_dead_band_for_exit_after():
    pack = _pack(enter=1, exit_=3)
    # hovering just under 1 (inside the dead band) never releases
    evs = _run(pack, [{"a": 1.5}] + [{"a": 0.95}] * 10)
    assert all(e.binding == "a" for e in evs)
    evs = _run(pack, [{"a": 1.5}] + [{"a": 0.5}] * 4)
    assert [e.binding for e in evs] == ["a", "a", "a", None, None]
    assert evs[3].constraint("a").state == "resolved"
    assert evs[3].decision == "stop"


def test_no_flap_when_signal_hovers_at_target():
    pack = _pack(enter=3, exit_=6)
    seq = [{"a": r} for r in [1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.02, 1.01, 1.04, 0.98, 1.0, 1.02]]
    bindings = [e.binding for e in _run(pack, seq)]
    changes = sum(1 for x, y in zip(bindings, bindings[1:], strict=False) if x != y)
    assert changes <= 1


def test_missing_earlier_input_makes_binding_observability_at_once():
    pack = _pack(enter=3)
    state = HysteresisState()
    seq_ok = _evidence(pack, 0, b=1.5)
    for i in range(3):
        ev, state = decide(pack, replace(seq_ok, time=float(i)), state, META)
    assert ev.binding == "b"
    blind = EvidenceSet(time=10.0, constraints=(
        _ev(pack.constraint("a"), None, missing=("signal x",)),
        _ev(pack.constraint("b"), 1.5),
        _ev(pack.constraint("c"), 0.5),
    ))
    ev, state = decide(pack, blind, state, META)
    assert ev.binding == OBSERVABILITY
    assert ev.decision == "observe"
    assert ev.constraint("a").state == "observe"
    # inputs return: the previous answer is restored on the next evaluation
    ev, state = decide(pack, replace(seq_ok, time=11.0), state, META)
    assert ev.binding == "b"


def test_missing_later_input_does_not_hide_earlier_binding():
    pack = _pack(enter=1)
    evidence = EvidenceSet(time=0.0, constraints=(
        _ev(pack.constraint("a"), 1.5),
        _ev(pack.constraint("b"), 0.5),
        _ev(pack.constraint("c"), None, missing=("outcome y",)),
    ))
    ev, _ = decide(pack, evidence, HysteresisState(), META)
    assert ev.binding == "a"
    assert ev.constraint("c").state == "observe"


def test_proxy_is_investigated_never_invested():
    pack = _pack(enter=1)
    evidence = EvidenceSet(time=0.0, constraints=(
        _ev(pack.constraint("a"), 1.5, passed=1),
        _ev(pack.constraint("b"), 0.5),
        _ev(pack.constraint("c"), 0.5),
    ))
    ev, _ = decide(pack, evidence, HysteresisState(), META)
    a = ev.constraint("a")
    assert (a.state, a.decision) == ("proxy", "investigate")
    assert ev.binding is None
    assert ev.decision == "stop"
    assert "proxy" in a.explanation


def test_insufficient_causal_data_beyond_target_is_observe():
    pack = _pack(enter=1)
    evidence = EvidenceSet(time=0.0, constraints=(
        _ev(pack.constraint("a"), 1.5, passed=2, inconclusive=2),
        _ev(pack.constraint("b"), 0.5),
        _ev(pack.constraint("c"), 0.5),
    ))
    ev, _ = decide(pack, evidence, HysteresisState(), META)
    assert ev.constraint("a").state == "observe"
    assert ev.binding == OBSERVABILITY


def test_roi_below_theta_defers_unless_exception():
    pack = _pack(enter=1)
    low = EvidenceSet(time=0.0, constraints=(
        _ev(pack.constraint("a"), 1.5, roi=1.2),
        _ev(pack.constraint("b"), 0.5, roi=0.5),
        _ev(pack.constraint("c"), 0.5, roi=0.5),
    ))
    ev, _ = decide(pack, low, HysteresisState(), META)
    assert ev.binding == "a"
    assert ev.constraint("a").decision == "defer"
    assert ev.decision == "stop"  # nothing clears theta: optimisation paused
    exc = replace(low, constraints=(_ev(pack.constraint("a"), 1.5, roi=1.2, exception="existence"),
                                    *low.constraints[1:]))
    ev, _ = decide(pack, exc, HysteresisState(), META)
    assert ev.constraint("a").decision == "invest"
    assert "existence" in ev.constraint("a").explanation
    assert "ROI 1.20x is below theta 3.0, but existence: because" in ev.constraint("a").explanation


def test_an_exception_with_an_unknown_roi_says_so_plainly():
    """An existence constraint funds the fix whatever the ROI: when the ROI cannot be computed the
    explanation says it is unknown (it used to read 'ROI unknownx is below theta')."""
    pack = _pack(enter=1)
    a = _ev(pack.constraint("a"), 1.5, exception="existence")
    a = replace(a, economics=replace(a.economics, roi=None, revenue_at_risk=None))
    evidence = EvidenceSet(time=0.0, constraints=(a, *(_ev(pack.constraint(n), 0.5) for n in ("b", "c"))))
    ev, _ = decide(pack, evidence, HysteresisState(), META)
    why = ev.constraint("a").explanation
    assert ev.constraint("a").decision == "invest"
    assert "ROI is unknown, but existence: because" in why
    assert "unknownx" not in why


def test_one_way_door_blocks_invest():
    pack = _pack(enter=1)
    a = replace(pack.constraints[0], exceptions=ExceptionSpec(one_way_door_months=18))
    pack = replace(pack, constraints=(a, *pack.constraints[1:]))
    e = _ev(a, 1.5, roi=50.0)
    e = replace(e, economics=replace(e.economics, one_way_door_blocked=True))
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(e, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.constraint("a").decision == "defer"
    assert "one-way door" in ev.constraint("a").explanation


def test_not_sustained_is_not_binding():
    pack = _pack(enter=1)
    e = _ev(pack.constraint("a"), 1.5, sustained=False)
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(e, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.binding is None
    assert raw_state(pack, e).state == "at_limit"


def test_slo_regression_trigger():
    pack = _pack(enter=3)
    evs = _run(pack, [{"b": 0.9}, {"b": 1.2}])
    assert "b:slo_regression" in evs[1].triggers
    assert evs[0].triggers == ()


ratio_st = st.one_of(st.none(), st.floats(0.1, 3.0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ratio_st, ratio_st, ratio_st, st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=25),
       st.integers(1, 4), st.integers(1, 6))
def test_invariants_hold_on_any_sequence(steps, enter, exit_):
    pack = _pack(enter=enter, exit_=exit_)
    state = HysteresisState()
    history = []
    for i, (ra, rb, rc, pa, pb, pc) in enumerate(steps):
        cons = []
        for c, r, p in zip(pack.constraints, (ra, rb, rc), (pa, pb, pc), strict=True):
            cons.append(_ev(c, r, passed=p, missing=("gone",) if r is None else ()))
        evidence = EvidenceSet(time=float(i), constraints=tuple(cons))
        ev, state = decide(pack, evidence, state, META)
        history.append(ev)
        binding_states = [c.name for c in ev.constraints if c.state == "binding"]
        assert len(binding_states) <= 1
        if ev.binding not in (None, OBSERVABILITY):
            assert binding_states == [ev.binding]
            for anc in pack.ancestors(ev.binding):
                assert ev.constraint(anc).state != "binding"
            for c in ev.constraints:
                if ev.binding in pack.ancestors(c.name):
                    assert c.state != "binding"
        # an unobservable constraint before any candidate means observability, at once
        for c in pack.constraints:
            r = ev.constraint(c.name)
            if r.state == "observe":
                assert ev.binding == OBSERVABILITY
                break
            if r.candidate:
                break
        for r in ev.constraints:
            if r.state != "binding":
                assert r.decision != "invest"
        if ev.binding in (None, OBSERVABILITY):
            assert ev.decision != "invest"
    # replaying the same evidence gives the same verdicts
    state2 = HysteresisState()
    for i, (ra, rb, rc, pa, pb, pc) in enumerate(steps):
        cons = [_ev(c, r, passed=p, missing=("gone",) if r is None else ())
                for c, r, p in zip(pack.constraints, (ra, rb, rc), (pa, pb, pc), strict=True)]
        ev2, state2 = decide(pack, EvidenceSet(time=float(i), constraints=tuple(cons)), state2, META)
        assert ev2.to_dict() == history[i].to_dict()


def test_beyond_target_on_too_little_history_is_observe_not_healthy():
    pack = _pack(enter=1)
    a = pack.constraint("a")
    young = replace(_ev(a, 1.5, sustained=False), pressure=Pressure(1.5, 1.5, False, 1, 1))
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(young, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.constraint("a").state == "observe"
    assert "not enough history" in ev.constraint("a").explanation
    assert ev.binding == OBSERVABILITY and ev.decision == "observe"
    # with a full day of windows, a short excursion is simply not sustained
    brief = replace(_ev(a, 1.5, sustained=False), pressure=Pressure(1.5, 1.5, False, 3, 24))
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(brief, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.constraint("a").state == "at_limit" and ev.binding is None


def test_beyond_target_on_a_sparse_panel_is_observe():
    pack = _pack(enter=1)
    a = pack.constraint("a")
    sparse = replace(_ev(a, 1.5), coverage=0.2)
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(sparse, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.constraint("a").state == "observe"
    assert "20% of the 7-day panel" in ev.constraint("a").explanation
    # within target, a sparse panel does not matter: the value itself is within target
    calm = replace(_ev(a, 0.5), coverage=0.2)
    ev, _ = decide(pack, EvidenceSet(time=0.0, constraints=(calm, *(_ev(c, 0.5) for c in pack.constraints[1:]))),
                   HysteresisState(), META)
    assert ev.constraint("a").state == "slack"


def test_parameter_drift_reaches_the_binding_constraints_own_triggers():
    """Revenue at risk of the published binding moving > 25% from its value at entry is a
    trigger of the evaluation AND of that constraint's result."""
    pack = _pack(enter=1)
    a = pack.constraints[0]

    def evidence(t: float, roi: float) -> EvidenceSet:
        rest = tuple(_ev(c, 0.5) for c in pack.constraints[1:])
        return EvidenceSet(time=t, constraints=(_ev(a, 1.5, roi=roi), *rest))

    state = HysteresisState()
    first, state = decide(pack, evidence(0.0, 10.0), state, META)
    assert first.binding == "a" and not any("parameter_drift" in t for t in first.triggers)
    steady, state = decide(pack, evidence(1.0, 11.0), state, META)  # +10%: no drift
    assert not any("parameter_drift" in t for t in steady.triggers)
    drifted, state = decide(pack, evidence(2.0, 14.0), state, META)  # +40% revenue at risk
    assert "a:parameter_drift" in drifted.triggers
    assert "a:parameter_drift" in drifted.constraint("a").triggers
    assert all("parameter_drift" not in t for c in drifted.constraints if c.name != "a" for t in c.triggers)


def test_a_proven_binding_without_a_revenue_model_is_investigate_and_says_so():
    from detector.evidence.economics import assess
    from detector.spec.pack import EconomicsSpec

    pack = _pack(enter=1)
    a = replace(pack.constraints[0], economics=EconomicsSpec(model="none"))
    pack = replace(pack, constraints=(a, *pack.constraints[1:]))
    econ = assess(
        name="a", spec=a.economics, exceptions=a.exceptions, constants=pack.economics,
        organisation=pack.organisation, causal_settings=pack.causal, x=1.5, target=1.0,
        inputs={}, histograms={}, gamma=2.5, current_dau=None, roi_of={},
    )
    assert econ.roi is None
    ev_a = replace(_ev(a, 1.5), economics=econ)
    evidence = EvidenceSet(time=0.0, constraints=(ev_a, *(_ev(c, 0.5) for c in pack.constraints[1:])))
    ev, _ = decide(pack, evidence, HysteresisState(), META)
    assert ev.binding == "a"
    r = ev.constraint("a")
    assert r.state == "binding" and r.decision == "investigate"
    assert "without a revenue model" in r.explanation and "unknownx" not in r.explanation
    assert ev.decision == "investigate"  # not 'stop', not a silent 'defer'
    # a model whose input is missing is a different case: defer, and the text says why
    b = replace(_ev(a, 1.5), economics=replace(econ, roi=None))
    c_model = replace(a, economics=EconomicsSpec(model="weibull", weibull_lambda=3.0, weibull_k=2.0, affected="dau"))
    evidence = EvidenceSet(time=0.0, constraints=(replace(b, constraint=c_model), *(_ev(c, 0.5) for c in pack.constraints[1:])))
    pack2 = replace(pack, constraints=(c_model, *pack.constraints[1:]))
    ev2, _ = decide(pack2, evidence, HysteresisState(), META)
    assert ev2.constraint("a").decision == "defer"
    assert "ROI cannot be computed" in ev2.constraint("a").explanation
