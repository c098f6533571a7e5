"""Hostile input: the parsers and decoders answer with their own typed error, never another exception.

Each target gets arbitrary input and mutated copies of valid input (hypothesis):

* pack loader (`load_pack_text`): a `Pack` or a `PackError` whose issues point into the text;
* config loader (`load_config`): a `Config` or a `ConfigError`;
* OpenMetrics parser (`parse_openmetrics`): data or an `OpenMetricsError` with a line number
  inside the text (and the unmutated file parses back to exactly what was written);
* remote_write and OTLP receivers: a decode error with a 4xx status (pure decoders), and
  over HTTP (in-process ASGI app) a 2xx/4xx answer, never a 5xx;
* decompression bombs (snappy, gzip): refused with 413 while the process' peak memory
  stays flat (measured in a subprocess, so earlier tests cannot hide a spike).

Examples are derandomized (the same inputs on every run: a CI gate must not be flaky);
``CSF_FUZZ_SCALE=10 CSF_FUZZ_RANDOM=1`` runs a ten times longer random campaign locally.
Every bug these found is pinned by an explicit regression test below (``test_regression_*``).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import cramjam
import httpx
import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from detector.service.config import Config, ConfigError, load_config
from detector.source.ingest import IngestError
from detector.source.ingest.otlp import (
    DeltaAccumulator,
    decode_request,
    otlp_router,
    store_translation,
    translate,
)
from detector.source.ingest.remote_pb import messages
from detector.source.ingest.remote_write import decode_write_request, remote_write_router, store_series
from detector.source.openmetrics import OpenMetricsError, parse_openmetrics, write_openmetrics
from detector.source.store import SampleStore
from detector.spec.load import PackError, default_pack_path, load_pack_text
from detector.spec.pack import Pack
from tests._procs import serve_asgi

SCALE = max(1, int(os.environ.get("CSF_FUZZ_SCALE", "1")))
pytestmark = pytest.mark.timeout(120 * SCALE)  # a hang fails its test instead of stalling the suite
RANDOM = os.environ.get("CSF_FUZZ_RANDOM", "") == "1"


def fuzz(examples: int, deadline_s: float = 5.0) -> Callable[[Any], Any]:
    """Bounded hypothesis settings: `examples` (times CSF_FUZZ_SCALE) and a per-example deadline
    generous enough for a loaded CI machine (typical examples take milliseconds: a deadline
    hit means super-linear work; a real hang is stopped by pytest-timeout)."""
    return settings(
        max_examples=examples * SCALE,
        deadline=timedelta(seconds=deadline_s),
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --------------------------------------------------------------------------- text mutation

YAML_CHARS = ":-[]{}&*!|>'\"%@`#,?\t\n .0123456789eE+_\\<="
INTERESTING_VALUES = [
    "",
    "~",
    "null",
    "-1",
    "0",
    "1e309",
    "-.inf",
    ".nan",
    "9" * 400,
    "9" * 5000,
    "0x7fffffffffffffff",
    "!!int x",
    "!!float x",
    "!!binary zz",
    "!!timestamp x",
    "!!bool maybe",
    "!!null x",
    "!!seq x",
    "!!set x",
    "!!python/object:os.system x",
    "!foo x",
    "[1, [2, [3]]]",
    "{a: 1}",
    "&anchor x",
    "*anchor",
    "'5m'",
    "-5m",
    "1h30m",
    "5mm",
    "true",
    "2001-01-01",
    '"\\0"',
    '"\\ud800"',
    "<<: {a: 1}",
    "|\n  block",
    "é€😀",
]

Mutation = tuple[int, int, int, str]


@st.composite
def mutations(draw: st.DrawFn, max_ops: int = 6) -> list[Mutation]:
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.integers(0, 7))
        a = draw(st.integers(0, 1 << 20))
        b = draw(st.integers(0, 1 << 20))
        if kind == 6:
            text = draw(st.sampled_from(INTERESTING_VALUES))
        else:
            text = draw(st.text(alphabet=st.sampled_from(YAML_CHARS) | st.characters(), max_size=12))
        ops.append((kind, a, b, text))
    return ops


def mutate(text: str, ops: list[Mutation]) -> str:
    """Apply line/character mutations; indices wrap around the current text."""
    for kind, a, b, piece in ops:
        lines = text.split("\n")
        if kind == 0:  # delete a line
            del lines[a % len(lines)]
        elif kind == 1:  # duplicate a line
            i = a % len(lines)
            lines.insert(i, lines[i])
        elif kind == 2:  # swap two lines
            i, j = a % len(lines), b % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3 and text:  # replace a character
            p = a % len(text)
            text = text[:p] + (piece[:1] or " ") + text[p + 1 :]
            continue
        elif kind == 4:  # insert text
            p = a % (len(text) + 1)
            text = text[:p] + piece + text[p:]
            continue
        elif kind == 5:  # truncate
            text = text[: a % (len(text) + 1)]
            continue
        elif kind == 6:  # replace the value of a `key: value` line
            candidates = [i for i, line in enumerate(lines) if ": " in line]
            if candidates:
                i = candidates[a % len(candidates)]
                key = lines[i].split(": ", 1)[0]
                lines[i] = f"{key}: {piece}"
        else:  # re-indent a line
            i = a % len(lines)
            lines[i] = " " * (b % 7) + lines[i].lstrip(" ")
        text = "\n".join(lines)
    return text


# --------------------------------------------------------------------------- pack loader

DEFAULT_PACK = default_pack_path().read_text(encoding="utf-8")


def check_pack_outcome(text: str) -> Pack | PackError:
    """Load `text`: a Pack, or a PackError whose every issue points inside the text."""
    try:
        return load_pack_text(text, source="fuzz.yaml")
    except PackError as exc:
        assert exc.issues, "PackError without issues"
        n_lines = text.count("\n") + 2
        for issue in exc.issues:
            assert issue.file == "fuzz.yaml"
            assert 1 <= issue.line <= n_lines, (issue, n_lines)
            assert issue.column >= 1
            assert issue.message
        return exc


def test_default_pack_loads() -> None:
    """The base of the mutations is valid, so mutants are near-valid, not trivially rejected."""
    pack = check_pack_outcome(DEFAULT_PACK)
    assert isinstance(pack, Pack)
    assert len(pack.constraints) >= 5


@fuzz(200)
@given(ops=mutations())
def test_pack_mutated_default(ops: list[Mutation]) -> None:
    check_pack_outcome(mutate(DEFAULT_PACK, ops))


DEFAULT_DOC = yaml.safe_load(DEFAULT_PACK)
LEAF_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    10**400,
    0.5,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x",
    "5m",
    "-5m",
    "latency",
    "meta",
    "physics",
    "rate(x[5m])",
    "sum(",
    [],
    {},
    ["latency"],
    {"x": 1},
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


DEFAULT_PATHS = [p for p in _paths(DEFAULT_DOC) if p]


def _edit(doc: Any, path: tuple[Any, ...], op: int, value: Any, other: tuple[Any, ...]) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == 0:  # replace with an interesting leaf
        parent[last] = copy.deepcopy(value)
    elif op == 1:  # delete
        del parent[last]
    elif op == 2:  # graft another node's value here
        source = doc
        for step in other:
            source = source[step]
        parent[last] = copy.deepcopy(source)
    elif op == 3 and isinstance(parent, dict):  # rename the key
        parent[f"{last}_x"] = parent.pop(last)
    elif isinstance(parent, list):  # duplicate a list item
        parent.insert(last, copy.deepcopy(parent[last]))


@fuzz(100)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(DEFAULT_PATHS) - 1),
            st.integers(0, 4),
            st.sampled_from(LEAF_VALUES),
            st.integers(0, len(DEFAULT_PATHS) - 1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_pack_structural_edits(edits: list[tuple[int, int, Any, int]]) -> None:
    """Valid YAML, near-valid pack: one to four edits of the default pack's tree (reach the validator)."""
    doc = copy.deepcopy(DEFAULT_DOC)
    for i, op, value, j in edits:
        try:
            _edit(doc, DEFAULT_PATHS[i], op, value, DEFAULT_PATHS[j])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or reshaped this path
    check_pack_outcome(yaml.safe_dump(doc, sort_keys=False))


