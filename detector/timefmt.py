"""Durations and timestamps in the forms Prometheus users write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


def parse_duration(text: str | float | int) -> float:
    """'90s', '5m', '1h30m', '7d' or a plain number of seconds -> seconds (float).

    Raises ValueError naming the bad text.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: negative")
        return float(text)
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"invalid duration {text!r}: negative")
        return value
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {text!r}: use a number of seconds or units ms, s, m, h, d, w, y")
    return total


def format_duration(seconds: float) -> str:
    """Shortest exact Prometheus duration ('5m', '1h30m', '7d')."""
    if seconds <= 0:
        return "0s"
    ms = int(round(seconds * 1000))
    out = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            q, ms = divmod(ms, size)
            out.append(f"{q}{unit}")
    return "".join(out)


def parse_time(text: str | float) -> float:
    """RFC3339 ('2026-11-28T12:00:00Z') or unix seconds -> unix seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"invalid time {text!r}: use RFC3339 (2026-11-28T12:00:00Z) or unix seconds") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
