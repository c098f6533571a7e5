"""OpenMetrics writer and parser: structure, round trip, promtool acceptance, errors with line numbers."""

from __future__ import annotations

import io
import math
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.sim.metrics import METRIC_HELP
from detector.sim.simulator import Simulator
from detector.source.openmetrics import (
    LoadStats,
    OpenMetricsError,
    load_openmetrics,
    parse_openmetrics,
    write_openmetrics,
)
from tests._procs import require_binary

T0 = 1_790_000_000.0
PROMTOOL = "/usr/bin/promtool"


def key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def parse_all(
    text: str, **kw: Any
) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]]:
    """Parse and join the batches of each series."""
    parts: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for name, labels, ts, vals in parse_openmetrics(io.StringIO(text), **kw):
        parts[key(name, labels)].append((ts, vals))
    return {
        k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for k, v in parts.items()
    }


def simulated_text(hours: float = 2.0, interval: float = 60.0) -> tuple[str, list[Any], int]:
    sim = Simulator("latency_binding", 3, origin=T0, interval=interval, history=0.0)
    chunks = list(sim.generate(T0, T0 + hours * 3600))
    buf = io.StringIO()
    n = write_openmetrics(buf, iter(chunks), help=METRIC_HELP)
    return buf.getvalue(), chunks, n


# ---------------------------------------------------------------------------------- writer


def test_round_trip_equals_generated_data() -> None:
    text, chunks, n = simulated_text(hours=1.0)
    assert n == sum(len(c[3]) for c in chunks)
    parsed = parse_all(text, fmt="openmetrics")
    assert len(parsed) == len(chunks)
    for name, _typ, labels, ts, vals in chunks:
        got_ts, got_vals = parsed[key(name, labels)]
        np.testing.assert_array_equal(got_ts, ts)
        np.testing.assert_array_equal(got_vals, vals)  # exact: shortest round-trip float text


def test_writer_layout_families_points_and_eof() -> None:
    text, chunks, _n = simulated_text(hours=0.25)
    lines = text.splitlines()
    assert lines[-1] == "# EOF" and text.endswith("# EOF\n")
    types = [ln.split()[2:4] for ln in lines if ln.startswith("# TYPE ")]
    families = [t[0] for t in types]
    assert len(families) == len(set(families)) == 16
    assert ["video_starts", "counter"] in types  # counter family without _total
    assert ["video_start_latency_seconds", "histogram"] in types
    assert "# HELP video_starts Video start attempts by delivery protocol." in lines
    # Each family's samples are contiguous and belong to it.
    current = None
    seen: set[str] = set()
    for ln in lines:
        if ln.startswith("# TYPE "):
            current = ln.split()[2]
            assert current not in seen
            seen.add(current)
        elif not ln.startswith("#"):
            assert current is not None and ln.startswith(current)
    # Histogram MetricPoints: per timestamp the buckets ascending, then _count, then _sum.
    hist = [
        ln
        for ln in lines
        if ln.startswith("video_start_latency_seconds_") and 'region="us",device_tier="low"' in ln
    ]
    per_point = 13 + 2
    assert len(hist) == 15 * per_point
    for p in range(15):
        point = hist[p * per_point : (p + 1) * per_point]
        stamps = {ln.rsplit(" ", 1)[1] for ln in point}
        assert len(stamps) == 1
        les = [re.search(r'le="([^"]+)"', ln).group(1) for ln in point[:13]]  # type: ignore[union-attr]
        assert [float(x) for x in les] == sorted(float(x) for x in les) and les[-1] == "+Inf"
        assert point[13].startswith("video_start_latency_seconds_count{")
        assert point[14].startswith("video_start_latency_seconds_sum{")
        assert point[12].split()[-2] == point[13].split()[-2]  # +Inf bucket == count


def test_special_values_escaping_and_timestamps() -> None:
    ts = np.array([100.0, 100.5, 102.0, 1e9 + 0.25])
    vals = np.array([math.nan, math.inf, -math.inf, -0.0])
    labels = {"path": 'C:\\dir "x"\nnext', "a": "b"}
    buf = io.StringIO()
    n = write_openmetrics(buf, [("odd_gauge", "gauge", labels, ts, vals)])
    text = buf.getvalue()
    assert n == 4
    assert 'odd_gauge{path="C:\\\\dir \\"x\\"\\nnext",a="b"} NaN 100.0' in text
    assert " +Inf 100.5" in text and " -Inf 102.0" in text
    ((got_ts, got_vals),) = parse_all(text).values()
    np.testing.assert_array_equal(got_ts, ts)
    assert math.isnan(got_vals[0]) and got_vals[1] == math.inf and got_vals[2] == -math.inf
    assert got_vals[3] == 0.0 and math.copysign(1.0, got_vals[3]) == -1.0
    ((name, got_labels, _t, _v),) = parse_openmetrics(io.StringIO(text))
    assert name == "odd_gauge" and got_labels == labels


