"""Strict pack loader and the default platform pack.

Bad fixtures in tests/data/packs mark every line that must produce an issue with
``# expect: FIELD.PATH ~ MESSAGE SUBSTRING`` (several joined by `` | ``). The tests
read the markers independently of the loader and require the loader to report
exactly those (line, field path) pairs, no more and no fewer.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.cli import main
from detector.spec.load import (
    PackError,
    PackIssue,
    default_pack,
    default_pack_path,
    load_pack,
    load_pack_text,
)
from detector.spec.pack import (
    ApplicabilityGuard,
    CausalSettings,
    EconomicConstants,
    Hysteresis,
    Organisation,
    Pack,
    ProtocolFloorGuard,
    Windows,
)
from detector.spec.signals import Signal

DATA = Path(__file__).parents[1] / "data" / "packs"
BAD = sorted(DATA.glob("bad_*.yaml"))

HEADER = 'apiVersion: csf/v1\nkind: ConstraintPack\nmetadata: {name: t, version: "1"}\n'


def _markers(path: Path) -> list[tuple[int, str, str]]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if "# expect:" not in line:
            continue
        for part in line.split("# expect:", 1)[1].split(" | "):
            field_path, _, substring = part.partition(" ~ ")
            out.append((lineno, field_path.strip(), substring.strip()))
    return out


def _issues(text: str) -> list[PackIssue]:
    with pytest.raises(PackError) as info:
        load_pack_text(text, source="t.yaml")
    return info.value.issues


def _without_source(pack: Pack) -> Pack:
    return dataclasses.replace(pack, source=None)


# --------------------------------------------------------------------------- default pack


def test_default_pack_order_layers_and_dependencies() -> None:
    pack = default_pack()
    assert pack.api_version == "csf/v1"
    assert pack.name == "microlearning-video"
    assert pack.names == ("latency", "protocol", "supply", "cold_start", "consistency", "meta")
    layers = {c.name: c.layer for c in pack}
    assert layers == {
        "latency": "physics",
        "protocol": "architecture",
        "supply": "resource",
        "cold_start": "information",
        "consistency": "trust",
        "meta": "meta",
    }
    assert pack.constraint("latency").predecessors == ()
    assert pack.ancestors("consistency") == ("latency", "protocol", "supply", "cold_start")
    meta = pack.constraint("meta")
    assert meta.kind == "meta" and meta.signal is None and meta.outcome is None
    assert meta.target == pack.organisation.meta_overhead_limit == 0.5


def test_default_pack_targets_units_and_labels() -> None:
    pack = default_pack()
    expected = {
        # name: (target, units, stratum, segment)  -- platform-pack.md sections 1-5
        "latency": (0.300, ("region", "device_tier"), "device_tier", "region"),
        "protocol": (0.300, ("region", "device_tier"), "device_tier", "region"),
        "supply": (30.0, ("region", "creator_tier"), "creator_tier", "region"),
        "cold_start": (1.0, ("region", "skill_level"), "skill_level", "region"),
        "consistency": (1e-5, ("region", "client"), "client", "region"),
    }
    for name, (target, units, stratum, segment) in expected.items():
        c = pack.constraint(name)
        assert (c.target, c.units, c.stratum, c.segment) == (target, units, stratum, segment), name
        assert c.direction == "lower_is_better" and c.outcome_direction == "lower_is_better"


def test_default_pack_signals() -> None:
    pack = default_pack()
    p95 = Signal(
        kind="histogram_quantile",
        metric="video_start_latency_seconds",
        by=("region", "device_tier"),
        quantile=0.95,
        range=300.0,
    )
    units = ("region", "device_tier")
    abandonment = Signal(
        kind="ratio",
        by=units,
        numerator=Signal(kind="rate", metric="video_start_abandonments_total", by=units),
        denominator=Signal(kind="rate", metric="video_starts_total", by=units),
    )
    for name in ("latency", "protocol"):
        assert pack.constraint(name).signal == p95
        assert pack.constraint(name).outcome == abandonment
        assert pack.constraint(name).input("dau") == Signal(kind="gauge", metric="daily_active_users")

    supply = pack.constraint("supply")
    cu = ("region", "creator_tier")
    assert supply.signal == Signal(
        kind="histogram_quantile", metric="transcode_wait_seconds", by=cu, quantile=0.95
    )
    assert supply.outcome == Signal(
        kind="ratio",
        by=cu,
        range=3600.0,
        numerator=Signal(kind="increase", metric="creators_churned_total", by=cu, range=3600.0),
        denominator=Signal(kind="gauge", metric="active_creators", by=cu),
    )
    assert supply.input("active_creators") == Signal(kind="gauge", metric="active_creators")
    assert supply.input("transcode_queue_depth").metric == "transcode_queue_depth"
    assert supply.input("gpu_quota_utilization_ratio") == Signal(
        kind="gauge", metric="gpu_quota_utilization_ratio", agg="max"
    )

    cold = pack.constraint("cold_start")
    su = ("region", "skill_level")
    assert cold.signal == Signal(kind="histogram_mean", metric="first_session_irrelevant_videos", by=su)
    assert cold.outcome is not None and cold.outcome.numerator is not None
    assert cold.outcome.numerator.metric == "first_session_early_exits_total"
    assert cold.outcome.denominator == Signal(kind="rate", metric="first_sessions_total", by=su)
    assert cold.input("new_users_per_day") == Signal(
        kind="rate", metric="first_sessions_total", range=3600.0, scale=86400.0
    )

    cons = pack.constraint("consistency")
    ru = ("region", "client")
    assert cons.signal == Signal(
        kind="ratio",
        by=ru,
        numerator=Signal(kind="rate", metric="streak_reset_incidents_total", by=ru),
        denominator=Signal(kind="rate", metric="user_actions_total", by=ru),
    )
    assert cons.outcome == Signal(
        kind="ratio",
        by=ru,
        numerator=Signal(kind="rate", metric="users_churned_total", by=ru),
        denominator=Signal(kind="gauge", metric="daily_active_users", by=("region",)),
    )
    assert cons.input("incidents_per_day") == Signal(
        kind="rate", metric="streak_reset_incidents_total", range=3600.0, scale=86400.0
    )
    assert [name for name, _ in cons.inputs] == ["incidents_per_day"]


def test_default_pack_guards() -> None:
    pack = default_pack()
    floors = (("tcp_hls", 0.370), ("ll_hls", 0.280), ("quic_moq", 0.100))
    share = Signal(kind="rate", metric="video_starts_total", by=("protocol",), range=3600.0)
    modes: tuple[tuple[str, Literal["needs_headroom", "needs_exhausted"]], ...] = (
        ("latency", "needs_headroom"),
        ("protocol", "needs_exhausted"),
    )
    for name, mode in modes:
        (guard,) = pack.constraint(name).guards
        assert guard == ProtocolFloorGuard(
            share=share, label="protocol", floors=floors, mode=mode, tail_share=0.05, headroom=0.10
        )
    assert pack.constraint("supply").guards == (
        ApplicabilityGuard(numerator="active_creators", denominator="dau", min_ratio=0.005),
    )
    assert pack.constraint("cold_start").guards == ()


def test_default_pack_economics_and_exceptions() -> None:
    pack = default_pack()
    lat = pack.constraint("latency").economics
    assert (lat.model, lat.affected, lat.weibull_lambda, lat.weibull_k, lat.baseline) == (
        "weibull",
        "dau",
        3.39,
        2.28,
        None,
    )
    assert (lat.effectiveness, lat.reach, lat.cost_per_year) == (1.0, 1.0, 120_000)

    proto = pack.constraint("protocol")
    e = proto.economics
    assert (e.model, e.affected, e.weibull_lambda, e.weibull_k, e.baseline) == (
        "weibull",
        "dau",
        3.39,
        2.28,
        0.1,
    )
    assert (e.reach, e.cost_per_year) == (0.58, 2_900_000)
    assert proto.exceptions.one_way_door_months == 18
    assert proto.exceptions.lead_time_months is not None and proto.exceptions.lead_time_months > 6
    assert not proto.exceptions.existence

    sup = pack.constraint("supply")
    s = sup.economics
    assert (s.model, s.affected, s.weibull_lambda, s.weibull_k, s.baseline) == (
        "creator_weibull",
        "active_creators",
        90,
        4.5,
        30,
    )
    assert (s.learner_days_per_creator, s.cost_per_year) == (10_000, 464_000)
    assert sup.exceptions.existence

    cold = pack.constraint("cold_start").economics
    assert (cold.model, cold.affected, cold.weibull_lambda, cold.weibull_k) == (
        "weibull",
        "new_users_per_day",
        3.3,
        3.5,
    )
    assert (cold.effectiveness, cold.cost_per_year) == (0.35, 62_000)

    cons = pack.constraint("consistency").economics
    assert (cons.model, cons.affected, cons.streak_histogram) == (
        "loss_aversion",
        "incidents_per_day",
        "streak_length_at_reset_days",
    )
    assert (cons.loss_aversion_alpha, cons.churn_per_incident, cons.effectiveness) == (1.2, 0.15, 0.83)
    assert (cons.support_savings_per_year, cons.cost_per_year) == (1_500_000, 264_000)
    # framework.md section 6: consistency ROI = 0.83 x ($6.4M + $1.5M support) / $264K = 24.8x
    assert cons.effectiveness * (6.4e6 + cons.support_savings_per_year) / cons.cost_per_year == pytest.approx(
        24.8, abs=0.05
    )
    # every input the economics models name is declared on its constraint
    for c in pack:
        if c.economics.affected is not None:
            c.input(c.economics.affected)


def test_default_pack_global_sections() -> None:
    pack = default_pack()
    assert pack.economics.arpu_day == 0.0573
    assert pack.economics.arpu_day * 30 == pytest.approx(1.72, abs=0.005)  # $1.72/month
    assert pack.economics.base_theta == 1.0 + 4 * 0.5
    org = pack.organisation
    assert (org.runway_months, org.projected_dau) == (24, 50e6)
    assert org.dau == Signal(kind="gauge", metric="daily_active_users")
    assert org.dau_tiers == (1e6, 3e6, 10e6, 50e6)
    assert org.analysis_hours is None and org.capacity_hours is None
    # The default pack spells out every framework default; the model's defaults agree.
    assert pack.windows == Windows()
    assert pack.hysteresis == Hysteresis()
    assert pack.causal == CausalSettings()
    assert pack.economics == EconomicConstants()
    assert dataclasses.replace(org, dau=None) == Organisation()


# platform-pack.md, "Input metric contract": name -> (type, labels)
CONTRACT = {
    "daily_active_users": ("gauge", {"region"}),
    "video_start_latency_seconds": ("histogram", {"region", "device_tier"}),
    "video_starts_total": ("counter", {"region", "device_tier", "protocol"}),
    "video_start_abandonments_total": ("counter", {"region", "device_tier"}),
    "transcode_wait_seconds": ("histogram", {"region", "creator_tier"}),
    "transcode_queue_depth": ("gauge", {"region"}),
    "gpu_quota_utilization_ratio": ("gauge", {"region"}),
    "active_creators": ("gauge", {"region", "creator_tier"}),
    "creators_churned_total": ("counter", {"region", "creator_tier"}),
    "first_sessions_total": ("counter", {"region", "skill_level"}),
    "first_session_irrelevant_videos": ("histogram", {"region", "skill_level"}),
    "first_session_early_exits_total": ("counter", {"region", "skill_level"}),
    "user_actions_total": ("counter", {"region", "client"}),
    "streak_reset_incidents_total": ("counter", {"region", "client"}),
    "streak_length_at_reset_days": ("histogram", {"region", "client"}),
    "users_churned_total": ("counter", {"region", "client"}),
}


def _leaves(sig: Signal) -> list[Signal]:
    return [leaf for c in sig.children() for leaf in _leaves(c)] if sig.kind == "ratio" else [sig]


def test_default_pack_reads_only_contract_metrics_and_labels() -> None:
    pack = default_pack()
    signals: list[Signal] = [pack.organisation.dau] if pack.organisation.dau else []
    for c in pack:
        signals += [s for s in (c.signal, c.outcome) if s is not None]
        signals += [s for _, s in c.inputs]
        signals += [g.share for g in c.guards if isinstance(g, ProtocolFloorGuard)]
    used: set[str] = set()
    for c in pack:
        if c.economics.streak_histogram is not None:
            assert CONTRACT[c.economics.streak_histogram][0] == "histogram"
            used.add(c.economics.streak_histogram)
    for sig in signals:
        for leaf in _leaves(sig):
            metric, labels = leaf.metric, set(leaf.labels_used())
            if leaf.kind in ("histogram_quantile", "histogram_mean"):
                want = "histogram"
            else:
                want = "gauge" if leaf.kind == "gauge" else "counter"
            assert metric in CONTRACT, metric
            mtype, allowed = CONTRACT[metric]
            assert mtype == want, (metric, leaf.kind)
            assert labels <= allowed, (metric, labels)
            used.add(metric)
    assert used == set(CONTRACT)  # the pack uses every metric of the contract


def test_default_pack_numbers_carry_a_comment() -> None:
    text = default_pack_path().read_text(encoding="utf-8")
    lines = text.splitlines()
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    uncommented = []
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(v for pair in node.value for v in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif node.tag.endswith((":int", ":float")):
            line = node.start_mark.line
            if "#" not in lines[line] and not lines[line - 1].lstrip().startswith("#"):
                uncommented.append((line + 1, lines[line].strip()))
    assert uncommented == []


def test_default_pack_path_cache_and_reload() -> None:
    path = default_pack_path()
    assert path.is_file() and path.name == "default.yaml"
    assert default_pack() is default_pack()
    assert default_pack().source == str(path)
    assert load_pack(path) == default_pack()


# --------------------------------------------------------------------------- good packs


def test_minimal_pack_gets_model_defaults() -> None:
    pack = load_pack(DATA / "good_minimal.yaml")
    assert pack.source == str(DATA / "good_minimal.yaml")
    assert (pack.name, pack.version, pack.description) == ("tiny", "0.1", "")
    assert pack.windows == Windows() and pack.hysteresis == Hysteresis() and pack.causal == CausalSettings()
    assert pack.economics == EconomicConstants() and pack.organisation == Organisation()
    (c,) = pack.constraints
    assert c.kind == "signal" and c.economics.model == "none" and c.guards == () and c.inputs == ()
    assert c.signal == Signal(
        kind="histogram_quantile", metric="http_request_duration_seconds", by=("service",), quantile=0.99
    )
    # a ratio's `by` is inherited by both children
    assert c.outcome == Signal(
        kind="ratio",
        by=("service",),
        numerator=Signal(kind="rate", metric="http_errors_total", by=("service",)),
        denominator=Signal(kind="rate", metric="http_requests_total", by=("service",)),
    )


def test_constraints_come_out_in_stable_topological_order() -> None:
    pack = load_pack(DATA / "good_order.yaml")
    # file order c, a, b, d, e with b<-a, c<-b, e<-a,c: a first (c waits on b), then b, c, d, e
    assert pack.names == ("a", "b", "c", "d", "e")
    assert pack.organisation.projected_dau == 50e6
    assert pack.organisation.dau_tiers == (1e6, 1e7)
    targets = {c.name: c.target for c in pack}
    assert targets == {"a": 0.4, "b": 0.4, "c": 0.4, "d": 0.4, "e": 0.7}


@st.composite
def _dags(draw: st.DrawFn) -> tuple[int, dict[int, list[int]]]:
    n = draw(st.integers(min_value=1, max_value=6))
    hidden = draw(st.permutations(range(n)))  # a topological order the file does not show
    preds: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in itertools.combinations(range(n), 2):
        if draw(st.booleans()):
            preds[hidden[b]].append(hidden[a])
    return n, preds


@settings(max_examples=60, deadline=None)
@given(_dags())
def test_topological_order_is_the_smallest_in_file_order(dag: tuple[int, dict[int, list[int]]]) -> None:
    n, preds = dag
    lines = [HEADER, "constraints:\n"]
    for i in range(n):
        plist = ", ".join(f"c{p}" for p in preds[i])
        lines.append(f"  - {{name: c{i}, layer: meta, kind: meta, predecessors: [{plist}]}}\n")
    pack = load_pack_text("".join(lines))
    got = tuple(int(name[1:]) for name in pack.names)
    # Reference: brute force over all orders, keep the valid ones, take the smallest by file index.
    valid = [
        order
        for order in itertools.permutations(range(n))
        if all(order.index(p) < order.index(c) for c in range(n) for p in preds[c])
    ]
    assert got == min(valid)


def test_duration_and_number_forms() -> None:
    text = HEADER + (
        "windows: {step: 300, lookback: 1w, status_window: 1h30m, staleness: '90s', sustained_window: 1d}\n"
        "organisation: {projected_dau: 2.5e7, runway_months: 12}\n"
        "constraints:\n"
        "  - name: a\n"
        "    layer: physics\n"
        "    signal: {rate: x_total, by: [r], range: 2m, matchers: {zone: b, env: prod}}\n"
        "    outcome: {gauge: y, by: [r], agg: avg, scale: 100}\n"
        "    target: 1.0e-5\n"
        "    units: [r]\n"
    )
    pack = load_pack_text(text)
    w = pack.windows
    assert (w.step, w.lookback, w.status_window, w.staleness, w.sustained_window) == (
        300.0,
        7 * 86400.0,
        5400.0,
        90.0,
        86400.0,
    )
    assert pack.organisation.projected_dau == 25_000_000
    c = pack.constraint("a")
    assert c.target == 1e-5
    for written, seconds in (("30s", 30.0), ("'300ms'", 0.3), ("0.3", 0.3), ("1m30s", 90.0)):
        timed = load_pack_text(text.replace("target: 1.0e-5", f"target: {written}"))
        assert timed.constraint("a").target == seconds, written
    assert c.signal == Signal(
        kind="rate", metric="x_total", by=("r",), range=120.0, matchers=(("env", "prod"), ("zone", "b"))
    )
    assert c.outcome == Signal(kind="gauge", metric="y", by=("r",), agg="avg", scale=100.0)


# --------------------------------------------------------------------------- bad packs


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_fixture_reports_exactly_the_marked_issues(path: Path) -> None:
    markers = _markers(path)
    assert markers, f"{path.name} has no '# expect:' markers"
    with pytest.raises(PackError) as info:
        load_pack(path)
    issues = info.value.issues
    assert sorted((i.line, i.field_path) for i in issues) == sorted((line, fp) for line, fp, _ in markers)
    for line, field_path, substring in markers:
        (issue,) = [i for i in issues if (i.line, i.field_path) == (line, field_path)]
        assert substring in issue.message, (issue, substring)
        assert issue.file == str(path)


def test_issue_columns_point_at_the_offending_key() -> None:
    with pytest.raises(PackError) as info:
        load_pack(DATA / "bad_unknown_keys.yaml")
    cols = {i.field_path: i.column for i in info.value.issues}
    text = (DATA / "bad_unknown_keys.yaml").read_text(encoding="utf-8").splitlines()
    assert cols["windows.lookbak"] == text[5].index("lookbak") + 1 == 3
    assert cols["colour"] == 1
    assert cols["constraints.a.signal.rnage"] == text[10].index("rnage") + 1


def test_all_errors_are_reported_together_in_file_order() -> None:
    path = DATA / "bad_types.yaml"
    with pytest.raises(PackError) as info:
        load_pack(path)
    err = info.value
    assert len(err.issues) == len(_markers(path)) == 9
    sections = {i.field_path.split(".")[0] for i in err.issues}
    assert sections == {"metadata", "hysteresis", "causal", "constraints"}
    assert [(i.line, i.column) for i in err.issues] == sorted((i.line, i.column) for i in err.issues)
    rendered = str(err).splitlines()
    assert rendered == [f"{path}:{i.line}:{i.column}: {i.field_path}: {i.message}" for i in err.issues]
    assert rendered[0] == (
        f"{path}:3:32: metadata.version: expected a string, got a number ('1.0') (quote it)"
    )


def test_ratio_by_must_match_numerator() -> None:
    text = HEADER + (
        "constraints:\n"
        "  - name: a\n"
        "    layer: physics\n"
        "    signal: {gauge: x, by: [r]}\n"
        "    outcome:\n"
        "      ratio: {numerator: {rate: y, by: [r, s]}, denominator: {rate: z}}\n"
        "      by: [r]\n"
        "    target: 1\n"
        "    units: [r]\n"
    )
    (issue,) = _issues(text)
    assert (issue.line, issue.field_path) == (10, "constraints.a.outcome.by")
    assert "numerator's (r, s)" in issue.message


def test_yaml_level_errors() -> None:
    (empty,) = _issues("")
    assert (empty.line, empty.message.startswith("empty pack")) == (1, True)
    (multi,) = _issues(HEADER + "---\n" + HEADER)
    assert multi.line == 4 and "invalid YAML" in multi.message
    merge = _issues(HEADER + "base: &b {step: 5m}\nwindows:\n  <<: *b\n")
    assert ("windows", 6) in {(i.field_path, i.line) for i in merge}
    assert any("merge keys" in i.message for i in merge)
    (root,) = _issues("- 1\n- 2\n")
    assert root.message == "expected a mapping, got a list"
    quoted = _issues(
        HEADER + "organisation: {projected_dau: '50e6'}\nconstraints: [{name: m, layer: meta, kind: meta}]\n"
    )
    assert [(i.field_path, i.line) for i in quoted] == [("organisation.projected_dau", 4)]


def test_load_pack_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEADER.encode() + b"# caf\xe9\n")
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert info.value.issues[0].file == str(path)
    assert "UTF-8" in info.value.issues[0].message


# --------------------------------------------------------------------------- CLI


def test_cli_validate_reports_ok_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    good = str(DATA / "good_minimal.yaml")
    bad = str(DATA / "bad_cycle.yaml")
    assert main(["pack", "validate", good, bad]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: ok (1 constraints)\n"
    with pytest.raises(PackError) as info:
        load_pack(bad)
    assert err.splitlines() == [str(i) for i in info.value.issues]
    assert (
        err.splitlines()[0]
        == f"{bad}:5:55: constraints.a.predecessors[0]: dependency cycle: a -> b -> c -> a"
    )


def test_cli_validate_exit_zero_when_all_valid(capsys: pytest.CaptureFixture[str]) -> None:
    default = str(default_pack_path())
    order = str(DATA / "good_order.yaml")
    assert main(["pack", "validate", default, order]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{default}: ok (6 constraints)", f"{order}: ok (5 constraints)"]
    assert err == ""


def test_cli_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["pack", "validate", missing]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{missing}: cannot read:")


def test_cli_show_prints_the_default_pack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", "show"]) == 0
    out, _ = capsys.readouterr()
    assert out == default_pack_path().read_text(encoding="utf-8")
    assert _without_source(load_pack_text(out)) == _without_source(default_pack())


def test_typos_get_the_nearest_valid_name() -> None:
    text = HEADER + (
        "constraints:\n"
        "  - name: latency\n"
        "    layer: physics\n"
        "    signal: {histogram_quantil: x, quantile: 0.95, by: [region, tier]}\n"
        "    outcome: {gauge: y, by: [region, tier]}\n"
        "    target: 1\n"
        "    units: [region, teir]\n"
        "    stratum: tier\n"
        "  - name: protocol\n"
        "    layer: architecture\n"
        "    predecessors: [latncy]\n"
        "    signal: {gauge: x, by: [r]}\n"
        "    outcome: {gauge: y, by: [r]}\n"
        "    target: 1\n"
        "    units: [r]\n"
        "    economics: {model: weibul}\n"
    )
    with pytest.raises(PackError) as exc:
        load_pack_text(text)
    messages = [i.message for i in exc.value.issues]
    joined = "\n".join(messages)
    assert "'histogram_quantil' (did you mean 'histogram_quantile'?)" in joined
    assert "unknown constraint 'latncy' (did you mean 'latency'?)" in joined
    assert "unknown economic model 'weibul' (did you mean 'weibull'?)" in joined
    # the label check runs in the same pass although the signal did not parse
    assert "missing label 'teir' (did you mean 'tier'?)" in joined


def test_a_unit_label_typo_gets_the_nearest_label() -> None:
    text = HEADER + (
        "constraints:\n"
        "  - name: latency\n"
        "    layer: physics\n"
        "    signal: {gauge: x, by: [region, tier]}\n"
        "    outcome: {gauge: y, by: [region, tier]}\n"
        "    target: 1\n"
        "    units: [region, teir]\n"
    )
    with pytest.raises(PackError) as exc:
        load_pack_text(text)
    assert any("missing label 'teir' (did you mean 'tier'?)" in i.message for i in exc.value.issues)
