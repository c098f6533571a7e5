"""PrometheusSource against a real Prometheus (backfilled with promtool) and a scripted fake server."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest

from detector.source.frame import SourceError
from detector.source.prometheus_api import MAX_POINTS_PER_REQUEST, PrometheusSource, redact_url
from detector.spec.signals import Signal
from tests._procs import PROMTOOL, PrometheusProcess, require_binary

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
INTERVAL = 60
N = 240  # four hours of samples
EU_UNTIL = 30  # the eu series stops after this many samples


# --------------------------------------------------------------------------- reference data


def _gauge_a(i: int) -> float:
    return i * 1.5


def _gauge_b(i: int) -> float:
    return 100.0 + i


def _openmetrics() -> str:
    """Families are contiguous and each series is in time order (promtool needs both)."""
    out = ["# TYPE g gauge"]
    for labels, fn, n in (
        ('region="us",zone="a"', _gauge_a, N),
        ('region="us",zone="b"', _gauge_b, N),
        ('region="eu",zone="a"', lambda i: 7.0, EU_UNTIL),
    ):
        out.extend(f"g{{{labels}}} {fn(i)} {T0 + i * INTERVAL}" for i in range(n))
    out.append("# TYPE special gauge")
    for kind, text in (("nan", "NaN"), ("pinf", "+Inf"), ("ninf", "-Inf")):
        out.extend(f'special{{kind="{kind}"}} {text} {T0 + i * INTERVAL}' for i in range(N))
    out.append("# TYPE c counter")
    out.extend(f'c_total{{region="us"}} {6 * i} {T0 + i * INTERVAL}' for i in range(N))
    out.append("# TYPE num gauge")
    for region, v in (("us", 3.0), ("eu", 5.0)):
        out.extend(f'num{{region="{region}"}} {v} {T0 + i * INTERVAL}' for i in range(N))
    out.append("# TYPE den gauge")
    for region, v in (("us", 4.0), ("eu", 0.0)):
        out.extend(f'den{{region="{region}"}} {v} {T0 + i * INTERVAL}' for i in range(N))
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _instant_reference(sample_values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Newest sample at or before t, if younger than the 5 min lookback (samples at T0 + i*INTERVAL)."""
    idx = np.minimum(np.floor((t - T0) / INTERVAL).astype(int), len(sample_values) - 1)
    age = t - (T0 + idx * INTERVAL)
    ok = (idx >= 0) & (age < 300)
    return np.where(ok, sample_values[np.clip(idx, 0, None)], np.nan)


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    promtool = require_binary(PROMTOOL)
    tmp = tmp_path_factory.mktemp("prom-source")
    om = tmp / "data.om"
    om.write_text(_openmetrics())
    data = tmp / "data"
    res = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    proc = PrometheusProcess(
        tmp,
        "global:\n  scrape_interval: 1m\n",
        data_dir=data,
        extra_args=("--storage.tsdb.retention.time=100y",),
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def source(prom: PrometheusProcess) -> Iterator[PrometheusSource]:
    with PrometheusSource(prom.url, timeout=10.0, retries=0) as src:
        yield src


# --------------------------------------------------------------------------- against a real Prometheus

# Grid points sit 30 s after samples, so no sample lies on a window or lookback edge.
GRID_START = T0 + 600 + 30
GRID_END = T0 + 3600 + 30


def test_gauge_sum_by_region_matches_reference(source: PrometheusSource) -> None:
    sig = Signal(kind="gauge", metric="g", by=("region",))
    frame = source.query_range(sig, GRID_START, GRID_END, 60)
    times = GRID_START + 60 * np.arange(int((GRID_END - GRID_START) / 60) + 1)
    np.testing.assert_allclose(frame.times, times)
    assert frame.units == ((("region", "eu"),), (("region", "us"),))
    a = np.array([_gauge_a(i) for i in range(N)])
    b = np.array([_gauge_b(i) for i in range(N)])
    us = _instant_reference(a, times) + _instant_reference(b, times)
    eu = _instant_reference(np.full(EU_UNTIL, 7.0), times)
    np.testing.assert_allclose(frame.values[1], us, rtol=1e-12)
    # eu stopped after sample 29 (T0+1740): values until the lookback ends, then NaN, never invented
    np.testing.assert_array_equal(np.isnan(frame.values[0]), np.isnan(eu))
    assert np.isnan(frame.values[0][times > T0 + 1740 + 300]).all()
    assert (frame.values[0][times < T0 + 1740] == 7.0).all()
    assert frame.samples_read > 0


def test_special_values_are_parsed(source: PrometheusSource) -> None:
    sig = Signal(kind="gauge", metric="special", by=("kind",), agg="max")
    frame = source.query_range(sig, GRID_START, GRID_START + 120, 60)
    got = {dict(u)["kind"]: row for u, row in zip(frame.units, frame.values, strict=True)}
    assert np.isnan(got["nan"]).all()
    assert (got["pinf"] == math.inf).all()
    assert (got["ninf"] == -math.inf).all()


def test_rate_matches_counter_slope(source: PrometheusSource) -> None:
    sig = Signal(kind="rate", metric="c_total", by=("region",), range=300)
    frame = source.query_range(sig, GRID_START, GRID_END, 300)
    assert frame.units == ((("region", "us"),),)
    # 6 per 60 s with sample-aligned extrapolation: exactly 0.1/s
    np.testing.assert_allclose(frame.values[0], 0.1, rtol=1e-9)


def test_long_range_is_split_into_requests_below_the_point_limit(source: PrometheusSource) -> None:
    start, end, step = T0 + 30, T0 + 12_030, 1.0  # 12,001 points: one request would be refused
    assert (end - start) / step + 1 > MAX_POINTS_PER_REQUEST
    frame = source.query_range(Signal(kind="gauge", metric="g", matchers=(("zone", "b"),)), start, end, step)
    assert frame.values.shape == (1, 12_001)
    expected = _instant_reference(np.array([_gauge_b(i) for i in range(N)]), frame.times)
    np.testing.assert_allclose(frame.values[0], expected, rtol=1e-12)
    # the seam between the two requests is continuous
    k = MAX_POINTS_PER_REQUEST
    assert frame.values[0, k - 1] == expected[k - 1] and frame.values[0, k] == expected[k]


def test_absent_series_gives_no_unit_and_nan(source: PrometheusSource) -> None:
    empty = source.query_range(
        Signal(kind="gauge", metric="no_such_metric", by=("region",)), GRID_START, GRID_END, 60
    )
    assert empty.units == () and empty.values.shape == (0, len(empty.times))
    # a range entirely after the eu series ended has no eu unit at all
    late = source.query_range(Signal(kind="gauge", metric="g", by=("region",)), T0 + 7000, T0 + 7200, 60)
    assert late.units == ((("region", "us"),),)


def test_ratio_division_by_zero_is_missing(source: PrometheusSource) -> None:
    num = Signal(kind="gauge", metric="num", by=("region",))
    den = Signal(kind="gauge", metric="den", by=("region",))
    frame = source.query_range(
        Signal(kind="ratio", by=("region",), numerator=num, denominator=den), GRID_START, GRID_END, 600
    )
    assert frame.units == ((("region", "us"),),)  # eu is 5/0: no usable value
    np.testing.assert_allclose(frame.values[0], 0.75)


def test_raw_promql_override_and_unit_collision(source: PrometheusSource) -> None:
    ok = Signal(kind="gauge", metric="g", by=("region",), promql="max by (region) (g)")
    frame = source.query_range(ok, GRID_START, GRID_START, 60)
    got = dict(zip(frame.unit_values("region"), frame.values[:, 0], strict=True))
    assert got == {"eu": 7.0, "us": _gauge_b(10)}
    clash = Signal(kind="gauge", metric="g", by=("region",), promql="g")
    with pytest.raises(SourceError, match="several series"):
        source.query_range(clash, GRID_START, GRID_START, 60)


def test_bad_query_is_a_source_error_not_retried(prom: PrometheusProcess) -> None:
    with PrometheusSource(prom.url, retries=3, backoff=5.0) as src:
        t = time.monotonic()
        with pytest.raises(SourceError, match="bad_data"):
            src.query_range(Signal(kind="gauge", metric="g", promql="sum(("), GRID_START, GRID_END, 60)
        assert time.monotonic() - t < 4.0  # no backoff sleep happened


def test_up(prom: PrometheusProcess) -> None:
    with PrometheusSource(prom.url) as src:
        assert src.up()
    with PrometheusSource(f"http://127.0.0.1:{_closed_port()}", timeout=1.0) as src:
        assert not src.up()


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# --------------------------------------------------------------------------- scripted fake server


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict = b""
    delay: float = 0.0


@dataclass
class Script:
    replies: list[Reply]
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, record: dict) -> Reply:
        with self.lock:
            self.requests.append(record)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture()
