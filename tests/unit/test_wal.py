"""The write-ahead log of push stores: replay equals what was stored, checkpoints, damage, locking.

A crash is simulated in process by `abandon`: the log's files are closed without the
final commit and fsync that `close` does (what ``kill -9`` leaves behind, as far as the
files are concerned; the real ``kill -9`` of ``csf serve`` is in
tests/integration/test_wal_crash.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from detector.source.series import STALE_NAN, RefBatch, is_stale_marker, series_ref
from detector.source.store import SampleStore
from detector.source.wal import CHUNK_SAMPLES, WalError, WriteAheadLog


def abandon(wal: WriteAheadLog) -> None:
    """Leave the log as a killed process would: files closed, nothing flushed or fsync'ed after."""
    wal._store = None
    for fd in (wal._fd, wal._lock_fd):
        if fd is not None:
            os.close(fd)
    wal._fd = wal._lock_fd = None


def contents(store: SampleStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, bytes]]:
    """Every series' timestamps and values as raw bytes (so NaN payloads compare too)."""
    out = {}
    for name in store.names():
        for labels, ts, vals in store.select(name):
            out[(name, labels)] = (ts.tobytes(), vals.tobytes())
    return out


def opened(path: Path, retention: float | None = None, **kwargs: object) -> tuple[SampleStore, WriteAheadLog]:
    store = SampleStore(retention=retention)
    wal = WriteAheadLog(path, **kwargs)  # type: ignore[arg-type]
    wal.open(store)
    return store, wal


def fill(store: SampleStore, t0: float = 1_700_000_000.0) -> None:
    """Samples through every append path: one sample, arrays, rejected ones, bulk refs."""
    store.append("up", {"job": "a"}, t0, 1.0)
    store.append("up", {"job": "a"}, t0 + 15, 0.0)  # one-sample path of a known series
    store.append("up", {"job": "a"}, t0 + 15, 0.0)  # duplicate: not logged
    store.append("up", {"job": "a"}, t0 + 5, 7.0)  # out of order: not logged
    ts = t0 + np.arange(100) * 15.0
    vals = np.cumsum(np.arange(100) % 7).astype(float)
    vals[50] = STALE_NAN
    vals[60] = float("nan")
    vals[61] = float("-inf")
    store.append("requests_total", {"pod": "p-1", "instance": "10.0.0.1:9100"}, ts, vals)
    mixed = np.array([t0 + 2000, t0 + 1990, t0 + 2010])  # the middle one is out of order
    store.append("requests_total", {"pod": "p-1", "instance": "10.0.0.1:9100"}, mixed, np.array([1.0, 2.0, 3.0]))
    refs = [series_ref("latency_seconds", {"le": le}) for le in ("0.1", "1", "+Inf")]
    batch = RefBatch(refs, [0, 2, 2, 5], np.array([t0, t0 + 60, t0, t0 + 60, t0 + 120]), np.arange(5.0))
    store.append_batch(batch)  # bulk refs, one series without samples
    store.commit()


def test_replay_after_a_crash_rebuilds_the_store_bit_for_bit(tmp_path: Path) -> None:
    store, wal = opened(tmp_path)
    fill(store)
    before = contents(store)
    abandon(wal)

    again, wal2 = opened(tmp_path)
    assert contents(again) == before
    assert wal2.replay is not None and wal2.replay.problems == []
    assert wal2.replay.samples == again.sample_count() == 2 + 100 + 2 + 5
    _, vals = next((ts, v) for lbl, ts, v in again.select("requests_total"))
    assert is_stale_marker(vals)[50] and np.isnan(vals[60]) and not is_stale_marker(vals)[60]
    # what arrives after the replay is logged too
    again.append("up", {"job": "b"}, 1_700_000_100.0, 1.0)
    again.commit()
    abandon(wal2)
    third, _ = opened(tmp_path)
    assert contents(third) == contents(again)


def test_uncommitted_samples_are_not_promised_but_committed_ones_survive(tmp_path: Path) -> None:
    store, wal = opened(tmp_path)
    store.append("up", {}, 1.0, 1.0)
    store.commit()
    store.append("up", {}, 2.0, 1.0)  # accepted, never committed: a request that was not answered
    abandon(wal)
    again, _ = opened(tmp_path)
    [(_, ts, _)] = again.select("up")
    assert ts.tolist() == [1.0]


