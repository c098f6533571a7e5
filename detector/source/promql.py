"""Compile a `Signal` into PromQL text (the Prometheus-source twin of `detector.source.native`).

The expressions are the ones tabled in `detector.spec.signals`; `detector.source.native` evaluates
the same definitions over the embedded store. Names are validated and label values
are escaped as PromQL string literals (backslash, double quote, newline and every
other control character), so no label value can end the string and inject query
text. A signal with a raw ``promql`` override is returned unchanged.

Layout rules: aggregations print as ``sum by (a, b) (x)`` (``sum(x)`` without
grouping); operands that contain a binary operator (scaled signals, histogram means,
nested ratios) are parenthesised; a ratio whose denominator groups by fewer labels is
``num / on(a, b) group_left den`` (``group_left() (den)`` when the denominator needs
parentheses, because ``group_left (`` would open a label list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from detector.source.native import ratio_join_labels
from detector.source.series import validate_label_name, validate_metric_name
from detector.spec.matchers import Matcher, regex_problem
from detector.spec.matchers import parts as matcher_parts
from detector.spec.signals import AGGREGATIONS, Signal
from detector.timefmt import format_duration

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "atan2",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "start",
        "end",
        "sum",
        "avg",
        "count",
        "min",
        "max",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "count_values",
        "quantile",
        "limitk",
        "limit_ratio",
        "inf",
        "nan",
    }
)
"""Words the PromQL lexer treats specially; a metric with such a name is selected via ``__name__``."""

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_string(value: str) -> str:
    """A PromQL double-quoted string literal whose content is exactly `value`."""
    if not isinstance(value, str):
        raise ValueError(f"label value must be a string, got {type(value).__name__}")
    out = ['"']
    for ch in value:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError(f"label value {value!r} is not valid UTF-8 (lone surrogate)")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_number(x: float) -> str:
    """A float as a PromQL number literal: integers without a fraction, else the shortest round-trip form."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"cannot write {x!r} as a PromQL number")
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def selector(metric: str, matchers: Sequence[Matcher] = ()) -> str:
    """``metric{a="b", c=~"5..", ...}`` with validated names, operators and escaped values."""
    validate_metric_name(metric)
    parts = []
    for m in matchers:
        label, op, value = matcher_parts(m)
        if op in ("=~", "!~"):
            problem = regex_problem(value)
            if problem is not None:
                raise ValueError(f"matcher {label}{op}{value!r}: {problem}")
        parts.append(f"{validate_label_name(label)}{op}{quote_string(value)}")
    if metric.lower() in _KEYWORDS:
        return "{" + ", ".join([f"__name__={quote_string(metric)}", *parts]) + "}"
    return metric + ("{" + ", ".join(parts) + "}" if parts else "")


def _grouping(by: tuple[str, ...]) -> str:
    return ", ".join(validate_label_name(k) for k in by)


def _aggregate(op: str, by: tuple[str, ...], inner: str) -> str:
    if by:
        return f"{op} by ({_grouping(by)}) ({inner})"
    return f"{op}({inner})"


def _range(signal: Signal) -> str:
    if not (signal.range > 0 and math.isfinite(signal.range)):
        raise ValueError(
            f"{signal.kind} signal on {signal.metric!r} needs a positive range, got {signal.range!r}"
        )
    ms = signal.range * 1000.0
    if round(ms) < 1 or abs(ms - round(ms)) > 1e-6:
        raise ValueError(f"range {signal.range!r} s is not a whole number of milliseconds")
    return format_duration(signal.range)


def _sum_rate(signal: Signal, metric: str, fn: str = "rate") -> str:
    return _aggregate("sum", signal.by, f"{fn}({selector(metric, signal.matchers)}[{_range(signal)}])")


def _paren(expr: str, atomic: bool) -> str:
    return expr if atomic else f"({expr})"


def _compile(signal: Signal) -> tuple[str, bool]:
    """(expression, atomic): atomic expressions need no parentheses as an operand."""
    if signal.promql:
        return signal.promql, False
    kind = signal.kind
    if kind == "ratio":
        if signal.numerator is None or signal.denominator is None:
            raise ValueError("ratio signal needs a numerator and a denominator")
        on = ratio_join_labels(signal)
        num = _paren(*_compile(signal.numerator))
        den, den_atomic = _compile(signal.denominator)
        if on is None:
            expr = f"{num} / {_paren(den, den_atomic)}"
        else:
            join = f"on({_grouping(on)}) group_left"
            expr = f"{num} / {join} {den}" if den_atomic else f"{num} / {join}() ({den})"
        atomic = False
    elif not signal.metric:
        raise ValueError(f"{kind} signal needs a metric")
    elif kind == "gauge":
        if signal.agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {signal.agg!r}; expected one of {AGGREGATIONS}")
        expr, atomic = _aggregate(signal.agg, signal.by, selector(signal.metric, signal.matchers)), True
    elif kind in ("rate", "increase"):
        expr, atomic = _sum_rate(signal, signal.metric, kind), True
    elif kind == "histogram_quantile":
        q = signal.quantile
        if q is None or not math.isfinite(q):
            raise ValueError(f"histogram_quantile signal on {signal.metric!r} needs a finite quantile")
        by = tuple(k for k in signal.by if k != "le") + ("le",)
        inner = f"rate({selector(signal.metric + '_bucket', signal.matchers)}[{_range(signal)}])"
        expr, atomic = f"histogram_quantile({format_number(q)}, {_aggregate('sum', by, inner)})", True
    elif kind == "histogram_mean":
        expr = f"{_sum_rate(signal, signal.metric + '_sum')} / {_sum_rate(signal, signal.metric + '_count')}"
        atomic = False
    else:
        raise ValueError(f"unknown signal kind {kind!r}")
    if signal.scale != 1.0:
        expr, atomic = f"{_paren(expr, atomic)} * {format_number(signal.scale)}", False
    return expr, atomic


def compile_promql(signal: Signal) -> str:
    """PromQL text for `signal` (its ``promql`` override verbatim when set)."""
    return _compile(signal)[0]