def fake() -> Iterator[tuple[Script, str]]:
    script = Script([Reply()])

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            reply = script.next(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "form": parse_qs(body),
                }
            )
            if reply.delay:
                time.sleep(reply.delay)
            payload = json.dumps(reply.body).encode() if isinstance(reply.body, dict) else reply.body
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = _serve
        do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _matrix(series: list[tuple[dict, list[list]]], **extra: object) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": m, "values": v} for m, v in series]},
        **extra,
    }


SIG = Signal(kind="gauge", metric="m", by=("region",))


def test_request_is_form_encoded_post_with_auth_and_tenant(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.replies = [Reply(body=_matrix([]))]
    with PrometheusSource(url + "/prefix/", bearer_token="s3cr3t-token", tenant="team-a") as src:
        src.query_range(SIG, 1000.0, 1600.0, 60.0)
    (req,) = script.requests
    assert req["method"] == "POST" and req["path"] == "/prefix/api/v1/query_range"
    assert req["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert req["headers"]["X-Scope-OrgID"] == "team-a"
    assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in req["form"].items()}
    assert form["query"] == "sum by (region) (m)"
    assert (float(form["start"]), float(form["end"]), float(form["step"])) == (1000.0, 1600.0, 60.0)


def test_alignment_missing_points_and_special_strings(fake: tuple[Script, str]) -> None:
    script, url = fake
    body = _matrix(
        [
            (
                {"__name__": "x", "region": "us", "extra": "dropped"},
                [[1000, "1"], [1120, "NaN"], [1180, "+Inf"]],
            ),
            ({"region": "eu"}, [[1060, "-Inf"], [1090, "99"]]),  # 1090 is off the grid: ignored
        ]
    )
    script.replies = [Reply(body=body)]
    with PrometheusSource(url) as src:
        frame = src.query_range(SIG, 1000.0, 1180.0, 60.0)
    assert frame.units == ((("region", "eu"),), (("region", "us"),))
    np.testing.assert_array_equal(frame.values[0], [np.nan, -np.inf, np.nan, np.nan])
    np.testing.assert_array_equal(frame.values[1], [1.0, np.nan, np.nan, np.inf])


def test_server_errors_are_retried_with_backoff_then_give_up(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.replies = [Reply(503, {"status": "error", "errorType": "unavailable", "error": "overloaded"})]
    sleeps: list[float] = []
    with PrometheusSource(url, retries=3, backoff=0.25, sleep=sleeps.append) as src:
        with pytest.raises(SourceError, match="unavailable: overloaded.*4 attempts"):
            src.query_range(SIG, 1000.0, 1600.0, 60.0)
    assert len(script.requests) == 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_transient_500_then_success(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.replies = [Reply(500, b"internal"), Reply(body=_matrix([({"region": "us"}, [[1000, "2.5"]])]))]
    with PrometheusSource(url, retries=2, backoff=0.0) as src:
        frame = src.query_range(SIG, 1000.0, 1000.0, 60.0)
    assert frame.values.tolist() == [[2.5]]
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "bad_data"), (422, "execution")],
)
def test_client_errors_are_not_retried(fake: tuple[Script, str], status: int, error_type: str) -> None:
    script, url = fake
    script.replies = [
        Reply(status, {"status": "error", "errorType": error_type, "error": "parse error at char 3"})
    ]
    with PrometheusSource(url, retries=3, backoff=0.0) as src:
        with pytest.raises(SourceError, match=f"HTTP {status} {error_type}: parse error at char 3"):
            src.query_range(SIG, 1000.0, 1600.0, 60.0)
    assert len(script.requests) == 1


