"""The built-in simulator: metric contract, determinism, counters, scenarios and their causal structure.

Reference values are computed here from the generated samples with plain numpy
(histogram quantiles, ratios, correlations), never copied from the simulator.
"""

from __future__ import annotations

import math
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from itertools import product
from typing import Any

import numpy as np
import pytest

from detector.cli import main as csf_main
from detector.sim.collector import serve_simulator
from detector.sim.scenarios import SCENARIOS, Phase, ScenarioSpec
from detector.sim.simulator import BLOCK_STEPS, Simulator
from detector.source.openmetrics import parse_openmetrics

T0 = 1_790_000_040.0  # deliberately not aligned to a minute or a day
DAY = 86400.0
HOUR = 3600.0

# The input metric contract, restated from platform-pack.md.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "daily_active_users": ("gauge", ("region",)),
    "video_start_latency_seconds": ("histogram", ("region", "device_tier")),
    "video_starts_total": ("counter", ("region", "device_tier", "protocol")),
    "video_start_abandonments_total": ("counter", ("region", "device_tier")),
    "transcode_wait_seconds": ("histogram", ("region", "creator_tier")),
    "transcode_queue_depth": ("gauge", ("region",)),
    "gpu_quota_utilization_ratio": ("gauge", ("region",)),
    "active_creators": ("gauge", ("region", "creator_tier")),
    "creators_churned_total": ("counter", ("region", "creator_tier")),
    "first_sessions_total": ("counter", ("region", "skill_level")),
    "first_session_irrelevant_videos": ("histogram", ("region", "skill_level")),
    "first_session_early_exits_total": ("counter", ("region", "skill_level")),
    "user_actions_total": ("counter", ("region", "client")),
    "streak_reset_incidents_total": ("counter", ("region", "client")),
    "streak_length_at_reset_days": ("histogram", ("region", "client")),
    "users_churned_total": ("counter", ("region", "client")),
}
VALUES: dict[str, set[str]] = {
    "region": {"us", "eu", "apac"},
    "device_tier": {"low", "mid", "high"},
    "protocol": {"tcp_hls", "ll_hls", "quic_moq"},
    "creator_tier": {"hobby", "pro"},
    "skill_level": {"beginner", "expert"},
    "client": {"ios", "android", "web"},
}
KNOWN_BINDINGS = {None, "observability", "latency", "protocol", "supply", "cold_start", "consistency"}

Chunk = tuple[str, str, dict[str, str], np.ndarray, np.ndarray]


class FakeStore:
    """Records appends like SampleStore.append (name, labels, timestamps, values)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]] = {}

    def append(self, name: str, labels: Mapping[str, str], timestamps: Any, values: Any) -> None:
        key = (name, tuple(sorted(labels.items())))
        ts = np.atleast_1d(np.asarray(timestamps, dtype=float))
        vals = np.atleast_1d(np.asarray(values, dtype=float))
        if key in self.data:
            old_t, old_v = self.data[key]
            if len(ts) and len(old_t) and ts[0] <= old_t[-1]:
                raise AssertionError(f"{key}: appended out of order")
            ts, vals = np.concatenate([old_t, ts]), np.concatenate([old_v, vals])
        self.data[key] = (ts, vals)


def collect(sim: Simulator, t0: float, t1: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], Chunk]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Chunk] = {}
    for chunk in sim.generate(t0, t1):
        key = (chunk[0], tuple(sorted(chunk[2].items())))
        assert key not in out, f"series {key} yielded twice"
        out[key] = chunk
    return out


def snapshot(sim: Simulator, t: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every series' value at the grid point t."""
    return {k: float(c[4][0]) for k, c in collect(sim, t, t + sim.interval).items()}


def quantile_from_buckets(bounds: np.ndarray, counts: np.ndarray, q: float) -> float:
    """Prometheus-style quantile of one cumulative bucket vector (bounds ascending, last = +Inf)."""
    rank = q * counts[-1]
    j = int(np.searchsorted(counts, rank))
    lo = 0.0 if j == 0 else bounds[j - 1]
    below = 0.0 if j == 0 else counts[j - 1]
    if math.isinf(bounds[j]):
        return float(bounds[j - 1])
    return float(lo + (bounds[j] - lo) * (rank - below) / (counts[j] - below))


