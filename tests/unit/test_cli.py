"""`csf` argument handling: refusals that name the conflict or the missing file, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.cli import main


def test_start_and_last_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "never-read.om"  # does not exist: the refusal comes before the data is read
    argv = ["backtest", "--input", str(data), "--start", "2026-11-01T00:00:00Z", "--last", "1d"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "csf backtest: give --start or --last, not both (--last counts back from --end)\n"
    )


def test_input_and_prometheus_url_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", "--input", str(tmp_path / "x.om"), "--prometheus-url", "http://127.0.0.1:9"]
    assert main(argv) == 2
    assert "give exactly one of --input FILE or --prometheus-url URL" in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.om"
    assert main(["backtest", "--input", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"csf backtest: {missing}: ") and "No such file" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["backtest", "--input", "x.om"],
        ["dashboards", "generate", "--output-dir", "out"],
        ["rules", "generate", "--output-dir", "out"],
    ],
)
def test_a_pack_file_that_does_not_exist_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main([*argv, "--pack", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "cannot read pack" in err and str(missing) in err


@pytest.mark.parametrize("jobs", ["-1", "two"])
def test_jobs_must_be_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["backtest", "--input", str(tmp_path / "never-read.om"), "--jobs", jobs])
    assert exit_.value.code == 2
    assert f"--jobs must be an integer >= 0 (0: one per usable CPU), got {jobs!r}" in capsys.readouterr().err
