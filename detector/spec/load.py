"""Strict loader for constraint packs (``apiVersion: csf/v1``).

The YAML is *composed* (not constructed) so that every node keeps its line and
column; the loader then walks the node tree and builds the frozen model of
`detector.spec.pack`. Nothing is guessed: unknown keys, wrong types, missing fields,
bad durations, unknown names, dangling references, duplicate keys and dependency
cycles are all errors. Every error is collected, so one run reports them all as
`PackIssue` rows (``FILE:LINE:COL: field.path: message``) inside one `PackError`.

Schema (every section but ``apiVersion``, ``kind``, ``metadata`` and
``constraints`` is optional and defaults to the values in `detector.spec.pack`)::

    apiVersion: csf/v1
    kind: ConstraintPack
    metadata: {name, version, description}
    windows: {step, lookback, status_window, sustained_window, sustained_fraction, staleness, min_coverage}
    hysteresis: {enter_after, exit_after, dead_band}
    causal: {alpha, lags, pass_required, segment_max_ratio, feedback_f_ratio, dose_bins,
             dose_min_rho, min_points, fragile_gamma, robust_gamma}
    economics: {arpu_day, roi_features, base_theta, fragile_theta, composite_band,
                strategic_min_projected_roi, strategic_min_scale_factor,
                strategic_min_lead_time_months, drift_threshold}
    organisation: {runway_months, projected_dau, dau: SIGNAL, dau_tiers, analysis_hours,
                   capacity_hours, meta_overhead_limit}
    constraints:
      - name, layer, kind (signal | meta), description, predecessors, signal: SIGNAL,
        outcome: SIGNAL, target, direction, outcome_direction, units, stratum, segment,
        inputs: {NAME: SIGNAL}, guards: [GUARD], economics: ECONOMICS, exceptions, runbook

A SIGNAL is a mapping with exactly one kind key (``gauge``, ``rate``, ``increase``,
``histogram_quantile``, ``histogram_mean`` whose value is the metric name, or
``ratio`` whose value is ``{numerator: SIGNAL, denominator: SIGNAL}``) plus the
options ``by``, ``range``, ``pin_range``, ``quantile``, ``matchers``, ``agg``, ``scale``
and ``promql`` where they apply. ``range`` is a floor: csf widens it to four sample
intervals of the data (see `detector.source.frame.effective_range`) unless ``pin_range: true``
asks for exactly that window. ``matchers`` is ``{label: value}`` for equality or
``{label: {regex: "5..", not: "200", not_regex: "2..|3..", equal: "x"}}`` (one operator
per label): PromQL's ``=~``/``!=``/``!~``, fully anchored, RE2 syntax (what RE2 lacks, such
as backreferences and lookaround, is refused). A ratio's ``by``, ``range`` and ``pin_range`` are inherited
by the children that do not set their own; its output labels are the numerator's, and
the denominator may group by fewer labels (``group_left`` join).

An ECONOMICS mapping has ``model`` (weibull | creator_weibull | loss_aversion | none)
and the keys that model uses: ``affected`` names an input; ``streak_histogram`` is
the base name of a histogram metric (its bucket rates by ``le`` feed M(d)).

A GUARD is ``{protocol_floor: {share, label, floors, tail_share, headroom, mode}}``
or ``{applicability: {numerator, denominator, min_ratio}}`` (numerator and
denominator name inputs).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.errors import SpecError
from detector.spec.matchers import regex_problem
from detector.spec.pack import (
    LAYERS,
    OBSERVABILITY,
    ApplicabilityGuard,
    CausalSettings,
    Constraint,
    EconomicConstants,
    EconomicsSpec,
    ExceptionSpec,
    Guard,
    Hysteresis,
    Organisation,
    Pack,
    ProtocolFloorGuard,
    Windows,
)
from detector.spec.signals import AGGREGATIONS, SIGNAL_KINDS, Signal
from detector.timefmt import parse_duration

API_VERSION = "csf/v1"
PACK_KIND = "ConstraintPack"

__all__ = [
    "API_VERSION",
    "PACK_KIND",
    "PackError",
    "PackIssue",
    "default_pack",
    "default_pack_path",
    "load_pack",
    "load_pack_text",
    "show_cli",
    "validate_cli",
]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class PackIssue:
    """One problem in a pack file. `line` and `column` are 1-based."""

    file: str
    line: int
    column: int
    field_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.field_path:
            return f"{where}: {self.field_path}: {self.message}"
        return f"{where}: {self.message}"


class PackError(SpecError):
    """A pack failed validation; `issues` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[PackIssue]) -> None:
        self.issues: list[PackIssue] = list(issues)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


# --------------------------------------------------------------------------- node helpers

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

_TAG_NAMES = {
    _STR: "a string",
    _INT: "a number",
    _FLOAT: "a number",
    _BOOL: "a boolean",
    _NULL: "null",
    "tag:yaml.org,2002:timestamp": "a timestamp",
}

# YAML 1.1 (PyYAML) reads `50e6` and `1e-5` as strings; accept such plain scalars as numbers.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PACK_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


