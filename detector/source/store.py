"""An embedded, in-memory time-series store with Prometheus ingestion rules.

`SampleStore` keeps one pair of numpy arrays (timestamps, values) per series, grown
geometrically (x1.5), so appending costs amortised O(1) per sample and no Python object is
kept per sample. All public methods take one lock, so the store may be fed by one
thread (a scraper, the simulator) while another evaluates.

Ingestion rules (per series, identified by metric name + label set)
-------------------------------------------------------------------
* Timestamps are float seconds and must be finite (else ``ValueError``). Values
  are float64; ``+-Inf`` and NaN are stored as given.
* Samples must be strictly increasing in time. A sample whose timestamp equals the
  newest sample's and whose value is bit-for-bit the same is a **duplicate**: it is
  ignored and counted. Any other sample with a timestamp ``<=`` the newest one is
  **out of order**: it is dropped and counted. Previously accepted data is never
  changed. Within one `append` call the same rules apply sample by sample.
* Prometheus stale markers (the NaN with bit pattern ``0x7ff0000000000002``, see
  `STALE_NAN` / `is_stale_marker`) are stored like any sample; readers treat them
  as "the series ended here". Ordinary NaN values are stored as NaN.
* The metric name must match ``[a-zA-Z_:][a-zA-Z0-9_:]*``; label names must match
  ``[a-zA-Z_][a-zA-Z0-9_]*`` and must not start with ``__`` (reserved); label values
  must be strings. A label with an empty value is the same as no label (as in
  Prometheus) and is dropped. Violations raise ``ValueError`` naming the label.

Retention
---------
`enforce_retention(now)` drops samples older than ``now - retention`` (a sample at
exactly the cutoff is kept) and forgets series left empty. Independently of the
clock, a series that must grow its buffers first drops its own samples older than
``newest - retention``, so memory stays bounded even if nobody calls
`enforce_retention`. ``retention=None`` keeps everything.

Journal
-------
A store given a `Journal` (`attach_journal`; the write-ahead log of a ``push``
pipeline, `detector.source.wal`) tells it, under the store's lock and so in the order
the store applied them, every series it creates and every sample it accepts
(duplicates and out-of-order samples are never logged). `commit` makes what was logged
durable; a receiver calls it before acknowledging a request.

Compression
-----------
With ``chunk_samples=C`` (push pipelines) each series keeps its newest samples raw (at
least C, at most ~3C) and compresses older ones C at a time (`detector.source.chunklist`,
`detector.source.chunks`). Nothing else changes: the same samples, bit for bit, come
back; `select_views(since=t)` decodes only the chunks holding samples at or after t.

Reads
-----
`select` returns read-only views. They stay valid and unchanged after later
appends or retention: appends only write past the end of every published view, and
compaction always copies into new buffers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from detector.source.chunklist import ChunkList, DecodeCache
from detector.source.frame import Labels
from detector.source.series import (
    STALE_NAN_BITS,
    RefBatch,
    as_samples,
    classify_samples,
    float_bits,
    is_stale_marker,
    is_stale_scalar,
    one_sample,
    series_token,
    validate_labels,
    validate_metric_name,
)
from detector.spec.matchers import Matcher, matches

_MIN_CAPACITY = 16
_VALIDATION_CACHE_SIZE = 100_000
_LOCK_CHUNK = 4096
"""Series appended by `SampleStore.append_refs` per acquisition of the lock (readers get a turn)."""
_SERIES_OVERHEAD_BYTES = 256
"""Rough per-series bookkeeping cost counted by `memory_bytes` besides the sample buffers."""


class SeriesSnapshot(NamedTuple):
    """One series in a `SampleStore.snapshot`: its samples are those of `chunks` (encoded by
    `detector.source.chunks`, oldest first) followed by the raw `timestamps`/`values`."""

    jid: int
    name: str
    labels: Labels
    chunks: list[tuple[bytes, int]]
    """(chunk, sample count)."""
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class AppendResult:
    """What one `SampleStore.append` did with its samples."""

    accepted: int = 0
    out_of_order: int = 0
    duplicates: int = 0

    @property
    def rejected(self) -> int:
        return self.out_of_order + self.duplicates


class Journal(Protocol):
    """Where a store logs what it accepts (see "Journal" in the module docstring)."""

    def new_series(self, name: str, labels: Labels) -> int:
        """Log a series the store created; returns its id (> 0) for `log`."""
        ...

    def log(self, ids: Sequence[int], counts: Sequence[int], timestamps: np.ndarray, values: np.ndarray) -> None:
        """Log accepted samples: series ``ids[k]`` got the next ``counts[k]`` samples of the arrays."""
        ...

    def commit(self) -> None:
        """Make everything logged so far durable (raises OSError when it cannot)."""
        ...



class SeriesView(NamedTuple):
    """One series as `SampleStore.select_views` returns it."""

    labels: Labels
    timestamps: np.ndarray
    values: np.ndarray
    last_drop: float
    """Time of the newest sample whose value is below its predecessor's (-inf: none stored
    since the series began): a window of samples all later than this has no counter reset."""
    last_stale: float
    """Time of the newest stale marker (-inf: none)."""
    buffer_id: object
    """Identity of the buffer `timestamps` is a view of. The stored part of a buffer never
    changes (appends write past it; a compacted or grown series gets a new buffer), so two
    views of the same buffers at the same offsets compare as they did before."""
    offset: int
    """Index of ``timestamps[0]`` in that buffer."""
    newest_real: float | None = None
    """Time of the newest sample that is not a stale marker (None: none), even when the view
    holds only the samples after some time (`SampleStore.select_views` ``since``)."""


_ONE_ACCEPTED = AppendResult(accepted=1)
_ONE_DUPLICATE = AppendResult(duplicates=1)
_ONE_OUT_OF_ORDER = AppendResult(out_of_order=1)
"""Shared results of the single-sample path (frozen, so sharing is safe; building one per call costs)."""


class _Series:
    """Live samples are ``ts[start:end]`` / ``vals[start:end]``; never written in place."""

    __slots__ = (
        "ts", "vals", "start", "end", "newest_real", "token", "last_v", "last_drop", "last_stale", "buffer_id", "jid",
        "cut", "old", "cache",
    )

    def __init__(self, token: str, cut: int = 0, cache: DecodeCache | None = None) -> None:
        self.token = token
        self.cut = cut
        """Samples per compressed chunk (0: the series stays raw)."""
        self.old: ChunkList | None = ChunkList() if cut else None
        """The compressed samples older than the head (`ts[start:end]`)."""
        self.cache = cache
        self.jid = 0
        """The series' id in the store's journal (0 without one)."""
        self.buffer_id = object()
        """Identifies the current `ts` buffer (a new one whenever the buffer is replaced)."""
        self.ts = np.empty(_MIN_CAPACITY, dtype=np.float64)
        self.vals = np.empty(_MIN_CAPACITY, dtype=np.float64)
        self.start = 0
        self.end = 0
        self.newest_real: float | None = None
        """Timestamp of the newest sample that is not a stale marker."""
        self.last_v = 0.0
        """Value of the newest sample (meaningful when the series is not empty)."""
        self.last_drop = -math.inf
        """Timestamp of the newest sample whose value is below the one before it (a counter reset)."""
        self.last_stale = -math.inf
        """Timestamp of the newest stale marker."""

    def __len__(self) -> int:
        old = self.old
        return self.end - self.start + (old.samples if old is not None else 0)

    def first_time(self) -> float:
        """Timestamp of the oldest sample (the series is not empty)."""
        old = self.old
        if old is not None and old.samples:
            assert self.cache is not None
            t = old.first_time(self.cache)
            if t is not None:
                return t
        return float(self.ts[self.start])

    def newest(self) -> tuple[float, np.float64] | None:
        if self.end == self.start:
            return None
        return float(self.ts[self.end - 1]), self.vals[self.end - 1]

    def drop_before(self, cutoff: float) -> int:
        """Forget samples with ts < cutoff (no copy: only `start` moves). Returns how many."""
        dropped = 0
        if self.old is not None and self.old.chunks:
            assert self.cache is not None
            dropped = self.old.drop_before(cutoff, self.cache)
        live = self.ts[self.start : self.end]
        k = int(np.searchsorted(live, cutoff, side="left"))
        self.start += k
        if self.newest_real is not None and self.newest_real < cutoff:
            self.newest_real = None
        return k + dropped

    def extend(self, ts: np.ndarray, vals: np.ndarray, retention: float | None) -> None:
        k = len(ts)
        if self.end + k > len(self.ts):
            if retention is not None:
                self.drop_before(float(ts[-1]) - retention)
            if self.cut and self.end - self.start >= 2 * self.cut:
                self._close_chunks()
            live = self.end - self.start
            # Grow by half (amortised O(1) per sample); a new series gets a snug first buffer.
            self.rebuffer(live + k + (max(_MIN_CAPACITY, (live + k) // 2) if live else _MIN_CAPACITY))
        prev = self.last_v if self.end > self.start else None
        self.ts[self.end : self.end + k] = ts
        self.vals[self.end : self.end + k] = vals
        self.end += k
        if self.cut and k > self.cut and self.end - self.start >= 3 * self.cut:
            self._close_chunks()  # a bulk write: compress it now, not at the next growth
            live = self.end - self.start
            self.rebuffer(max(_MIN_CAPACITY, live + live // 2))
        if k == 1:
            v = float(vals[0])
            self.last_v = v
            if prev is not None and v < prev:
                self.last_drop = float(ts[0])
            if is_stale_scalar(v):
                self.last_stale = float(ts[0])
            else:
                self.newest_real = float(ts[0])
            return
        self.last_v = float(vals[-1])
        falls = np.flatnonzero(vals[1:] < vals[:-1])
        if len(falls):
            self.last_drop = float(ts[falls[-1] + 1])
        elif prev is not None and vals[0] < prev:
            self.last_drop = float(ts[0])
        stale = is_stale_marker(vals)
        if stale.any():
            self.last_stale = float(ts[np.flatnonzero(stale)[-1]])
            real = ~stale
            if real.any():
                self.newest_real = float(ts[np.flatnonzero(real)[-1]])
        else:
            self.newest_real = float(ts[-1])

    def _close_chunks(self) -> None:
        """Compress whole chunks of the oldest head samples, keeping at least `cut` raw."""
        cut, old = self.cut, self.old
        assert old is not None
        m = (self.end - self.start - cut) // cut * cut
        for i in range(self.start, self.start + m, cut):
            old.add(self.ts[i : i + cut], self.vals[i : i + cut])
        self.start += m

    def rebuffer(self, capacity: int) -> None:
        """Move the raw head into new buffers of `capacity` samples (published views keep the old ones)."""
        live = self.end - self.start
        new_ts = np.empty(capacity, dtype=np.float64)
        new_vals = np.empty(capacity, dtype=np.float64)
        new_ts[:live] = self.ts[self.start : self.end]
        new_vals[:live] = self.vals[self.start : self.end]
        self.ts, self.vals, self.start, self.end = new_ts, new_vals, 0, live
        self.buffer_id = object()

    def append_one(self, t: float, v: float, retention: float | None) -> None:
        """Append one sample newer than every stored one (no numpy arrays on the usual path)."""
        if self.end >= len(self.ts):
            self.extend(np.array([t]), np.array([v]), retention)
            return
        if self.end > self.start and v < self.last_v:
            self.last_drop = t
        self.ts[self.end] = t
        self.vals[self.end] = v
        self.end += 1
        self.last_v = v
        if v == v or float_bits(v) != STALE_NAN_BITS:
            self.newest_real = t
        else:
            self.last_stale = t

    def views(self, since: float = -math.inf) -> tuple[np.ndarray, np.ndarray, object, int]:
        """Read-only (timestamps, values, buffer id, offset in it) holding at least every
        sample at or after `since` (the raw head alone when that suffices, else the
        compressed chunks needed, decoded and joined to it in a new buffer)."""
        ts = self.ts[self.start : self.end]
        vals = self.vals[self.start : self.end]
        old = self.old
        if old is None or not old.samples or (self.end > self.start and since >= self.ts[self.start]):
            ts.flags.writeable = False
            vals.flags.writeable = False
            return ts, vals, self.buffer_id, self.start
        assert self.cache is not None
        ts_parts, val_parts = old.since(since, self.cache)
        ts = np.concatenate([*ts_parts, ts])
        vals = np.concatenate([*val_parts, vals])
        ts.flags.writeable = False
        vals.flags.writeable = False
        return ts, vals, object(), 0


class SampleStore:
    """Thread-safe in-memory sample store (see the module docstring for the rules)."""

    def __init__(self, retention: float | None = 8 * 86400.0, *, chunk_samples: int | None = None) -> None:
        if retention is not None and not (retention > 0 and np.isfinite(retention)):
            raise ValueError(f"retention must be a positive number of seconds or None, got {retention!r}")
        if chunk_samples is not None and not (isinstance(chunk_samples, int) and chunk_samples >= 16):
            raise ValueError(f"chunk_samples must be an integer >= 16 or None, got {chunk_samples!r}")
        self.retention = None if retention is None else float(retention)
        self.chunk_samples = chunk_samples or 0
        """Samples per compressed chunk (0: every sample stays raw; see "Compression")."""
        self._cache = DecodeCache()
        self._lock = threading.Lock()
        self._series: dict[str, dict[Labels, _Series]] = {}
        self._flat: dict[str, _Series] = {}
        """The same series by `SeriesRef.token` (for `append_refs`)."""
        self._version = 0
        """Bumped by every change of the stored samples (see `version`)."""
        self._journal: Journal | None = None
        self._valid: dict[tuple[str, tuple[tuple[str, str], ...]], Labels] = {}
        """Cache: (name, labels as given) -> validated series key, so repeat appends skip validation."""

    def _series_key(self, name: str, labels: Mapping[str, str]) -> Labels:
        try:
            raw = (name, tuple(labels.items()))
            cached = self._valid.get(raw)
        except TypeError:  # unhashable label value: let validation explain
            raw, cached = None, None
        if cached is not None:
            return cached
        validate_metric_name(name)
        key = validate_labels(labels)
        if raw is not None:
            if len(self._valid) >= _VALIDATION_CACHE_SIZE:
                self._valid.clear()
            self._valid[raw] = key
        return key

    def append(
        self, name: str, labels: Mapping[str, str], timestamps: object, values: object
    ) -> AppendResult:
        """Append samples (scalars or equal-length arrays, seconds) to one series."""
        key = self._series_key(name, labels)
        one = one_sample(timestamps, values)
        if one is not None:
            t, v = one
            with self._lock:
                by_labels = self._series.get(name)
                series = None if by_labels is None else by_labels.get(key)
                if series is not None and series.end > series.start:
                    # Fast path for scrape-style single samples of a known series.
                    newest_t = float(series.ts[series.end - 1])
                    if t <= newest_t:
                        if t == newest_t and float_bits(v) == float_bits(float(series.vals[series.end - 1])):
                            return _ONE_DUPLICATE
                        return _ONE_OUT_OF_ORDER
                    series.append_one(t, v, self.retention)
                    self._version += 1
                    if self._journal is not None:
                        self._journal.log((series.jid,), (1,), np.array([t]), np.array([v]))
                    return _ONE_ACCEPTED
        ts, vals = as_samples(timestamps, values)
        if len(ts) == 0:
            return AppendResult()
        with self._lock:
            by_labels = self._series.get(name)
            series = None if by_labels is None else by_labels.get(key)
            newest = None if series is None else series.newest()
            if len(ts) == 1 and series is not None and newest is not None:
                # Fast path for scrape-style single samples.
                t = float(ts[0])
                if t <= newest[0]:
                    if t == newest[0] and float_bits(float(vals[0])) == float_bits(float(newest[1])):
                        return AppendResult(duplicates=1)
                    return AppendResult(out_of_order=1)
                series.extend(ts, vals, self.retention)
                self._version += 1
                if self._journal is not None:
                    self._journal.log((series.jid,), (1,), ts, vals)
                return AppendResult(accepted=1)
            accepted, n_dup, n_ooo = classify_samples(ts, vals, newest)
            n_acc = int(accepted.sum())
            if n_acc:
                self._version += 1
                if series is None:
                    series = self._new_series(name, key)
                if n_acc < len(ts):
                    ts, vals = ts[accepted], vals[accepted]
                series.extend(ts, vals, self.retention)
                if self._journal is not None:
                    self._journal.log((series.jid,), (n_acc,), ts, vals)
        return AppendResult(accepted=n_acc, out_of_order=n_ooo, duplicates=n_dup)

    def _new_series(self, name: str, key: Labels) -> _Series:
        series = _Series(series_token(name, key), self.chunk_samples, self._cache)
        if self._journal is not None:
            series.jid = self._journal.new_series(name, key)
        self._series.setdefault(name, {})[key] = series
        self._flat[series.token] = series
        return series

    def append_batch(self, batch: RefBatch) -> int:
        """Append every series of `batch` in order (`append_refs`, and `append` for a series it
        stops at); returns how many samples were accepted."""
        b, refs = batch.bounds, batch.refs
        k = accepted = 0
        while k < len(batch):
            k, n = self.append_refs(batch, k)
            accepted += n
            if k < len(batch):
                ref = refs[k]
                r = self.append(ref.name, dict(ref.labels), batch.timestamps[b[k] : b[k + 1]], batch.values[b[k] : b[k + 1]])
                accepted += r.accepted
                k += 1
        return accepted

    def append_refs(self, batch: RefBatch, start: int = 0) -> tuple[int, int]:
        """Append series ``start, start + 1, ...`` of `batch`, one lock per few thousand series.

        Goes on while every sample of a series is newer than the series' newest stored
        sample and the series' samples strictly increase (what `append` stores whole);
        stops *before* the first series that is not, leaving it untouched. Returns
        ``(stopped_at, accepted)``: ``stopped_at == len(batch)`` when every series was
        appended; otherwise the caller gives series ``stopped_at`` to `append` (which sorts
        out duplicates and out-of-order samples) and resumes after it. The store then holds
        exactly what series-by-series `append` calls would have left (same buffers).
        """
        refs, b, tl, vl = batch.refs, batch.bounds, batch._t, batch._v
        increasing = batch._increasing
        flat = self._flat
        retention = self.retention
        n = len(refs)
        k = start
        accepted = 0
        while k < n:
            chunk_end = min(n, k + _LOCK_CHUNK)
            with self._lock:
                self._version += 1
                k0 = k
                stopped = False
                while k < chunk_end:
                    i0 = b[k]
                    i1 = b[k + 1]
                    if i1 == i0:
                        k += 1
                        continue
                    ref = refs[k]
                    s = flat.get(ref[2])
                    if s is not None and i1 - i0 == 1:
                        # One sample for a known series (a scrape's sample): no numpy arrays.
                        t = tl[i0]
                        e = s.end
                        if e > s.start and t <= s.ts[e - 1]:
                            stopped = True
                            break
                        if e < s.ts.shape[0]:
                            v = vl[i0]
                            if e > s.start and v < s.last_v:
                                s.last_drop = t
                            s.ts[e] = t
                            s.vals[e] = v
                            s.end = e + 1
                            s.last_v = v
                            if v == v or float_bits(v) != STALE_NAN_BITS:
                                s.newest_real = t
                            else:
                                s.last_stale = t
                            accepted += 1
                            k += 1
                            continue
                    if i1 - i0 > 1 and not increasing[i0 : i1 - 1].all():
                        stopped = True
                        break
                    seg_t = batch.timestamps[i0:i1]
                    if s is None:
                        s = self._new_series(ref[0], ref[1])
                    elif s.end > s.start and tl[i0] <= s.ts[s.end - 1]:
                        stopped = True
                        break
                    s.extend(seg_t, batch.values[i0:i1], retention)
                    accepted += i1 - i0
                    k += 1
                if self._journal is not None and k > k0:
                    self._log_refs(batch, k0, k)
            if stopped:
                return k, accepted
        return k, accepted

    def _log_refs(self, batch: RefBatch, k0: int, k1: int) -> None:
        """Journal series ``k0 .. k1 - 1`` of `batch`, every sample of which was just accepted."""
        b, refs, flat = batch.bounds, batch.refs, self._flat
        ids = [flat[refs[i][2]].jid if b[i + 1] > b[i] else 0 for i in range(k0, k1)]
        counts = [b[i + 1] - b[i] for i in range(k0, k1)]
        assert self._journal is not None
        self._journal.log(ids, counts, batch.timestamps[b[k0] : b[k1]], batch.values[b[k0] : b[k1]])

    def attach_journal(self, journal: Journal | None) -> None:
        """Log to `journal` from now on (None: stop). Every stored series is logged to it first,
        so the journal can name each series it later logs samples of."""
        with self._lock:
            self._journal = journal
            for name, group in self._series.items():
                for key, series in group.items():
                    series.jid = 0 if journal is None else journal.new_series(name, key)

    def commit(self) -> None:
        """Make every accepted sample durable in the journal (no-op without one; OSError propagates)."""
        journal = self._journal
        if journal is not None:
            journal.commit()

    def snapshot(
        self, mark: Callable[[list[tuple[int, str, Labels]]], object] | None = None
    ) -> list[SeriesSnapshot]:
        """Every stored series (`SeriesSnapshot`: its compressed chunks as they are, and its raw
        head as read-only views that later writes never change), taken under one lock with
        ``mark(series)`` (where a journal starts the segment that holds every later sample),
        `series` being the (journal id, name, labels) of the snapshot."""
        out: list[SeriesSnapshot] = []
        with self._lock:
            for name, group in self._series.items():
                for key, series in group.items():
                    if len(series):
                        chunks = series.old.encoded(self._cache) if series.old is not None else []
                        ts, vals, _, _ = series.views(math.inf)
                        out.append(SeriesSnapshot(series.jid, name, key, chunks, ts, vals))
            if mark is not None:
                mark([(item.jid, item.name, item.labels) for item in out])
        return out

    def select(
        self, name: str, matchers: Sequence[Matcher] = ()
    ) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        """Series of `name` whose labels satisfy every matcher (`detector.spec.matchers`: absent label = ''), sorted by labels.

        Returns ``(labels, timestamps, values)`` with read-only arrays that later writes never change.
        """
        out: list[tuple[Labels, np.ndarray, np.ndarray]] = []
        with self._lock:
            by_labels = self._series.get(name, {})
            for labels, series in by_labels.items():
                if len(series) == 0:
                    continue
                if not matchers or matches(dict(labels), matchers):
                    ts, vals, _, _ = series.views()
                    out.append((labels, ts, vals))
        out.sort(key=lambda item: item[0])
        return out

    @property
    def version(self) -> int:
        """A number that changes whenever stored samples change (appends, retention): equal
        versions mean `select` would return the same data."""
        return self._version

    def select_views(
        self, name: str, matchers: Sequence[Matcher] = (), since: float = -math.inf
    ) -> tuple[int, list[SeriesView]]:
        """`select` with what the store knows about each series, and the `version` of the store
        these views were taken at (one lock). A view holds at least every sample at or after
        `since` (of a compressed store, older chunks are not decoded)."""
        out: list[SeriesView] = []
        with self._lock:
            version = self._version
            for labels, series in self._series.get(name, {}).items():
                if len(series) == 0:
                    continue
                if not matchers or matches(dict(labels), matchers):
                    ts, vals, buffer_id, offset = series.views(since)
                    out.append(
                        SeriesView(
                            labels, ts, vals, series.last_drop, series.last_stale, buffer_id, offset, series.newest_real
                        )
                    )
        out.sort(key=lambda item: item[0])
        return version, out

    def names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, s in self._series.items() if s)

    def newest_timestamp(self, name: str | None = None) -> float | None:
        """Newest timestamp of a real sample (stale markers excluded) of `name`, or of any series."""
        with self._lock:
            groups = self._series.values() if name is None else [self._series.get(name, {})]
            newest = [s.newest_real for g in groups for s in g.values() if s.newest_real is not None]
        return max(newest) if newest else None

    def oldest_timestamp(self, name: str | None = None) -> float | None:
        """Oldest stored timestamp (any sample) of `name`, or of any series."""
        with self._lock:
            groups = self._series.values() if name is None else [self._series.get(name, {})]
            oldest = [s.first_time() for g in groups for s in g.values() if len(s)]
        return min(oldest) if oldest else None

    def series_count(self) -> int:
        with self._lock:
            return sum(len(g) for g in self._series.values())

    def sample_count(self) -> int:
        with self._lock:
            return sum(len(s) for g in self._series.values() for s in g.values())

    def memory_bytes(self) -> int:
        """Bytes held by the sample buffers plus a rough per-series overhead."""
        with self._lock:
            total = self._cache.nbytes()
            for g in self._series.values():
                for s in g.values():
                    total += s.ts.nbytes + s.vals.nbytes + _SERIES_OVERHEAD_BYTES
                    if s.old is not None:
                        total += s.old.nbytes + 64 * len(s.old.chunks)
            return total

    def enforce_retention(self, now: float) -> int:
        """Drop samples older than ``now - retention``; returns how many were dropped."""
        if self.retention is None:
            return 0
        cutoff = float(now) - self.retention
        dropped = 0
        with self._lock:
            self._version += 1
            for name in list(self._series):
                group = self._series[name]
                for labels in list(group):
                    series = group[labels]
                    dropped += series.drop_before(cutoff)
                    if len(series) == 0:
                        del group[labels]
                        self._flat.pop(series.token, None)
                    elif series.start > series.end - series.start:
                        # Mostly dead buffer: copy the live part into a right-sized one.
                        series.rebuffer(max(_MIN_CAPACITY, 2 * (series.end - series.start)))
                if not group:
                    del self._series[name]
        return dropped
