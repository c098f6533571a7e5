"""OpenMetrics text with timestamps: a streaming writer (`writer`) and a streaming parser and file
loader (`parser`), sharing names, family types and `OpenMetricsError` (`common`).

The writer turns ``(series_name, family_type, labels, timestamps, values)`` tuples (what the
simulators yield) into OpenMetrics 1.0 text that ``promtool tsdb create-blocks-from
openmetrics`` accepts; the parser reads OpenMetrics or the Prometheus text format back into
per-series batches, naming the line of every problem. Each module's docstring states its rules.
"""

from __future__ import annotations

from detector.source.openmetrics.common import FAMILY_TYPES, Format, OpenMetricsError
from detector.source.openmetrics.parser import LoadStats, load_openmetrics, parse_openmetrics
from detector.source.openmetrics.writer import (
    escape_label_value,
    family_name,
    format_floats,
    format_timestamps,
    write_openmetrics,
)

__all__ = [
    "FAMILY_TYPES",
    "Format",
    "LoadStats",
    "OpenMetricsError",
    "escape_label_value",
    "family_name",
    "format_floats",
    "format_timestamps",
    "load_openmetrics",
    "parse_openmetrics",
    "write_openmetrics",
]
