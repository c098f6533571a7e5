"""OpenMetrics text with timestamps: the streaming writer.

`write_openmetrics` turns ``(series_name, family_type, labels, timestamps, values)``
tuples (what `detector.sim.simulator.Simulator.generate` yields) into OpenMetrics 1.0 text
that ``promtool tsdb create-blocks-from openmetrics`` accepts:

* one ``# HELP`` (when known) and ``# TYPE`` per family; a family's lines are
  contiguous, and so are the lines of each metric (one label set) inside it;
* counters are written as ``<family>_total`` samples of a family named without the
  suffix; histograms as ``_bucket{le=...}``, ``_count`` and ``_sum``, one MetricPoint
  per timestamp (buckets in ascending ``le``, then count, then sum);
* values use the shortest exact float text (so parsing gives back the same floats),
  ``NaN``, ``+Inf`` and ``-Inf``; timestamps are seconds (integers when integral);
* ``# EOF`` ends the text.

The input must arrive grouped by family and, inside a family, by metric (consecutive
chunks of one series are fine). Only one metric is buffered at a time, so the text is
written as it is produced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import numpy as np

from detector.source.openmetrics.common import (
    FAMILY_TYPES,
    HIST_SUFFIXES,
    LABEL_NAME,
    METRIC_NAME,
)

# --------------------------------------------------------------------------------------
# Formatting helpers


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_floats(values: np.ndarray) -> list[str]:
    """Shortest round-trip text of each value; NaN, +Inf, -Inf as OpenMetrics spells them."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return []
    out = repr(arr.tolist())[1:-1].split(", ")
    bad = np.flatnonzero(~np.isfinite(arr))
    for i in bad.tolist():
        v = arr[i]
        out[i] = "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return out


def format_timestamps(ts: np.ndarray) -> list[str]:
    """Seconds: integers when every timestamp is integral, else shortest float text."""
    arr = np.asarray(ts, dtype=np.float64)
    if arr.size and np.isfinite(arr).all() and np.all(arr == np.floor(arr)) and np.abs(arr).max() < 2.0**53:
        return arr.astype(np.int64).astype(str).tolist()
    return format_floats(arr)


def family_name(series_name: str, family_type: str) -> str:
    """OpenMetrics family of a series: counters lose ``_total``, histograms their sample suffix."""
    if family_type == "counter":
        for suffix in ("_total", "_created"):
            if series_name.endswith(suffix):
                return series_name[: -len(suffix)]
        raise ValueError(f"counter series {series_name!r} must end in _total")
    if family_type == "histogram":
        for suffix in HIST_SUFFIXES:
            if series_name.endswith(suffix):
                return series_name[: -len(suffix)]
        raise ValueError(f"histogram series {series_name!r} must end in _bucket, _count, _sum or _created")
    if family_type in ("gauge", "unknown"):
        return series_name
    raise ValueError(f"unsupported family type {family_type!r}; use one of {', '.join(FAMILY_TYPES)}")


# --------------------------------------------------------------------------------------
# Writer