def test_timeout_is_retried_and_bounded(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.replies = [Reply(body=_matrix([]), delay=1.0)]
    with PrometheusSource(url, timeout=0.2, retries=1, backoff=0.0) as src:
        t = time.monotonic()
        with pytest.raises(SourceError, match="timed out.*2 attempts"):
            src.query_range(SIG, 1000.0, 1600.0, 60.0)
        assert time.monotonic() - t < 1.5
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"status": "success"}',
        b'{"status": "success", "data": {"resultType": "vector", "result": []}}',
        b'{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1000, 5]]}]}}',
    ],
)
def test_garbage_responses_raise_source_error(fake: tuple[Script, str], body: bytes) -> None:
    script, url = fake
    script.replies = [Reply(200, body)]
    with PrometheusSource(url, retries=2) as src:
        with pytest.raises(SourceError):
            src.query_range(SIG, 1000.0, 1600.0, 60.0)
    assert len(script.requests) == 1


def test_warnings_are_logged_and_secrets_never_are(
    fake: tuple[Script, str], caplog: pytest.LogCaptureFixture
) -> None:
    script, url = fake
    script.replies = [
        Reply(502, b"bad gateway"),
        Reply(body=_matrix([], warnings=["PromQL info: metric might not be a counter"])),
    ]
    secret_url = url.replace("http://", "http://alice:pa55word@")
    caplog.set_level(logging.DEBUG, logger="detector.source.prometheus_api")
    with PrometheusSource(secret_url, bearer_token_file=None, retries=1, backoff=0.0) as src:
        src.query_range(SIG, 1000.0, 1600.0, 60.0)
        assert "pa55word" not in repr(src)
    assert "metric might not be a counter" in caplog.text
    assert "pa55word" not in caplog.text and "alice" not in caplog.text
    assert redact_url(secret_url) == url
    # the credentials in the URL were still sent, as basic auth
    assert script.requests[-1]["headers"]["Authorization"].startswith("Basic ")