@functools.lru_cache(maxsize=1)
def _constructor() -> SafeConstructor:
    return SafeConstructor()


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag in (_INT, _FLOAT) and _number_value(node) is None:
        return f"an invalid !!{node.tag.rsplit(':', 1)[-1]} value ({node.value!r})"
    desc = _TAG_NAMES.get(node.tag, f"a {node.tag} value")
    if node.tag == _STR or node.tag in (_INT, _FLOAT, "tag:yaml.org,2002:timestamp"):
        return f"{desc} ({node.value!r})"
    return desc


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Ctx:
    """Collects issues while the walk goes on."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[PackIssue] = []

    def error(self, node: Node | None, path: str, message: str) -> None:
        if node is None:
            line, col = 1, 1
        else:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.issues.append(PackIssue(self.source, line, col, path, message))

    @property
    def count(self) -> int:
        return len(self.issues)


@dataclass
class _Map:
    """A mapping node with its known keys split out (first occurrence wins)."""

    node: MappingNode
    path: str
    values: dict[str, Node] = field(default_factory=dict)
    keys: dict[str, Node] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def sub(self, key: str) -> str:
        return _join(self.path, key)

    def get(self, key: str) -> Node | None:
        return self.values.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.values


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(
    ctx: _Ctx,
    node: Node,
    path: str,
    allowed: Sequence[str],
    required: Iterable[str] = (),
    unknown: Callable[[str], str] | None = None,
) -> _Map | None:
    if not isinstance(node, MappingNode):
        ctx.error(node, path, f"expected a mapping, got {_describe(node)}")
        return None
    m = _Map(node, path)
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.tag == _MERGE:
            ctx.error(knode, path, "merge keys ('<<') are not supported; alias the whole mapping instead")
            continue
        if not (isinstance(knode, ScalarNode) and knode.tag == _STR):
            ctx.error(knode, path, f"keys must be strings, got {_describe(knode)}")
            continue
        key = knode.value
        if key in m.keys:
            first = m.keys[key].start_mark.line + 1
            ctx.error(knode, m.sub(key), f"duplicate key {key!r} (first at line {first})")
            continue
        m.keys[key] = knode
        if key not in allowed:
            msg = (
                unknown(key)
                if unknown
                else f"unknown key {key!r}{_did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}"
            )
            ctx.error(knode, m.sub(key), msg)
            m.unknown.append(key)
            continue
        m.values[key] = vnode
    for key in required:
        if key not in m.values:
            ctx.error(node, m.sub(key), f"missing required field {key!r}")
    return m


def _sequence(ctx: _Ctx, node: Node, path: str) -> list[Node] | None:
    if not isinstance(node, SequenceNode):
        ctx.error(node, path, f"expected a list, got {_describe(node)}")
        return None
    return list(node.value)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


# --------------------------------------------------------------------------- scalar parsers

Check = tuple[Callable[[float], bool], str]
POSITIVE: Check = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, "must be >= 0")
AT_LEAST_ONE: Check = (lambda v: v >= 1, "must be >= 1")
AT_LEAST_TWO: Check = (lambda v: v >= 2, "must be >= 2")
OPEN_UNIT: Check = (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")
FRACTION: Check = (lambda v: 0 < v <= 1, "must be in (0, 1]")
UNIT: Check = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
HALF_OPEN_UNIT: Check = (lambda v: 0 <= v < 1, "must be in [0, 1)")

Parser = Callable[[_Ctx, Node, str], Any]


def _number_value(node: Node) -> float | int | None:
    if not isinstance(node, ScalarNode):
        return None
    try:
        if node.tag == _INT:
            value = int(_constructor().construct_yaml_int(node))
            # beyond the float range math.isfinite() would raise OverflowError: report it as infinite
            return value if abs(value) <= sys.float_info.max else (math.inf if value > 0 else -math.inf)
        if node.tag == _FLOAT:
            return float(_constructor().construct_yaml_float(node))
    except ValueError:
        # an explicit `!!int abc` / `!!float x`, or an integer of more than 4300 digits
        digits = node.value.strip().lstrip("+-").replace("_", "")
        if digits.isdigit():
            return -math.inf if node.value.strip().startswith("-") else math.inf
        return None
    if node.tag == _STR and node.style is None and _PLAIN_NUMBER.fullmatch(node.value):
        return float(node.value.replace("_", ""))
    return None


def _parse_number(
    ctx: _Ctx, node: Node, path: str, check: Check | None = None, integer: bool = False
) -> float | int | None:
    value = _number_value(node)
    if value is None:
        kind = "an integer" if integer else "a number"
        ctx.error(node, path, f"expected {kind}, got {_describe(node)}")
        return None
    if not math.isfinite(value):
        ctx.error(node, path, f"must be a finite number, got {value}")
        return None
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                ctx.error(node, path, f"expected an integer, got {value}")
                return None
            value = int(value)
    if check is not None and not check[0](value):
        ctx.error(node, path, f"{check[1]}, got {value:g}")
        return None
    return value


def _num(check: Check | None = None, *, integer: bool = False, nullable: bool = False) -> Parser:
    def parse(ctx: _Ctx, node: Node, path: str) -> Any:
        if nullable and _is_null(node):
            return None
        v = _parse_number(ctx, node, path, check, integer)
        if v is None or integer:
            return v
        return float(v)

    return parse


def _parse_duration(ctx: _Ctx, node: Node, path: str, check: Check = POSITIVE) -> float | None:
    value = _number_value(node)
    if value is None:
        if not (isinstance(node, ScalarNode) and node.tag == _STR):
            ctx.error(node, path, f"expected a duration such as '5m' or seconds, got {_describe(node)}")
            return None
        try:
            value = parse_duration(node.value)
        except ValueError as exc:
            ctx.error(node, path, str(exc))
            return None
    if not math.isfinite(value):
        ctx.error(node, path, f"invalid duration {value}")
        return None
    if not check[0](value):
        ctx.error(node, path, f"{check[1]}, got {value:g} s")
        return None
    return float(value)


def _parse_target(ctx: _Ctx, node: Node, path: str) -> float | None:
    """A target: a number in the signal's unit, or a duration ('300ms', '30s') for a time signal."""
    if _number_value(node) is None and isinstance(node, ScalarNode) and node.tag == _STR:
        try:
            parse_duration(node.value)
        except ValueError:
            ctx.error(
                node,
                path,
                f"expected a number, or a duration such as '300ms' or '30s' for a time signal, "
                f"got a string ({node.value!r})",
            )
            return None
        return _parse_duration(ctx, node, path, POSITIVE)
    return _num(POSITIVE)(ctx, node, path)


def _dur(check: Check = POSITIVE) -> Parser:
    def parse(ctx: _Ctx, node: Node, path: str) -> Any:
        return _parse_duration(ctx, node, path, check)

    return parse


def _parse_string(
    ctx: _Ctx,
    node: Node,
    path: str,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
    nullable: bool = False,
) -> str | None:
    if nullable and _is_null(node):
        return None
    if not (isinstance(node, ScalarNode) and node.tag == _STR):
        hint = " (quote it)" if isinstance(node, ScalarNode) and not _is_null(node) else ""
        ctx.error(node, path, f"expected a string, got {_describe(node)}{hint}")
        return None
    value: str = node.value
    if pattern is not None and not pattern.fullmatch(value):
        ctx.error(node, path, f"invalid {rule} {value!r}")
        return None
    if pattern is None and not value.strip():
        ctx.error(node, path, "must not be empty")
        return None
    return value


def _str(pattern: re.Pattern[str] | None = None, rule: str = "", nullable: bool = False) -> Parser:
    def parse(ctx: _Ctx, node: Node, path: str) -> Any:
        return _parse_string(ctx, node, path, pattern, rule, nullable)

    return parse


def _parse_bool(ctx: _Ctx, node: Node, path: str) -> bool | None:
    value = None
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        try:
            value = bool(_constructor().construct_yaml_bool(node))
        except KeyError:  # an explicit `!!bool maybe`
            pass
    if value is None:
        got = f"{node.value!r}" if isinstance(node, ScalarNode) and node.tag == _BOOL else _describe(node)
        ctx.error(node, path, f"expected true or false, got {got}")
    return value


def _parse_enum(ctx: _Ctx, node: Node, path: str, allowed: Sequence[str], what: str) -> str | None:
    value = _parse_string(ctx, node, path)
    if value is None:
        return None
    if value not in allowed:
        ctx.error(node, path, f"unknown {what} {value!r}{_did_you_mean(value, allowed)}; allowed: {', '.join(allowed)}")
        return None
    return value


def _enum(allowed: Sequence[str], what: str) -> Parser:
    def parse(ctx: _Ctx, node: Node, path: str) -> Any:
        return _parse_enum(ctx, node, path, allowed, what)

    return parse


