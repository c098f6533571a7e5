"""Durable service state: every evaluation and every binding change, in SQLite.

One database file (``<data_dir>/csf.db``) in WAL mode, so the API can read history
while the scheduler writes. The schema is versioned: `MIGRATIONS` is an ordered list,
migration *i* brings the database to version *i + 1*, and each applied version is a
row of ``schema_version``. A database written by a newer csf is refused, not guessed at.

Failures never escape as raw sqlite/OS exceptions: they become `StateError` with a
stable `kind` (e.g. ``SQLITE_FULL``, ``NotADirectoryError``) so that the runner can
count them and log each kind once. An unavailable database (unwritable directory) does
not stop the service: the store keeps trying to open it on every write.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from detector.evidence import Evaluation

DB_NAME = "csf.db"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1
    (
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            time REAL NOT NULL,
            binding TEXT,
            decision TEXT NOT NULL,
            evaluation TEXT NOT NULL
        )""",
        "CREATE INDEX evaluations_pipeline_time ON evaluations (pipeline, time)",
        """CREATE TABLE binding_changes (
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            time REAL NOT NULL,
            previous TEXT,
            binding TEXT,
            initial INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX binding_changes_pipeline_time ON binding_changes (pipeline, time)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StateError(Exception):
    """The state database could not be opened, written or read."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        """A stable failure type (sqlite error name or exception class) for counting/logging."""


def _kind(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", None) or type(exc).__name__


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class StateStore:
    """Evaluations and binding changes of every pipeline. Thread-safe; never raises on construction."""

    def __init__(self, data_dir: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._last_binding: dict[str, str | None] = {}
        self.open_error: StateError | None = None
        """Why the database is unavailable (None when open)."""
        try:
            with self._lock:
                self._connect()
        except StateError as exc:
            self.open_error = exc

    # ------------------------------------------------------------------ connection

    @property
    def available(self) -> bool:
        return self._conn is not None

    def _connect(self) -> sqlite3.Connection:
        """Open and migrate the database (caller holds the lock)."""
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise StateError(f"state database {self.path} is closed", "closed")
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(
                    f"state database {self.path}: cannot enable WAL mode (got {mode})", "journal_mode"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except StateError:
            if conn is not None:
                conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise StateError(f"state database {self.path} unavailable: {exc}", _kind(exc)) from exc
        self._conn = conn
        self.open_error = None
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.path} has schema version {current}, newer than this csf ({SCHEMA_VERSION})",
                "schema_version",
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time())
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        with self._lock:
            conn = self._require()
            return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])

    def journal_mode(self) -> str:
        with self._lock:
            conn = self._require()
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def _require(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except StateError as exc:
            self.open_error = exc
            raise

    # ------------------------------------------------------------------ writes

    def record(self, evaluation: Evaluation) -> bool:
        """Store one evaluation; returns True when it changed the pipeline's stored binding constraint.

        The first evaluation ever stored for a pipeline is recorded as an initial change
        (row with ``initial`` set) but returns False.
        Raises StateError (with a `kind`) on any database or disk failure.
        """
        payload = json.dumps(_json_safe(evaluation.to_dict()), allow_nan=False, separators=(",", ":"))
        with self._lock:
            conn = self._require()
            try:
                if evaluation.pipeline not in self._last_binding:
                    row = conn.execute(
                        "SELECT binding FROM evaluations WHERE pipeline = ? ORDER BY time DESC, id DESC LIMIT 1",
                        (evaluation.pipeline,),
                    ).fetchone()
                    initial = row is None
                    previous = None if row is None else row[0]
                else:
                    initial = False
                    previous = self._last_binding[evaluation.pipeline]
                changed = initial or previous != evaluation.binding
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        "INSERT INTO evaluations (pipeline, time, binding, decision, evaluation) VALUES (?, ?, ?, ?, ?)",
                        (
                            evaluation.pipeline,
                            evaluation.time,
                            evaluation.binding,
                            evaluation.decision,
                            payload,
                        ),
                    )
                    if changed:
                        conn.execute(
                            "INSERT INTO binding_changes (pipeline, time, previous, binding, initial) VALUES (?, ?, ?, ?, ?)",
                            (
                                evaluation.pipeline,
                                evaluation.time,
                                previous,
                                evaluation.binding,
                                int(initial),
                            ),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise StateError(f"cannot write evaluation to {self.path}: {exc}", _kind(exc)) from exc
            self._last_binding[evaluation.pipeline] = evaluation.binding
            return changed and not initial

    # ------------------------------------------------------------------ reads

    def history(self, pipeline: str, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` evaluations of `pipeline` at or after `since` (unix s), oldest first.

        Each item is the stored `Evaluation.to_dict()`. Raises StateError.
        """
        return [
            json.loads(payload)
            for (payload,) in self._select(
                "SELECT evaluation FROM evaluations WHERE pipeline = ? AND time >= ? ORDER BY time DESC, id DESC LIMIT ?",
                pipeline,
                since,
                limit,
            )
        ]

    def binding_changes(
        self, pipeline: str, since: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The newest `limit` binding changes of `pipeline` at or after `since`, oldest first."""
        from detector.timefmt import format_time

        return [
            {"time": format_time(t), "previous": prev, "binding": binding, "initial": bool(initial)}
            for (t, prev, binding, initial) in self._select(
                "SELECT time, previous, binding, initial FROM binding_changes WHERE pipeline = ? AND time >= ?"
                " ORDER BY time DESC, id DESC LIMIT ?",
                pipeline,
                since,
                limit,
            )
        ]

    def _select(self, sql: str, pipeline: str, since: float | None, limit: int) -> list[tuple[Any, ...]]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        lower = -math.inf if since is None else float(since)
        with self._lock:
            conn = self._require()
            try:
                rows = conn.execute(sql, (pipeline, lower, int(limit))).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read {self.path}: {exc}", _kind(exc)) from exc
        rows.reverse()
        return rows

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None


__all__ = ["DB_NAME", "MIGRATIONS", "SCHEMA_VERSION", "StateError", "StateStore"]
