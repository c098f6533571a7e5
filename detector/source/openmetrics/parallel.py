"""Loading one large exposition file on several cores, with the result of loading it in one piece.

The file is cut into parts where a metric family's metadata starts (a ``# HELP``, ``# TYPE``
or ``# UNIT`` line, together with the comment lines right before it); each part is parsed by
the same parser (`detector.source.openmetrics.parser`) in its own process, started with the
format the head of the file decided, and the parts' batches are appended to the store in file
order. Nothing else of the parser's state crosses a family start except what is checked
afterwards: when a family or a series turns up in two parts, when ``# EOF`` comes before the
last part, when any part fails to parse, or when the head of the file does not decide the
format, the file is loaded again in one piece, which gives the store, the error and its line
number the single parse gives (bad input costs the time of both).

Small files, files without metadata lines (one family) and ``jobs=1`` are loaded in one piece.
"""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import logging
import mmap
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from detector.source.openmetrics.common import Format, OpenMetricsError
from detector.source.openmetrics.parser import (
    Batch,
    Labels,
    LoadStats,
    TextBlocks,
    _Parser,
    append_batches,
    parse_openmetrics,
)

log = logging.getLogger(__name__)

MIN_PART_BYTES = 32 << 20
"""A part is at least this big: below it, a process start and the transfer of its batches
cost more than parsing the part in place saves."""
_BUFFERED = 262144
_READ = 1 << 20
"""Bytes read from the file at a time."""

Progress = Callable[[int, int, int], None]
"""on_progress(bytes read, file size, samples loaded), called now and then while loading."""


