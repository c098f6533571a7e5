"""Loading a file on several cores gives what loading it in one piece gives.

`detector.source.openmetrics.parallel.load_file` cuts a file where families start and parses
the parts in forked processes; these tests make the parts small (a few KiB) so that real
files are cut many times, and compare the store, the statistics and the errors with
`load_openmetrics`. Where the parts cannot prove the one-piece result (a family in two parts,
an error, ``# EOF`` early), the loader must fall back to one piece: the tests check the
outcome, and that the parallel path did run where it should.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from detector.sim.simulator import Simulator
from detector.source.openmetrics import OpenMetricsError, load_openmetrics, parallel, write_openmetrics
from detector.source.store import SampleStore

ORIGIN = 1_767_225_600.0


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_PART_BYTES", 4096)


def _contents(store: SampleStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]]:
    return {(name, labels): (ts, vals) for name in store.names() for labels, ts, vals in store.select(name)}


def _assert_same(a: SampleStore, b: SampleStore) -> None:
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys() and ca
    for key, (ts, vals) in ca.items():
        assert np.array_equal(ts, cb[key][0]), key
        assert np.array_equal(vals.view(np.uint64), cb[key][1].view(np.uint64)), key  # bit for bit, NaNs too


def _simulated(path: Path, hours: float = 6.0) -> Path:
    sim = Simulator("latency_binding", 5, origin=ORIGIN - 86400.0, interval=60.0)
    with open(path, "w", encoding="utf-8") as fh:
        write_openmetrics(fh, sim.generate(ORIGIN, ORIGIN + hours * 3600.0))
    return path


def _both(path: Path, jobs: int = 3, **kw: object) -> tuple[SampleStore, SampleStore, object, object]:
    seq, par = SampleStore(None), SampleStore(None)
    one = load_openmetrics(path, seq, **kw)  # type: ignore[arg-type]
    many = parallel.load_file(path, par, jobs=jobs, **kw)  # type: ignore[arg-type]
    return seq, par, one, many


def _no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("loaded in one piece: the parallel path declined")

    monkeypatch.setattr(parallel, "_sequential", refuse)


def test_simulated_file_in_many_parts_equals_one_piece(
    tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _simulated(tmp_path / "sim.om")
    cuts = parallel.family_starts(path, path.stat().st_size, parallel.MIN_PART_BYTES)
    assert len(cuts) > 10  # really cut
    text = path.read_bytes()
    for cut in cuts[1:-1]:
        assert text[cut:].startswith(b"# HELP ") or text[cut:].startswith(b"# TYPE ")
        assert text[cut - 1 : cut] == b"\n" and not text[: cut - 1].rsplit(b"\n", 1)[-1].startswith(b"#")
    _no_fallback(monkeypatch)
    seq, par, one, many = _both(path)
    assert one == many
    _assert_same(seq, par)


def test_prometheus_text_with_millisecond_timestamps(tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = []
    for f in range(12):
        lines += [f"# HELP fam{f} Family {f}.", f"# TYPE fam{f} counter"]
        for pod in range(3):
            lines += [f'fam{f}_total{{pod="p{pod}"}} {k * 1.5 + pod} {1767225600000 + k * 15000}' for k in range(200)]
    path = tmp_path / "prom.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _no_fallback(monkeypatch)
    seq, par, one, many = _both(path)
    assert one == many and one.samples == 12 * 3 * 200  # type: ignore[attr-defined]
    _assert_same(seq, par)
    assert par.newest_timestamp() == 1767225600.0 + 199 * 15.0  # read as milliseconds


def _families(n: int, samples: int = 200) -> list[str]:
    lines = []
    for f in range(n):
        lines += [f"# TYPE fam{f} gauge"]
        lines += [f"fam{f} {k} {ORIGIN + 60 * k:.0f}" for k in range(samples)]
    return lines


def _load_error(path: Path, loader: object) -> str:
    with pytest.raises(OpenMetricsError) as err:
        loader(path, SampleStore(None))  # type: ignore[operator]
    return str(err.value)


@pytest.mark.parametrize(
    ("damage", "eof"),
    [
        pytest.param(lambda lines: lines.__setitem__(len(lines) * 3 // 4, "fam9 oops 1767229200"), True, id="bad-value-late"),
        pytest.param(lambda lines: lines.extend(["# TYPE fam2 gauge", f"fam2 1 {ORIGIN + 1e6:.0f}"]), True, id="family-again"),
        pytest.param(lambda lines: lines.insert(len(lines) // 2, "# EOF"), True, id="eof-in-the-middle"),
        pytest.param(lambda lines: None, False, id="no-eof"),
    ],
)
def test_bad_file_gives_the_one_piece_error_and_line(
    tmp_path: Path, small_parts: None, damage: object, eof: bool
) -> None:
    lines = _families(12)
    damage(lines)  # type: ignore[operator]
    path = tmp_path / "bad.om"
    path.write_text("\n".join(lines + ["# EOF"] * eof) + "\n", encoding="utf-8")
    assert len(parallel.family_starts(path, path.stat().st_size, parallel.MIN_PART_BYTES)) > 3
    want = _load_error(path, load_openmetrics)
    assert "line" in want
    assert _load_error(path, lambda p, s: parallel.load_file(p, s, jobs=3)) == want


def test_family_repeated_in_prometheus_text_falls_back_to_one_piece(tmp_path: Path, small_parts: None) -> None:
    # Prometheus text lets a family come back; its series then span parts, which only the
    # one-piece parse orders: the loader must notice and load in one piece.
    text = "\n".join(_prom_families(6, 0)) + "\n" + "\n".join(_prom_families(6, 200)) + "\n"
    path = tmp_path / "again.txt"
    path.write_text(text, encoding="utf-8")
    seq, par, one, many = _both(path)
    assert one == many
    _assert_same(seq, par)
    assert all(len(ts) == 400 for ts, _ in _contents(par).values())
    # the second run going back in time: the one-piece parse refuses it, so must the loader
    path.write_text("\n".join(_prom_families(6, 200)) + "\n" + "\n".join(_prom_families(6, 0)) + "\n", encoding="utf-8")
    want = _load_error(path, load_openmetrics)
    assert "out-of-order" in want
    assert _load_error(path, lambda p, s: parallel.load_file(p, s, jobs=3)) == want


def _prom_families(n: int, first: int) -> list[str]:
    lines = []
    for f in range(n):
        lines.append(f"# TYPE fam{f} gauge")
        lines += [f"fam{f} {k} {(int(ORIGIN) + 60 * k) * 1000}" for k in range(first, first + 200)]
    return lines


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_reaches_the_file_size(tmp_path: Path, small_parts: None, jobs: int) -> None:
    path = _simulated(tmp_path / "sim.om", hours=2.0)
    size = path.stat().st_size
    seen: list[tuple[int, int, int]] = []
    stats = parallel.load_file(path, SampleStore(None), jobs=jobs, on_progress=lambda *a: seen.append(a))
    assert stats.samples > 0
    assert seen or jobs > 1  # one piece reports after every batch; parts while waiting on them
    assert all(total == size and 0 <= done <= size for done, total, _ in seen)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    if jobs == 1:
        assert seen[-1][0] == size and seen[-1][2] == stats.samples


def test_small_file_and_one_job_load_in_one_piece(tmp_path: Path) -> None:
    path = tmp_path / "tiny.om"
    path.write_text("\n".join(_families(3, 5)) + "\n# EOF\n", encoding="utf-8")
    assert parallel.family_starts(path, path.stat().st_size, parallel.MIN_PART_BYTES) == [0, path.stat().st_size]
    seq, par, one, many = _both(path, jobs=8)
    assert one == many
    _assert_same(seq, par)


def _dying_part(*args: object) -> object:
    if args[-1] == 1:  # the second part's process is lost (as if killed for memory)
        os._exit(3)
    return _real_parse_part(*args)


_real_parse_part = parallel._parse_part


def test_a_lost_process_falls_back_to_one_piece(
    tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _simulated(tmp_path / "sim.om", hours=2.0)
    monkeypatch.setattr(parallel, "_parse_part", _dying_part)
    with caplog.at_level(logging.WARNING, logger=parallel.__name__):
        seq, par, one, many = _both(path)
    assert one == many
    _assert_same(seq, par)
    assert "was lost; parsing it in one piece" in caplog.text