def _parse_names(
    ctx: _Ctx, node: Node, path: str, pattern: re.Pattern[str], rule: str
) -> list[tuple[str, Node]] | None:
    """A list of unique names, each with its node."""
    items = _sequence(ctx, node, path)
    if items is None:
        return None
    out: list[tuple[str, Node]] = []
    seen: dict[str, Node] = {}
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        value = _parse_string(ctx, item, p, pattern, rule)
        if value is None:
            continue
        if value in seen:
            ctx.error(item, p, f"duplicate {value!r} (first at line {seen[value].start_mark.line + 1})")
            continue
        seen[value] = item
        out.append((value, item))
    return out


def _labels(ctx: _Ctx, node: Node, path: str) -> tuple[str, ...] | None:
    start = ctx.count
    names = _parse_names(ctx, node, path, _LABEL, "label name")
    if names is None or ctx.count > start:
        return None
    return tuple(n for n, _ in names)


def _section(
    ctx: _Ctx, node: Node, path: str, fields: dict[str, Parser]
) -> tuple[dict[str, Any], _Map] | None:
    """Parse a flat mapping whose every key is optional; returns the parsed kwargs."""
    m = _mapping(ctx, node, path, tuple(fields))
    if m is None:
        return None
    kwargs: dict[str, Any] = {}
    for key, value_node in m.values.items():
        value = fields[key](ctx, value_node, m.sub(key))
        if value is not None:
            kwargs[key] = value
    return kwargs, m


# --------------------------------------------------------------------------- signals

_SIGNAL_OPTIONS: tuple[str, ...] = (
    "by", "range", "pin_range", "quantile", "matchers", "agg", "scale", "promql"
)
_KIND_OPTIONS: dict[str, frozenset[str]] = {
    "gauge": frozenset({"by", "matchers", "agg", "scale", "promql"}),
    "rate": frozenset({"by", "range", "pin_range", "matchers", "scale", "promql"}),
    "increase": frozenset({"by", "range", "pin_range", "matchers", "scale", "promql"}),
    "histogram_quantile": frozenset({"by", "range", "pin_range", "quantile", "matchers", "scale", "promql"}),
    "histogram_mean": frozenset({"by", "range", "pin_range", "matchers", "scale", "promql"}),
    "ratio": frozenset({"by", "range", "pin_range", "scale", "promql"}),
}


def _signal_unknown(key: str) -> str:
    return (
        f"unknown signal kind or option {key!r}{_did_you_mean(key, SIGNAL_KINDS + _SIGNAL_OPTIONS)}; "
        f"kinds: {', '.join(SIGNAL_KINDS)}; options: {', '.join(_SIGNAL_OPTIONS)}"
    )


_MATCH_OPS = {"equal": "=", "not": "!=", "regex": "=~", "not_regex": "!~"}


def _matchers(ctx: _Ctx, node: Node, path: str) -> tuple[tuple[str, ...], ...] | None:
    """``{label: value}`` for equality, or ``{label: {regex|not|not_regex|equal: value}}``."""
    if not isinstance(node, MappingNode):
        ctx.error(node, path, f"expected a mapping of label: value, got {_describe(node)}")
        return None
    start = ctx.count
    out: dict[str, tuple[str, ...]] = {}
    for knode, vnode in node.value:
        label = _parse_string(ctx, knode, path, _LABEL, "label name")
        if label is None:
            continue
        p = _join(path, label)
        if label in out:
            ctx.error(knode, p, f"duplicate key {label!r}")
            continue
        if isinstance(vnode, MappingNode):
            m = _mapping(ctx, vnode, p, tuple(_MATCH_OPS))
            if m is None or len(m.values) != 1:
                if m is not None and not m.unknown:
                    ctx.error(vnode, p, f"give exactly one of {', '.join(_MATCH_OPS)}")
                continue
            (word, value_node), = m.values.items()
            value = _parse_string(ctx, value_node, m.sub(word))
            if value is None:
                continue
            op = _MATCH_OPS[word]
            if op in ("=~", "!~"):
                problem = regex_problem(value)
                if problem is not None:
                    ctx.error(value_node, m.sub(word), f"{problem}: {value!r}")
                    continue
            out[label] = (label, value) if op == "=" else (label, value, op)
            continue
        value = _parse_string(ctx, vnode, p)
        if value is not None:
            out[label] = (label, value)
    if ctx.count > start:
        return None
    return tuple(out[k] for k in sorted(out))


def _parse_signal(
    ctx: _Ctx,
    node: Node,
    path: str,
    inherit_by: tuple[str, ...] | None = None,
    inherit_range: float | None = None,
    inherit_pin: bool | None = None,
) -> Signal | None:
    start = ctx.count
    m = _mapping(ctx, node, path, SIGNAL_KINDS + _SIGNAL_OPTIONS, unknown=_signal_unknown)
    if m is None:
        return None
    kinds = [k for k in m.values if k in SIGNAL_KINDS]
    if not kinds:
        if not m.unknown:
            ctx.error(node, path, f"signal has no kind; use exactly one of {', '.join(SIGNAL_KINDS)}")
        return None
    if len(kinds) > 1:
        second = kinds[1]
        ctx.error(
            m.keys[second],
            m.sub(second),
            f"signal has two kinds ({kinds[0]!r} and {second!r}); use exactly one",
        )
        return None
    kind = kinds[0]
    for opt in _SIGNAL_OPTIONS:
        if opt in m and opt not in _KIND_OPTIONS[kind]:
            ctx.error(m.keys[opt], m.sub(opt), f"{opt!r} does not apply to a {kind} signal")

    by: tuple[str, ...] | None = None
    by_node = m.get("by")
    if by_node is not None:
        by = _labels(ctx, by_node, m.sub("by"))
        if by is not None and kind in ("histogram_quantile", "histogram_mean") and "le" in by:
            ctx.error(by_node, m.sub("by"), "'le' is added automatically for histogram signals")
    rng: float | None = None
    if "range" in m:
        rng = _parse_duration(ctx, m.values["range"], m.sub("range"))
    pin: bool | None = None
    if "pin_range" in m:
        pin = _parse_bool(ctx, m.values["pin_range"], m.sub("pin_range"))
    kwargs: dict[str, Any] = {}
    if "quantile" in m:
        kwargs["quantile"] = _parse_number(ctx, m.values["quantile"], m.sub("quantile"), OPEN_UNIT)
    elif kind == "histogram_quantile":
        ctx.error(
            node, m.sub("quantile"), "missing required field 'quantile' for a histogram_quantile signal"
        )
    if "matchers" in m:
        kwargs["matchers"] = _matchers(ctx, m.values["matchers"], m.sub("matchers"))
    if "agg" in m:
        kwargs["agg"] = _parse_enum(ctx, m.values["agg"], m.sub("agg"), AGGREGATIONS, "aggregation")
    if "scale" in m:
        scale = _parse_number(ctx, m.values["scale"], m.sub("scale"), POSITIVE)
        kwargs["scale"] = None if scale is None else float(scale)
    if "promql" in m:
        kwargs["promql"] = _parse_string(ctx, m.values["promql"], m.sub("promql"))

    value_node = m.values[kind]
    value_path = m.sub(kind)
    if kind == "ratio":
        rm = _mapping(ctx, value_node, value_path, ("numerator", "denominator"), ("numerator", "denominator"))
        child_by = by if by is not None else inherit_by
        child_range = rng if rng is not None else inherit_range
        child_pin = pin if pin is not None else inherit_pin
        num = den = None
        if rm is not None and "numerator" in rm:
            num = _parse_signal(
                ctx, rm.values["numerator"], rm.sub("numerator"), child_by, child_range, child_pin
            )
        if rm is not None and "denominator" in rm:
            den = _parse_signal(
                ctx, rm.values["denominator"], rm.sub("denominator"), child_by, child_range, child_pin
            )
        if ctx.count > start or num is None or den is None or rm is None:
            return None
        if by is not None and set(num.by) != set(by):
            ctx.error(
                by_node,
                m.sub("by"),
                f"a ratio's labels are its numerator's ({', '.join(num.by) or 'none'}), got {', '.join(by)}",
            )
            return None
        extra = [lbl for lbl in den.by if lbl not in num.by]
        if extra:
            ctx.error(
                rm.values["denominator"],
                rm.sub("denominator") + ".by",
                f"denominator groups by {', '.join(extra)} which the numerator does not; "
                "only the denominator may have fewer labels (group_left join)",
            )
            return None
        return Signal(
            kind="ratio",
            by=by if by is not None else num.by,
            range=rng if rng is not None else num.range,
            pin_range=bool(pin) if pin is not None else num.pin_range and den.pin_range,
            numerator=num,
            denominator=den,
            **{k: v for k, v in kwargs.items() if v is not None},
        )

    metric = _parse_string(ctx, value_node, value_path, _METRIC, "metric name")
    if ctx.count > start or metric is None:
        return None
    if by is None:
        by = inherit_by if inherit_by is not None else ()
    if rng is None:
        rng = inherit_range
    if rng is not None and kind != "gauge":
        kwargs["range"] = rng
    if pin is None:
        pin = inherit_pin
    if pin is not None and kind != "gauge":
        kwargs["pin_range"] = bool(pin)
    return Signal(kind=kind, metric=metric, by=by, **kwargs)  # type: ignore[arg-type]


