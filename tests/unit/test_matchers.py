"""Regex and negative label matchers: one meaning on every path (store, PromQL, a real Prometheus)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.source.native import NativeSource
from detector.source.openmetrics import load_openmetrics, write_openmetrics
from detector.source.prometheus_api import PrometheusSource
from detector.source.promql import compile_promql, selector
from detector.source.store import SampleStore
from detector.spec.load import PackError, load_pack_text
from detector.spec.matchers import describe, matches, regex_problem
from detector.spec.signals import Signal
from tests._procs import PROMTOOL, PrometheusProcess, require_binary

CODES = ("200", "204", "404", "500", "503", "1503")


def test_promql_semantics() -> None:
    assert matches({"code": "503"}, [("code", "5..", "=~")])
    assert not matches({"code": "1503"}, [("code", "5..", "=~")])  # anchored
    assert not matches({"code": "5030"}, [("code", "5..", "=~")])
    assert matches({}, [("code", "200", "!=")])  # absent label reads as ''
    assert not matches({}, [("code", "5..", "=~")])
    assert matches({}, [("code", "", "=")]) and matches({}, [("code", "5..", "!~")])
    assert matches({"code": "404", "r": "eu"}, [("code", "2..|3..", "!~"), ("r", "eu")])
    assert describe([("code", "5..", "=~"), ("r", "eu")]) == 'code=~"5..", r="eu"'
    assert selector("http_requests_total", (("code", "5..", "=~"), ("r", "eu"))) == (
        'http_requests_total{code=~"5..", r="eu"}'
    )
    for bad, why in (
        ("(a)\\1", "backreferences"),
        ("(?=x)y", "lookaround"),
        ("a++", "possessive"),
        ("(", "invalid"),
    ):
        assert why in (regex_problem(bad) or ""), bad
    assert regex_problem("5..|4[0-9]{2}") is None
    with pytest.raises(ValueError, match="backreferences"):
        selector("x", (("a", "(b)\\1", "=~"),))


HEADER = "apiVersion: csf/v1\nkind: ConstraintPack\nmetadata: {name: web, version: '1'}\n"


def _pack(matchers: str) -> str:
    return HEADER + (
        "constraints:\n"
        "  - name: errors\n"
        "    layer: physics\n"
        "    signal:\n"
        "      ratio:\n"
        f"        numerator: {{rate: http_requests_total, matchers: {matchers}}}\n"
        "        denominator: {rate: http_requests_total}\n"
        "      by: [region]\n"
        "    outcome: {gauge: y, by: [region]}\n"
        "    target: 0.01\n"
        "    units: [region]\n"
    )


def test_pack_syntax_and_refusals() -> None:
    pack = load_pack_text(_pack("{http_response_status_code: {regex: '5..'}, method: {not: OPTIONS}}"))
    num = pack.constraint("errors").signal.numerator
    assert num.matchers == (("http_response_status_code", "5..", "=~"), ("method", "OPTIONS", "!="))
    assert compile_promql(pack.constraint("errors").signal).startswith(
        'sum by (region) (rate(http_requests_total{http_response_status_code=~"5..", method!="OPTIONS"}[5m]))'
    )
    plain = load_pack_text(_pack("{code: '500'}")).constraint("errors").signal.numerator
    assert plain.matchers == (("code", "500"),)  # equality keeps its old form
    for text, where, why in (
        ("{code: {regex: '(5)\\1'}}", "matchers.code.regex", "backreferences are not supported"),
        ("{code: {regex: '5(..'}}", "matchers.code.regex", "invalid regular expression"),
        ("{code: {regx: '5..'}}", "matchers.code.regx", "did you mean 'regex'?"),
        ("{code: {regex: '5..', not: '503'}}", "matchers.code", "give exactly one of"),
    ):
        with pytest.raises(PackError) as exc:
            load_pack_text(_pack(text))
        (issue,) = exc.value.issues
        assert issue.field_path.endswith(where) and why in issue.message, (text, issue)
        assert issue.line == 9 and issue.column > 0  # the numerator line


@pytest.fixture(scope="module")
def http_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleStore, Path]:
    tmp = tmp_path_factory.mktemp("matchers")
    t0 = 1_700_000_000.0
    ts = t0 + 15.0 * np.arange(480)  # 2 h at 15 s
    rng = np.random.default_rng(3)
    series = []
    for region in ("eu", "us"):
        for code in CODES:
            rate = {"200": 50.0, "204": 5.0, "404": 3.0, "500": 0.5, "503": 1.0, "1503": 7.0}[code]
            inc = rng.poisson(rate * 15.0, len(ts)).astype(float)
            series.append(
                ("http_requests_total", "counter", {"region": region, "code": code}, ts, np.cumsum(inc))
            )
    om = tmp / "http.om"
    with open(om, "w", encoding="utf-8") as fh:
        write_openmetrics(fh, series)
    store = SampleStore(retention=None)
    load_openmetrics(om, store)
    tsdb = tmp / "tsdb"
    res = subprocess.run(
        [require_binary(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return store, tsdb


@pytest.mark.parametrize(
    "matchers",
    [
        (("code", "5..", "=~"),),
        (("code", "200", "!="),),
        (("code", "2..|3..", "!~"),),
        (("code", "5..", "=~"), ("region", "eu")),
    ],
    ids=["regex", "not-equal", "not-regex", "regex-and-equal"],
)
def test_native_and_a_real_prometheus_select_the_same_series(
    matchers: tuple, http_data: tuple[SampleStore, Path], tmp_path: Path
) -> None:
    store, tsdb = http_data
    signal = Signal(
        kind="ratio",
        by=("region",),
        numerator=Signal(kind="rate", metric="http_requests_total", by=("region",), matchers=matchers),
        denominator=Signal(kind="rate", metric="http_requests_total", by=("region",)),
    )
    start, end = 1_700_000_000.0 + 600 + 7, 1_700_000_000.0 + 7000 + 7
    native = NativeSource(store).query_range(signal, start, end, 60.0)
    with PrometheusProcess(
        tmp_path, "global: {}\n", data_dir=tsdb, extra_args=("--storage.tsdb.retention.time=10y",)
    ) as proc:
        proc.wait_ready(60)
        with PrometheusSource(proc.url) as source:
            prom = source.query_range(signal, start, end, 60.0)
    assert native.units == prom.units and native.units
    np.testing.assert_allclose(native.values, prom.values, rtol=1e-9)
    # and it is the intended selection: the 5xx share excludes 1503 (anchored)
    if matchers == (("code", "5..", "=~"),):
        assert 0.015 < float(np.nanmean(native.values)) < 0.03  # (0.5 + 1) / 66.5
