"""Value checks of the service configuration, shared by the file, the environment and the flags.

Each check takes the raw value (a YAML scalar, or a string from the environment/CLI) and
returns the typed value or raises ValueError with a message that completes "<origin>: ...".
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from detector.service.config_model import LOG_LEVELS, Shard
from detector.service.state import parse_state_url
from detector.timefmt import parse_duration, parse_time

_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")



def check_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def check_int(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError("must be an integer") from None
    if not isinstance(value, int):
        raise ValueError("must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"must be between {lo} and {hi}")
    return value


def check_port(value: Any) -> int:
    return check_int(value, 1, 65535)


def check_seed(value: Any) -> int:
    return check_int(value, 0, 2**63 - 1)


def check_positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a positive number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("must be a positive number") from None
    try:
        ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
    except OverflowError:  # an integer beyond the float range
        ok = False
    if not ok:
        raise ValueError("must be a positive number")
    return float(value)


def check_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 60s, 5m or a number of seconds")
    try:
        seconds = parse_duration(value)  # ValueError names the text
    except OverflowError:  # an integer beyond the float range
        raise ValueError("must be a positive duration") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def check_log_level(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.strip().lower()


def check_shard(value: Any) -> Shard:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m is None:
        raise ValueError("must be INDEX/COUNT, e.g. 0/2 (shard INDEX of COUNT, counting from 0)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError("the shard count must be at least 1")
    if index >= count:
        raise ValueError(f"the shard index must be between 0 and {count - 1}")
    return Shard(index, count)


def check_state_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a URL: sqlite:///path or postgresql://user@host/db")
    location = parse_state_url(value)  # its ValueError never quotes a password
    if location.backend == "postgresql":
        if importlib.util.find_spec("psycopg") is None:
            raise ValueError(
                "a PostgreSQL state URL needs the psycopg package (pip install 'psycopg[binary]')"
            )
    return value.strip()


def check_max_body_bytes(value: Any) -> int:
    return check_int(value, 1024, 1 << 30)


def check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def check_http_url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an http:// or https:// URL")
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return text


def check_pipeline_name(value: Any) -> str:
    if not isinstance(value, str) or not _PIPELINE_NAME.match(value):
        raise ValueError(
            "must be 1-64 characters of letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return value


SETTING_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": check_str,
    "port": check_port,
    "data_dir": check_str,
    "evaluation_interval": check_duration,
    "log_level": check_log_level,
    "pack": check_str,
    "scenario": check_str,
    "seed": check_seed,
    "speed": check_positive_float,
    "shard": check_shard,
    "state_url": check_state_url,
    "max_body_bytes": check_max_body_bytes,
    "alertmanager_url": check_http_url,
}

SECRET_SETTINGS = frozenset({"state_url"})
"""Settings whose value may hold a password: error messages show them redacted."""


def check_timeout(value: Any) -> float:
    seconds = check_duration(value)
    if seconds > 600:
        raise ValueError("must be at most 10m")
    return seconds


def check_retries(value: Any) -> int:
    return check_int(value, 0, 10)


def check_secret(value: Any) -> str:
    """A non-empty string; the message never quotes the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value.strip()):
        raise ValueError("must not contain control characters")
    return value.strip()


def check_header_value(value: Any) -> str:
    text = check_str(value)
    if any(not (0x20 <= ord(ch) <= 0x7E) for ch in text):
        raise ValueError("must be printable ASCII (it is sent as an HTTP header)")
    return text



def check_time(value: Any) -> float:
    if isinstance(value, dt.datetime):  # an unquoted YAML timestamp; naive means UTC
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be an RFC3339 time such as 2026-11-28T00:00:00Z")
    return parse_time(str(value)) if isinstance(value, str) else float(value)


def check_max_decoded_bytes(value: Any) -> int:
    return check_int(value, 1024, 1 << 31)