def _signal_parser(ctx: _Ctx, node: Node, path: str) -> Any:
    return _parse_signal(ctx, node, path)


# --------------------------------------------------------------------------- pack sections

_WINDOW_FIELDS: dict[str, Parser] = {
    "step": _dur(),
    "lookback": _dur(),
    "status_window": _dur(),
    "sustained_window": _dur(),
    "sustained_fraction": _num(FRACTION),
    "staleness": _dur(),
    "min_coverage": _num(UNIT),
}
_HYSTERESIS_FIELDS: dict[str, Parser] = {
    "enter_after": _num(AT_LEAST_ONE, integer=True),
    "exit_after": _num(AT_LEAST_ONE, integer=True),
    "dead_band": _num(HALF_OPEN_UNIT),
}
_CAUSAL_FIELDS: dict[str, Parser] = {
    "alpha": _num(OPEN_UNIT),
    "lags": _num(AT_LEAST_ONE, integer=True),
    "pass_required": _num((lambda v: 1 <= v <= 5, "must be between 1 and 5"), integer=True),
    "segment_max_ratio": _num(AT_LEAST_ONE),
    "feedback_f_ratio": _num(POSITIVE),
    "dose_bins": _num(AT_LEAST_TWO, integer=True),
    "dose_min_rho": _num(FRACTION),
    "min_points": _num(AT_LEAST_ONE, integer=True),
    "fragile_gamma": _num(AT_LEAST_ONE),
    "robust_gamma": _num(AT_LEAST_ONE),
}
_ECONOMIC_FIELDS: dict[str, Parser] = {
    "arpu_day": _num(POSITIVE),
    "roi_features": _num(NON_NEGATIVE),
    "base_theta": _num(POSITIVE),
    "fragile_theta": _num(POSITIVE),
    "composite_band": _num(HALF_OPEN_UNIT),
    "strategic_min_projected_roi": _num(NON_NEGATIVE),
    "strategic_min_scale_factor": _num(NON_NEGATIVE),
    "strategic_min_lead_time_months": _num(NON_NEGATIVE),
    "drift_threshold": _num(POSITIVE),
}


def _dau_tiers(ctx: _Ctx, node: Node, path: str) -> Any:
    items = _sequence(ctx, node, path)
    if items is None:
        return None
    start = ctx.count
    tiers: list[float] = []
    for i, item in enumerate(items):
        v = _parse_number(ctx, item, f"{path}[{i}]", POSITIVE)
        if v is None:
            continue
        if tiers and v <= tiers[-1]:
            ctx.error(item, f"{path}[{i}]", f"tiers must increase, got {v:g} after {tiers[-1]:g}")
            continue
        tiers.append(float(v))
    return None if ctx.count > start else tuple(tiers)


_ORGANISATION_FIELDS: dict[str, Parser] = {
    "runway_months": _num(POSITIVE),
    "projected_dau": _num(POSITIVE),
    "dau": _signal_parser,
    "dau_tiers": _dau_tiers,
    "analysis_hours": _num(NON_NEGATIVE, nullable=True),
    "capacity_hours": _num(POSITIVE, nullable=True),
    "meta_overhead_limit": _num(POSITIVE),
}


def _order_check(ctx: _Ctx, m: _Map, kwargs: dict[str, Any], low: str, high: str, defaults: Any) -> None:
    """Report `high` < `low` (at whichever of the two the file sets)."""
    lo = kwargs.get(low, getattr(defaults, low))
    hi = kwargs.get(high, getattr(defaults, high))
    if hi < lo:
        key = high if high in m else low
        ctx.error(m.values[key], m.sub(key), f"{high} ({hi:g}) must be >= {low} ({lo:g})")


def _windows(ctx: _Ctx, node: Node) -> Windows:
    parsed = _section(ctx, node, "windows", _WINDOW_FIELDS)
    if parsed is None:
        return Windows()
    kwargs, m = parsed
    for low, high in (("step", "status_window"), ("status_window", "sustained_window"), ("step", "lookback")):
        if (low in m or high in m) and all(k in kwargs or k not in m for k in (low, high)):
            _order_check(ctx, m, kwargs, low, high, Windows)
    return Windows(**kwargs)


def _causal(ctx: _Ctx, node: Node) -> CausalSettings:
    parsed = _section(ctx, node, "causal", _CAUSAL_FIELDS)
    if parsed is None:
        return CausalSettings()
    kwargs, m = parsed
    if ("fragile_gamma" in m or "robust_gamma" in m) and all(
        k in kwargs or k not in m for k in ("fragile_gamma", "robust_gamma")
    ):
        _order_check(ctx, m, kwargs, "fragile_gamma", "robust_gamma", CausalSettings)
    return CausalSettings(**kwargs)