def window_stats(sim: Simulator, t_end: float, window: float = HOUR) -> dict[str, float]:
    """Platform-wide figures over (t_end - window, t_end], as the pack's signals define them."""
    a, b = snapshot(sim, t_end - window), snapshot(sim, t_end)

    def inc(name: str, **match: str) -> float:
        return sum(
            b[k] - a[k]
            for k in b
            if k[0] == name and all(dict(k[1]).get(lk) == lv for lk, lv in match.items())
        )

    def gauge(name: str) -> float:
        return sum(v for k, v in b.items() if k[0] == name)

    def p95(base: str) -> float:
        per_le: dict[float, float] = defaultdict(float)
        for k in b:
            if k[0] == base + "_bucket":
                per_le[float(dict(k[1])["le"])] += b[k] - a[k]
        bounds = np.array(sorted(per_le))
        return quantile_from_buckets(bounds, np.array([per_le[x] for x in bounds]), 0.95)

    starts = inc("video_starts_total")
    return {
        "latency_p95": p95("video_start_latency_seconds"),
        "tcp_share": inc("video_starts_total", protocol="tcp_hls") / starts,
        "ll_share": inc("video_starts_total", protocol="ll_hls") / starts,
        "transcode_p95": p95("transcode_wait_seconds"),
        "gpu": gauge("gpu_quota_utilization_ratio") / 3,
        "irrelevant_mean": inc("first_session_irrelevant_videos_sum")
        / inc("first_session_irrelevant_videos_count"),
        "incident_rate": inc("streak_reset_incidents_total") / inc("user_actions_total"),
        "creator_ratio": gauge("active_creators") / gauge("daily_active_users"),
        "dau": gauge("daily_active_users"),
    }


def protocol_floor(tcp: float, ll: float) -> float:
    """Pack rule: sort by floor descending, the first protocol whose cumulative share reaches 5%."""
    if tcp >= 0.05:
        return 0.370
    if tcp + ll >= 0.05:
        return 0.280
    return 0.100


# ---------------------------------------------------------------------------------- contract


def test_metric_contract_is_complete_and_exact() -> None:
    sim = Simulator("sequence", 1, origin=T0, history=0.0)
    data = collect(sim, T0, T0 + 10 * 60)
    expected_names: dict[str, str] = {}
    for metric, (typ, _labels) in CONTRACT.items():
        if typ == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                expected_names[metric + suffix] = typ
        else:
            expected_names[metric] = typ
    seen_types = {k[0]: c[1] for k, c in data.items()}
    assert seen_types == expected_names

    for metric, (typ, label_names) in CONTRACT.items():
        names = [metric + "_count"] if typ == "histogram" else [metric]
        for name in names:
            label_sets = [dict(k[1]) for k in data if k[0] == name]
            assert all(set(ls) == set(label_names) for ls in label_sets), name
            combos = {tuple(ls[n] for n in label_names) for ls in label_sets}
            assert combos == set(product(*(sorted(VALUES[n]) for n in label_names))), name
        if typ == "histogram":
            buckets = [dict(k[1]) for k in data if k[0] == metric + "_bucket"]
            assert all(set(b) == {*label_names, "le"} for b in buckets)
            les = {b["le"] for b in buckets}
            assert "+Inf" in les and len(les) >= 6
            per_unit = len(buckets) / len(combos)
            assert per_unit == len(les)
    for chunk in data.values():
        assert len(chunk[3]) == 10 and np.all(np.isfinite(chunk[4]))


def test_histogram_bounds_resolve_the_targets() -> None:
    sim = Simulator("healthy", 1, origin=T0, history=0.0)
    les: dict[str, set[float]] = defaultdict(set)
    for name, _typ, labels, _ts, _v in sim.generate(T0, T0 + 60):
        if name.endswith("_bucket"):
            les[name].add(float(labels["le"]))
    lat = les["video_start_latency_seconds_bucket"]
    assert {0.25, 0.3, 0.35, 0.4} <= lat  # p95 resolvable around the 0.300 target and the 0.370 floor
    assert {25.0, 30.0, 35.0} <= les["transcode_wait_seconds_bucket"]
    assert {float(i) for i in range(11)} <= les["first_session_irrelevant_videos_bucket"]
    assert {1.0, 3.0, 7.0, 14.0, 30.0, 60.0} <= les["streak_length_at_reset_days_bucket"]


