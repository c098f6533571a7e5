"""OpenMetrics or Prometheus text with timestamps: the streaming parser and the file loader.

`parse_openmetrics` reads OpenMetrics text (timestamps in seconds, ``# EOF``
required) or the Prometheus text format (timestamps in integer milliseconds) and
yields ``(name, labels, timestamps, values)`` batches per series, holding at most
`max_buffered` samples. Every problem raises `OpenMetricsError` with the line number.
Batches of one series come out in time order, but a series may come in several
batches. ``_created`` samples of counters and histograms are skipped.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detector.source.openmetrics.common import (
    METRIC_NAME,
    Format,
    OpenMetricsError,
)
from detector.source.openmetrics.writer import render_labels

# --------------------------------------------------------------------------------------
# Parser

_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*(,|\Z)')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SAMPLE = re.compile(
    r"""(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
        (?P<labels>\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?
        [ \t]+(?P<value>\S+)
        (?:[ \t]+(?P<ts>[^\s#]+))?
        (?:[ \t]+\#[ \t].*)?
        [ \t]*\Z""",
    re.VERBOSE,
)

Labels = tuple[tuple[str, str], ...]
Batch = tuple[str, dict[str, str], np.ndarray, np.ndarray]
"""(name, labels, timestamps, values) of one series."""


def _unescape(text: str, line_no: int) -> str:
    if "\\" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch not in _ESCAPES:
            raise OpenMetricsError(line_no, f"invalid escape sequence '\\{ch}' in a label value")
        return _ESCAPES[ch]

    return _ESCAPE.sub(sub, text)


def _parse_labels(block: str, line_no: int) -> dict[str, str]:
    """`block` is the text between the braces."""
    out: dict[str, str] = {}
    pos = 0
    n = len(block)
    while pos < n:
        if block[pos:].strip() == "":
            break
        m = _LABEL_PAIR.match(block, pos)
        if m is None:
            raise OpenMetricsError(
                line_no,
                f'bad label syntax near {block[pos : pos + 30]!r}: expected name="value" pairs separated by ","',
            )
        name = m.group(1)
        if name in out:
            raise OpenMetricsError(line_no, f"duplicate label {name!r}")
        out[name] = _unescape(m.group(2), line_no)
        pos = m.end()
    return out


def _parse_float(text: str, line_no: int, what: str) -> float:
    if "_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    raise OpenMetricsError(
        line_no, f"bad {what} {text!r}: not a number (use e.g. 1.5, 1e-3, NaN, +Inf, -Inf)"
    )


@dataclass
class _Series:
    name: str
    labels: dict[str, str]
    ts: list[float]
    vals: list[float]
    chunks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    """Arrays from the bulk path; they come before `ts`/`vals` (see `seal`)."""

    def seal(self) -> None:
        """Move the per-line samples into `chunks` so that a bulk chunk can follow them."""
        if self.ts:
            self.chunks.append((np.array(self.ts, dtype=np.float64), np.array(self.vals, dtype=np.float64)))
            self.ts, self.vals = [], []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self.seal()
        if len(self.chunks) == 1:
            return self.chunks[0]
        if not self.chunks:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([c[0] for c in self.chunks]), np.concatenate([c[1] for c in self.chunks])


_BULK_LINES = 65536
"""Lines read at a time; runs of plain sample lines in them take the bulk path."""
_PROM_TIMESTAMPS = re.compile(r"-?\d+(?:\n-?\d+)*\Z")


FieldSlices = Callable[[int, int], tuple[Sequence[str], Sequence[str], Sequence[str], "np.ndarray | None"]]


def _split_fields(text: str, n: int) -> FieldSlices:
    """Split `n` lines (`text`, each line ending in a newline) into series, value and
    timestamp texts; returns a function giving lines [a, b).

    When every line holds exactly two spaces, the fields come from one ``split`` of the
    whole text, and timestamps that are all plain digits of one width are read in numpy
    (exactly: at most 15 digits). Otherwise each line is split at its last two spaces
    (so label values may hold spaces), as the line-by-line path does.
    """
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    newlines = np.flatnonzero(raw == 10)
    spaces = np.flatnonzero(raw == 32)
    starts = np.concatenate(([-1], newlines[:-1]))
    if len(spaces) != 2 * n or not ((spaces[0::2] > starts).all() and (spaces[1::2] < newlines).all()):
        parts = [line.rsplit(" ", 2) for line in text[:-1].split("\n")]
        if sum(map(len, parts)) != 3 * n:
            parts = [["", "", ""]] * n  # never a series: the bulk path declines
        keys, values, stamps = (list(col) for col in zip(*parts, strict=True))
        return lambda a, b: (keys[a:b], values[a:b], stamps[a:b], None)
    tokens = text.replace("\n", " ").split(" ")
    keys, values, stamps = tokens[0 : 3 * n : 3], tokens[1 : 3 * n : 3], tokens[2 : 3 * n : 3]
    first = spaces[1::2] + 1
    widths = newlines - first
    ts: np.ndarray | None = None
    if n and 0 < widths[0] <= 15 and (widths == widths[0]).all():
        digits = raw[first[:, None] + np.arange(int(widths[0]))] - np.uint8(48)
        if (digits <= 9).all():
            ts = (digits.astype(np.int64) @ (10 ** np.arange(int(widths[0]) - 1, -1, -1, dtype=np.int64))).astype(
                np.float64
            )
    return lambda a, b: (keys[a:b], values[a:b], stamps[a:b], None if ts is None else ts[a:b])


_BLOCK_CHARS = 1 << 22
"""Characters read at a time from a stream that can `read`."""
_OTHER_BREAKS = ("\r", "\v", "\f", "\x1c", "\x1d", "\x1e")
"""Where `str.splitlines` splits an ASCII text and line iteration of a text stream does not."""


class TextBlocks:
    """A text file read in blocks rather than line by line, for `parse_openmetrics`: the file
    must be open with universal newlines (``newline=None``, the default of `open`), so that
    its lines end in "\n" only."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __iter__(self) -> Iterator[str]:
        return iter(self.fh)


def _chunks(stream: Iterable[str]) -> Iterator[tuple[list[str] | None, str | None]]:
    """The stream's lines, each ending in its newline (the last maybe not), in chunks: from
    `TextBlocks`, blocks of whole lines as text (lines None: cut only if needed,
    `_split_lines`), from any other iterable `_BULK_LINES` lines at a time (text None)."""
    if not isinstance(stream, TextBlocks):
        lines = iter(stream)
        while chunk := list(itertools.islice(lines, _BULK_LINES)):
            yield chunk, None
        return
    read = stream.fh.read
    carry = ""
    while block := read(_BLOCK_CHARS):
        cut = block.rfind("\n") + 1
        if cut == 0:
            carry += block
            continue
        text, carry = carry + block[:cut], block[cut:]
        yield None, text
    if carry:
        yield None, carry


def _split_lines(text: str) -> list[str]:
    """`text` cut after every "\n", as iterating over a universal-newline text file cuts it."""
    if text.isascii() and not any(c in text for c in _OTHER_BREAKS):
        return text.splitlines(keepends=True)  # one C call; the same cuts here
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class _Parser:
    def __init__(self, fmt: Format, default_timestamp: float | None, max_buffered: int) -> None:
        if fmt not in ("auto", "openmetrics", "prometheus"):
            raise ValueError(f"unknown format {fmt!r}: use auto, openmetrics or prometheus")
        self.fmt: Format = fmt
        self.explicit = fmt != "auto"
        self.default_ts = default_timestamp
        self.max_buffered = max(1, int(max_buffered))
        self.keys: dict[str, tuple[str, Labels] | None] = {}
        """Sample text before the value -> (name, sorted labels), None when the text is not a series."""
        self.labels: dict[tuple[str, Labels], dict[str, str]] = {}
        self.last_ts: dict[tuple[str, Labels], float] = {}
        self.buffers: dict[tuple[str, Labels], _Series] = {}
        self.buffered = 0
        self.family: str | None = None
        self.family_names: frozenset[str] = frozenset()
        self.family_type = "unknown"
        self.families_seen: set[str] = set()
        self.saw_eof = False
        self.line_no = 0
        self.bulk = True
        """Parse runs of plain sample lines in bulk (same results as line by line, see `_bulk`)."""
        self.bulk_lines = 0
        """Lines that took the bulk path."""
        self.partial = False
        """The input is a leading part of a file (`detector.source.openmetrics.parallel`): its
        end is not the end of the file, so no ``# EOF`` is required there."""

    # -------------------------------------------------------------- main loop

    def run(self, stream: Iterable[str]) -> Iterator[Batch]:
        for lines, joined in _chunks(stream):
            if lines is None:
                assert joined is not None
                text = joined
            else:
                text = "".join(lines)
            if self.bulk and "#" not in text:
                yield from self._run(lines, text)
                continue
            chunk = _split_lines(text) if lines is None else lines
            if not self.bulk:
                yield from self._lines(chunk)
                continue
            start = 0
            for i, raw in enumerate(chunk):
                if "#" in raw:
                    if i > start:
                        yield from self._run(chunk[start:i], None)
                    yield from self._lines(chunk[i : i + 1])
                    start = i + 1
            if start < len(chunk):
                yield from self._run(chunk[start:], None)
        if self.fmt == "openmetrics" and not self.saw_eof and not self.partial:
            raise OpenMetricsError(self.line_no + 1, "missing '# EOF' at the end of OpenMetrics input")
        yield from self._flush()

    def _run(self, run: list[str] | None, text: str | None) -> Iterator[Batch]:
        """A run of lines without '#' (`run`, or None: the lines of `text`, cut only if the
        line-by-line path needs them): in bulk when possible, else line by line."""
        if self.fmt == "auto" or self.saw_eof:
            # The first timestamp decides the format; after # EOF only blank lines may follow.
            run = _split_lines(text or "") if run is None else run
            yield from self._lines(run[:1])
            run, text = run[1:], None
        body = "".join(run or ()) if text is None else text
        if not body:
            return
        lines = run  # cut from `body` only if the line-by-line path needs them
        n = body.count("\n")
        if self.saw_eof or "\r" in body or (lines is not None and n != len(lines)) or not body.endswith("\n"):
            yield from self._lines(_split_lines(body) if lines is None else lines)
            return
        fields = _split_fields(body, n)
        pos = 0
        while pos < n:
            end = min(n, pos + self.max_buffered - self.buffered)
            if not self._bulk(*fields(pos, end)):
                yield from self._lines((_split_lines(body) if lines is None else lines)[pos:])
                return
            pos = end
            if self.buffered >= self.max_buffered:
                yield from self._flush()

    def _bulk(
        self, key_texts: Sequence[str], value_texts: Sequence[str], ts_texts: Sequence[str], ts: np.ndarray | None
    ) -> bool:
        """Record plain sample lines (series text, value text, timestamp text; `ts`: the
        timestamps already read, or None) all at once. False, with nothing recorded, when any
        line needs the line-by-line path (a new family, a skipped ``_created`` sample, a
        series text that does not parse, a value or timestamp that does not parse, an
        out-of-order timestamp). The numbers are those `_sample` would give: the same text
        goes through the same conversions."""
        if self.fmt == "auto":
            return False
        n = len(key_texts)
        index: dict[str, int] = {}
        keys: list[tuple[str, Labels]] = []
        for text in dict.fromkeys(key_texts):
            key = self.keys[text] if text in self.keys else self._key(text)
            if key is None:
                return False
            name = key[0]
            if name not in self.family_names or (
                name.endswith("_created")
                and self.family_type in ("counter", "histogram", "summary")
                and name != self.family
            ):
                return False
            index[text] = len(keys)
            keys.append(key)
        try:
            if "_" in "".join(value_texts):
                return False
            values = np.fromiter(map(float, value_texts), dtype=np.float64, count=n)
            if ts is None:
                joined = "\n".join(ts_texts)
                if self.fmt == "prometheus":
                    if _PROM_TIMESTAMPS.match(joined) is None:
                        return False
                    ts = np.array(list(map(int, ts_texts)), dtype=np.float64) / 1000.0
                else:
                    if "_" in joined:
                        return False
                    ts = np.fromiter(map(float, ts_texts), dtype=np.float64, count=n)
            elif self.fmt == "prometheus":
                ts = ts / 1000.0
        except (ValueError, OverflowError, TypeError):
            return False
        if not np.isfinite(ts).all():
            return False
        ids = np.fromiter(map(index.__getitem__, key_texts), dtype=np.intp, count=n)
        order = np.argsort(ids, kind="stable")
        ids_sorted, ts_sorted = ids[order], ts[order]
        starts = np.flatnonzero(np.concatenate(([True], ids_sorted[1:] != ids_sorted[:-1])))
        same = ids_sorted[1:] == ids_sorted[:-1]
        if not (np.diff(ts_sorted)[same] > 0).all():
            return False
        ends = np.append(starts[1:], n)
        for a in starts:
            last = self.last_ts.get(keys[ids_sorted[a]])
            if last is not None and not ts_sorted[a] > last:
                return False
        values_sorted = values[order]
        for a, b in zip(starts, ends, strict=True):
            key = keys[ids_sorted[a]]
            buf = self.buffers.get(key)
            if buf is None:
                buf = self.buffers[key] = _Series(key[0], self.labels[key], [], [])
            buf.seal()
            buf.chunks.append((ts_sorted[a:b], values_sorted[a:b]))
            self.last_ts[key] = float(ts_sorted[b - 1])
        self.buffered += n
        self.line_no += n
        self.bulk_lines += n
        return True

    def _lines(self, chunk: list[str]) -> Iterator[Batch]:
        """Line by line."""
        for raw in chunk:
            self.line_no += 1
            line = raw.rstrip("\r\n") if raw.endswith("\n") else raw
            if self.saw_eof:
                if line.strip():
                    raise OpenMetricsError(self.line_no, "content after # EOF")
                continue
            if not line.strip():
                continue
            if line.startswith("#"):
                yield from self._comment(line)
                continue
            done = self._sample(line)
            if done is not None:
                yield from done

    # -------------------------------------------------------------- metadata

    def _comment(self, line: str) -> Iterator[Batch]:
        if line == "# EOF" or line.rstrip() == "# EOF":
            if self.fmt == "prometheus" and self.explicit:
                raise OpenMetricsError(self.line_no, "'# EOF' in Prometheus text format input")
            self.fmt = "openmetrics"
            self.saw_eof = True
            return
        parts = line.split(None, 3)
        if len(parts) < 2 or parts[0] != "#" or parts[1] not in ("TYPE", "HELP", "UNIT"):
            if self.fmt == "openmetrics":
                raise OpenMetricsError(
                    self.line_no,
                    f"unexpected comment {line[:40]!r}: OpenMetrics allows # TYPE, # HELP, # UNIT, # EOF",
                )
            return
        if len(parts) < 3 or not METRIC_NAME.match(parts[2]):
            raise OpenMetricsError(self.line_no, f"# {parts[1]} needs a valid metric family name")
        family = parts[2]
        if family != self.family:
            yield from self._flush()
            if self.fmt != "prometheus" and family in self.families_seen:
                raise OpenMetricsError(
                    self.line_no, f"family {family!r} appears again: a family's lines must be contiguous"
                )
            self._set_family(family, "unknown")
        if parts[1] == "TYPE":
            if len(parts) < 4:
                raise OpenMetricsError(self.line_no, f"# TYPE {family} needs a type")
            typ = parts[3].strip()
            if typ == "untyped":
                typ = "unknown"
            if typ not in (
                "counter",
                "gauge",
                "histogram",
                "gaugehistogram",
                "summary",
                "info",
                "stateset",
                "unknown",
            ):
                raise OpenMetricsError(self.line_no, f"unknown metric type {typ!r}")
            self._set_family(family, typ)

    def _set_family(self, family: str, typ: str) -> None:
        self.family = family
        self.family_type = typ
        self.families_seen.add(family)
        if typ == "counter":
            names = {family, family + "_total", family + "_created"}
        elif typ in ("histogram", "gaugehistogram"):
            names = {family + s for s in ("_bucket", "_count", "_sum", "_created", "_gcount", "_gsum")}
        elif typ == "summary":
            names = {family, family + "_count", family + "_sum", family + "_created"}
        elif typ == "info":
            names = {family + "_info"}
        else:
            names = {family}
        self.family_names = frozenset(names)

    # -------------------------------------------------------------- samples

    def _sample(self, line: str) -> list[Batch] | None:
        """Record one sample line; returns batches that had to be flushed first (or None)."""
        key: tuple[str, Labels] | None = None
        value_text: str = ""
        ts_text: str | None = None
        if "#" not in line:
            parts = line.rsplit(" ", 2)
            if len(parts) == 3:
                key = self.keys.get(parts[0], None) if parts[0] in self.keys else self._key(parts[0])
                if key is not None:
                    value_text, ts_text = parts[1], parts[2]
        if key is None:
            key, value_text, ts_text = self._slow(line)
        name = key[0]
        out: list[Batch] | None = None
        if name not in self.family_names:
            out = list(self._flush())
            self._set_family(name, "unknown")
        if (
            name.endswith("_created")
            and self.family_type in ("counter", "histogram", "summary")
            and name != self.family
        ):
            return out
        value = _parse_float(value_text, self.line_no, "value")
        if ts_text is None:
            if self.default_ts is None:
                raise OpenMetricsError(self.line_no, f"sample of {name!r} has no timestamp")
            ts = self.default_ts
        else:
            ts = self._timestamp(ts_text)
        last = self.last_ts.get(key)
        if last is not None and not ts > last:
            raise OpenMetricsError(
                self.line_no,
                f"out-of-order timestamp {ts!r} for {name}{render_labels(key[1])}: not after the previous sample's {last!r}",
            )
        self.last_ts[key] = ts
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = _Series(name, self.labels[key], [], [])
        buf.ts.append(ts)
        buf.vals.append(value)
        self.buffered += 1
        if self.buffered >= self.max_buffered:
            out = (out or []) + list(self._flush())
        return out

    def _key(self, text: str) -> tuple[str, Labels] | None:
        """Parse ``name`` or ``name{labels}`` (cached); None when `text` is not exactly that."""
        brace = text.find("{")
        if brace < 0:
            if not METRIC_NAME.match(text):
                self.keys[text] = None
                return None
            name, labels = text, {}
        else:
            name = text[:brace]
            if not METRIC_NAME.match(name) or not text.endswith("}"):
                self.keys[text] = None
                return None
            try:
                labels = _parse_labels(text[brace + 1 : -1], self.line_no)
            except OpenMetricsError:
                self.keys[text] = None
                return None
        key = (name, tuple(sorted(labels.items())))
        self.labels.setdefault(key, labels)
        self.keys[text] = key
        return key

    def _slow(self, line: str) -> tuple[tuple[str, Labels], str, str | None]:
        m = _SAMPLE.match(line)
        if m is None:
            raise self._diagnose(line)
        name = m.group("name")
        block = m.group("labels")
        labels = _parse_labels(block[1:-1], self.line_no) if block else {}
        key = (name, tuple(sorted(labels.items())))
        self.labels.setdefault(key, labels)
        return key, m.group("value"), m.group("ts")

    def _diagnose(self, line: str) -> OpenMetricsError:
        """The most specific error for a sample line that does not parse (label errors raise directly)."""
        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if m is None:
            return OpenMetricsError(self.line_no, f"bad metric name at {line[:30]!r}")
        rest = line[m.end() :]
        if rest.startswith("{"):
            close = re.match(r'\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}', rest)
            if close is None:
                return OpenMetricsError(
                    self.line_no, f"bad label syntax in {rest[:40]!r}: unterminated label set or value"
                )
            _parse_labels(close.group(0)[1:-1], self.line_no)
            rest = rest[close.end() :]
        if not rest.strip():
            return OpenMetricsError(self.line_no, f"sample of {m.group(0)!r} has no value")
        return OpenMetricsError(self.line_no, f"bad sample syntax after the series: {rest[:40]!r}")

    def _timestamp(self, text: str) -> float:
        if self.fmt == "auto":
            # >= 1e11 by its digits: int() refuses more than 4300 of them
            looks_ms = re.fullmatch(r"-?\d+", text) is not None and len(text.lstrip("-").lstrip("0")) >= 12
            self.fmt = "prometheus" if looks_ms else "openmetrics"
        if self.fmt == "prometheus":
            if re.fullmatch(r"-?\d+", text) is None:
                raise OpenMetricsError(
                    self.line_no, f"bad timestamp {text!r}: Prometheus text needs integer milliseconds"
                )
            try:
                return int(text) / 1000.0
            except (ValueError, OverflowError):  # > 4300 digits, or beyond the float range
                shown = text if len(text) <= 30 else text[:30] + "..."
                raise OpenMetricsError(self.line_no, f"bad timestamp {shown!r}: out of range") from None
        ts = _parse_float(text, self.line_no, "timestamp")
        if not math.isfinite(ts):
            raise OpenMetricsError(self.line_no, f"bad timestamp {text!r}: must be finite")
        return ts

    def _flush(self) -> Iterator[Batch]:
        if not self.buffers:
            return
        buffers, self.buffers, self.buffered = self.buffers, {}, 0
        for buf in buffers.values():
            ts, vals = buf.arrays()
            yield (buf.name, dict(buf.labels), ts, vals)


def parse_openmetrics(
    stream: Iterable[str],
    *,
    fmt: Format = "auto",
    default_timestamp: float | None = None,
    max_buffered: int = 262144,
) -> Iterator[Batch]:
    """Parse exposition text into ``(name, labels, timestamps, values)`` batches.

    `stream`: lines (any iterable of str, e.g. a text file), or `TextBlocks` around a file
    open with universal newlines, which is read in large blocks (the same batches, faster).

    `fmt`: ``openmetrics`` (seconds, ``# EOF`` required), ``prometheus`` (integer
    milliseconds), or ``auto``: Prometheus text when the first timestamp is an integer
    >= 1e11 (milliseconds), else OpenMetrics. In ``auto`` a missing ``# EOF`` is an
    error once the input was recognised as OpenMetrics. Samples without a timestamp
    take `default_timestamp` (error when None).
    """
    parser = _Parser(fmt, default_timestamp, max_buffered)
    yield from parser.run(stream)


# --------------------------------------------------------------------------------------
# Loading into a store


class _Store(Protocol):
    def append(self, name: str, labels: Mapping[str, str], timestamps: Any, values: Any) -> Any: ...


@dataclass(frozen=True)
class LoadStats:
    series: int
    samples: int
    rejected: int
    """Samples the store refused (out of order or duplicate), when it reports them."""
    first_timestamp: float | None
    last_timestamp: float | None


def load_openmetrics(path: str | Path, store: _Store, *, fmt: Format = "auto") -> LoadStats:
    """Parse the file at `path` into `store`. Raises OpenMetricsError (with the line) on bad input.
    (`detector.source.openmetrics.parallel.load_file` does the same on several cores.)"""
    with open(path, encoding="utf-8") as fh:
        return append_batches(store, parse_openmetrics(TextBlocks(fh), fmt=fmt))


def append_batches(
    store: _Store, batches: Iterable[Batch], after: Callable[[int], None] | None = None
) -> LoadStats:
    """Append parsed batches to `store` in order; `after(samples so far)` follows each batch."""
    series: set[tuple[str, Labels]] = set()
    samples = rejected = 0
    first = last = None
    for name, labels, ts, vals in batches:
        result = store.append(name, labels, ts, vals)
        rejected += int(getattr(result, "rejected", 0) or 0)
        series.add((name, tuple(sorted(labels.items()))))
        samples += len(ts)
        if len(ts):
            lo, hi = float(ts[0]), float(ts[-1])
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        if after is not None:
            after(samples)
    return LoadStats(
        series=len(series), samples=samples, rejected=rejected, first_timestamp=first, last_timestamp=last
    )