def _simple_section(ctx: _Ctx, node: Node, path: str, fields: dict[str, Parser], cls: Any) -> Any:
    parsed = _section(ctx, node, path, fields)
    return cls() if parsed is None else cls(**parsed[0])


# --------------------------------------------------------------------------- constraints

# Keys that only a kind: signal constraint may have.
_SIGNAL_KEYS: tuple[str, ...] = (
    "signal",
    "outcome",
    "outcome_direction",
    "units",
    "stratum",
    "segment",
    "inputs",
    "guards",
    "economics",
)
_CONSTRAINT_KEYS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "description",
    "predecessors",
    "signal",
    "outcome",
    "target",
    "direction",
    "outcome_direction",
    "units",
    "stratum",
    "segment",
    "inputs",
    "guards",
    "economics",
    "exceptions",
    "runbook",
)
_DIRECTIONS: tuple[str, ...] = ("lower_is_better", "higher_is_better")
_CONSTRAINT_KINDS: tuple[str, ...] = ("signal", "meta")
_GUARD_MODES: tuple[str, ...] = ("needs_headroom", "needs_exhausted")
_MODELS: tuple[str, ...] = ("weibull", "creator_weibull", "loss_aversion", "none")

_ECON_KEYS: tuple[str, ...] = (
    "model",
    "affected",
    "lambda",
    "k",
    "baseline",
    "learner_days_per_creator",
    "alpha",
    "churn_per_incident",
    "streak_histogram",
    "effectiveness",
    "reach",
    "cost_per_year",
    "support_savings_per_year",
)
_ROI_KEYS = ("effectiveness", "reach", "cost_per_year", "support_savings_per_year")
_MODEL_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # model: (required, optional)
    "weibull": (("affected", "lambda", "k", "cost_per_year"), ("baseline", *_ROI_KEYS)),
    "creator_weibull": (
        ("affected", "lambda", "k", "learner_days_per_creator", "cost_per_year"),
        ("baseline", *_ROI_KEYS),
    ),
    "loss_aversion": (
        ("affected", "churn_per_incident", "streak_histogram", "cost_per_year"),
        ("alpha", *_ROI_KEYS),
    ),
    "none": ((), ()),
}
# YAML key -> EconomicsSpec field, and how to parse it
_ECON_FIELDS: dict[str, tuple[str, Parser]] = {
    "lambda": ("weibull_lambda", _num(POSITIVE)),
    "k": ("weibull_k", _num(POSITIVE)),
    "baseline": ("baseline", _num()),
    "learner_days_per_creator": ("learner_days_per_creator", _num(POSITIVE)),
    "alpha": ("loss_aversion_alpha", _num(NON_NEGATIVE)),
    "churn_per_incident": ("churn_per_incident", _num(UNIT)),
    "effectiveness": ("effectiveness", _num(UNIT)),
    "reach": ("reach", _num(UNIT)),
    "cost_per_year": ("cost_per_year", _num(POSITIVE)),
    "support_savings_per_year": ("support_savings_per_year", _num(NON_NEGATIVE)),
}
_EXCEPTION_FIELDS: dict[str, Parser] = {
    "existence": _parse_bool,
    "one_way_door_months": _num(POSITIVE, nullable=True),
    "lead_time_months": _num(POSITIVE, nullable=True),
}


def _input_ref(ctx: _Ctx, node: Node, path: str, inputs: dict[str, Node]) -> str | None:
    name = _parse_string(ctx, node, path, _LABEL, "input name")
    if name is None:
        return None
    if name not in inputs:
        known = ", ".join(inputs) or "none declared"
        ctx.error(node, path, f"refers to unknown input {name!r}; inputs: {known}")
        return None
    return name


def _economics(ctx: _Ctx, node: Node, path: str, inputs: dict[str, Node]) -> EconomicsSpec | None:
    start = ctx.count
    m = _mapping(ctx, node, path, _ECON_KEYS, ("model",))
    if m is None or "model" not in m:
        return None
    model = _parse_enum(ctx, m.values["model"], m.sub("model"), _MODELS, "economic model")
    if model is None:
        return None
    required, optional = _MODEL_KEYS[model]
    for key in m.values:
        if key != "model" and key not in required and key not in optional:
            ctx.error(m.keys[key], m.sub(key), f"{key!r} does not apply to economic model {model!r}")
    for key in required:
        if key not in m:
            ctx.error(node, m.sub(key), f"missing required field {key!r} for economic model {model!r}")
    kwargs: dict[str, Any] = {"model": model}
    if "affected" in m and "affected" in required:
        kwargs["affected"] = _input_ref(ctx, m.values["affected"], m.sub("affected"), inputs)
    if "streak_histogram" in m and "streak_histogram" in required:
        # The base name of a classic histogram; the evaluator reads its `_bucket` rates by `le`.
        kwargs["streak_histogram"] = _parse_string(
            ctx, m.values["streak_histogram"], m.sub("streak_histogram"), _METRIC, "metric name"
        )
    for key, (attr, parser) in _ECON_FIELDS.items():
        if key in m and (key in required or key in optional):
            kwargs[attr] = parser(ctx, m.values[key], m.sub(key))
    if ctx.count > start:
        return None
    return EconomicsSpec(**kwargs)


def _exceptions(ctx: _Ctx, node: Node, path: str) -> tuple[ExceptionSpec | None, list[tuple[str, Node]]]:
    start = ctx.count
    fields: dict[str, Parser] = dict(_EXCEPTION_FIELDS)
    fields["enables"] = lambda c, n, p: _parse_names(c, n, p, _NAME, "constraint name")
    parsed = _section(ctx, node, path, fields)
    if parsed is None:
        return None, []
    kwargs, _ = parsed
    enables: list[tuple[str, Node]] = kwargs.pop("enables", [])
    if ctx.count > start:
        return None, enables
    return ExceptionSpec(enables=tuple(n for n, _ in enables), **kwargs), enables