class _Store(Protocol):
    def append(self, name: str, labels: Mapping[str, str], timestamps: Any, values: Any) -> Any: ...


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def load_file(
    path: str | Path,
    store: _Store,
    *,
    fmt: Format = "auto",
    jobs: int = 1,
    on_progress: Progress | None = None,
    while_parsing: Callable[[], None] | None = None,
) -> LoadStats:
    """Parse the file at `path` into `store` using up to `jobs` processes; the store, the
    statistics and any `OpenMetricsError` (with its line) are those of `load_openmetrics`.
    `while_parsing` runs once in this process while the parts parse (else before parsing)."""
    size = os.path.getsize(path)
    # about four parts per process, so that processes finishing early take the parts left
    cuts = family_starts(path, size, max(MIN_PART_BYTES, size // (4 * jobs))) if jobs > 1 else [0, size]
    decided = _decided_format(path, fmt) if len(cuts) > 2 else None
    if decided is not None:
        loaded = _parallel(_Job(str(path), fmt, decided, cuts, jobs), store, on_progress, while_parsing)
        if loaded is not None:
            return loaded
    elif while_parsing is not None:
        while_parsing()
    return _sequential(path, store, fmt, size, on_progress)


# --------------------------------------------------------------------------- cutting


_METADATA_LINE = re.compile(rb"\n# (?:HELP|TYPE|UNIT) ")


def family_starts(path: str | Path, size: int, part_bytes: int) -> list[int]:
    """[0, cuts..., size]: each cut the first family start at least `part_bytes` after the
    previous one, so a part holds whole families and is at least that big (the last may be
    smaller). A family starts at its first metadata line, or at the comment lines right before
    it (a family's HELP, TYPE and UNIT stay together)."""
    cuts = [0]
    if size > part_bytes:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            while cuts[-1] + part_bytes < size:
                found = _METADATA_LINE.search(mm, cuts[-1] + part_bytes - 1)
                if found is None:
                    break
                cut = found.start() + 1
                while cut > 0:
                    prev = mm.rfind(b"\n", 0, cut - 1) + 1
                    if mm[prev : prev + 1] != b"#":
                        break
                    cut = prev
                if cut <= cuts[-1]:
                    break
                cuts.append(cut)
    if cuts[-1] != size:
        cuts.append(size)
    return cuts


def _decided_format(path: str | Path, fmt: Format, lines: int = 10000) -> str | None:
    """The format a single parse settles on, from the head of the file (None: not settled there,
    or the head does not parse)."""
    if fmt != "auto":
        return fmt
    parser = _Parser("auto", None, _BUFFERED)
    try:
        with open(path, encoding="utf-8") as fh:
            for line in itertools.islice(fh, lines):
                for _ in parser._lines([line]):
                    pass
                if parser.fmt != "auto":
                    return parser.fmt
    except (OpenMetricsError, UnicodeDecodeError):
        return None
    return None


# --------------------------------------------------------------------------- parsing the parts


@dataclass
class _Part:
    batches: list[Batch]
    families: frozenset[str]
    series: frozenset[tuple[str, Labels]]
    saw_eof: bool
    failed: bool


class _Window(io.RawIOBase):
    """Bytes [start, end) of a file, adding the bytes read to ``counts[slot]``."""

    def __init__(self, path: str | Path, start: int, end: int, counts: Any, slot: int) -> None:
        self.raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self.raw.seek(start)
        self.left = end - start
        self.counts = counts
        self.slot = slot

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self.left]
        n = self.raw.readinto(view) or 0
        self.left -= n
        self.counts[self.slot] += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


_SHARED: Any = None
"""Bytes read per part (a shared array, set in each worker by `_init`)."""


def _init(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _parse_part(path: str, start: int, end: int, fmt: Format, decided: str, last: bool, slot: int) -> _Part:
    parser = _Parser(fmt, None, _BUFFERED)
    parser.fmt = decided  # type: ignore[assignment]
    parser.partial = not last
    try:
        with io.TextIOWrapper(io.BufferedReader(_Window(path, start, end, _SHARED, slot), _READ), encoding="utf-8") as fh:
            batches = list(parser.run(TextBlocks(fh)))
    except (OpenMetricsError, UnicodeDecodeError):
        return _Part([], frozenset(), frozenset(), False, True)
    return _Part(batches, frozenset(parser.families_seen), frozenset(parser.last_ts), parser.saw_eof, False)


@dataclass(frozen=True)
class _Job:
    """One file to parse in parts: where the parts start, the format, how many processes."""

    path: str
    fmt: Format
    decided: str
    cuts: list[int]
    jobs: int


def _parallel(
    job: _Job,
    store: _Store,
    on_progress: Progress | None,
    while_parsing: Callable[[], None] | None,
) -> LoadStats | None:
    """Load the parts in worker processes; None when the parts do not give the single parse's
    result, or a worker was lost (killed, out of memory): the caller then parses in one piece."""
    ctx = fork_context()
    if ctx is None:
        return None
    shared = ctx.Array("q", len(job.cuts) - 1, lock=False)
    try:
        results = _run_parts(ctx, shared, job, on_progress, while_parsing)
    except BrokenProcessPool:
        log.warning("a process parsing %s was lost; parsing it in one piece", job.path)
        return None
    if any(r.failed for r in results) or any(r.saw_eof for r in results[:-1]):
        return None
    for a, b in itertools.combinations(results, 2):
        if a.families & b.families or a.series & b.series:
            return None
    return append_batches(store, itertools.chain.from_iterable(r.batches for r in results))


def fork_context() -> Any:
    """The "fork" multiprocessing context (workers see this process's data as it is), None
    where the platform has none."""
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


def _run_parts(
    ctx: Any, shared: Any, job: _Job, on_progress: Progress | None, while_parsing: Callable[[], None] | None
) -> list[_Part]:
    cuts = job.cuts
    n = len(cuts) - 1
    size = cuts[-1]
    workers = min(job.jobs, n)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(shared,)) as pool:
        # largest parts first: the small ones fill in at the end
        biggest_first = sorted(range(n), key=lambda i: cuts[i] - cuts[i + 1])
        submitted = {
            i: pool.submit(_parse_part, job.path, cuts[i], cuts[i + 1], job.fmt, job.decided, i == n - 1, i)
            for i in biggest_first
        }
        futures = [submitted[i] for i in range(n)]
        if while_parsing is not None:
            while_parsing()
        pending = set(futures)
        while pending:
            _done, pending = concurrent.futures.wait(pending, timeout=0.5)
            if on_progress is not None:
                on_progress(min(size, sum(shared)), size, 0)
        return [f.result() for f in futures]


def _sequential(
    path: str | Path, store: _Store, fmt: Format, size: int, on_progress: Progress | None
) -> LoadStats:
    read = [0]
    with io.TextIOWrapper(io.BufferedReader(_Window(path, 0, size, read, 0), _READ), encoding="utf-8") as fh:
        report = None if on_progress is None else (lambda samples: on_progress(read[0], size, samples))
        return append_batches(store, parse_openmetrics(TextBlocks(fh), fmt=fmt), report)


__all__ = ["MIN_PART_BYTES", "family_starts", "fork_context", "load_file", "usable_cpus"]