def test_bearer_token_file_is_read_per_request_and_not_leaked(
    fake: tuple[Script, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script, url = fake
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    script.replies = [Reply(body=_matrix([]))]
    with PrometheusSource(url, bearer_token_file=token, retries=0) as src:
        src.query_range(SIG, 1000.0, 1000.0, 60.0)
        token.write_text("tok-2")
        src.query_range(SIG, 1000.0, 1000.0, 60.0)
        script.replies = [Reply(500, b"boom")]
        with pytest.raises(SourceError) as info:
            src.query_range(SIG, 1000.0, 1000.0, 60.0)
    assert [r["headers"]["Authorization"] for r in script.requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
        "Bearer tok-2",
    ]
    assert "tok-2" not in str(info.value) and "tok-2" not in caplog.text


def test_down_source_raises_source_error() -> None:
    with PrometheusSource(f"http://127.0.0.1:{_closed_port()}", timeout=1.0, retries=1, backoff=0.0) as src:
        with pytest.raises(SourceError, match="ConnectError"):
            src.query_range(SIG, 1000.0, 1600.0, 60.0)
        assert not src.up()


def test_up_falls_back_to_a_trivial_query(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.replies = [
        Reply(404, b"not found"),
        Reply(body={"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}),
    ]
    with PrometheusSource(url) as src:
        assert src.up()
    assert [r["path"] for r in script.requests] == ["/-/ready", "/api/v1/query"]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        PrometheusSource("ftp://x")
    with pytest.raises(ValueError, match="not both"):
        PrometheusSource("http://x", bearer_token="a", basic_auth=("u", "p"))
    with pytest.raises(ValueError, match="timeout"):
        PrometheusSource("http://x", timeout=0)


def test_pipeline_over_a_down_source_observes_everything() -> None:
    from detector.decision.pipeline import Pipeline
    from detector.spec.load import default_pack

    with PrometheusSource(f"http://127.0.0.1:{_closed_port()}", timeout=1.0, retries=0) as src:
        ev = Pipeline("down", default_pack(), src).evaluate(1_700_000_000.0)
    assert not ev.source_up and ev.binding == "observability"
    measured = [c for c in ev.constraints if c.name != "meta"]
    assert measured and all(c.state == "observe" for c in measured)
    assert all("unavailable" in c.missing[0] for c in measured)
