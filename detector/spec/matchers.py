"""Label matchers with PromQL's four operators, the same on every path.

A matcher is ``(label, value)`` for equality (the form every pack had) or
``(label, value, op)`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``. Semantics are
PromQL's: a series without the label is matched as if its value were ``""``; regular
expressions are fully anchored (``5..`` matches ``503``, not ``1503``). The embedded
store (`detector.source.store`), the PromQL compiler (`detector.source.promql`) and messages
(`describe`) all read matchers through this module.

Regular expressions are RE2 on Prometheus and Python ``re`` here. `regex_problem`
refuses what the two read differently or RE2 lacks (backreferences, lookaround,
possessive quantifiers, atomic groups, conditionals), so a pack selects the same series
on every path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

Matcher = tuple[str, ...]
"""``(label, value)`` or ``(label, value, op)``."""
OPS: tuple[str, ...] = ("=", "!=", "=~", "!~")

_UNSUPPORTED = (
    (re.compile(r"\\[1-9]|\(\?P="), "backreferences"),
    (re.compile(r"\(\?<?[=!]"), "lookaround"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"\(\?\("), "conditionals"),
    (re.compile(r"(?<!\\)[*+?}][+]"), "possessive quantifiers"),
)


def parts(m: Matcher) -> tuple[str, str, str]:
    """``(label, op, value)`` of a matcher."""
    if len(m) == 2:
        return m[0], "=", m[1]
    if len(m) == 3 and m[2] in OPS:
        return m[0], m[2], m[1]
    raise ValueError(f"a matcher is (label, value) or (label, value, op) with op in {OPS}, got {m!r}")


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used as a label regex (None: it can)."""
    for bad, what in _UNSUPPORTED:
        if bad.search(pattern):
            return f"{what} are not supported by Prometheus' RE2 regular expressions"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


@functools.lru_cache(maxsize=1024)
def _anchored(pattern: str) -> re.Pattern[str]:
    return re.compile(f"(?:{pattern})\\Z", re.DOTALL)


def matches(labels: Mapping[str, str], matchers: Sequence[Matcher]) -> bool:
    """True when the label set satisfies every matcher (absent label = '')."""
    for m in matchers:
        label, op, value = parts(m)
        have = labels.get(label, "")
        if op == "=":
            ok = have == value
        elif op == "!=":
            ok = have != value
        else:
            ok = _anchored(value).match(have) is not None
            if op == "!~":
                ok = not ok
        if not ok:
            return False
    return True


def is_equality(matchers: Sequence[Matcher]) -> bool:
    return all(parts(m)[1] == "=" for m in matchers)


def describe(matchers: Sequence[Matcher]) -> str:
    """``a="b", c=~"5.."`` (for messages; not escaped)."""
    return ", ".join(f'{label}{op}"{value}"' for label, op, value in map(parts, matchers))


__all__ = ["OPS", "Matcher", "describe", "is_equality", "matches", "parts", "regex_problem"]