@fuzz(150)
@given(text=st.text(alphabet=st.sampled_from(YAML_CHARS + "abcknv") | st.characters(), max_size=300))
def test_pack_arbitrary_text(text: str) -> None:
    outcome = check_pack_outcome(text)
    assert isinstance(outcome, PackError)  # nothing this short is a complete valid pack


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["csf/v1", "ConstraintPack", "5m", "latency", "physics", "x", "1e-5"]),
)
yaml_docs = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "apiVersion",
                    "kind",
                    "metadata",
                    "name",
                    "version",
                    "constraints",
                    "windows",
                    "signal",
                    "query",
                    "target",
                    "layer",
                    "predecessors",
                    "economics",
                    "guard",
                    "causal",
                    "hysteresis",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@fuzz(150)
@given(doc=yaml_docs)
def test_pack_structured_documents(doc: Any) -> None:
    """Well-formed YAML of the wrong shape (pack keys, wrong types) is reported, not crashed on."""
    text = json.dumps(doc)  # JSON is YAML; floats like NaN/Infinity become plain strings
    check_pack_outcome(text)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(
            "constraints:\n  - target: " + "9" * 5000 + "\n",
            "constraints[0].target",
            "must be a finite number, got inf",
            id="5000-digit-int",
        ),
        pytest.param(
            "constraints:\n  - target: -" + "9" * 400 + "\n",
            "constraints[0].target",
            "must be a finite number, got -inf",
            id="400-digit-int",
        ),
        pytest.param(
            "constraints:\n  - target: !!float abc\n",
            "constraints[0].target",
            "expected a number, got an invalid !!float value ('abc')",
            id="bad-float-tag",
        ),
        pytest.param(
            "constraints:\n  - target: !!int abc\n",
            "constraints[0].target",
            "expected a number, got an invalid !!int value ('abc')",
            id="bad-int-tag",
        ),
        pytest.param(
            "windows:\n  step: " + "9" * 5000 + "\n",
            "windows.step",
            "invalid duration inf",
            id="huge-duration",
        ),
        pytest.param(
            "windows:\n  step: !!int 0x\n",
            "windows.step",
            "got an invalid !!int value ('0x')",
            id="bad-int-duration",
        ),
    ],
)
def test_regression_pack_huge_or_bad_numbers(text: str, field: str, message: str) -> None:
    """Found by fuzzing: a >4300-digit integer (ValueError), a >1e308 one (OverflowError) or an
    explicit ``!!int``/``!!float`` tag on a non-number escaped as raw exceptions."""
    outcome = check_pack_outcome(text)
    assert isinstance(outcome, PackError)
    mine = [i for i in outcome.issues if i.field_path == field]
    assert len(mine) == 1, outcome.issues
    assert mine[0].line == 2
    assert message in mine[0].message


