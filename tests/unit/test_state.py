"""SQLite state: round trip, WAL mode, schema versioning, and failures that never escape raw."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from detector.service.state import DB_NAME, SCHEMA_VERSION, StateError, StateStore
from tests.conftest import make_evaluation, make_result

T0 = 1_800_000_000.0


def _sequence():
    """(evaluation, stored binding changed?) for a small binding timeline."""
    bindings = [None, "latency", "latency", "protocol", "protocol", None]
    return [
        make_evaluation(T0 + 60 * i, binding=b, decision="invest" if b else "stop")
        for i, b in enumerate(bindings)
    ]


def test_round_trip_history_and_binding_changes(tmp_path):
    store = StateStore(tmp_path)
    evaluations = _sequence()
    changed = [store.record(ev) for ev in evaluations]
    # first row is the initial state, not a change; then None->latency, latency->protocol, protocol->None
    assert changed == [False, True, False, True, False, True]

    history = store.history("default")
    assert history == [json.loads(json.dumps(ev.to_dict())) for ev in evaluations]
    assert [h["binding"] for h in history] == [None, "latency", "latency", "protocol", "protocol", None]

    # since is inclusive; limit keeps the newest rows, returned oldest first
    assert [h["binding"] for h in store.history("default", since=T0 + 180)] == ["protocol", "protocol", None]
    limited = store.history("default", since=T0 + 60, limit=2)
    assert [h["time"] for h in limited] == [
        evaluations[4].to_dict()["time"],
        evaluations[5].to_dict()["time"],
    ]
    assert store.history("other") == []

    changes = store.binding_changes("default")
    assert [(c["previous"], c["binding"], c["initial"]) for c in changes] == [
        (None, None, True),
        (None, "latency", False),
        ("latency", "protocol", False),
        ("protocol", None, False),
    ]
    assert changes[1]["time"] == evaluations[1].to_dict()["time"]
    store.close()

    # a reopened store continues from the stored binding instead of starting a new "initial"
    again = StateStore(tmp_path)
    assert again.record(make_evaluation(T0 + 600, binding=None)) is False
    assert again.record(make_evaluation(T0 + 660, binding="supply")) is True
    assert len(again.history("default")) == len(evaluations) + 2
    assert [c["binding"] for c in again.binding_changes("default", since=T0 + 600)] == ["supply"]
    again.close()


def test_nan_in_evaluation_is_stored_as_null(tmp_path):
    store = StateStore(tmp_path)
    ev = make_evaluation(
        T0, constraints=[make_result("latency", target=float("nan"), guards=(("floor", float("inf")),))]
    )
    store.record(ev)
    (row,) = store.history("default")
    assert row["constraints"][0]["target"] is None
    assert row["constraints"][0]["guards"] == {"floor": None}
    store.close()


def test_wal_mode_and_schema_version(tmp_path):
    store = StateStore(tmp_path)
    assert store.available and store.open_error is None
    assert store.journal_mode() == "wal"
    assert store.schema_version() == SCHEMA_VERSION == 1
    store.record(make_evaluation(T0))
    assert (tmp_path / (DB_NAME + "-wal")).exists()

    # an independent reader sees WAL mode, the version row and the tables
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"schema_version", "evaluations", "binding_changes"} <= tables
        assert conn.execute("SELECT pipeline, binding, decision FROM evaluations").fetchall() == [
            ("default", None, "stop")
        ]
    conn.close()
    store.close()

    # reopening does not re-apply migrations
    again = StateStore(tmp_path)
    assert again.schema_version() == 1
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    conn.close()
    again.close()


def test_newer_schema_is_refused(tmp_path):
    StateStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.close()
    store = StateStore(tmp_path)
    assert not store.available
    assert store.open_error is not None and store.open_error.kind == "schema_version"
    assert "newer than this csf" in str(store.open_error)
    with pytest.raises(StateError):
        store.record(make_evaluation(T0))


def test_unwritable_directory_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = StateStore(blocker / "data")  # mkdir fails even for root
    assert not store.available
    assert store.open_error is not None
    assert store.open_error.kind in ("NotADirectoryError", "FileExistsError")
    assert str(blocker) in str(store.open_error)
    with pytest.raises(StateError) as info:
        store.record(make_evaluation(T0))
    assert info.value.kind == store.open_error.kind
    with pytest.raises(StateError):
        store.history("default")
    store.close()


def test_store_recovers_when_directory_becomes_writable(tmp_path):
    blocker = tmp_path / "later"
    blocker.write_text("")
    store = StateStore(blocker)
    with pytest.raises(StateError):
        store.record(make_evaluation(T0))
    blocker.unlink()
    blocker.mkdir()
    store.record(make_evaluation(T0 + 60, binding="latency"))
    assert store.available and store.open_error is None
    assert [h["binding"] for h in store.history("default")] == ["latency"]
    store.close()


def test_disk_full_raises_state_error_and_keeps_data(tmp_path):
    store = StateStore(tmp_path)
    store.record(make_evaluation(T0, binding="latency"))
    # Simulate a full disk: forbid the database from growing (SQLITE_FULL on the next page).
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    huge = make_evaluation(
        T0 + 60, binding="protocol", constraints=[make_result("x" * 200_000)]
    )  # many new pages
    with pytest.raises(StateError) as info:
        store.record(huge)
    assert info.value.kind == "SQLITE_FULL"
    # nothing half-written: the failed row and its binding change are absent, reads still work
    assert [h["binding"] for h in store.history("default")] == ["latency"]
    assert [c["binding"] for c in store.binding_changes("default")] == ["latency"]
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.record(huge) is True  # the change latency -> protocol is recorded once space is back
    store.close()


def test_concurrent_reads_during_writes(tmp_path):
    store = StateStore(tmp_path)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                rows = store.history("default", limit=5)
                assert len(rows) <= 5
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(100):
        store.record(make_evaluation(T0 + i, binding="latency" if i % 2 else None))
    thread.join(timeout=30)
    assert not errors
    assert len(store.history("default", limit=10000)) == 100
    assert len(store.binding_changes("default", limit=10000)) == 100  # initial + 99 alternations
    store.close()


def test_limit_must_be_positive(tmp_path):
    store = StateStore(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        store.history("default", limit=0)
    store.close()