class _Writer:
    def __init__(self, stream: TextIO, help_text: Mapping[str, str], chunk: int) -> None:
        self.stream = stream
        self.help = help_text
        self.chunk = max(1, int(chunk))
        self.samples = 0
        self.family: str | None = None
        self.family_type = ""
        self.done_families: set[str] = set()
        self.done_metrics: set[tuple[tuple[str, str], ...]] = set()
        self.metric: tuple[tuple[str, str], ...] | None = None
        self.series: dict[
            tuple[str, tuple[tuple[str, str], ...]], tuple[list[np.ndarray], list[np.ndarray]]
        ] = {}

    def add(self, name: str, family_type: str, labels: Mapping[str, str], ts: Any, values: Any) -> None:
        if not METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        family = family_name(name, family_type)
        t = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if t.ndim != 1 or t.shape != v.shape:
            raise ValueError(f"{name}: timestamps {t.shape} and values {v.shape} must be equal-length 1-D")
        for key in labels:
            if not LABEL_NAME.match(key):
                raise ValueError(f"{name}: invalid label name {key!r}")
        if family_type == "histogram" and name.endswith("_bucket") and "le" not in labels:
            raise ValueError(f"{name}: histogram bucket without an 'le' label")
        base = tuple(
            (k, str(val)) for k, val in labels.items() if not (family_type == "histogram" and k == "le")
        )
        if family != self.family or base != self.metric:
            self._flush()
            if family != self.family:
                if family in self.done_families:
                    raise ValueError(
                        f"family {family!r} appears again after other families: group the input by family"
                    )
                if self.family is not None:
                    self.done_families.add(self.family)
                self._header(family, family_type)
            elif base in self.done_metrics:
                raise ValueError(
                    f"{family}{render_labels(base)} appears again: a metric's series must be contiguous"
                )
            self.metric = base
        if family_type != self.family_type:
            raise ValueError(f"family {family!r} mixes types {self.family_type!r} and {family_type!r}")
        series_key = (name, tuple((k, str(val)) for k, val in labels.items()))
        chunks = self.series.setdefault(series_key, ([], []))
        chunks[0].append(t)
        chunks[1].append(v)

    def _header(self, family: str, family_type: str) -> None:
        text = self.help.get(family)
        head = f"# HELP {family} {_escape_help(text)}\n" if text is not None else ""
        self.stream.write(f"{head}# TYPE {family} {family_type}\n")
        self.family = family
        self.family_type = family_type
        self.done_metrics = set()

    def _flush(self) -> None:
        if not self.series or self.metric is None:
            return
        self.done_metrics.add(self.metric)
        items = []
        for (name, labels), (ts_chunks, val_chunks) in self.series.items():
            t = np.concatenate(ts_chunks) if len(ts_chunks) > 1 else ts_chunks[0]
            v = np.concatenate(val_chunks) if len(val_chunks) > 1 else val_chunks[0]
            if not np.isfinite(t).all():
                raise ValueError(f"{name}{render_labels(labels)}: timestamps must be finite")
            if len(t) > 1 and not np.all(np.diff(t) > 0):
                raise ValueError(f"{name}{render_labels(labels)}: timestamps must be strictly increasing")
            items.append((name, labels, t, v))
        self.series = {}
        if self.family_type == "histogram":
            items.sort(key=_histogram_order)
            t0 = items[0][2]
            if all(it[2] is t0 or np.array_equal(it[2], t0) for it in items[1:]):
                self._write_points([_prefix(n, lab) for n, lab, _t, _v in items], t0, [it[3] for it in items])
                return
            raise ValueError(
                f"{self.family}{render_labels(self.metric)}: histogram series must share their timestamps"
            )
        for name, labels, t, v in items:
            self._write_points([_prefix(name, labels)], t, [v])

    def _write_points(self, prefixes: list[str], ts: np.ndarray, values: list[np.ndarray]) -> None:
        """Write MetricPoints: for each timestamp, one line per series in `prefixes` order."""
        k = len(prefixes)
        step = max(1, self.chunk // k)
        for lo in range(0, len(ts), step):
            hi = min(lo + step, len(ts))
            tstr = format_timestamps(ts[lo:hi])
            cols = [
                [f"{prefix}{val} {tt}\n" for val, tt in zip(format_floats(vals[lo:hi]), tstr, strict=True)]
                for prefix, vals in zip(prefixes, values, strict=True)
            ]
            if k == 1:
                self.stream.write("".join(cols[0]))
            else:
                grid = np.empty((k, hi - lo), dtype=object)
                for i, col in enumerate(cols):
                    grid[i] = col
                self.stream.write("".join(grid.T.ravel().tolist()))
            self.samples += k * (hi - lo)

    def finish(self) -> None:
        self._flush()
        self.stream.write("# EOF\n")


def _histogram_order(
    item: tuple[str, tuple[tuple[str, str], ...], np.ndarray, np.ndarray],
) -> tuple[int, float]:
    name, labels = item[0], item[1]
    if name.endswith("_bucket"):
        le = dict(labels).get("le", "")
        try:
            bound = float(le)
        except ValueError as exc:
            raise ValueError(f"{name}: invalid le label {le!r}") from exc
        return 0, bound
    for rank, suffix in enumerate(("_count", "_sum", "_created"), start=1):
        if name.endswith(suffix):
            return rank, 0.0
    return 4, 0.0


def render_labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _prefix(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """Sample line up to the value: ``name{labels} `` (le last for buckets)."""
    ordered = [kv for kv in labels if kv[0] != "le"] + [kv for kv in labels if kv[0] == "le"]
    return f"{name}{render_labels(ordered)} "


def write_openmetrics(
    stream: TextIO,
    series: Iterable[tuple[str, str, Mapping[str, str], Any, Any]],
    *,
    help: Mapping[str, str] | None = None,  # noqa: A002 (the OpenMetrics term)
    chunk: int = 16384,
) -> int:
    """Write `series` as OpenMetrics text with timestamps; returns the number of samples written.

    `help` maps family names to help text. Raises ValueError when the input is not
    grouped by family and metric, timestamps are not increasing, or a name is invalid.
    """
    writer = _Writer(stream, help or {}, chunk)
    for name, family_type, labels, ts, values in series:
        writer.add(name, family_type, labels, ts, values)
    writer.finish()
    return writer.samples
