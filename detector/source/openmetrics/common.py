"""What the OpenMetrics writer and parser share: names, family types, the error."""

from __future__ import annotations

import re
from typing import Literal

from detector.errors import DataError

FAMILY_TYPES: tuple[str, ...] = ("gauge", "counter", "histogram", "unknown")
Format = Literal["auto", "openmetrics", "prometheus"]

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
HIST_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


class OpenMetricsError(DataError, ValueError):
    """Malformed exposition text; `line_no` is 1-based."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no
        self.message = message
