"""YAML read as nodes with positions: the one loader behind packs and the service configuration.

A file is *composed* (not constructed), so every node keeps its line and column, and the
readers below walk the node tree collecting every problem as an `Issue`
(``FILE:LINE:COL: field.path: message``) in a `Collector` instead of stopping at the first.
`detector.spec.load` reads packs with them and `detector.service.config` reads the service
configuration, so both speak the same words: unknown keys with "did you mean", duplicate keys
with the line of the first, wrong types named with the value found.

Readers take ``(collector, node, path)`` and return the value, or None after recording an
issue; the ``*_field`` factories build such readers with their checks bound (`Parser`).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.timefmt import parse_duration


@dataclass(frozen=True)
class Issue:
    """One problem in a YAML file. `line` and `column` are 1-based."""

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


def compose(text: str, source: str) -> tuple[Node | None, Issue | None]:
    """The root node of YAML `text` (None for an empty document), or the syntax problem as an Issue."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        return None, Issue(source, line, col, "", f"invalid YAML: {problem}")
    except yaml.YAMLError as exc:
        return None, Issue(source, 1, 1, "", f"invalid YAML: {exc}")


STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"

_TAG_NAMES = {
    STR_TAG: "a string",
    INT_TAG: "a number",
    FLOAT_TAG: "a number",
    BOOL_TAG: "a boolean",
    NULL_TAG: "null",
    "tag:yaml.org,2002:timestamp": "a timestamp",
}

# YAML 1.1 (PyYAML) reads `50e6` and `1e-5` as strings; accept such plain scalars as numbers.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")

@functools.lru_cache(maxsize=1)
def _constructor() -> SafeConstructor:
    return SafeConstructor()


def describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag in (INT_TAG, FLOAT_TAG) and number_value(node) is None:
        return f"an invalid !!{node.tag.rsplit(':', 1)[-1]} value ({node.value!r})"
    desc = _TAG_NAMES.get(node.tag, f"a {node.tag} value")
    if node.tag == STR_TAG or node.tag in (INT_TAG, FLOAT_TAG, "tag:yaml.org,2002:timestamp"):
        return f"{desc} ({node.value!r})"
    return desc


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Collector:
    """Collects issues while the walk goes on: one run reports every problem."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[Issue] = []

    def error(self, node: Node | None, path: str, message: str) -> None:
        if node is None:
            line, col = 1, 1
        else:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.issues.append(Issue(self.source, line, col, path, message))

    @property
    def count(self) -> int:
        return len(self.issues)


@dataclass
class Fields:
    """A mapping node with its known keys split out (first occurrence wins)."""

    node: MappingNode
    path: str
    values: dict[str, Node] = field(default_factory=dict)
    keys: dict[str, Node] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def sub(self, key: str) -> str:
        return join_path(self.path, key)

    def get(self, key: str) -> Node | None:
        return self.values.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.values


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_mapping(
    ctx: Collector,
    node: Node,
    path: str,
    allowed: Sequence[str],
    required: Iterable[str] = (),
    unknown: Callable[[str], str] | None = None,
) -> Fields | None:
    if not isinstance(node, MappingNode):
        ctx.error(node, path, f"expected a mapping, got {describe(node)}")
        return None
    m = Fields(node, path)
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.tag == MERGE_TAG:
            ctx.error(knode, path, "merge keys ('<<') are not supported; alias the whole mapping instead")
            continue
        if not (isinstance(knode, ScalarNode) and knode.tag == STR_TAG):
            ctx.error(knode, path, f"keys must be strings, got {describe(knode)}")
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
                else f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}"
            )
            ctx.error(knode, m.sub(key), msg)
            m.unknown.append(key)
            continue
        m.values[key] = vnode
    for key in required:
        if key not in m.values:
            ctx.error(node, m.sub(key), f"missing required field {key!r}")
    return m


def read_list(ctx: Collector, node: Node, path: str) -> list[Node] | None:
    if not isinstance(node, SequenceNode):
        ctx.error(node, path, f"expected a list, got {describe(node)}")
        return None
    return list(node.value)


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


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

Parser = Callable[[Collector, Node, str], Any]


def number_value(node: Node) -> float | int | None:
    if not isinstance(node, ScalarNode):
        return None
    try:
        if node.tag == INT_TAG:
            value = int(_constructor().construct_yaml_int(node))
            # beyond the float range math.isfinite() would raise OverflowError: report it as infinite
            return value if abs(value) <= sys.float_info.max else (math.inf if value > 0 else -math.inf)
        if node.tag == FLOAT_TAG:
            return float(_constructor().construct_yaml_float(node))
    except ValueError:
        # an explicit `!!int abc` / `!!float x`, or an integer of more than 4300 digits
        digits = node.value.strip().lstrip("+-").replace("_", "")
        if digits.isdigit():
            return -math.inf if node.value.strip().startswith("-") else math.inf
        return None
    if node.tag == STR_TAG and node.style is None and _PLAIN_NUMBER.fullmatch(node.value):
        return float(node.value.replace("_", ""))
    return None


def read_number(
    ctx: Collector, node: Node, path: str, check: Check | None = None, integer: bool = False
) -> float | int | None:
    value = number_value(node)
    if value is None:
        kind = "an integer" if integer else "a number"
        ctx.error(node, path, f"expected {kind}, got {describe(node)}")
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


def number_field(check: Check | None = None, *, integer: bool = False, nullable: bool = False) -> Parser:
    def parse(ctx: Collector, node: Node, path: str) -> Any:
        if nullable and is_null(node):
            return None
        v = read_number(ctx, node, path, check, integer)
        if v is None or integer:
            return v
        return float(v)

    return parse


def read_duration(ctx: Collector, node: Node, path: str, check: Check = POSITIVE) -> float | None:
    value = number_value(node)
    if value is None:
        if not (isinstance(node, ScalarNode) and node.tag == STR_TAG):
            ctx.error(node, path, f"expected a duration such as '5m' or seconds, got {describe(node)}")
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


def duration_field(check: Check = POSITIVE) -> Parser:
    def parse(ctx: Collector, node: Node, path: str) -> Any:
        return read_duration(ctx, node, path, check)

    return parse


def read_string(
    ctx: Collector,
    node: Node,
    path: str,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
    nullable: bool = False,
) -> str | None:
    if nullable and is_null(node):
        return None
    if not (isinstance(node, ScalarNode) and node.tag == STR_TAG):
        hint = " (quote it)" if isinstance(node, ScalarNode) and not is_null(node) else ""
        ctx.error(node, path, f"expected a string, got {describe(node)}{hint}")
        return None
    value: str = node.value
    if pattern is not None and not pattern.fullmatch(value):
        ctx.error(node, path, f"invalid {rule} {value!r}")
        return None
    if pattern is None and not value.strip():
        ctx.error(node, path, "must not be empty")
        return None
    return value


def string_field(pattern: re.Pattern[str] | None = None, rule: str = "", nullable: bool = False) -> Parser:
    def parse(ctx: Collector, node: Node, path: str) -> Any:
        return read_string(ctx, node, path, pattern, rule, nullable)

    return parse


def read_bool(ctx: Collector, node: Node, path: str) -> bool | None:
    value = None
    if isinstance(node, ScalarNode) and node.tag == BOOL_TAG:
        try:
            value = bool(_constructor().construct_yaml_bool(node))
        except KeyError:  # an explicit `!!bool maybe`
            pass
    if value is None:
        got = f"{node.value!r}" if isinstance(node, ScalarNode) and node.tag == BOOL_TAG else describe(node)
        ctx.error(node, path, f"expected true or false, got {got}")
    return value


def read_enum(ctx: Collector, node: Node, path: str, allowed: Sequence[str], what: str) -> str | None:
    value = read_string(ctx, node, path)
    if value is None:
        return None
    if value not in allowed:
        ctx.error(node, path, f"unknown {what} {value!r}{did_you_mean(value, allowed)}; allowed: {', '.join(allowed)}")
        return None
    return value


def enum_field(allowed: Sequence[str], what: str) -> Parser:
    def parse(ctx: Collector, node: Node, path: str) -> Any:
        return read_enum(ctx, node, path, allowed, what)

    return parse


def read_names(
    ctx: Collector, node: Node, path: str, pattern: re.Pattern[str], rule: str
) -> list[tuple[str, Node]] | None:
    """A list of unique names, each with its node."""
    items = read_list(ctx, node, path)
    if items is None:
        return None
    out: list[tuple[str, Node]] = []
    seen: dict[str, Node] = {}
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        value = read_string(ctx, item, p, pattern, rule)
        if value is None:
            continue
        if value in seen:
            ctx.error(item, p, f"duplicate {value!r} (first at line {seen[value].start_mark.line + 1})")
            continue
        seen[value] = item
        out.append((value, item))
    return out


def read_section(
    ctx: Collector, node: Node, path: str, fields: dict[str, Parser]
) -> tuple[dict[str, Any], Fields] | None:
    """Parse a flat mapping whose every key is optional; returns the parsed kwargs."""
    m = read_mapping(ctx, node, path, tuple(fields))
    if m is None:
        return None
    kwargs: dict[str, Any] = {}
    for key, value_node in m.values.items():
        value = fields[key](ctx, value_node, m.sub(key))
        if value is not None:
            kwargs[key] = value
    return kwargs, m
