"""Reading a SIGNAL from a pack: kinds, options, matchers, and a ratio's inheritance.

The grammar is in `detector.spec.load`'s docstring; the model is `detector.spec.signals.Signal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node

from detector.spec.matchers import regex_problem
from detector.spec.signals import AGGREGATIONS, SIGNAL_KINDS, Signal
from detector.spec.yamlnodes import (
    OPEN_UNIT,
    POSITIVE,
    Collector,
    Fields,
    describe,
    did_you_mean,
    join_path,
    read_bool,
    read_duration,
    read_enum,
    read_mapping,
    read_names,
    read_number,
    read_string,
)

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def read_labels(ctx: Collector, node: Node, path: str) -> tuple[str, ...] | None:
    start = ctx.count
    names = read_names(ctx, node, path, LABEL_NAME, "label name")
    if names is None or ctx.count > start:
        return None
    return tuple(n for n, _ in names)



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
        f"unknown signal kind or option {key!r}{did_you_mean(key, SIGNAL_KINDS + _SIGNAL_OPTIONS)}; "
        f"kinds: {', '.join(SIGNAL_KINDS)}; options: {', '.join(_SIGNAL_OPTIONS)}"
    )


_MATCH_OPS = {"equal": "=", "not": "!=", "regex": "=~", "not_regex": "!~"}


def read_matchers(ctx: Collector, node: Node, path: str) -> tuple[tuple[str, ...], ...] | None:
    """``{label: value}`` for equality, or ``{label: {regex|not|not_regex|equal: value}}``."""
    if not isinstance(node, MappingNode):
        ctx.error(node, path, f"expected a mapping of label: value, got {describe(node)}")
        return None
    start = ctx.count
    out: dict[str, tuple[str, ...]] = {}
    for knode, vnode in node.value:
        label = read_string(ctx, knode, path, LABEL_NAME, "label name")
        if label is None:
            continue
        p = join_path(path, label)
        if label in out:
            ctx.error(knode, p, f"duplicate key {label!r}")
            continue
        if isinstance(vnode, MappingNode):
            m = read_mapping(ctx, vnode, p, tuple(_MATCH_OPS))
            if m is None or len(m.values) != 1:
                if m is not None and not m.unknown:
                    ctx.error(vnode, p, f"give exactly one of {', '.join(_MATCH_OPS)}")
                continue
            (word, value_node), = m.values.items()
            value = read_string(ctx, value_node, m.sub(word))
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
        value = read_string(ctx, vnode, p)
        if value is not None:
            out[label] = (label, value)
    if ctx.count > start:
        return None
    return tuple(out[k] for k in sorted(out))


def read_signal(
    ctx: Collector,
    node: Node,
    path: str,
    inherit_by: tuple[str, ...] | None = None,
    inherit_range: float | None = None,
    inherit_pin: bool | None = None,
) -> Signal | None:
    """A SIGNAL mapping; a ratio's children inherit its `by`, `range` and `pin_range` when they do
    not set their own (`inherit_*`)."""
    start = ctx.count
    m = read_mapping(ctx, node, path, SIGNAL_KINDS + _SIGNAL_OPTIONS, unknown=_signal_unknown)
    if m is None:
        return None
    kind = _kind(ctx, m, node, path)
    if kind is None:
        return None
    opts = _options(ctx, m, node, kind)
    if kind == "ratio":
        child = _Inherited(
            opts.by if opts.by is not None else inherit_by,
            opts.rng if opts.rng is not None else inherit_range,
            opts.pin if opts.pin is not None else inherit_pin,
        )
        return _ratio(ctx, m, opts, child, start)
    metric = read_string(ctx, m.values[kind], m.sub(kind), METRIC_NAME, "metric name")
    if ctx.count > start or metric is None:
        return None
    by = opts.by
    if by is None:
        by = inherit_by if inherit_by is not None else ()
    kwargs = opts.kwargs
    rng = opts.rng if opts.rng is not None else inherit_range
    if rng is not None and kind != "gauge":
        kwargs["range"] = rng
    pin = opts.pin if opts.pin is not None else inherit_pin
    if pin is not None and kind != "gauge":
        kwargs["pin_range"] = bool(pin)
    return Signal(kind=kind, metric=metric, by=by, **kwargs)  # type: ignore[arg-type]


@dataclass
class _Options:
    """A signal's options as read: `by`, `range`, `pin_range` (None when not given) and the rest."""

    by: tuple[str, ...] | None
    by_node: Node | None
    rng: float | None
    pin: bool | None
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Inherited:
    by: tuple[str, ...] | None
    rng: float | None
    pin: bool | None


def _kind(ctx: Collector, m: Fields, node: Node, path: str) -> str | None:
    """The signal's one kind key, or None after recording why there is not exactly one."""
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
    return kind


def _options(ctx: Collector, m: Fields, node: Node, kind: str) -> _Options:
    by: tuple[str, ...] | None = None
    by_node = m.get("by")
    if by_node is not None:
        by = read_labels(ctx, by_node, m.sub("by"))
        if by is not None and kind in ("histogram_quantile", "histogram_mean") and "le" in by:
            ctx.error(by_node, m.sub("by"), "'le' is added automatically for histogram signals")
    rng: float | None = None
    if "range" in m:
        rng = read_duration(ctx, m.values["range"], m.sub("range"))
    pin: bool | None = None
    if "pin_range" in m:
        pin = read_bool(ctx, m.values["pin_range"], m.sub("pin_range"))
    kwargs: dict[str, Any] = {}
    if "quantile" in m:
        kwargs["quantile"] = read_number(ctx, m.values["quantile"], m.sub("quantile"), OPEN_UNIT)
    elif kind == "histogram_quantile":
        ctx.error(
            node, m.sub("quantile"), "missing required field 'quantile' for a histogram_quantile signal"
        )
    if "matchers" in m:
        kwargs["matchers"] = read_matchers(ctx, m.values["matchers"], m.sub("matchers"))
    if "agg" in m:
        kwargs["agg"] = read_enum(ctx, m.values["agg"], m.sub("agg"), AGGREGATIONS, "aggregation")
    if "scale" in m:
        scale = read_number(ctx, m.values["scale"], m.sub("scale"), POSITIVE)
        kwargs["scale"] = None if scale is None else float(scale)
    if "promql" in m:
        kwargs["promql"] = read_string(ctx, m.values["promql"], m.sub("promql"))
    return _Options(by, by_node, rng, pin, kwargs)


def _ratio(ctx: Collector, m: Fields, opts: _Options, child: _Inherited, start: int) -> Signal | None:
    """``ratio: {numerator, denominator}``: the labels are the numerator's; the denominator may
    group by fewer (``group_left`` join)."""
    rm = read_mapping(ctx, m.values["ratio"], m.sub("ratio"), ("numerator", "denominator"), ("numerator", "denominator"))
    num = den = None
    if rm is not None and "numerator" in rm:
        num = read_signal(ctx, rm.values["numerator"], rm.sub("numerator"), child.by, child.rng, child.pin)
    if rm is not None and "denominator" in rm:
        den = read_signal(ctx, rm.values["denominator"], rm.sub("denominator"), child.by, child.rng, child.pin)
    if ctx.count > start or num is None or den is None or rm is None:
        return None
    by, rng, pin = opts.by, opts.rng, opts.pin
    if by is not None and set(num.by) != set(by):
        ctx.error(
            opts.by_node,
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
        **{k: v for k, v in opts.kwargs.items() if v is not None},
    )


def signal_field(ctx: Collector, node: Node, path: str) -> Any:
    return read_signal(ctx, node, path)