def test_regression_pack_bad_bool_tag() -> None:
    """Found by fuzzing: an explicit ``!!bool maybe`` raised KeyError from PyYAML's constructor."""
    text = DEFAULT_PACK.replace("existence: false", "existence: !!bool maybe", 1)
    line = DEFAULT_PACK[: DEFAULT_PACK.index("existence: false")].count("\n") + 1
    outcome = check_pack_outcome(text)
    assert isinstance(outcome, PackError)
    assert [(i.line, i.message) for i in outcome.issues] == [(line, "expected true or false, got 'maybe'")]


def test_pack_alias_bomb_is_bounded() -> None:
    """A 'billion laughs' document: aliases are shared nodes, never expanded."""
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        rows.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    rows.append("constraints: *a11")
    outcome = check_pack_outcome("\n".join(rows) + "\n")
    assert isinstance(outcome, PackError)


# --------------------------------------------------------------------------- config loader

CONFIG_BASE = textwrap.dedent(
    """\
    host: 127.0.0.1
    port: 9466
    data_dir: ./data
    evaluation_interval: 60s
    log_level: info
    pipelines:
      - name: default
        source:
          type: simulator
          scenario: sequence
          seed: 1
          speed: 1.0
          interval: 60s
      - name: second
        source: {type: simulator, scenario: sequence, seed: 2}
    """
)


def check_config_outcome(path: Path, env: dict[str, str] | None = None) -> Config | ConfigError:
    try:
        return load_config(path, env or {})
    except ConfigError as exc:
        assert str(exc)
        return exc


def test_config_base_loads(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG_BASE)
    config = check_config_outcome(p)
    assert isinstance(config, Config)
    assert config.pipeline_names == ("default", "second")


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@fuzz(150)
@given(ops=mutations())
def test_config_mutated(config_dir: Path, ops: list[Mutation]) -> None:
    p = config_dir / "c.yaml"
    p.write_text(mutate(CONFIG_BASE, ops), encoding="utf-8", errors="surrogatepass")
    check_config_outcome(p)