def test_a_checkpoint_replaces_old_segments_and_replay_uses_it(tmp_path: Path) -> None:
    store, wal = opened(tmp_path)
    fill(store)
    name = wal.checkpoint()
    assert (tmp_path / name).exists()
    segments = sorted(p.name for p in (tmp_path / "wal").iterdir())
    assert segments == [name.split(".")[1]], "segments before the checkpoint are deleted"
    store.append("up", {"job": "a"}, 1_700_000_100.0, 5.0)
    store.commit()
    before = contents(store)
    abandon(wal)
    again, wal2 = opened(tmp_path)
    assert contents(again) == before
    assert wal2.replay is not None and wal2.replay.checkpoint == name and wal2.replay.segments == 1


def test_checkpoint_under_concurrent_appends_loses_nothing(tmp_path: Path) -> None:
    store, wal = opened(tmp_path)
    stop = threading.Event()

    def writer() -> None:
        t = 0.0
        while not stop.is_set() and t < 200_000:
            t += 1.0
            store.append("counter_total", {"w": str(int(t) % 5)}, t, t)
            store.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(5):
            wal.checkpoint()
    finally:
        stop.set()
        thread.join()
    before = contents(store)
    abandon(wal)
    again, _ = opened(tmp_path)
    assert contents(again) == before and before


def test_checkpoint_chunks_hold_long_series_and_retention_trims_log_and_checkpoint(tmp_path: Path) -> None:
    store, wal = opened(tmp_path, retention=1000.0 * 15)
    n = 3 * CHUNK_SAMPLES + 17
    store.append("g", {}, np.arange(n) * 15.0, np.sin(np.arange(n)))
    store.commit()
    store.enforce_retention(n * 15.0)
    wal.checkpoint()
    kept = contents(store)
    assert store.sample_count() == 1000
    abandon(wal)
    again, _ = opened(tmp_path, retention=1000.0 * 15)
    assert contents(again) == kept
    assert len(list((tmp_path / "wal").iterdir())) == 2  # the checkpoint's segment and the new one


def test_a_torn_tail_is_reported_skipped_and_repaired(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, wal = opened(tmp_path)
    store.append("up", {}, 1.0, 1.0)
    store.commit()
    kept = contents(store)
    store.append("up", {}, 2.0, 2.0)
    store.commit()
    segment = wal._segment
    abandon(wal)
    path = tmp_path / "wal" / f"{segment:08d}"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 5)  # the last record's write was cut short

    again, wal2 = opened(tmp_path)
    assert contents(again) == kept
    assert wal2.replay is not None
    [problem] = wal2.replay.problems
    assert f"wal/{segment:08d} offset" in problem and "cut short" in problem and "bytes skipped" in problem
    assert "write-ahead log damaged" in caplog.text
    abandon(wal2)
    _, wal3 = opened(tmp_path)  # repaired: nothing to report the second time
    assert wal3.replay is not None and wal3.replay.problems == []


def test_a_corrupt_record_ends_its_segment_and_later_segments_still_replay(tmp_path: Path) -> None:
    store, wal = opened(tmp_path, segment_bytes=1)  # a new segment after every commit
    for t in range(1, 6):
        store.append("up", {}, float(t), float(t))
        store.commit()
    first = sorted((tmp_path / "wal").iterdir())[1]
    abandon(wal)
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the payload of its last record
    first.write_bytes(bytes(data))
    again, wal2 = opened(tmp_path)
    assert wal2.replay is not None
    assert len(wal2.replay.problems) == 1 and "CRC mismatch" in wal2.replay.problems[0]
    [(_, ts, _)] = again.select("up")
    assert 5.0 in ts.tolist() and len(ts) >= 3


def test_an_incomplete_checkpoint_is_reported_and_never_fatal(tmp_path: Path) -> None:
    store, wal = opened(tmp_path)
    store.append("up", {}, 1.0, 1.0)
    store.commit()
    name = wal.checkpoint()
    store.append("up", {}, 2.0, 2.0)
    store.commit()
    abandon(wal)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-3])
    (tmp_path / "checkpoint.99999999.tmp").write_bytes(b"half")  # a checkpoint a crash interrupted
    again, wal2 = opened(tmp_path)
    assert wal2.replay is not None
    assert any(name in p and "cut short" in p and "set aside" in p for p in wal2.replay.problems)
    [(_, ts, _)] = again.select("up")
    assert ts.tolist() == [2.0]  # what the segments after the checkpoint hold
    assert not (tmp_path / "checkpoint.99999999.tmp").exists()