def test_writer_rejects_ungrouped_or_unordered_input() -> None:
    g = ("g", "gauge", {"a": "1"}, np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    h = ("h", "gauge", {}, np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="family 'g' appears again"):
        write_openmetrics(io.StringIO(), [g, h, g])
    with pytest.raises(ValueError, match="strictly increasing"):
        write_openmetrics(io.StringIO(), [("g", "gauge", {}, np.array([2.0, 1.0]), np.array([1.0, 2.0]))])
    with pytest.raises(ValueError, match="must end in _total"):
        write_openmetrics(io.StringIO(), [("requests", "counter", {}, np.array([1.0]), np.array([1.0]))])
    with pytest.raises(ValueError, match="unsupported family type"):
        write_openmetrics(io.StringIO(), [("s", "summary", {}, np.array([1.0]), np.array([1.0]))])
    g2 = ("g", "gauge", {"a": "2"}, np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="must be contiguous"):
        write_openmetrics(io.StringIO(), [g, g2, g])
    # Consecutive chunks of one series are fine and come out as one time-ordered series.
    c1 = ("n_total", "counter", {}, np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    c2 = ("n_total", "counter", {}, np.array([3.0]), np.array([5.0]))
    buf = io.StringIO()
    assert write_openmetrics(buf, [c1, c2]) == 3
    assert buf.getvalue() == "# TYPE n counter\nn_total 1.0 1\nn_total 2.0 2\nn_total 5.0 3\n# EOF\n"


# ---------------------------------------------------------------------------------- promtool


def _require_promtool() -> str:
    return require_binary("promtool")


@pytest.mark.needs_binary("promtool")
def test_promtool_accepts_the_file(tmp_path: Path) -> None:
    promtool = _require_promtool()
    text, _chunks, n = simulated_text(hours=2.0)
    om = tmp_path / "sim.om"
    om.write_text(text, encoding="utf-8")
    out_dir = tmp_path / "blocks"
    proc = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(out_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # The block table reports how many samples and series were imported.
    rows = [ln.split() for ln in proc.stdout.splitlines() if re.match(r"^[0-9A-Z]{26}\s", ln)]
    assert rows, proc.stdout
    header = next(ln.split() for ln in proc.stdout.splitlines() if "NUM SAMPLES" in ln)
    assert header[:3] == ["BLOCK", "ULID", "MIN"]
    samples = sum(int(r[-4]) for r in rows)
    series = max(int(r[-2]) for r in rows)
    assert samples == n
    assert series == 504


def test_promtool_rejects_what_we_reject(tmp_path: Path) -> None:
    """Sanity check of the oracle: promtool fails on a file without # EOF, and so do we."""
    promtool = _require_promtool()
    bad = tmp_path / "bad.om"
    bad.write_text("# TYPE g gauge\ng 1 100\n", encoding="utf-8")
    proc = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(bad), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    with pytest.raises(OpenMetricsError):
        parse_all(bad.read_text(encoding="utf-8"), fmt="openmetrics")


# ---------------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("text", "line_no", "fragment"),
    [
        ('# TYPE g gauge\ng{a="1"} 1 100\ng{a=1} 2 101\n# EOF\n', 3, "bad label syntax"),
        ('# TYPE g gauge\ng{a="1" 1 100\n# EOF\n', 2, "bad label syntax"),
        ("# TYPE g gauge\ng 1 100\ng one 101\n# EOF\n", 3, "bad value 'one'"),
        ("# TYPE g gauge\ng 1_000 100\n# EOF\n", 2, "bad value '1_000'"),
        ("# TYPE g gauge\ng 1 10x\n# EOF\n", 2, "bad timestamp '10x'"),
        ("# TYPE g gauge\ng 1 100\ng 2 100\n# EOF\n", 3, "out-of-order timestamp"),
        ("# TYPE g gauge\ng 1 100\ng 2 99\n# EOF\n", 3, "out-of-order timestamp"),
        ("# TYPE g gauge\ng 1 100\n", 3, "missing '# EOF'"),
        ("# TYPE g gauge\ng 1 100\n# EOF\ng 2 101\n", 4, "content after # EOF"),
        ('# TYPE g gauge\ng{a="x\\q"} 1 100\n# EOF\n', 2, "invalid escape"),
        ('# TYPE g gauge\ng{a="1",a="2"} 1 100\n# EOF\n', 2, "duplicate label"),
        ("# TYPE g wobble\n# EOF\n", 1, "unknown metric type"),
        ("# TYPE g gauge\ng 1\n# EOF\n", 2, "no timestamp"),
        ("# TYPE g gauge\n9g 1 100\n# EOF\n", 2, "bad metric name"),
        ("# TYPE a gauge\na 1 100\n# TYPE b gauge\nb 1 100\n# TYPE a gauge\n# EOF\n", 5, "appears again"),
    ],
)
def test_parser_errors_name_the_line(text: str, line_no: int, fragment: str) -> None:
    with pytest.raises(OpenMetricsError) as info:
        parse_all(text, fmt="openmetrics")
    assert info.value.line_no == line_no
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"line {line_no}: ")


def test_parser_prometheus_format_and_auto_detection() -> None:
    prom = (
        "# HELP http_requests_total Requests.\n"
        "# TYPE http_requests_total counter\n"
        'http_requests_total{code="200",path="/a b"} 1027 1700000000000\n'
        'http_requests_total{code="200",path="/a b"}  1030   1700000060000\n'
        'http_requests_total{code="500",path="/x}#"} 3 1700000000123\n'
        "\n"
        "# a free comment\n"
        "temp\t21.5\t1700000000000\n"
    )
    for fmt in ("auto", "prometheus"):
        parsed = parse_all(prom, fmt=fmt)
        ts, vals = parsed[key("http_requests_total", {"code": "200", "path": "/a b"})]
        np.testing.assert_array_equal(ts, [1.7e9, 1.7e9 + 60])
        np.testing.assert_array_equal(vals, [1027.0, 1030.0])
        ts5, _ = parsed[key("http_requests_total", {"code": "500", "path": "/x}#"})]
        assert ts5[0] == pytest.approx(1700000000.123)
        assert parsed[key("temp", {})][1][0] == 21.5
    with pytest.raises(OpenMetricsError, match="integer milliseconds"):
        parse_all("g 1 1.5\n", fmt="prometheus")


def test_parser_openmetrics_details() -> None:
    text = (
        "# TYPE req counter\n"
        "# UNIT req requests\n"
        'req_total{a="1"} 5 100.5 # {trace_id="abc"} 1.0 100.4\n'
        'req_created{a="1"} 50 100.5\n'
        'req_total{a="1"} 6 101.5\n'
        "# TYPE up gauge\n"
        "up 1 100\n"
        "up +Inf 101\n"
        "up -Inf 102\n"
        "up NaN 103\n"
        "# EOF\n"
    )
    parsed = parse_all(text)
    assert set(parsed) == {key("req_total", {"a": "1"}), key("up", {})}  # _created skipped
    np.testing.assert_array_equal(parsed[key("req_total", {"a": "1"})][1], [5.0, 6.0])
    up = parsed[key("up", {})][1]
    assert up[1] == math.inf and up[2] == -math.inf and math.isnan(up[3])
    # Samples without timestamps (a live scrape) take the default.
    ((_n, _l, ts, _v),) = parse_openmetrics(io.StringIO("up 1\n"), default_timestamp=42.0)
    assert ts.tolist() == [42.0]


def test_parser_memory_is_bounded_by_batches() -> None:
    text, chunks, _n = simulated_text(hours=0.5)
    batches = list(parse_openmetrics(io.StringIO(text), max_buffered=100))
    assert max(len(b[2]) for b in batches) <= 100
    by_series: dict[Any, list[np.ndarray]] = defaultdict(list)
    for name, labels, ts, _vals in batches:
        by_series[key(name, labels)].append(ts)
    assert len(by_series) == len(chunks)
    assert any(len(v) > 1 for v in by_series.values())  # a series split over several batches
    for name, _typ, labels, ts, _vals in chunks:
        np.testing.assert_array_equal(np.concatenate(by_series[key(name, labels)]), ts)


def test_load_openmetrics_into_stores(tmp_path: Path) -> None:
    from detector.source.store import SampleStore

    text, chunks, n = simulated_text(hours=0.5)
    path = tmp_path / "x.om"
    path.write_text(text, encoding="utf-8")
    store = SampleStore(retention=None)
    stats = load_openmetrics(path, store)
    assert stats == LoadStats(
        series=len(chunks), samples=n, rejected=0, first_timestamp=T0, last_timestamp=T0 + 29 * 60
    )
    assert store.sample_count() == n
    ((labels, ts, vals),) = store.select(
        "video_starts_total", [("region", "eu"), ("device_tier", "low"), ("protocol", "tcp_hls")]
    )
    ref = next(c for c in chunks if c[0] == "video_starts_total" and c[2] == dict(labels))
    np.testing.assert_array_equal(vals, ref[4])
    # Loading the same file again: the store refuses every sample as a duplicate and says so.
    again = load_openmetrics(path, store)
    assert again.rejected == n