@fuzz(150)
@given(
    env=st.dictionaries(
        st.sampled_from(
            [
                "CSF_HOST",
                "CSF_PORT",
                "CSF_DATA_DIR",
                "CSF_EVALUATION_INTERVAL",
                "CSF_LOG_LEVEL",
                "CSF_SCENARIO",
                "CSF_SEED",
                "CSF_SPEED",
            ]
        ),
        st.sampled_from(INTERESTING_VALUES) | st.text(st.characters(exclude_characters="\0"), max_size=20),
        max_size=4,
    )
)
def test_config_environment(config_dir: Path, env: dict[str, str]) -> None:
    p = config_dir / "env.yaml"
    p.write_text(CONFIG_BASE)
    check_config_outcome(p, env)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("evaluation_interval: " + "9" * 400 + "\n", id="400-digit-duration"),
        pytest.param("port: !foo 1\n", id="unknown-tag"),
        pytest.param("port: !!int abc\n", id="bad-int-tag"),
        pytest.param("host: !!binary zzz\n", id="bad-binary"),
        pytest.param('pipelines:\n  - name: a\n    pack: "x\\0y"\n', id="nul-in-pack-path"),
        pytest.param(
            "pipelines:\n  - name: a\n    source: {type: simulator, seed: " + "9" * 5000 + "}\n",
            id="5000-digit-seed",
        ),
        pytest.param(
            "pipelines:\n  - name: a\n    source: {type: simulator, speed: " + "9" * 400 + "}\n",
            id="400-digit-speed",
        ),
        pytest.param("pipelines:\n  - name: a\n    source: {type: !!int x}\n", id="bad-tag-source-type"),
        pytest.param("port: !!timestamp x\n", id="bad-timestamp-tag"),
        pytest.param("log_level: !!bool maybe\n", id="bad-bool-tag"),
    ],
)
def test_regression_config_bad_scalars(tmp_path: Path, text: str) -> None:
    """Found by fuzzing: these escaped as OverflowError/ValueError/ConstructorError, not ConfigError."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    outcome = check_config_outcome(p)
    assert isinstance(outcome, ConfigError)
    assert str(p) in str(outcome)


# --------------------------------------------------------------------------- OpenMetrics parser


def _openmetrics_fixture() -> tuple[str, list[tuple[str, dict[str, str], list[float], list[float]]]]:
    rng = np.random.default_rng(7)
    t = 1_700_000_000 + np.arange(12) * 15.0
    series: list[tuple[str, str, dict[str, str], np.ndarray, np.ndarray]] = [
        ("queue_depth", "gauge", {"pool": "a"}, t, rng.normal(10, 2, len(t))),
        ("queue_depth", "gauge", {"pool": 'b"\\\n'}, t, rng.normal(10, 2, len(t))),
        (
            "requests_total",
            "counter",
            {"code": "200"},
            t,
            np.cumsum(rng.integers(0, 50, len(t))).astype(float),
        ),
    ]
    for le in ("0.1", "1", "+Inf"):
        counts = np.cumsum(rng.integers(0, 5, len(t))).astype(float) * (1 + float(le != "0.1"))
        series.append(("latency_seconds_bucket", "histogram", {"le": le}, t, counts))
    buf = io.StringIO()
    write_openmetrics(buf, series, help={"queue_depth": "Depth of\nthe queue"})
    expected = [(n, lab, list(ts), list(v)) for n, _, lab, ts, v in series]
    return buf.getvalue(), expected


OM_TEXT, OM_SERIES = _openmetrics_fixture()


def parse_all(text: str) -> list[tuple[str, dict[str, str], np.ndarray, np.ndarray]]:
    return list(parse_openmetrics(iter(text.splitlines(keepends=True)), max_buffered=7))


def test_openmetrics_fixture_round_trips() -> None:
    """The unmutated base parses back to exactly the series written (values bit for bit)."""
    got: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[list[float], list[float]]] = {}
    for name, labels, ts, vals in parse_all(OM_TEXT):
        slot = got.setdefault((name, tuple(sorted(labels.items()))), ([], []))
        slot[0].extend(ts.tolist())
        slot[1].extend(vals.tolist())
    want = {(n, tuple(sorted(lab.items()))): (ts, v) for n, lab, ts, v in OM_SERIES}
    assert set(got) == set(want)
    for key, (ts, vals) in want.items():
        assert got[key][0] == ts
        assert np.array_equal(np.array(got[key][1]).view(np.uint64), np.array(vals).view(np.uint64))


def check_openmetrics_outcome(text: str) -> None:
    n_lines = text.count("\n") + 1
    try:
        batches = parse_all(text)
    except OpenMetricsError as exc:
        assert 1 <= exc.line_no <= n_lines + 1, (exc, n_lines)
        assert str(exc).startswith(f"line {exc.line_no}:")
        return
    for name, labels, ts, vals in batches:
        assert isinstance(name, str) and isinstance(labels, dict)
        assert ts.shape == vals.shape
        assert np.all(np.diff(ts) > 0)


@fuzz(250)
@given(ops=mutations())
def test_openmetrics_mutated(ops: list[Mutation]) -> None:
    check_openmetrics_outcome(mutate(OM_TEXT, ops))


@fuzz(200)
@given(
    lines=st.lists(
        st.text(alphabet=st.sampled_from('abc_{}=",# .0123456789eE+-\\nNaInf\tTYPEHLPUO'), max_size=40),
        max_size=12,
    )
)
def test_openmetrics_arbitrary_lines(lines: list[str]) -> None:
    check_openmetrics_outcome("\n".join(lines))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("m 1 " + "9" * 400, id="400-digit-ms-timestamp"),
        pytest.param("m 1 " + "9" * 5000, id="5000-digit-ms-timestamp"),
    ],
)
def test_regression_openmetrics_huge_integer_timestamp(line: str) -> None:
    """Found by fuzzing: a huge integer millisecond timestamp raised OverflowError/ValueError."""
    with pytest.raises(OpenMetricsError) as info:
        list(parse_openmetrics([line + "\n"], fmt="prometheus"))
    assert info.value.line_no == 1


# --------------------------------------------------------------------------- remote_write decoder

RW_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def write_request(series: list[tuple[list[tuple[str, str]], list[tuple[int, float]]]]) -> bytes:
    req = messages().WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for k, v in labels:
            ts.labels.add(name=k, value=v)
        for t_ms, v in samples:
            ts.samples.add(timestamp=t_ms, value=v)
    return bytes(req.SerializeToString())


def snappy(raw: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(raw))


RW_RAW = write_request(
    [
        ([("__name__", "up"), ("job", "a")], [(1_700_000_000_000 + 15_000 * i, 1.0) for i in range(5)]),
        ([("__name__", "req_total"), ("code", "200")], [(1_700_000_000_000, 3.0), (1_700_000_015_000, 4.5)]),
    ]
)
RW_BODY = snappy(RW_RAW)


def byte_mutations() -> st.SearchStrategy[list[tuple[int, int, bytes]]]:
    return st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.binary(max_size=8)), min_size=1, max_size=5
    )


def mutate_bytes(data: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    for kind, pos, piece in ops:
        p = pos % (len(data) + 1)
        if kind == 0 and data:  # flip a byte
            q = pos % len(data)
            data = data[:q] + bytes([data[q] ^ (1 + pos % 255)]) + data[q + 1 :]
        elif kind == 1:
            data = data[:p] + piece + data[p:]
        elif kind == 2:
            data = data[:p] + data[p + len(piece) + 1 :]
        else:
            data = data[:p]
    return data


def check_rw_decode(body: bytes) -> None:
    store = SampleStore(retention=None)
    try:
        series = decode_write_request(body, max_decoded_bytes=1 << 20)
    except IngestError as exc:
        assert 400 <= exc.status < 500, exc.status
        return
    report = store_series(store, series)
    assert report.status in (204, 400)


@fuzz(300)
@given(ops=byte_mutations(), compressed=st.booleans())
def test_remote_write_mutated_bodies(ops: list[tuple[int, int, bytes]], compressed: bool) -> None:
    """Mutations of the snappy body, and of the protobuf before (valid) compression."""
    body = mutate_bytes(RW_BODY, ops) if compressed else snappy(mutate_bytes(RW_RAW, ops))
    check_rw_decode(body)


@fuzz(150)
@given(body=st.binary(max_size=200))
def test_remote_write_random_bytes(body: bytes) -> None:
    check_rw_decode(body)
    check_rw_decode(snappy(body))


label_names = st.sampled_from(["__name__", "job", "le", "__x", "a-b", "", "0a", "é", "_"]) | st.text(
    max_size=6
)
rw_series = st.lists(
    st.tuples(
        st.lists(st.tuples(label_names, st.text(max_size=6)), max_size=4),
        st.lists(
            st.tuples(
                st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1_700_000_000_000]),
                st.floats(allow_nan=True, allow_infinity=True),
            ),
            max_size=5,
        ),
    ),
    max_size=4,
)


@fuzz(200)
@given(series=rw_series)
def test_remote_write_structured_requests(series: list[Any]) -> None:
    """Well-formed protobuf with hostile contents: bad names, int64 extremes, NaN, disorder."""
    check_rw_decode(snappy(write_request(series)))


# --------------------------------------------------------------------------- OTLP decoder


def _otlp_base() -> metrics_service_pb2.ExportMetricsServiceRequest:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "api"
    sm = rm.scope_metrics.add()
    g = sm.metrics.add(name="queue.depth", unit="{item}")
    p = g.gauge.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_double=3.5)
    p.attributes.add(key="pool").value.string_value = "a"
    s = sm.metrics.add(name="requests", unit="1")
    s.sum.is_monotonic = True
    s.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    s.sum.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_int=7)
    h = sm.metrics.add(name="latency", unit="s")
    h.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    hp = h.histogram.data_points.add(time_unix_nano=1_700_000_000_000_000_000, count=6, sum=2.5)
    hp.explicit_bounds.extend([0.1, 1.0])
    hp.bucket_counts.extend([1, 3, 2])
    q = sm.metrics.add(name="rtt", unit="ms")
    qp = q.summary.data_points.add(time_unix_nano=1_700_000_000_000_000_000, count=3, sum=9.0)
    qp.quantile_values.add(quantile=0.5, value=2.0)
    return req


OTLP_REQ = _otlp_base()
OTLP_PB = OTLP_REQ.SerializeToString()
OTLP_JSON = json_format.MessageToJson(OTLP_REQ, indent=2)


def check_otlp_decode(body: bytes, content_type: str, encoding: str | None = None) -> None:
    try:
        req, _ = decode_request(body, content_type, encoding, max_decoded_bytes=1 << 20)
    except IngestError as exc:
        assert 400 <= exc.status < 500, exc.status
        return
    report = store_translation(SampleStore(retention=None), translate(req, DeltaAccumulator()))
    assert report.status == 200


@fuzz(250)
@given(ops=byte_mutations(), gz=st.booleans())
def test_otlp_mutated_protobuf(ops: list[tuple[int, int, bytes]], gz: bool) -> None:
    body = mutate_bytes(OTLP_PB, ops)
    if gz:
        check_otlp_decode(gzip.compress(body, mtime=0), "application/x-protobuf", "gzip")
        check_otlp_decode(
            mutate_bytes(gzip.compress(OTLP_PB, mtime=0), ops), "application/x-protobuf", "gzip"
        )
    else:
        check_otlp_decode(body, "application/x-protobuf")


@fuzz(200)
@given(ops=mutations())
def test_otlp_mutated_json(ops: list[Mutation]) -> None:
    text = mutate(OTLP_JSON, ops)
    check_otlp_decode(text.encode("utf-8", "surrogatepass"), "application/json")


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
timestamps_ns = st.sampled_from([0, 1, 1_700_000_000_000_000_000, 2**64 - 1]) | st.integers(0, 2**64 - 1)


@st.composite
def otlp_requests(draw: st.DrawFn) -> metrics_service_pb2.ExportMetricsServiceRequest:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for key in draw(
        st.lists(
            st.sampled_from(["service.name", "service.namespace", "service.instance.id", "x"]), max_size=3
        )
    ):
        rm.resource.attributes.add(key=key).value.string_value = draw(st.text(max_size=5))
    sm = rm.scope_metrics.add()
    for _ in range(draw(st.integers(1, 3))):
        m = sm.metrics.add(
            name=draw(st.sampled_from(["a.b", "", "_", "0x", "x_total", "é"]) | st.text(max_size=8)),
            unit=draw(
                st.sampled_from(["", "1", "s", "By/s", "{x}", "/", "a/", "/s", "%"]) | st.text(max_size=5)
            ),
        )
        kind = draw(
            st.sampled_from(["gauge", "sum", "histogram", "summary", "exponential_histogram", "none"])
        )
        if kind == "none":
            continue
        data = getattr(m, kind)
        if kind in ("sum", "histogram", "exponential_histogram"):
            data.aggregation_temporality = draw(st.integers(0, 3))
        if kind == "sum":
            data.is_monotonic = draw(st.booleans())
        for _ in range(draw(st.integers(0, 3))):
            p = data.data_points.add(time_unix_nano=draw(timestamps_ns), flags=draw(st.integers(0, 3)))
            for key in draw(
                st.lists(st.sampled_from(["a", "a.", "__x", "1", "", "le", "quantile", "job"]), max_size=3)
            ):
                attr = p.attributes.add(key=key).value
                choice = draw(st.integers(0, 4))
                if choice == 0:
                    attr.string_value = draw(st.text(max_size=5))
                elif choice == 1:
                    attr.double_value = draw(finite_or_not)
                elif choice == 2:
                    attr.int_value = draw(st.integers(-(2**63), 2**63 - 1))
                elif choice == 3:
                    attr.array_value.values.add().bool_value = True
            if kind in ("gauge", "sum"):
                if draw(st.booleans()):
                    p.as_double = draw(finite_or_not)
                else:
                    p.as_int = draw(st.integers(-(2**63), 2**63 - 1))
            elif kind == "histogram":
                p.explicit_bounds.extend(draw(st.lists(finite_or_not, max_size=3)))
                p.bucket_counts.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=4)))
                p.count = draw(st.integers(0, 2**64 - 1))
                if draw(st.booleans()):
                    p.sum = draw(finite_or_not)
            elif kind == "summary":
                p.count = draw(st.integers(0, 2**64 - 1))
                p.sum = draw(finite_or_not)
                for _ in range(draw(st.integers(0, 2))):
                    p.quantile_values.add(quantile=draw(finite_or_not), value=draw(finite_or_not))
    return req


@fuzz(200)
@given(req=otlp_requests(), as_json=st.booleans())
def test_otlp_structured_requests(req: Any, as_json: bool) -> None:
    """Well-formed exports with hostile contents: NaN bounds, u64 extremes, odd names and units."""
    if as_json:
        check_otlp_decode(json_format.MessageToJson(req).encode(), "application/json")
    else:
        check_otlp_decode(req.SerializeToString(), "application/x-protobuf")


# --------------------------------------------------------------------------- both receivers over HTTP


@pytest.fixture(scope="module")
def ingest_client() -> Iterator[httpx.Client]:
    """Both receivers (64 KiB body / 256 KiB decoded limits) served by uvicorn on loopback."""
    store = SampleStore(retention=None)
    app = FastAPI()
    app.include_router(remote_write_router(store, max_body_bytes=1 << 16, max_decoded_bytes=1 << 18))
    app.include_router(otlp_router(store, max_body_bytes=1 << 16, max_decoded_bytes=1 << 18))
    with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        yield client


header_values = st.sampled_from(
    [
        None,
        "",
        "application/x-protobuf",
        "application/json",
        "application/x-protobuf;proto=x",
        "text/plain",
        "snappy",
        "gzip",
        "identity",
        "0.1.0",
        "2.0.0",
        "application/x-protobuf; proto=prometheus.WriteRequest",
    ]
)


@fuzz(200)
@given(
    path=st.sampled_from(["/api/v1/write", "/v1/metrics"]),
    base=st.sampled_from(["rw", "otlp-pb", "otlp-json", "random"]),
    ops=byte_mutations(),
    ctype=header_values,
    encoding=header_values,
    version=header_values,
    random=st.binary(max_size=64),
)
def test_receivers_never_answer_5xx(
    ingest_client: httpx.Client,
    path: str,
    base: str,
    ops: list[tuple[int, int, bytes]],
    ctype: str | None,
    encoding: str | None,
    version: str | None,
    random: bytes,
) -> None:
    body = {"rw": RW_BODY, "otlp-pb": OTLP_PB, "otlp-json": OTLP_JSON.encode(), "random": random}[base]
    headers = {
        k: v
        for k, v in (
            ("Content-Type", ctype),
            ("Content-Encoding", encoding),
            ("X-Prometheus-Remote-Write-Version", version),
        )
        if v is not None
    }
    r = ingest_client.post(path, content=mutate_bytes(body, ops), headers=headers)
    assert r.status_code in (200, 204, 400, 413, 415), (r.status_code, r.text[:300])


def test_receivers_accept_the_unmutated_bases() -> None:
    """The fuzz bases are accepted as is by fresh receivers (so mutants start from valid requests)."""
    app = FastAPI()
    store = SampleStore(retention=None)
    app.include_router(remote_write_router(store))
    app.include_router(otlp_router(store))
    with serve_asgi(app) as url, httpx.Client(base_url=url, timeout=10.0) as client:
        check_bases_accepted(client)
    assert set(store.names()) >= {
        "fuzz_base",
        "queue_depth",
        "requests_total",
        "latency_seconds_bucket",
        "rtt_milliseconds",
    }


def check_bases_accepted(ingest_client: httpx.Client) -> None:
    r = ingest_client.post(
        "/api/v1/write",
        content=snappy(
            write_request([([("__name__", "fuzz_base"), ("job", "a")], [(1_600_000_000_000, 1.0)])])
        ),
        headers=RW_HEADERS,
    )
    assert r.status_code == 204, r.text
    r = ingest_client.post("/v1/metrics", content=OTLP_PB, headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200, r.text
    reply = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_data_points == 0


# --------------------------------------------------------------------------- decompression bombs

BOMB_SCRIPT = r"""
import asyncio, gzip, json, resource, zlib
import cramjam, httpx
from fastapi import FastAPI
from detector.source.ingest.otlp import otlp_router
from detector.source.ingest.remote_write import remote_write_router
from detector.source.store import SampleStore

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