def test_a_second_process_cannot_open_the_same_log(tmp_path: Path) -> None:
    _, wal = opened(tmp_path)
    with pytest.raises(WalError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        WriteAheadLog(tmp_path).open(SampleStore())
    wal.close()
    WriteAheadLog(tmp_path).open(SampleStore())  # free once closed


def test_a_failed_write_keeps_the_records_for_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, wal = opened(tmp_path)
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: object) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)  # type: ignore[arg-type]

    store.append("up", {}, 1.0, 1.0)
    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        store.commit()
    store.append("up", {}, 2.0, 2.0)
    store.commit()
    monkeypatch.undo()
    assert wal.failures == 1
    abandon(wal)
    again, _ = opened(tmp_path)
    [(_, ts, _)] = again.select("up")
    assert ts.tolist() == [1.0, 2.0]


def test_fsync_true_fsyncs_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, wal = opened(tmp_path, fsync=True)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    store.append("up", {}, 1.0, 1.0)
    store.commit()
    assert synced == [wal._fd]
    wal.fsync = False
    store.append("up", {}, 2.0, 1.0)
    store.commit()
    assert synced == [wal._fd]


def test_no_damage_to_the_files_makes_opening_fail(tmp_path: Path) -> None:
    """Seeded random truncations and byte flips of segments and checkpoints: opening always
    succeeds, reports the damage, and keeps only samples that were stored."""
    rng = np.random.default_rng(7)
    source = tmp_path / "source"
    store, wal = opened(source, segment_bytes=400)
    for t in range(1, 40):
        store.append("up", {"k": str(t % 3)}, float(t), float(t))
        store.commit()
        if t == 20:
            wal.checkpoint()
    truth = {(lbl, float(t)) for lbl, ts, _ in store.select("up") for t in ts}
    abandon(wal)
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.name != "LOCK")
    newest = max(p for p in files if p.parent.name == "wal")
    for trial in range(60):
        case = tmp_path / f"case{trial}"
        for p in files:
            dest = case / p.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
        chosen = files[int(rng.integers(len(files)))]
        victim = case / chosen.relative_to(source)
        data = bytearray(victim.read_bytes())
        # the newest segment cut at a record boundary is a crash before those writes: not damage
        if data and rng.random() < 0.5 and chosen != newest:
            data = data[: int(rng.integers(len(data)))]
        elif data:
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        victim.write_bytes(bytes(data))
        again, wal2 = opened(case)
        got = {(lbl, float(t)) for lbl, ts, _ in again.select("up") for t in ts}
        assert got <= truth, trial
        assert wal2.replay is not None
        if got != truth:
            assert wal2.replay.problems, f"trial {trial}: samples lost without a report"
        wal2.close()
        _, wal3 = opened(case)  # repaired: the same damage is not reported twice
        assert wal3.replay is not None and wal3.replay.problems == [], trial
        wal3.close()


def test_a_compressed_store_checkpoints_its_chunks_and_reads_back_the_same(tmp_path: Path) -> None:
    store = SampleStore(retention=300 * 15.0, chunk_samples=16)
    wal = WriteAheadLog(tmp_path)
    wal.open(store)
    for k in range(0, 500, 7):  # batches: some close chunks, some only fill the head
        ts = np.arange(k, min(k + 7, 500)) * 15.0
        store.append("g", {"pod": "a"}, ts, np.sin(ts))
        store.commit()
    store.enforce_retention(500 * 15.0 + 7.0)  # cuts into the first kept chunk
    assert store.sample_count() == 299
    name = wal.checkpoint()
    kept = contents(store)
    abandon(wal)
    again = SampleStore(retention=300 * 15.0, chunk_samples=16)
    report = WriteAheadLog(tmp_path).open(again)
    assert report.checkpoint == name and report.problems == []
    assert contents(again) == kept
