"""`csf pack check`: a pack against real data, run as the user runs it (the CLI entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.cli import main
from detector.sim.metrics import METRIC_HELP
from detector.sim.simulator import Simulator
from detector.source.openmetrics import write_openmetrics

ORIGIN = 1_700_000_100.0


def _file(tmp_path: Path, scenario: str, interval: float, days: float = 3.0) -> Path:
    path = tmp_path / f"{scenario}-{interval:g}.om"
    sim = Simulator(scenario, 5, origin=ORIGIN, interval=interval)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        write_openmetrics(fh, sim.generate(ORIGIN, ORIGIN + days * 86400), help=METRIC_HELP)
    return path


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    code = main(argv + ["--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_file_without_the_outcome_metric_names_it_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    om = _file(tmp_path, "missing_outcome", 300.0)
    code = main(["pack", "check", "--input", str(om), "--lookback", "2d"])
    text = capsys.readouterr().out
    assert code == 1
    assert "CANNOT  latency: [no_series]" in text
    assert "no series matched video_start_abandonments_total in the last 2d" in text
    assert "no series match video_start_abandonments_total" in text  # the signal table says it too
    assert "some constraints cannot be judged" in text

    code, doc = _json(capsys, ["pack", "check", "--input", str(om), "--lookback", "2d"])
    assert code == 1 and doc["ok"] is False
    latency = next(c for c in doc["constraints"] if c["name"] == "latency")
    assert latency["can_be_judged"] is False
    assert [d["reason"] for d in latency["diagnoses"]] == ["no_series"]
    outcome = next(s for s in latency["signals"] if s["role"] == "outcome")
    by_selector = {s["selector"]: s["series"] for s in outcome["selectors"]}
    assert by_selector["video_start_abandonments_total"] == 0
    assert by_selector["video_starts_total"] == 27


def test_a_good_five_minute_file_reports_interval_and_window_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    om = _file(tmp_path, "latency_binding", 300.0)
    code, doc = _json(capsys, ["pack", "check", "--input", str(om), "--lookback", "2d"])
    assert code == 0 and doc["ok"] is True
    assert doc["lookback_seconds"] == 2 * 86400
    latency = next(c for c in doc["constraints"] if c["name"] == "latency")
    assert latency["can_be_judged"] and latency["diagnoses"] == []
    for role in ("signal", "outcome"):
        s = next(x for x in latency["signals"] if x["role"] == role)
        assert s["sample_interval_seconds"] == 300.0
        assert s["range_seconds"] == 300.0 and s["effective_range_seconds"] == 1200.0
        assert s["units"] == 9
        assert s["coverage"] > 0.95
        assert s["newest"] is not None
    signal = next(x for x in latency["signals"] if x["role"] == "signal")
    (sel,) = signal["selectors"]
    assert sel["selector"] == "video_start_latency_seconds_bucket"
    assert {"region", "device_tier", "le"} <= set(sel["label_names"]) and sel["missing_labels"] == []


def test_one_minute_data_keeps_the_pack_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    om = _file(tmp_path, "latency_binding", 60.0, days=2.2)
    code, doc = _json(capsys, ["pack", "check", "--input", str(om), "--lookback", "2d"])
    assert code == 0
    latency = next(c for c in doc["constraints"] if c["name"] == "latency")
    s = next(x for x in latency["signals"] if x["role"] == "signal")
    assert s["sample_interval_seconds"] == 60.0 and s["effective_range_seconds"] == 300.0


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", "check"]) == 2
    assert "exactly one of --input FILE or --prometheus-url URL" in capsys.readouterr().err
    assert main(["pack", "check", "--input", str(tmp_path / "absent.om")]) == 2
    assert "absent.om" in capsys.readouterr().err


def test_no_command_takes_an_abbreviated_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`--output x.json` was once taken as `--output-dir`; prefixes are refused everywhere."""
    from detector.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["dashboards", "generate", "--output", "x.json"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --output x.json" in capsys.readouterr().err
    for argv in (["backtest", "--prom", "http://x"], ["serve", "--evaluation", "5s"], ["simulate", "--scen", "healthy"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    # full names still work
    assert parser.parse_args(["dashboards", "generate", "--output-dir", "d"]).output_dir == "d"