def test_missing_outcome_never_emits_abandonments() -> None:
    sim = Simulator("missing_outcome", 1, origin=T0, history=DAY)
    names = {k[0] for k in collect(sim, T0 - DAY, T0 + HOUR)}
    assert "video_start_abandonments_total" not in names
    assert "video_starts_total" in names and "video_start_latency_seconds_bucket" in names
    assert len(names) == 12 + 4 * 3 - 1  # 12 plain metrics + 4 histograms x 3 series, minus the one omitted


# ---------------------------------------------------------------------------------- determinism


def _assert_same(a: dict[Any, Chunk], b: dict[Any, Chunk]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][3], b[key][3])
        np.testing.assert_array_equal(a[key][4], b[key][4], err_msg=str(key))


def test_chunking_does_not_change_samples() -> None:
    block = BLOCK_STEPS * 60.0
    t0 = T0 - 3 * HOUR
    t1 = T0 + block + 7 * 60 + 13  # crosses a noise block, not on the grid
    t2 = T0 + 2 * block + 5 * HOUR
    whole = collect(Simulator("feedback", 7, origin=T0), t0, t2)
    split_sim = Simulator("feedback", 7, origin=T0)
    first, second = collect(split_sim, t0, t1), collect(split_sim, t1, t2)
    joined = {
        k: (c[0], c[1], c[2], np.concatenate([c[3], second[k][3]]), np.concatenate([c[4], second[k][4]]))
        for k, c in first.items()
    }
    _assert_same(whole, joined)
    # Reverse order of requests on a fresh instance (different cache history) gives the same too.
    rev = Simulator("feedback", 7, origin=T0)
    late, early = collect(rev, t1, t2), collect(rev, t0, t1)
    _assert_same(second, late)
    _assert_same(first, early)


def test_seed_and_scenario_change_the_data() -> None:
    a = snapshot(Simulator("latency_binding", 1, origin=T0, history=0.0), T0 + HOUR)
    b = snapshot(Simulator("latency_binding", 2, origin=T0, history=0.0), T0 + HOUR)
    key = next(k for k in a if k[0] == "video_start_abandonments_total")
    assert a[key] != b[key]


def test_grid_and_other_intervals() -> None:
    sim = Simulator("healthy", 3, origin=T0, interval=15.0, history=HOUR)
    ts = sim.grid(T0 - 31, T0 + 46)
    np.testing.assert_array_equal(ts, T0 + 15.0 * np.arange(-2, 4))
    whole = collect(sim, T0, T0 + 2 * HOUR)
    parts = collect(Simulator("healthy", 3, origin=T0, interval=15.0, history=HOUR), T0 + HOUR, T0 + 2 * HOUR)
    for k, c in parts.items():
        np.testing.assert_array_equal(c[4], whole[k][4][240:])


def test_history_start_is_enforced() -> None:
    sim = Simulator("healthy", 1, origin=T0, history=2 * DAY)
    assert T0 - 3 * DAY < sim.history_start <= T0 - 2 * DAY
    with pytest.raises(ValueError, match="history start"):
        next(sim.generate(sim.history_start - 60, T0))
    with pytest.raises(ValueError, match="unknown scenario"):
        Simulator("nope", origin=T0)


# ---------------------------------------------------------------------------------- counters