def _guard(ctx: _Ctx, node: Node, path: str, inputs: dict[str, Node]) -> Guard | None:
    start = ctx.count
    m = _mapping(ctx, node, path, ("protocol_floor", "applicability"))
    if m is None:
        return None
    types = list(m.values)
    if len(types) != 1:
        if not types and not m.unknown:
            ctx.error(node, path, "a guard has exactly one type: protocol_floor or applicability")
        elif len(types) > 1:
            ctx.error(m.keys[types[1]], m.sub(types[1]), "a guard has exactly one type; write two guards")
        return None
    gtype = types[0]
    body = m.values[gtype]
    gpath = m.sub(gtype)
    if gtype == "applicability":
        app_keys = ("numerator", "denominator", "min_ratio")
        g = _mapping(ctx, body, gpath, app_keys, app_keys)
        if g is None:
            return None
        num = _input_ref(ctx, g.values["numerator"], g.sub("numerator"), inputs) if "numerator" in g else None
        den = (
            _input_ref(ctx, g.values["denominator"], g.sub("denominator"), inputs)
            if "denominator" in g
            else None
        )
        ratio = (
            _parse_number(ctx, g.values["min_ratio"], g.sub("min_ratio"), NON_NEGATIVE)
            if "min_ratio" in g
            else None
        )
        if ctx.count > start or num is None or den is None or ratio is None:
            return None
        return ApplicabilityGuard(numerator=num, denominator=den, min_ratio=float(ratio))

    keys = ("share", "label", "floors", "tail_share", "headroom", "mode")
    g = _mapping(ctx, body, gpath, keys, ("share", "label", "floors", "mode"))
    if g is None:
        return None
    share = _parse_signal(ctx, g.values["share"], g.sub("share")) if "share" in g else None
    label = (
        _parse_string(ctx, g.values["label"], g.sub("label"), _LABEL, "label name") if "label" in g else None
    )
    if share is not None and label is not None and label not in share.by:
        ctx.error(
            g.values["label"],
            g.sub("label"),
            f"refers to missing label {label!r}: the share signal groups by ({', '.join(share.by)})",
        )
    floors: list[tuple[str, float]] = []
    if "floors" in g:
        fnode = g.values["floors"]
        if not isinstance(fnode, MappingNode) or not fnode.value:
            ctx.error(
                fnode, g.sub("floors"), f"expected a non-empty mapping of {label or 'label'} value: seconds"
            )
        else:
            seen: set[str] = set()
            for knode, vnode in fnode.value:
                key = _parse_string(ctx, knode, g.sub("floors"))
                if key is None:
                    continue
                if key in seen:
                    ctx.error(knode, _join(g.sub("floors"), key), f"duplicate key {key!r}")
                    continue
                seen.add(key)
                v = _parse_number(ctx, vnode, _join(g.sub("floors"), key), NON_NEGATIVE)
                if v is not None:
                    floors.append((key, float(v)))
    tail_share = headroom = None
    if "tail_share" in g:
        tail_share = _parse_number(ctx, g.values["tail_share"], g.sub("tail_share"), FRACTION)
    if "headroom" in g:
        headroom = _parse_number(ctx, g.values["headroom"], g.sub("headroom"), NON_NEGATIVE)
    mode = (
        _parse_enum(ctx, g.values["mode"], g.sub("mode"), _GUARD_MODES, "guard mode") if "mode" in g else None
    )
    if ctx.count > start or share is None or label is None or mode is None:
        return None
    guard = ProtocolFloorGuard(share=share, label=label, floors=tuple(floors), mode=mode)  # type: ignore[arg-type]
    if tail_share is not None:
        guard = replace(guard, tail_share=float(tail_share))
    if headroom is not None:
        guard = replace(guard, headroom=float(headroom))
    return guard


@dataclass
class _Entry:
    """One constraint as parsed, with the nodes the cross-checks point at."""

    index: int
    path: str
    node: Node
    name: str | None = None
    name_node: Node | None = None
    preds: list[tuple[str, Node]] = field(default_factory=list)
    enables: list[tuple[str, Node]] = field(default_factory=list)
    constraint: Constraint | None = None


def _by_only(node: Node | None) -> Signal | None:
    """A stand-in signal holding only the `by` labels of a signal node that did not parse
    (None when its `by` is not a plain list of strings)."""
    if not isinstance(node, MappingNode):
        return None
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == "by" and isinstance(vnode, SequenceNode):
            labels = [v.value for v in vnode.value if isinstance(v, ScalarNode) and v.tag == _STR]
            if len(labels) == len(vnode.value):
                return Signal(kind="gauge", metric="unparsed", by=tuple(labels))
    return None


def _check_labels(
    ctx: _Ctx,
    m: _Map,
    units: list[tuple[str, Node]],
    signal: Signal,
    outcome: Signal,
    labels: dict[str, str | None],
) -> None:
    def missing(label: str) -> str | None:
        for what, sig in (("signal", signal), ("outcome", outcome)):
            if label not in sig.by:
                return (
                    f"refers to missing label {label!r}{_did_you_mean(label, sig.by)}: "
                    f"the {what} groups by ({', '.join(sig.by)})"
                )
        return None

    for i, (label, node) in enumerate(units):
        msg = missing(label)
        if msg:
            ctx.error(node, f"{m.sub('units')}[{i}]", msg)
    unit_names = [u for u, _ in units]
    for key in ("stratum", "segment"):
        value, node = labels.get(key), m.get(key)
        if value is None or node is None:
            continue
        msg = missing(value)
        if msg is None and value not in unit_names:
            msg = f"{key} {value!r} is not one of the units{_did_you_mean(value, unit_names)} ({', '.join(unit_names)})"
        if msg:
            ctx.error(node, m.sub(key), msg)