LIMIT = 4 << 20
store = SampleStore(retention=None)
app = FastAPI()
app.include_router(remote_write_router(store, max_body_bytes=8 << 20, max_decoded_bytes=LIMIT))
app.include_router(otlp_router(store, max_body_bytes=8 << 20, max_decoded_bytes=LIMIT))

# bodies: 512 MiB of zeros through gzip (~0.5 MiB), 100 MiB through snappy (~5 MiB),
# a snappy header that claims 4 GiB, and one that lies (claims 1 MiB, holds 100 MiB)
z = zlib.compressobj(9, zlib.DEFLATED, 31)
chunk = bytes(1 << 20)
gz = b"".join([z.compress(chunk) for _ in range(512)] + [z.flush()])
sn = bytes(cramjam.snappy.compress_raw(bytes(100 << 20)))
claims_4g = b"\xff\xff\xff\xff\x0f" + sn[5:1000]
lying = b"\x80\x80\x40" + sn[4:]  # varint header of 1 MiB, then the 100 MiB payload
del chunk
rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
gzh = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as client:
        await client.post("/v1/metrics", content=gzip.compress(b"{}"), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        base = peak_mib()
        out = {"sizes": [len(gz), len(sn)], "status": []}
        for _ in range(3):
            for body, headers in ((gz, gzh), (sn, rw), (claims_4g, rw), (lying, rw)):
                out["status"].append((await client.post("/v1/metrics" if headers is gzh else "/api/v1/write", content=body, headers=headers)).status_code)
        out["growth_mib"] = peak_mib() - base
    return out

print(json.dumps(asyncio.run(main())))
"""


def test_decompression_bombs_are_refused_with_flat_memory() -> None:
    """gzip (OTLP) and snappy (remote_write) bombs: 413/400, and peak RSS grows < 48 MiB
    although the bodies expand to 512 MiB / 100 MiB / a claimed 4 GiB."""
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    gz_size, sn_size = out["sizes"]
    assert gz_size < 1 << 20 and sn_size < 8 << 20  # the bodies themselves pass the body limit
    assert out["status"] == [413, 413, 413, 400] * 3
    assert out["growth_mib"] < 48, out


# --------------------------------------------------------------------------- atheris harnesses


@pytest.mark.parametrize("harness", ["fuzz_pack", "fuzz_openmetrics", "fuzz_ingest"])
def test_atheris_harness_runs_clean(harness: str, tmp_path: Path) -> None:
    """Each coverage-guided harness in tests/fuzz/ starts and survives a short run (300 inputs).

    The long campaigns are run by hand: ``python tests/fuzz/<harness>.py -max_total_time=300``.
    """
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.skip("atheris is not installed (pip install atheris)")
    script = Path(__file__).resolve().parent / f"{harness}.py"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "-runs=300",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 300 runs" in proc.stderr
    assert not list(tmp_path.glob("crash-*"))