def test_counters_and_histograms_are_cumulative_and_consistent() -> None:
    sim = Simulator("sequence", 5, origin=T0)
    data = collect(sim, T0 + 5.5 * DAY, T0 + 6.5 * DAY)  # spans the protocol -> supply phase change
    buckets: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, np.ndarray]]] = defaultdict(list)
    counts = {}
    for (name, labels), (_n, typ, lab, _ts, v) in data.items():
        if typ in ("counter", "histogram"):
            assert np.all(np.diff(v) >= 0), f"{name}{labels} decreases"
            assert v[-1] > 0
        if name.endswith("_bucket"):
            base = tuple(kv for kv in labels if kv[0] != "le")
            buckets[(name, base)].append((float(lab["le"]), v))
        if name.endswith("_count"):
            counts[(name[: -len("_count")] + "_bucket", labels)] = v
    for key, items in buckets.items():
        items.sort(key=lambda x: x[0])
        stacked = np.vstack([v for _le, v in items])
        assert np.all(np.diff(stacked, axis=0) >= -1e-9 * stacked[-1]), key  # cumulative over le
        np.testing.assert_array_equal(stacked[-1], counts[key])  # +Inf bucket == _count
    gpu = [c[4] for k, c in data.items() if k[0] == "gpu_quota_utilization_ratio"]
    assert all(np.all((g > 0) & (g < 1)) for g in gpu)


# ---------------------------------------------------------------------------------- scenarios


def test_every_scenario_has_a_contiguous_phase_table() -> None:
    required = {
        "sequence",
        "healthy",
        "latency_binding",
        "confounded",
        "missing_outcome",
        "feedback",
        "noisy",
    }
    assert required <= set(SCENARIOS)
    for name, spec in SCENARIOS.items():
        sim = Simulator(name, origin=T0)
        phases = sim.phases
        assert phases and all(isinstance(p, Phase) for p in phases)
        assert phases[0].start_offset_s == 0
        for prev, cur in zip(phases, phases[1:], strict=False):
            assert cur.start_offset_s == prev.end_offset_s
        for p in phases:
            assert p.expected_binding in KNOWN_BINDINGS
            mid = T0 + (p.start_offset_s + p.end_offset_s) / 2
            assert sim.phase_at(mid) == p
        assert sim.phase_at(T0 - 5 * DAY) == phases[0]
        assert sim.phase_at(T0 + spec.duration_s + DAY) == phases[-1]
    seq = SCENARIOS["sequence"].phases
    assert [p.expected_binding for p in seq] == [
        "latency",
        "protocol",
        "supply",
        "cold_start",
        "consistency",
        None,
    ]
    assert all(abs((p.end_offset_s - p.start_offset_s) - 3 * DAY) < 1 for p in seq)
    assert SCENARIOS["latency_binding"].phases[0].expected_binding == "latency"
    assert SCENARIOS["healthy"].phases[0].expected_binding is None
    assert SCENARIOS["missing_outcome"].phases[0].expected_binding == "observability"


def test_latency_binding_p95_above_target_healthy_below() -> None:
    for name, above in (("latency_binding", True), ("healthy", False)):
        sim = Simulator(name, 1, origin=T0, history=HOUR)
        for hours in (1, 9, 17, 30):
            p95 = window_stats(sim, T0 + hours * HOUR)["latency_p95"]
            if above:
                assert 0.45 < p95 < 0.85, (name, hours, p95)
            else:
                assert 0.1 < p95 < 0.3 * 0.85, (name, hours, p95)


def test_sequence_moves_the_binding_constraint() -> None:
    """Pressure crosses 1 only where each constraint should bind (pack rules applied to the data)."""
    sim = Simulator("sequence", 1, origin=T0)
    targets = {"latency_p95": 0.300, "transcode_p95": 30.0, "irrelevant_mean": 1.0, "incident_rate": 1e-5}
    beyond = {
        "latency": {"latency_p95"},
        "protocol": {"latency_p95"},
        "supply": {"transcode_p95"},
        "cold_start": {"irrelevant_mean"},
        "consistency": {"incident_rate"},
        None: set(),
    }
    for phase in sim.phases:
        for frac in (0.35, 0.7, 0.99):
            t = T0 + phase.start_offset_s + frac * (phase.end_offset_s - phase.start_offset_s)
            s = window_stats(sim, t)
            pressure = {k: s[k] / v for k, v in targets.items()}
            for key, value in pressure.items():
                if key in beyond[phase.expected_binding]:
                    assert value > 1.05, (phase.name, key, value)
                else:
                    assert value < 0.85, (phase.name, key, value)
            floor = protocol_floor(s["tcp_share"], s["ll_share"])
            if phase.expected_binding == "latency":
                assert s["latency_p95"] > 1.10 * floor  # software headroom: latency, not protocol
            if phase.expected_binding == "protocol":
                assert floor >= 0.300 and 0.300 < s["latency_p95"] <= 1.10 * floor
            if phase.expected_binding in ("latency", "protocol"):
                assert s["tcp_share"] >= 0.05
            else:
                assert s["tcp_share"] < 0.05 and floor < 0.300  # migration landed
            assert (s["gpu"] >= 0.9) == (phase.expected_binding == "supply"), (phase.name, s["gpu"])
            assert s["creator_ratio"] >= 0.005  # supply stays applicable
    dau_start = window_stats(sim, T0 + HOUR)["dau"]
    dau_end = window_stats(sim, T0 + 18 * DAY)["dau"]
    assert 2.9e6 < dau_start < 3.2e6 and 18e6 < dau_end <= 20e6