def _constraint(ctx: _Ctx, node: Node, index: int, meta_target: float) -> _Entry:
    path = f"constraints[{index}]"
    if isinstance(node, MappingNode):
        for knode, vnode in node.value:
            if (
                isinstance(knode, ScalarNode)
                and knode.value == "name"
                and isinstance(vnode, ScalarNode)
                and vnode.tag == _STR
                and _NAME.fullmatch(vnode.value)
            ):
                path = f"constraints.{vnode.value}"
                break
    entry = _Entry(index=index, path=path, node=node)
    start = ctx.count
    m = _mapping(ctx, node, path, _CONSTRAINT_KEYS, ("name", "layer"))
    if m is None:
        return entry

    def parse(key: str, parser: Parser) -> Any:
        return parser(ctx, m.values[key], m.sub(key)) if key in m else None

    name = parse("name", _str(_NAME, "constraint name (use lower_snake_case)"))
    if name == OBSERVABILITY:
        ctx.error(
            m.values["name"], m.sub("name"), f"{OBSERVABILITY!r} is implicit and precedes every constraint"
        )
        name = None
    if name is not None:
        entry.name, entry.name_node = name, m.values["name"]
    kind: Any = parse("kind", _enum(_CONSTRAINT_KINDS, "constraint kind")) if "kind" in m else "signal"
    layer = parse("layer", _enum(LAYERS, "layer"))
    if layer is not None and kind is not None and (layer == "meta") != (kind == "meta"):
        ctx.error(
            m.values["layer"],
            m.sub("layer"),
            "layer 'meta' is for kind: meta constraints only"
            if layer == "meta"
            else "a kind: meta constraint must have layer: meta",
        )
    if "predecessors" in m:
        preds = _parse_names(ctx, m.values["predecessors"], m.sub("predecessors"), _NAME, "constraint name")
        entry.preds = preds or []

    kwargs: dict[str, Any] = {}
    for key, parser in (
        ("description", _str()),
        ("runbook", _str(nullable=True)),
        ("direction", _enum(_DIRECTIONS, "direction")),
    ):
        value = parse(key, parser)
        if value is not None:
            kwargs[key] = value
    if "target" in m:
        kwargs["target"] = parse("target", _parse_target)
    elif kind == "meta":
        kwargs["target"] = meta_target
    if "exceptions" in m:
        kwargs["exceptions"], entry.enables = _exceptions(ctx, m.values["exceptions"], m.sub("exceptions"))

    if kind == "meta":
        for key in _SIGNAL_KEYS:
            if key in m:
                ctx.error(m.keys[key], m.sub(key), f"{key!r} does not apply to a meta constraint")
    elif kind == "signal":
        for key in ("signal", "outcome", "target", "units"):
            if key not in m:
                ctx.error(node, m.sub(key), f"missing required field {key!r}")
        signal = parse("signal", _signal_parser)
        outcome = parse("outcome", _signal_parser)
        kwargs["signal"], kwargs["outcome"] = signal, outcome
        kwargs["outcome_direction"] = parse("outcome_direction", _enum(_DIRECTIONS, "direction"))
        units = None
        if "units" in m:
            units = _parse_names(ctx, m.values["units"], m.sub("units"), _LABEL, "label name")
            if units is not None:
                kwargs["units"] = tuple(u for u, _ in units)
        kwargs["stratum"] = parse("stratum", _str(_LABEL, "label name"))
        kwargs["segment"] = parse("segment", _str(_LABEL, "label name"))
        # a signal that failed to parse still has its `by`: check the labels against it in
        # the same pass, so one `csf pack validate` reports every problem
        sig_for_labels = signal if signal is not None else _by_only(m.get("signal"))
        out_for_labels = outcome if outcome is not None else _by_only(m.get("outcome"))
        if units is not None and sig_for_labels is not None and out_for_labels is not None:
            _check_labels(
                ctx, m, units, sig_for_labels, out_for_labels, {k: kwargs[k] for k in ("stratum", "segment")}
            )

        input_nodes: dict[str, Node] = {}
        inputs: list[tuple[str, Signal]] = []
        if "inputs" in m:
            inode = m.values["inputs"]
            if not isinstance(inode, MappingNode):
                ctx.error(
                    inode, m.sub("inputs"), f"expected a mapping of name: signal, got {_describe(inode)}"
                )
            else:
                for knode, vnode in inode.value:
                    iname = _parse_string(ctx, knode, m.sub("inputs"), _LABEL, "input name")
                    if iname is None:
                        continue
                    ipath = _join(m.sub("inputs"), iname)
                    if iname in input_nodes:
                        first = input_nodes[iname].start_mark.line + 1
                        ctx.error(knode, ipath, f"duplicate key {iname!r} (first at line {first})")
                        continue
                    input_nodes[iname] = knode
                    sig = _parse_signal(ctx, vnode, ipath)
                    if sig is not None:
                        inputs.append((iname, sig))
        kwargs["inputs"] = tuple(inputs)
        if "guards" in m:
            items = _sequence(ctx, m.values["guards"], m.sub("guards"))
            guards = [
                _guard(ctx, g, f"{m.sub('guards')}[{i}]", input_nodes) for i, g in enumerate(items or [])
            ]
            kwargs["guards"] = tuple(g for g in guards if g is not None)
        if "economics" in m:
            kwargs["economics"] = _economics(ctx, m.values["economics"], m.sub("economics"), input_nodes)

    if ctx.count == start and name is not None and layer is not None and kind is not None:
        entry.constraint = Constraint(
            name=name,
            layer=layer,
            kind=kind,
            predecessors=tuple(p for p, _ in entry.preds),
            **{k: v for k, v in kwargs.items() if v is not None},
        )
    return entry


def _check_references(ctx: _Ctx, entries: list[_Entry]) -> dict[str, _Entry]:
    """Duplicate names and references to unknown constraints; returns name -> entry."""
    by_name: dict[str, _Entry] = {}
    for e in entries:
        if e.name is None or e.name_node is None:
            continue
        if e.name in by_name:
            first = by_name[e.name].name_node
            line = first.start_mark.line + 1 if first is not None else 0
            ctx.error(
                e.name_node,
                f"constraints[{e.index}].name",
                f"duplicate constraint name {e.name!r} (first at line {line})",
            )
            continue
        by_name[e.name] = e
    known = ", ".join(by_name)
    for e in entries:
        for field_name, refs in (("predecessors", e.preds), ("exceptions.enables", e.enables)):
            for i, (ref, node) in enumerate(refs):
                if ref in by_name:
                    continue
                path = f"{e.path}.{field_name}[{i}]"
                if ref == OBSERVABILITY:
                    ctx.error(
                        node, path, f"{OBSERVABILITY!r} precedes every constraint implicitly; do not list it"
                    )
                else:
                    ctx.error(node, path, f"unknown constraint {ref!r}{_did_you_mean(ref, by_name)}; known: {known}")
    return by_name


