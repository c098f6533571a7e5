"""Windows that fit the data, and diagnoses that name the real cause.

Each test builds one situation a newcomer's data produces (5-minute samples, a renamed
metric, a missing unit label, buckets that differ between pods, ...) in a real
`SampleStore` from the simulator's latency scenario, evaluates the default pack over
`NativeSource`, and checks the machine-readable reason and the sentence it gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from functools import cache

import numpy as np

from detector.decision.decide import HysteresisState, decide
from detector.evidence.diagnose import describe
from detector.evidence.gather import gather_evidence
from detector.evidence.results import DIAGNOSIS_REASONS, EMPTY_META, ConstraintResult, Evaluation
from detector.sim.simulator import Simulator
from detector.source.frame import effective_range, learn_interval
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from detector.spec.pack import Pack
from detector.spec.signals import Signal

ORIGIN = 1_800_000_000.0
DAYS = 2.0
LOOKBACK = 2 * 86400.0
NOW = ORIGIN + DAYS * 86400 - 1.0

Transform = Callable[[str, dict[str, str], np.ndarray, np.ndarray], Iterator[tuple[str, dict[str, str], np.ndarray, np.ndarray]]]


def _pack(**signal_changes: Callable[[Signal], Signal]) -> Pack:
    pack = default_pack()
    pack = dataclasses.replace(pack, windows=dataclasses.replace(pack.windows, lookback=LOOKBACK))
    if signal_changes:
        cs = []
        for c in pack.constraints:
            if c.name == "latency":
                c = dataclasses.replace(
                    c, **{field: change(getattr(c, field)) for field, change in signal_changes.items()}
                )
            cs.append(c)
        pack = dataclasses.replace(pack, constraints=tuple(cs))
    return pack


def _store(interval: float, transform: Transform | None = None, until: float = NOW + 1) -> SampleStore:
    sim = Simulator("latency_binding", 3, origin=ORIGIN, interval=interval, history=DAYS * 86400 + 3600)
    store = SampleStore(retention=None)
    for name, _typ, labels, ts, vals in sim.generate(ORIGIN - 3600, until):
        if transform is None:
            store.append(name, labels, ts, vals)
            continue
        for n2, l2, t2, v2 in transform(name, dict(labels), ts, vals):
            store.append(n2, l2, t2, v2)
    return store


@cache
def _five_minute_store() -> SampleStore:
    return _store(300.0)


def _latency(store: SampleStore, pack: Pack, now: float = NOW) -> ConstraintResult:
    evidence = gather_evidence(pack, NativeSource(store), now)
    evaluation, _ = decide(pack, evidence, HysteresisState(), EMPTY_META, "t")
    return evaluation.constraint("latency")


def _reasons(r: ConstraintResult) -> list[str]:
    return [d.reason for d in r.diagnoses]


# --------------------------------------------------------------------------- the rule itself


def test_effective_range_is_four_intervals_never_below_the_pack_and_pinned_is_exact() -> None:
    assert effective_range(300.0, 15.0) == 300.0
    assert effective_range(300.0, 60.0) == 300.0
    assert effective_range(300.0, 300.0) == 1200.0
    assert effective_range(300.0, 300.2) == 1201.0  # scrape jitter rounds up to a whole second
    assert effective_range(300.0, 300.0, pinned=True) == 300.0
    assert effective_range(300.0, None) == 300.0
    # lost scrapes do not move the median spacing
    ts = np.arange(0.0, 3600.0, 300.0)
    assert learn_interval([np.delete(ts, [3, 7])]) == 300.0
    assert learn_interval([np.array([5.0])]) is None


def test_five_minute_data_gets_twenty_minute_windows_and_the_right_verdict() -> None:
    r = _latency(_five_minute_store(), _pack())
    assert r.diagnoses == ()
    assert r.state in ("binding", "at_limit")  # binding before hysteresis is 'at_limit' held 1 of 3
    assert r.candidate
    assert r.causal is not None and r.causal.passed >= 4
    windows = {w.role: w for w in r.windows}
    assert windows["signal"].sample_interval == 300.0
    assert windows["signal"].range == 300.0
    assert windows["signal"].effective_range == 1200.0
    assert windows["outcome"].effective_range == 1200.0
    assert not windows["signal"].pinned
    d = r.to_dict()
    assert d["windows"][0]["effective_range_seconds"] == 1200.0
    assert d["windows"][0]["sample_interval_seconds"] == 300.0


def test_one_minute_data_keeps_the_pack_range() -> None:
    r = _latency(_store(60.0), _pack())
    windows = {w.role: w for w in r.windows}
    assert windows["signal"].sample_interval == 60.0
    assert windows["signal"].effective_range == 300.0
    assert r.candidate and r.diagnoses == ()


def test_pinned_range_on_five_minute_data_says_too_sparse_not_missing() -> None:
    pin = lambda s: dataclasses.replace(s, pin_range=True)  # noqa: E731
    r = _latency(_five_minute_store(), _pack(signal=pin))
    assert r.state == "observe"
    (d,) = r.diagnoses
    assert d.reason == "too_sparse"
    assert d.subject == "signal"
    assert "one sample per 5m" in d.message and "5m window" in d.message
    assert "remove `pin_range` or set range >= 20m" in d.message
    assert "no fresh data" not in d.message
    assert {w.role: w.effective_range for w in r.windows}["signal"] == 300.0


# --------------------------------------------------------------------------- what the data lacks


def test_a_metric_name_that_matches_nothing_says_so() -> None:
    def rename(s: Signal) -> Signal:
        assert s.numerator is not None
        return dataclasses.replace(s, numerator=dataclasses.replace(s.numerator, metric="video_start_abandons_total"))

    r = _latency(_five_minute_store(), _pack(outcome=rename))
    assert r.state == "observe"
    (d,) = r.diagnoses
    assert d.reason == "no_series"
    assert d.subject == "outcome"
    assert d.selector == "video_start_abandons_total"
    assert "no series matched video_start_abandons_total in the last 2d" in d.message
    assert "check the metric name" in d.message
    assert r.to_dict()["diagnoses"][0]["reason"] == "no_series"


def test_stale_series_say_since_when() -> None:
    store = _store(300.0, until=NOW - 2 * 3600)
    r = _latency(store, _pack())
    assert r.state == "observe"
    reasons = _reasons(r)
    assert reasons[0] == "stale"
    d = r.diagnoses[0]
    assert "stale since 2027-01-" in d.message
    assert "staleness limit 15m" in d.message


def test_a_unit_label_absent_from_the_data_is_named() -> None:
    def drop_tier(name: str, labels: dict[str, str], ts: np.ndarray, vals: np.ndarray) -> Iterator:
        if name.startswith("video_start_latency_seconds"):
            if labels.get("device_tier") != "mid":
                return
            labels = {k: v for k, v in labels.items() if k != "device_tier"}
        yield name, labels, ts, vals

    r = _latency(_store(300.0, drop_tier), _pack())
    assert r.state == "observe"
    (d,) = r.diagnoses
    assert d.reason == "label_absent"
    assert d.subject == "signal"
    assert "unit label `device_tier` absent from the data of video_start_latency_seconds_bucket" in d.message
    assert "labels seen: le, region" in d.message


def test_outcome_without_units_in_common_with_the_signal() -> None:
    def shout(name: str, labels: dict[str, str], ts: np.ndarray, vals: np.ndarray) -> Iterator:
        if name in ("video_start_abandonments_total", "video_starts_total"):
            labels = {**labels, "region": labels["region"].upper()}
        yield name, labels, ts, vals

    r = _latency(_store(300.0, shout), _pack())
    assert r.state == "observe"
    (d,) = r.diagnoses
    assert d.reason == "no_common_units"
    assert "no units in common" in d.message
    assert "{device_tier=high, region=apac}" in d.message and "{device_tier=high, region=APAC}" in d.message


def test_histogram_buckets_that_differ_between_pods_are_detected() -> None:
    """Two pods of one unit with different `le` boundaries: summing by le is meaningless."""

    def two_pods(name: str, labels: dict[str, str], ts: np.ndarray, vals: np.ndarray) -> Iterator:
        if not name.startswith("video_start_latency_seconds"):
            yield name, labels, ts, vals
            return
        yield name, {**labels, "pod": "a"}, ts, vals / 2
        le = labels.get("le")
        if le is not None and le != "+Inf":
            labels = {**labels, "le": repr(float(le) * 2.5)}
        yield name, {**labels, "pod": "b"}, ts, vals / 2

    r = _latency(_store(300.0, two_pods), _pack())
    assert r.state == "observe"
    (d,) = r.diagnoses
    assert d.reason == "bucket_layout_mismatch"
    assert "histogram buckets of video_start_latency_seconds_bucket differ within unit" in d.message
    assert "pod=a has le" in d.message and "pod=b has le" in d.message
    assert not r.candidate


def test_ratio_messages_show_their_matchers() -> None:
    sig = Signal(
        kind="ratio",
        numerator=Signal(kind="rate", metric="http_requests_total", matchers=(("code", "500"),)),
        denominator=Signal(kind="rate", metric="http_requests_total"),
    )
    assert describe(sig) == 'http_requests_total{code="500"}/http_requests_total'


def test_every_reason_is_documented() -> None:
    import detector.evidence.diagnose as mod

    doc = mod.__doc__ or ""
    for reason in ("no_series", "label_absent", "bucket_layout_mismatch", "too_sparse", "stale", "no_common_units"):
        assert reason in DIAGNOSIS_REASONS
        assert f"``{reason}``" in doc


def test_a_source_without_survey_is_queried_as_the_pack_says() -> None:
    class Plain:
        name = "plain"

        def __init__(self, inner: NativeSource) -> None:
            self.inner = inner
            self.ranges: set[float] = set()

        def query_range(self, signal: Signal, start: float, end: float, step: float):  # type: ignore[no-untyped-def]
            if signal.kind != "gauge":
                self.ranges.add(signal.range)
            return self.inner.query_range(signal, start, end, step)

    plain = Plain(NativeSource(_five_minute_store()))
    pack = _pack()
    evidence = gather_evidence(pack, plain, NOW)
    assert 1200.0 not in plain.ranges and 300.0 in plain.ranges
    ev = evidence.get("latency")
    assert ev.windows[0].sample_interval is None and ev.windows[0].effective_range == 300.0
    assert isinstance(decide(pack, evidence, HysteresisState(), EMPTY_META, "t")[0], Evaluation)


def test_too_few_panel_points_is_its_own_reason() -> None:
    """Data for only the last 30 h of a 2-day panel: enough to see the pressure, too little for the tests."""

    def recent(name: str, labels: dict[str, str], ts: np.ndarray, vals: np.ndarray) -> Iterator:
        keep = ts >= NOW - 30 * 3600
        yield name, labels, ts[keep], vals[keep]

    pack = _pack()
    pack = dataclasses.replace(pack, windows=dataclasses.replace(pack.windows, min_coverage=0.9))
    r = _latency(_store(300.0, recent), pack)
    assert r.state == "observe"
    assert _reasons(r) == ["too_few_points"]
    assert "of the 2-day panel has data (needs 90%)" in r.diagnoses[0].message