# ---------------------------------------------------------------------------------- causal structure


def latency_panel(sim: Simulator, t0: float, t1: float, step: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """Unit x step panel of X = p95 latency and Y = abandonment ratio, per 5-minute step."""
    buckets: dict[tuple[str, str], dict[float, np.ndarray]] = defaultdict(dict)
    aband: dict[tuple[str, str], np.ndarray] = {}
    starts: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(1))
    for name, _typ, labels, _ts, v in sim.generate(t0, t1):
        if name.startswith("video_start"):
            unit = (labels["region"], labels["device_tier"])
            if name == "video_start_latency_seconds_bucket":
                buckets[unit][float(labels["le"])] = v
            elif name == "video_start_abandonments_total":
                aband[unit] = v
            elif name == "video_starts_total":
                starts[unit] = starts[unit] + v
    k = round(step / sim.interval)
    xs, ys = [], []
    for unit in sorted(buckets):
        bounds = np.array(sorted(buckets[unit]))
        cum = np.vstack([buckets[unit][b][::k] for b in bounds])
        inc = np.diff(cum, axis=1)
        xs.append([quantile_from_buckets(bounds, inc[:, j], 0.95) for j in range(inc.shape[1])])
        ys.append(np.diff(aband[unit][::k]) / np.diff(starts[unit][::k]))
    return np.array(xs), np.array(ys)