def _topological(ctx: _Ctx, entries: list[_Entry], by_name: dict[str, _Entry]) -> list[str]:
    """Stable topological order (file order among independent constraints); reports cycles."""
    order = [e.name for e in entries if e.name is not None and by_name.get(e.name) is e]
    preds = {n: [p for p, _ in by_name[n].preds if p in by_name] for n in order}
    placed: list[str] = []
    done: set[str] = set()
    remaining = list(order)
    progress = True
    while remaining and progress:
        progress = False
        for n in remaining:
            if all(p in done for p in preds[n]):
                placed.append(n)
                done.add(n)
                remaining.remove(n)
                progress = True
                break
    # What is left contains at least one cycle. Report each strongly connected component
    # that is cyclic (two or more members, or a self-loop), once, as a path through its
    # first member in file order, written in precedence order ("a -> b" = a precedes b).
    left = set(remaining)
    succs = {n: [s for s in remaining if n in preds[s]] for n in remaining}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for nxt in succs[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    reachable = {n: reach(n) for n in remaining}
    covered: set[str] = set()
    for first in remaining:
        if first in covered or first not in reachable[first]:
            continue
        component = {n for n in left if n in reachable[first] and first in reachable[n]}
        covered |= component
        # Shortest path first -> ... -> first inside the component (breadth first).
        parent: dict[str, str] = {}
        frontier = [first]
        closing: str | None = None
        while frontier and closing is None:
            nxt_frontier = []
            for n in frontier:
                for s2 in succs[n]:
                    if s2 == first:
                        closing = n
                        break
                    if s2 in component and s2 not in parent:
                        parent[s2] = n
                        nxt_frontier.append(s2)
                if closing is not None:
                    break
            frontier = nxt_frontier
        if closing is None:  # pragma: no cover - first is in its own reach set
            continue
        path = [closing]
        while path[-1] != first:
            path.append(parent[path[-1]])
        cycle = [*reversed(path), first]
        entry = by_name[first]
        node, j = next((nd, k) for k, (p, nd) in enumerate(entry.preds) if p == closing)
        ctx.error(node, f"{entry.path}.predecessors[{j}]", "dependency cycle: " + " -> ".join(cycle))
    return placed


def _pack(ctx: _Ctx, root: Node) -> Pack | None:
    top_keys = (
        "apiVersion",
        "kind",
        "metadata",
        "windows",
        "hysteresis",
        "causal",
        "economics",
        "organisation",
        "constraints",
    )
    m = _mapping(ctx, root, "", top_keys, ("apiVersion", "kind", "metadata", "constraints"))
    if m is None:
        return None
    if "apiVersion" in m:
        api = _parse_string(ctx, m.values["apiVersion"], "apiVersion")
        if api is not None and api != API_VERSION:
            ctx.error(
                m.values["apiVersion"],
                "apiVersion",
                f"unsupported apiVersion {api!r}; expected {API_VERSION!r}",
            )
    if "kind" in m:
        kind = _parse_string(ctx, m.values["kind"], "kind")
        if kind is not None and kind != PACK_KIND:
            ctx.error(m.values["kind"], "kind", f"unsupported kind {kind!r}; expected {PACK_KIND!r}")
    meta: dict[str, Any] = {}
    if "metadata" in m:
        mm = _mapping(
            ctx, m.values["metadata"], "metadata", ("name", "version", "description"), ("name", "version")
        )
        if mm is not None:
            for key, parser in (
                ("name", _str(_PACK_NAME, "pack name (lower-case letters, digits, '.', '_', '-')")),
                ("version", _str()),
                ("description", _str()),
            ):
                if key in mm:
                    meta[key] = parser(ctx, mm.values[key], mm.sub(key))

    windows = _windows(ctx, m.values["windows"]) if "windows" in m else Windows()
    hysteresis = (
        _simple_section(ctx, m.values["hysteresis"], "hysteresis", _HYSTERESIS_FIELDS, Hysteresis)
        if "hysteresis" in m
        else Hysteresis()
    )
    causal = _causal(ctx, m.values["causal"]) if "causal" in m else CausalSettings()
    economics = (
        _simple_section(ctx, m.values["economics"], "economics", _ECONOMIC_FIELDS, EconomicConstants)
        if "economics" in m
        else EconomicConstants()
    )
    organisation = (
        _simple_section(ctx, m.values["organisation"], "organisation", _ORGANISATION_FIELDS, Organisation)
        if "organisation" in m
        else Organisation()
    )

    entries: list[_Entry] = []
    if "constraints" in m:
        items = _sequence(ctx, m.values["constraints"], "constraints")
        if items is not None and not items:
            ctx.error(m.values["constraints"], "constraints", "a pack needs at least one constraint")
        for i, item in enumerate(items or []):
            entries.append(_constraint(ctx, item, i, organisation.meta_overhead_limit))
    by_name = _check_references(ctx, entries)
    order = _topological(ctx, entries, by_name)

    if ctx.issues:
        return None
    constraints = []
    for n in order:
        c = by_name[n].constraint
        if c is None:  # pragma: no cover - every failure above records an issue
            return None
        constraints.append(c)
    return Pack(
        api_version=API_VERSION,
        name=meta["name"],
        version=meta["version"],
        description=meta.get("description", ""),
        windows=windows,
        hysteresis=hysteresis,
        causal=causal,
        economics=economics,
        organisation=organisation,
        constraints=tuple(constraints),
        source=ctx.source,
    )


# --------------------------------------------------------------------------- public API


def load_pack_text(text: str, source: str = "<string>") -> Pack:
    """Parse pack YAML; raises `PackError` listing every problem found."""
    ctx = _Ctx(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise PackError([PackIssue(source, line, col, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise PackError([PackIssue(source, 1, 1, "", f"invalid YAML: {exc}")]) from None
    if root is None:
        raise PackError(
            [PackIssue(source, 1, 1, "", "empty pack: expected a mapping with apiVersion: csf/v1")]
        )
    pack = _pack(ctx, root)
    if pack is None or ctx.issues:
        issues = sorted(ctx.issues, key=lambda i: (i.line, i.column))
        raise PackError(issues)
    return pack


def load_pack(path: str | Path) -> Pack:
    """Load a pack file; `PackError` on invalid content, `OSError` when unreadable."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError([PackIssue(str(path), 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from None
    return load_pack_text(text, source=str(path))


def _default_resource() -> Any:
    return resources.files("detector.spec").joinpath("packs", "default.yaml")


def default_pack_path() -> Path:
    """Filesystem path of the built-in platform pack."""
    return Path(str(_default_resource()))


@functools.lru_cache(maxsize=1)
def default_pack() -> Pack:
    """The built-in microlearning video platform pack (parsed once, then shared; it is frozen)."""
    text = _default_resource().read_text(encoding="utf-8")
    return load_pack_text(text, source=str(default_pack_path()))


def validate_cli(paths: list[str]) -> int:
    """`csf pack validate FILE...`: 0 when every file is a valid pack, 1 otherwise."""
    ok = True
    for path in paths:
        try:
            pack = load_pack(path)
        except PackError as exc:
            ok = False
            for issue in exc.issues:
                print(issue, file=sys.stderr)
        except OSError as exc:
            ok = False
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"{path}: ok ({len(pack.constraints)} constraints)")
    return 0 if ok else 1


BUILTIN_PACKS: dict[str, str] = {"microlearning-video": "default.yaml", "web-shop": "web-shop.yaml"}
"""Built-in packs by name (the file under detector/spec/packs/); ``default`` is the video pack."""


def _builtin_resource(name: str) -> Any:
    key = "microlearning-video" if name == "default" else name
    if key not in BUILTIN_PACKS:
        close = _did_you_mean(name, [*BUILTIN_PACKS, "default"])
        raise PackError([PackIssue("<built-in>", 0, 0, "pack", f"no built-in pack {name!r}{close}; built-in: {', '.join(BUILTIN_PACKS)}")])
    return resources.files("detector.spec").joinpath("packs", BUILTIN_PACKS[key])


@functools.lru_cache(maxsize=8)
def builtin_pack(name: str) -> Pack:
    """A built-in pack by name (``default`` or ``microlearning-video``, ``web-shop``)."""
    if name in ("default", "microlearning-video"):
        return default_pack()
    res = _builtin_resource(name)
    return load_pack_text(res.read_text(encoding="utf-8"), source=str(res))


def resolve_pack(ref: str | None) -> Pack:
    """`--pack` values: a built-in pack's name, or a file (None: the default pack)."""
    if ref is None:
        return default_pack()
    if ref in BUILTIN_PACKS or ref == "default":
        return builtin_pack(ref)
    return load_pack(ref)


def show_cli(name: str | None = None) -> int:
    """`csf pack show [--pack NAME]`: print a built-in pack's YAML, comments included."""
    try:
        res = _builtin_resource(name or "default")
    except PackError as exc:
        for issue in exc.issues:
            print(f"csf pack show: {issue.message}", file=sys.stderr)
        return 2
    sys.stdout.write(res.read_text(encoding="utf-8"))
    return 0
