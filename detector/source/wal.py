"""Write-ahead log and checkpoints of a ``push`` pipeline's `SampleStore`.

Guarantee
---------
A pushed sample is acknowledged (remote_write 204, OTLP 200) only after the record holding
it has been handed to the operating system (``os.write`` returned): a crash or ``kill -9``
of csf loses no acknowledged sample. With ``fsync=True`` the log is also fsync'ed before
the answer, so a power loss or kernel crash loses none either (at the cost of one disk
flush per request). With the default ``fsync=False`` the kernel writes the log back on its
own schedule (Linux: dirty pages older than ~30 s); closed segments and checkpoints are
always fsync'ed. That default is the guarantee of Prometheus' own WAL, which hands records
to the OS when an append is committed and fsyncs a segment when it is closed.

Layout of the log's directory
-----------------------------
::

    LOCK                   flock'ed by the one process that owns the directory
    wal/00000007           segments, numbered; a new one at each open and past `segment_bytes`
    checkpoint.00000007    every sample stored before segment 7 began

A segment is the magic ``CSFWAL1\\n`` followed by records::

    kind u8 | payload length u32 LE | CRC-32 (zlib) of the payload u32 LE | payload
    kind 1 SERIES   id u32 LE | JSON [name, [[label, value], ...]] in UTF-8
    kind 2 SAMPLES  n u32 LE | ids u32[n] | counts u32[n] | timestamps f64[sum] | values f64[sum]
    kind 5 CLOSED   segment number u32 LE: the last record of a segment that was closed

An id names a series from its SERIES record on, to the end of the stream (checkpoint,
then segments in order); a later SERIES record may give the id to another series.

A checkpoint is the magic ``CSFCKP1\\n``, a SERIES record per stored series, its samples
as kind 3 CHUNK records (id u32 LE, then a `detector.source.chunks` chunk of at most
`CHUNK_SAMPLES` samples), and a kind 4 END record (series u32 LE, samples u64 LE). It is
written as ``checkpoint.N.tmp``, fsync'ed and renamed; one without END is ignored.

Replay and repair
-----------------
`WriteAheadLog.open` loads the newest complete checkpoint, then every segment from its
number on, into the store, with the store's ingestion rules: replay rebuilds what the
store held. A record cut short (a torn write at a crash) or failing its CRC ends the
replay of its segment: it is reported (`ReplayReport.problems`, an error log line),
the segment is truncated there, and the replay goes on with the next segment. A segment
other than the newest that lacks its CLOSED record lost records at its end (cut at a
record boundary): that is reported too. Every replayed segment is then closed (a CLOSED
record appended), so the same damage is reported once. Nothing in
the log's content makes opening fail; only an unusable directory does (`WalError`).

Retention
---------
A checkpoint holds only what the store holds (the store enforces its retention), and
once it is complete every older segment and checkpoint is deleted, so log and
checkpoint are trimmed together. `maybe_checkpoint` starts one (in a thread) when the
segments written since the last checkpoint exceed `checkpoint_bytes` or are older
than `checkpoint_interval` seconds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import CsfError
from detector.source.chunks import ChunkError, decode_chunk, encode_chunk
from detector.source.frame import Labels
from detector.source.series import RefBatch, SeriesRef, series_ref
from detector.source.store import SampleStore, SeriesSnapshot

log = logging.getLogger("csf.wal")

SEGMENT_MAGIC = b"CSFWAL1\n"
CHECKPOINT_MAGIC = b"CSFCKP1\n"
SERIES, SAMPLES, CHUNK, END, CLOSED = 1, 2, 3, 4, 5
_HEAD = struct.Struct("<BII")
CHUNK_SAMPLES = 1024
"""Samples per checkpoint chunk."""
SEGMENT_BYTES = 64 * 1024 * 1024
CHECKPOINT_BYTES = 64 * 1024 * 1024
CHECKPOINT_INTERVAL = 7200.0
"""Seconds between checkpoints while anything is logged (Prometheus cuts its head every 2 h)."""
_SEGMENT_NAME = re.compile(r"^\d{8}$")
_CHECKPOINT_NAME = re.compile(r"^checkpoint\.(\d{8})$")


class WalError(CsfError):
    """The write-ahead log's directory cannot be used (another process holds it, no permission)."""