def two_way_demean(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    return a - a.mean(axis=0, keepdims=True)


def panel_figures(name: str) -> dict[str, float]:
    sim = Simulator(name, 1, origin=T0, history=0.0)
    x, y = latency_panel(sim, T0, T0 + DAY + 1)
    xd, yd = two_way_demean(x), two_way_demean(y)
    lagged = float(np.corrcoef(xd[:, :-2].ravel(), yd[:, 2:].ravel())[0, 1])  # Y(t) vs X(t - 10 min)
    between = float(np.corrcoef(x.mean(axis=1), y.mean(axis=1))[0, 1])
    # Reverse link: does past Y help predict X beyond X's own past?
    design = np.column_stack([xd[:, 2:-1].ravel(), yd[:, 1:-2].ravel()])
    coef = np.linalg.lstsq(design, xd[:, 3:].ravel(), rcond=None)[0]
    return {"lagged": lagged, "between": between, "reverse": float(coef[1] * yd.std() / xd.std())}


def test_true_effect_is_within_unit_and_one_way() -> None:
    f = panel_figures("latency_binding")
    assert f["lagged"] > 0.6
    assert abs(f["reverse"]) < 0.1


def test_confounded_correlates_between_units_only() -> None:
    f = panel_figures("confounded")
    assert f["between"] > 0.9
    assert abs(f["lagged"]) < 0.15


def test_feedback_has_a_reverse_link() -> None:
    f = panel_figures("feedback")
    assert f["lagged"] > 0.6
    assert f["reverse"] > 0.2


def test_noisy_effect_is_present_but_weaker() -> None:
    strong = panel_figures("latency_binding")["lagged"]
    noisy = panel_figures("noisy")["lagged"]
    assert 0.25 < noisy < strong - 0.15


# ---------------------------------------------------------------------------------- store adapters


def test_write_to_and_advance_to() -> None:
    sim = Simulator("healthy", 1, origin=T0)
    store = FakeStore()
    assert sim.advance_to(store, T0 + HOUR) == 0  # nothing before write_to sets a start
    n = sim.write_to(store, T0 - HOUR, T0)
    n_series = len(store.data)
    assert n == n_series * 60
    wrote = sim.advance_to(store, T0 + 10 * 60)  # grid points T0 .. T0+10min inclusive
    assert wrote == n_series * 11
    assert sim.advance_to(store, T0 + 10 * 60 + 30) == 0
    assert sim.advance_to(store, T0 + 11 * 60) == n_series
    reference = collect(Simulator("healthy", 1, origin=T0), T0 - HOUR, T0 + 11 * 60 + 1)
    for key, chunk in reference.items():
        ts, vals = store.data[key]
        np.testing.assert_array_equal(ts, chunk[3])
        np.testing.assert_array_equal(vals, chunk[4])


def test_write_to_sample_store() -> None:
    from detector.source.store import SampleStore

    store = SampleStore(retention=None)
    sim = Simulator("latency_binding", 1, origin=T0)
    n = sim.write_to(store, T0, T0 + 30 * 60)
    assert store.sample_count() == n == store.series_count() * 30
    series = store.select("video_starts_total", [("protocol", "tcp_hls"), ("region", "eu")])
    assert len(series) == 3 and all(len(ts) == 30 for _l, ts, _v in series)


# ---------------------------------------------------------------------------------- command line


def test_cli_list_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert csf_main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    for name, spec in SCENARIOS.items():
        assert name in out
        for p in spec.phases:
            assert p.name in out
    assert csf_main(["simulate", "--scenario", "nope", "-o", "x.om"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert csf_main(["simulate", "--scenario", "healthy"]) == 2


def test_cli_output_file(tmp_path: Any) -> None:
    path = tmp_path / "h.om"
    rc = csf_main(
        [
            "simulate",
            "--scenario",
            "healthy",
            "--seed",
            "4",
            "--days",
            "0.125",
            "--start",
            "2026-11-01T00:00:00Z",
        ]
        + ["--interval", "5m", "-o", str(path)]
    )
    assert rc == 0
    with open(path, encoding="utf-8") as fh:
        parsed = {
            (n, tuple(sorted(lab.items()))): (ts, v)
            for n, lab, ts, v in parse_openmetrics(fh, fmt="openmetrics")
        }
    start = 1793491200.0
    sim = Simulator("healthy", 4, origin=start, interval=300.0)
    expected = collect(sim, start, start + 3 * HOUR)
    assert parsed.keys() == expected.keys()
    for key, chunk in expected.items():
        np.testing.assert_array_equal(parsed[key][0], chunk[3])
        np.testing.assert_array_equal(parsed[key][1], chunk[4])


def test_serve_exposes_current_cumulative_values() -> None:
    sim = Simulator("latency_binding", 1, origin=T0)
    wall = [1000.0]
    server = serve_simulator(sim, "127.0.0.1", 0, speed=60.0, clock=lambda: wall[0], sim_start=T0 + 125.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        wall[0] = 1010.0  # 10 s later at 60x: simulated T0 + 125 + 600 -> grid point T0 + 720
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    got = {
        (n, tuple(sorted(lab.items()))): float(v[0])
        for n, lab, _ts, v in parse_openmetrics(text.splitlines(), fmt="prometheus", default_timestamp=0.0)
    }
    expected = snapshot(sim, T0 + 720.0)
    assert expected.keys() <= got.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_custom_scenarios_are_validated() -> None:
    phase = Phase("p", 0, DAY, None)
    with pytest.raises(ValueError, match="stable loop"):
        ScenarioSpec("loop", "too much feedback", (phase,), feedback=1.0)
    with pytest.raises(ValueError, match="must start where the previous ends"):
        ScenarioSpec("gap", "gap", (phase, Phase("q", 2 * DAY, 3 * DAY, None)))
    with pytest.raises(ValueError, match="unknown metrics"):
        ScenarioSpec("bad", "bad", (phase,), omit=frozenset({"nope_total"}))
    custom = ScenarioSpec("mine", "a custom healthy day", (phase,), omit=frozenset({"daily_active_users"}))
    names = {c[0] for c in Simulator(custom, origin=T0, history=0.0).generate(T0, T0 + 60)}
    assert "daily_active_users" not in names and "users_churned_total" in names
