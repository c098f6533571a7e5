"""The simulator's real-world shapes: pods, lost scrapes, a late unit, counter resets."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from detector.cli import main
from detector.sim.metrics import METRIC_HELP
from detector.sim.shape import EXPORTER_INSTANCE, Shape, ShapedSimulator, parse_late_unit
from detector.sim.simulator import Simulator
from detector.source.openmetrics import load_openmetrics, write_openmetrics
from detector.source.store import SampleStore

ORIGIN = 1_800_000_000.0
H = 3600.0


def _sim(interval: float = 60.0) -> Simulator:
    return Simulator("latency_binding", 4, origin=ORIGIN, interval=interval)


def _collect(chunks) -> dict[tuple[str, tuple], tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    out: dict[tuple[str, tuple], tuple[np.ndarray, np.ndarray]] = {}
    for name, _typ, labels, ts, vals in chunks:
        key = (name, tuple(sorted(labels.items())))
        if key in out:
            t0, v0 = out[key]
            out[key] = (np.concatenate([t0, ts]), np.concatenate([v0, vals]))
        else:
            out[key] = (np.asarray(ts), np.asarray(vals))
    return out


def _unsplit(key: tuple[str, tuple]) -> tuple[str, tuple]:
    name, labels = key
    return name, tuple((k, v) for k, v in labels if k not in ("instance", "job", "pod"))


def test_a_plain_shape_changes_nothing() -> None:
    a = list(_sim().generate(ORIGIN, ORIGIN + H))
    b = list(ShapedSimulator(_sim(), Shape()).generate(ORIGIN, ORIGIN + H))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:3] == y[:3]
        np.testing.assert_array_equal(x[3], y[3])
        np.testing.assert_array_equal(x[4], y[4])


@pytest.mark.parametrize("interval", [15.0, 60.0, 300.0])
def test_pods_add_up_to_the_unsplit_series(interval: float) -> None:
    plain = _collect(_sim(interval).generate(ORIGIN, ORIGIN + 6 * H))
    shaped = _collect(ShapedSimulator(_sim(interval), Shape(pods=3)).generate(ORIGIN, ORIGIN + 6 * H))
    sums: dict[tuple[str, tuple], np.ndarray] = defaultdict(lambda: 0.0)  # type: ignore[arg-type]
    pods: dict[tuple[str, tuple], set[str]] = defaultdict(set)
    for key, (_ts, vals) in shaped.items():
        labels = dict(key[1])
        if labels["instance"] == EXPORTER_INSTANCE:
            assert "pod" not in labels and labels["job"] == "platform-exporter"
        else:
            assert labels["job"] == "platform" and labels["instance"] == labels["pod"] + ":8080"
            pods[_unsplit(key)].add(labels["pod"])
        sums[_unsplit(key)] = sums[_unsplit(key)] + vals
    assert set(sums) == set(plain)
    for key, (_ts, vals) in plain.items():
        np.testing.assert_allclose(sums[key], vals, rtol=1e-12, err_msg=str(key))
        if key[0] != "daily_active_users" and not key[0].startswith(
            ("transcode_queue", "gpu_", "active_creators")
        ):
            assert pods[key] == {"pod-0", "pod-1", "pod-2"}, key


def test_lost_scrapes_hit_whole_targets_at_the_ratio_and_do_not_depend_on_the_split() -> None:
    shape = Shape(pods=2, lost_scrape_ratio=0.08)
    whole = _collect(ShapedSimulator(_sim(), shape).generate(ORIGIN, ORIGIN + 24 * H))
    split = ShapedSimulator(_sim(), shape)
    parts = _collect(
        [c for t in range(0, 24, 5) for c in split.generate(ORIGIN + t * H, ORIGIN + min(24, t + 5) * H)]
    )
    assert whole.keys() == parts.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key][0], parts[key][0])
    grid = 24 * 60
    by_target: dict[str, list[np.ndarray]] = defaultdict(list)
    for (_name, labels), (ts, _vals) in whole.items():
        by_target[dict(labels)["instance"]].append(ts)
    for instance, stamps in by_target.items():
        lost = 1 - len(stamps[0]) / grid
        assert 0.06 < lost < 0.10, (instance, lost)
        for ts in stamps[1:]:  # a lost scrape drops every series of the target at that time
            np.testing.assert_array_equal(ts, stamps[0])
    assert not np.array_equal(by_target["pod-0:8080"][0], by_target["pod-1:8080"][0])


def test_a_late_unit_appears_at_its_time_with_its_running_totals() -> None:
    shape = Shape(late_unit=(("region", "apac"),), late_after=2 * H)
    plain = _collect(_sim().generate(ORIGIN, ORIGIN + 4 * H))
    shaped = _collect(ShapedSimulator(_sim(), shape).generate(ORIGIN, ORIGIN + 4 * H))
    for key, (ts, vals) in shaped.items():
        if dict(key[1]).get("region") == "apac":
            assert ts[0] == ORIGIN + 2 * H
            pts, pvals = plain[key]
            np.testing.assert_array_equal(vals, pvals[pts >= ORIGIN + 2 * H])
        else:
            assert ts[0] == ORIGIN
    assert any(dict(k[1]).get("region") == "apac" for k in shaped)


def _prom_increase(vals: np.ndarray) -> float:
    d = np.diff(vals)
    return float(np.where(d < 0, vals[1:], d).sum())


def test_a_counter_reset_drops_pod_0_and_keeps_the_increase() -> None:
    shape = Shape(pods=2, counter_resets=(3 * H,))
    plain = _collect(_sim().generate(ORIGIN, ORIGIN + 6 * H))
    shaped_sim = ShapedSimulator(_sim(), shape)
    shaped = _collect(shaped_sim.generate(ORIGIN, ORIGIN + 6 * H))
    name = "video_starts_total"
    key = next(k for k in plain if k[0] == name)
    pod0 = next(v for k, v in shaped.items() if _unsplit(k) == key and dict(k[1])["pod"] == "pod-0")
    pod1 = next(v for k, v in shaped.items() if _unsplit(k) == key and dict(k[1])["pod"] == "pod-1")
    ts, vals = pod0
    i = int(np.searchsorted(ts, ORIGIN + 3 * H))
    assert vals[i] < vals[i - 1] and vals[i] < 0.01 * vals[i - 1]  # it restarted
    assert np.all(np.diff(pod1[1]) >= 0)  # pod 1 did not
    # Prometheus-style increase over the reset (sum of deltas, the value after a drop) is the
    # unsplit increase: nothing is lost or double counted
    total = _prom_increase(pod0[1]) + _prom_increase(pod1[1])
    assert total == pytest.approx(_prom_increase(plain[key][1]), rel=1e-9)
    # the same values whatever the split of the time range
    again = _collect(
        c
        for t0, t1 in ((0, 2.5), (2.5, 6))
        for c in ShapedSimulator(_sim(), shape).generate(ORIGIN + t0 * H, ORIGIN + t1 * H)
    )
    for k, (_t, v) in shaped.items():
        np.testing.assert_array_equal(again[k][1], v)


def test_shaped_output_round_trips_through_openmetrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shape = Shape(pods=2, lost_scrape_ratio=0.05, counter_resets=(H,))
    path = tmp_path / "shaped.om"
    with open(path, "w", encoding="utf-8") as fh:
        written = write_openmetrics(
            fh, ShapedSimulator(_sim(300.0), shape).generate(ORIGIN, ORIGIN + 3 * H), help=METRIC_HELP
        )
    store = SampleStore(retention=None)
    stats = load_openmetrics(path, store)
    assert stats.samples == written and stats.rejected == 0


def test_shape_validation_and_cli_flags(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="lost_scrape_ratio must be in"):
        Shape(lost_scrape_ratio=1.5)
    with pytest.raises(ValueError, match="pods must be"):
        Shape(pods=-1)
    assert parse_late_unit("region=apac,device_tier=low@2d") == (
        (("device_tier", "low"), ("region", "apac")),
        "2d",
    )
    with pytest.raises(ValueError, match="label=value"):
        parse_late_unit("apac@2d")
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "healthy",
                "--days",
                "0.1",
                "--output",
                str(tmp_path / "x.om"),
                "--lost-scrapes",
                "1.5",
            ]
        )
        == 2
    )
    assert "--lost-scrapes must be in [0, 1), got 1.5" in capsys.readouterr().err
    out = tmp_path / "ok.om"
    args = ["simulate", "--scenario", "healthy", "--days", "0.05", "--interval", "5m", "--output", str(out)]
    args += [
        "--pods",
        "2",
        "--lost-scrapes",
        "0.1",
        "--late-unit",
        "region=apac@30m",
        "--counter-reset",
        "1h",
    ]
    assert main(args) == 0
    text = out.read_text()
    assert 'instance="pod-1:8080"' in text and 'job="platform"' in text