@dataclass
class ReplayReport:
    """What `WriteAheadLog.open` found and loaded."""

    checkpoint: str | None = None
    """File name of the checkpoint loaded (None: none)."""
    segments: int = 0
    """Segments replayed after it."""
    series: int = 0
    samples: int = 0
    """Samples the store accepted from checkpoint and segments."""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    """Torn or corrupt records skipped (file, offset, what), and unreadable checkpoints."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "segments": self.segments,
            "series": self.series,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "problems": list(self.problems),
        }


def _record(kind: int, payload: bytes) -> bytes:
    return _HEAD.pack(kind, len(payload), zlib.crc32(payload)) + payload


def _series_payload(jid: int, name: str, labels: Labels) -> bytes:
    text = json.dumps([name, [list(kv) for kv in labels]], separators=(",", ":"), ensure_ascii=False)
    return struct.pack("<I", jid) + text.encode("utf-8")


def _samples_payload(ids: Sequence[int], counts: Sequence[int], ts: np.ndarray, vals: np.ndarray) -> bytes:
    n = len(ids)
    return b"".join(
        (
            struct.pack("<I", n),
            np.asarray(ids, dtype="<u4").tobytes(),
            np.asarray(counts, dtype="<u4").tobytes(),
            np.ascontiguousarray(ts, dtype="<f8").tobytes(),
            np.ascontiguousarray(vals, dtype="<f8").tobytes(),
        )
    )


def _closed(number: int) -> bytes:
    """The CLOSED record ending segment `number`."""
    return _record(CLOSED, struct.pack("<I", number))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_BATCH_SAMPLES = 1 << 18
"""Samples of consecutive records a replay hands to the store in one bulk append."""


class _Stream:
    """Turns records into store appends, in stream order (one per replay).

    Consecutive records are appended together (`flush`): the store applies a batch
    series by series, in order, which is what one append per record would do."""

    def __init__(self, store: SampleStore) -> None:
        self.store = store
        self.names: dict[int, SeriesRef] = {}
        self.samples = 0
        self.unknown = 0
        """Samples of records naming a series id no SERIES record defined (skipped)."""
        self._refs: list[SeriesRef] = []
        self._counts: list[np.ndarray] = []
        self._ts: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._queued = 0

    def series(self, payload: bytes) -> None:
        (jid,) = struct.unpack_from("<I", payload)
        name, labels = json.loads(payload[4:].decode("utf-8"))
        self.names[jid] = series_ref(name, dict(labels))

    def samples_record(self, payload: bytes) -> None:
        (n,) = struct.unpack_from("<I", payload)
        ids = np.frombuffer(payload, dtype="<u4", count=n, offset=4)
        counts = np.frombuffer(payload, dtype="<u4", count=n, offset=4 + 4 * n)
        total = int(counts.sum())
        if len(payload) != 4 + 8 * n + 16 * total:
            raise ValueError(f"SAMPLES record of {len(payload)} bytes does not hold {n} series and {total} samples")
        ts = np.frombuffer(payload, dtype="<f8", count=total, offset=4 + 8 * n).astype(np.float64)
        vals = np.frombuffer(payload, dtype="<f8", count=total, offset=4 + 8 * n + 8 * total).astype(np.float64)
        found = [self.names.get(int(i)) for i in ids]
        known = np.array([ref is not None for ref in found], dtype=bool) & (counts > 0)
        if not known.all():
            mask = np.repeat(known, counts)
            self.unknown += int(counts[~known & (counts > 0)].sum())
            ts, vals, counts = ts[mask], vals[mask], counts[known]
        self._queue([ref for ref, k in zip(found, known, strict=True) if k and ref is not None], counts, ts, vals)

    def chunk(self, payload: bytes) -> None:
        (jid,) = struct.unpack_from("<I", payload)
        ts, vals = decode_chunk(payload[4:])
        self._queue([self.names[jid]], np.array([len(ts)]), ts, vals)

    def _queue(self, refs: list[SeriesRef], counts: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> None:
        self._refs.extend(refs)
        self._counts.append(counts)
        self._ts.append(ts)
        self._vals.append(vals)
        self._queued += len(ts)
        if self._queued >= _BATCH_SAMPLES:
            self.flush()

    def flush(self) -> None:
        """Append everything queued."""
        if not self._refs:
            return
        counts = np.concatenate(self._counts)
        bounds = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
        refs, ts, vals = self._refs, np.concatenate(self._ts), np.concatenate(self._vals)
        self._refs, self._counts, self._ts, self._vals, self._queued = [], [], [], [], 0
        self.samples += self.store.append_batch(RefBatch(refs, bounds, ts, vals))


def _records(data: bytes, start: int) -> Iterator[tuple[int, int, bytes, str]]:
    """(offset, kind, payload, "") of each record from `start`; a bad record ends it as
    (offset, 0, b"", what is wrong)."""
    pos, n = start, len(data)
    while pos < n:
        if n - pos < _HEAD.size:
            yield pos, 0, b"", f"record header cut short ({n - pos} of {_HEAD.size} bytes)"
            return
        kind, length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if kind not in (SERIES, SAMPLES, CHUNK, END, CLOSED):
            yield pos, 0, b"", f"unknown record kind {kind}"
            return
        if end > n:
            yield pos, 0, b"", f"record cut short ({n - pos - _HEAD.size} of {length} payload bytes)"
            return
        payload = data[pos + _HEAD.size : end]
        if zlib.crc32(payload) != crc:
            yield pos, 0, b"", "CRC mismatch"
            return
        yield pos, kind, payload, ""
        pos = end


class WriteAheadLog:
    """The log of one store (rules in the module docstring); also the store's `Journal`."""

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: bool = False,
        segment_bytes: int = SEGMENT_BYTES,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._store: SampleStore | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._segment_size = 0
        self._pending = bytearray()
        self._buf_lock = threading.Lock()
        """Guards `_pending` and the id counter (taken under the store's lock)."""
        self._write_lock = threading.Lock()
        """Orders writes to the segment file."""
        self._next_id = 1
        self._since_checkpoint = 0
        self._checkpointed_at = clock()
        self._checkpointer: threading.Thread | None = None
        self.last_checkpoint: str | None = None
        self.replay: ReplayReport | None = None
        """What `open` replayed."""
        self.failures = 0

    # ------------------------------------------------------------------ opening

    def open(self, store: SampleStore) -> ReplayReport:
        """Lock the directory, replay it into `store`, start a fresh segment, attach to `store`."""
        started = time.perf_counter()
        self._lock_directory()
        report = ReplayReport()
        stream = _Stream(store)
        first = self._load_checkpoint(stream, report)
        numbers = [n for n in self._segment_numbers() if n >= first]
        for number in numbers:
            self._replay_segment(number, stream, report, newest=number == numbers[-1])
            stream.flush()
        report.segments = len(numbers)
        report.samples = stream.samples
        if stream.unknown:
            report.problems.append(f"{stream.unknown} samples of series no record defined were skipped")
        report.series = store.series_count()
        self._segment = max([first - 1, *self._segment_numbers()]) + 1
        self._open_segment()
        self._store = store
        store.attach_journal(self)
        self.commit()
        report.seconds = time.perf_counter() - started
        self.replay = report
        for problem in report.problems:
            log.error("write-ahead log damaged; the rest of that file was skipped", extra={"problem": problem})
        return report

    def _lock_directory(self) -> None:
        try:
            (self.directory / "wal").mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WalError(f"write-ahead log directory {self.directory}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise WalError(
                f"write-ahead log directory {self.directory} is in use by another process (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _segment_numbers(self) -> list[int]:
        return sorted(int(p.name) for p in (self.directory / "wal").iterdir() if _SEGMENT_NAME.match(p.name))

    def _checkpoints(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.directory.iterdir():
            m = _CHECKPOINT_NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
            elif p.name.startswith("checkpoint.") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # a checkpoint interrupted by a crash
        return sorted(found, reverse=True)

    def _load_checkpoint(self, stream: _Stream, report: ReplayReport) -> int:
        """Load the newest complete checkpoint; returns the first segment to replay after it."""
        for number, path in self._checkpoints():
            data = path.read_bytes()
            problem = self._read_checkpoint(data, None) or self._read_checkpoint(data, stream)
            stream.flush()
            if problem is not None:
                kept = path.with_name(path.name + ".damaged")
                os.replace(path, kept)  # kept for a post-mortem, never read again
                report.problems.append(f"{path.name}: {problem}; set aside as {kept.name}")
                continue
            report.checkpoint = path.name
            self.last_checkpoint = path.name
            return number
        return 0

    @staticmethod
    def _read_checkpoint(data: bytes, stream: _Stream | None) -> str | None:
        """Apply a checkpoint to `stream` (None: only check its records' framing and CRCs);
        the problem that makes it unusable, or None."""
        if not data.startswith(CHECKPOINT_MAGIC):
            return "not a csf checkpoint"
        for offset, kind, payload, bad in _records(data, len(CHECKPOINT_MAGIC)):
            if kind == 0:
                return f"offset {offset}: {bad}"
            if stream is None and kind != END:
                continue
            try:
                if stream is None:
                    return None
                if kind == SERIES:
                    stream.series(payload)
                elif kind == CHUNK:
                    stream.chunk(payload)
                elif kind == END:
                    return None
                else:
                    return f"offset {offset}: record kind {kind} in a checkpoint"
            except (ValueError, KeyError, ChunkError, struct.error) as exc:
                return f"offset {offset}: {type(exc).__name__}: {exc}"
        return "no END record (written incompletely)"

    def _replay_segment(self, number: int, stream: _Stream, report: ReplayReport, *, newest: bool) -> None:
        """Replay one segment into `stream`, report its damage, and leave it closed (repaired)."""
        path = self.directory / "wal" / f"{number:08d}"
        data = path.read_bytes()
        if not data.startswith(SEGMENT_MAGIC):
            if not (newest and len(data) < len(SEGMENT_MAGIC) and SEGMENT_MAGIC.startswith(data)):
                report.problems.append(f"wal/{path.name}: not a csf write-ahead log segment ({len(data)} bytes skipped)")
            self._close_file(path, 0, number)  # a fresh, closed segment in its place
            return
        end = len(data)
        for offset, kind, payload, bad in _records(data, len(SEGMENT_MAGIC)):
            problem = bad or None
            if kind in (SERIES, SAMPLES):
                try:
                    (stream.series if kind == SERIES else stream.samples_record)(payload)
                except (ValueError, KeyError, struct.error) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
            elif kind == CLOSED:
                if offset + _HEAD.size + len(payload) != len(data):
                    problem = "records after the closing record"
                else:
                    return  # closed properly: nothing to repair
            elif kind != 0:
                problem = f"record kind {kind} in a segment"
            if problem is not None:
                report.problems.append(f"wal/{path.name} offset {offset}: {problem} ({len(data) - offset} bytes skipped)")
                end = offset
                break
        else:
            if not newest:
                report.problems.append(
                    f"wal/{path.name}: ends at offset {len(data)} without its closing record "
                    "(cut short at a record boundary: records after it are missing)"
                )
        self._close_file(path, end, number)

    @staticmethod
    def _close_file(path: Path, end: int, number: int) -> None:
        """Cut the segment at `end` (nothing valid: a fresh magic) and append its CLOSED record."""
        with open(path, "r+b") as f:
            f.truncate(end)
            f.seek(end)
            if end == 0:
                f.write(SEGMENT_MAGIC)
            f.write(_closed(number))
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------ writing (the store's Journal)

    def _open_segment(self) -> None:
        path = self.directory / "wal" / f"{self._segment:08d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, SEGMENT_MAGIC)
        os.fsync(fd)
        _fsync_dir(path.parent)
        self._fd, self._segment_size = fd, len(SEGMENT_MAGIC)

    def new_series(self, name: str, labels: Labels) -> int:
        with self._buf_lock:
            jid = self._next_id
            self._next_id += 1
            self._pending += _record(SERIES, _series_payload(jid, name, labels))
        return jid

    def log(self, ids: Sequence[int], counts: Sequence[int], timestamps: np.ndarray, values: np.ndarray) -> None:
        rec = _record(SAMPLES, _samples_payload(ids, counts, timestamps, values))
        with self._buf_lock:
            self._pending += rec

    def commit(self) -> None:
        """Write what was logged (and fsync with ``fsync=True``); OSError propagates and the
        unwritten bytes stay pending for the next commit."""
        with self._write_lock:
            with self._buf_lock:
                data, self._pending = self._pending, bytearray()
            if not data:
                return
            view = memoryview(data)
            fd = self._fd
            try:
                if fd is None:
                    raise OSError(f"write-ahead log {self.directory} is closed")
                while view:
                    written = os.write(fd, view)
                    self._segment_size += written
                    self._since_checkpoint += written
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                self.failures += 1
                with self._buf_lock:
                    self._pending[:0] = view
                raise
            if self._segment_size >= self.segment_bytes:
                self._next_segment()

    def _next_segment(self) -> None:
        """Close the current segment (fsync'ed) and open the next one (caller holds `_write_lock`)."""
        assert self._fd is not None
        os.write(self._fd, _closed(self._segment))
        os.fsync(self._fd)
        os.close(self._fd)
        self._segment += 1
        self._open_segment()

    # ------------------------------------------------------------------ checkpoints

    def maybe_checkpoint(self) -> bool:
        """Start a checkpoint in a thread when the log grew past its limits; True when started."""
        due = self._since_checkpoint >= self.checkpoint_bytes or (
            self._since_checkpoint > 0 and self._clock() - self._checkpointed_at >= self.checkpoint_interval
        )
        return due and self.start_checkpoint()

    def start_checkpoint(self) -> bool:
        """Start a checkpoint in a thread unless one is running; True when started."""
        running = self._checkpointer is not None and self._checkpointer.is_alive()
        if running or self._store is None:
            return False
        self._checkpointer = threading.Thread(target=self._checkpoint_logged, name="csf-checkpoint", daemon=True)
        self._checkpointer.start()
        return True


    def _checkpoint_logged(self) -> None:
        try:
            self.checkpoint()
        except Exception:
            log.exception("write-ahead log checkpoint failed; the log is kept", extra={"dir": str(self.directory)})

    def checkpoint(self) -> str:
        """Write a checkpoint of the store now and delete what it makes redundant; its file name."""
        store = self._store
        if store is None:
            raise RuntimeError("write-ahead log not open")
        marks: list[int] = []

        def mark(live: Sequence[tuple[int, str, Labels]]) -> None:
            # Under the store's lock: every sample accepted from here on is written to the new
            # segment, which opens with a SERIES record of every stored series (so it can be
            # read even without this checkpoint). Records logged before but not yet committed
            # land after those; replayed after the checkpoint, which holds their samples, they
            # are duplicates.
            heads = b"".join(_record(SERIES, _series_payload(jid, name, labels)) for jid, name, labels in live)
            with self._write_lock:
                self._next_segment()
                with self._buf_lock:
                    self._pending[:0] = heads
                marks.append(self._segment)
                self._since_checkpoint = 0
                self._checkpointed_at = self._clock()

        series = store.snapshot(mark)
        number = marks[0]
        path = self.directory / f"checkpoint.{number:08d}"
        self._write_checkpoint(path, series)
        for n, old in self._checkpoints():
            if n < number:
                old.unlink(missing_ok=True)
        for n in self._segment_numbers():
            if n < number:
                (self.directory / "wal" / f"{n:08d}").unlink(missing_ok=True)
        self.last_checkpoint = path.name
        return path.name

    @staticmethod
    def _write_checkpoint(path: Path, series: list[SeriesSnapshot]) -> None:
        """The snapshot as a checkpoint file: a compressed store's chunks are written as they
        are, raw samples encoded in chunks of `CHUNK_SAMPLES`."""
        tmp = path.with_name(path.name + ".tmp")
        samples = 0
        with open(tmp, "wb") as f:
            f.write(CHECKPOINT_MAGIC)
            for snap in series:
                jid = struct.pack("<I", snap.jid)
                f.write(_record(SERIES, _series_payload(snap.jid, snap.name, snap.labels)))
                for data, n in snap.chunks:
                    f.write(_record(CHUNK, jid + data))
                    samples += n
                ts, vals = snap.timestamps, snap.values
                for i in range(0, len(ts), CHUNK_SAMPLES):
                    f.write(_record(CHUNK, jid + encode_chunk(ts[i : i + CHUNK_SAMPLES], vals[i : i + CHUNK_SAMPLES])))
                samples += len(ts)
            f.write(_record(END, struct.pack("<IQ", len(series), samples)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Commit, wait for a running checkpoint, close the segment (fsync'ed), release the lock."""
        store, self._store = self._store, None
        if store is not None:
            store.attach_journal(None)
        thread = self._checkpointer
        if thread is not None:
            thread.join()
        try:
            self.commit()
        finally:
            with self._write_lock:
                fd, self._fd = self._fd, None
                if fd is not None:
                    os.write(fd, _closed(self._segment))
                    os.fsync(fd)
                    os.close(fd)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def stats(self) -> dict[str, Any]:
        """Segment, bytes and checkpoint figures (for the API)."""
        return {
            "directory": str(self.directory),
            "fsync": self.fsync,
            "segment": f"{self._segment:08d}",
            "bytes_since_checkpoint": self._since_checkpoint,
            "last_checkpoint": self.last_checkpoint,
            "write_failures": self.failures,
        }


__all__ = ["CHUNK_SAMPLES", "ReplayReport", "WalError", "WriteAheadLog"]
