"""Durable service state: every evaluation and every binding change, in SQLite or PostgreSQL.

Where the state lives is a URL (``state.url`` in the config file, ``CSF_STATE_URL``):

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the SQLAlchemy
  convention: what follows ``sqlite:///`` is the path). Without a URL the database is
  ``<data_dir>/csf.db``. SQLite runs in WAL mode, so the API can read history while
  the scheduler writes, and a process killed mid-write loses at most the write in
  flight (a committed row survives a ``kill -9``).
* ``postgresql://user:password@host:port/dbname?sslmode=...`` (also ``postgres://``),
  any libpq connection URI, through psycopg 3 (``pip install 'psycopg[binary]'``).
  The password is never logged nor put in an error message: `StateLocation.display`
  is the URL without it.

Both backends hold the same schema. It is versioned: `MIGRATIONS` (SQLite) and
`POSTGRES_MIGRATIONS` are ordered lists of the same length, migration *i* brings the
database to version *i + 1*, and each applied version is a row of ``schema_version``.
On PostgreSQL the migrations run in one transaction under an advisory lock, so two
instances starting together migrate once. A database written by a newer csf is
refused, not guessed at. One process writes a given pipeline's rows (the binding-change
bookkeeping assumes it); any number may read.

Failures never escape as raw driver/OS exceptions: they become `StateError` with a
stable `kind` (e.g. ``SQLITE_FULL``, ``SQLITE_BUSY``, ``NotADirectoryError``,
``OperationalError``) so that the runner can count them and log each kind once. An
unavailable database (unwritable directory, PostgreSQL down) does not stop the
service: the store keeps trying to (re)open it on every call.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from detector.errors import CsfError
from detector.evidence.results import Evaluation
from detector.timefmt import format_time

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
"""SQLite migrations (version i+1 = MIGRATIONS[i])."""

POSTGRES_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1: the same tables, columns and indexes as SQLite's version 1
    # (REAL in SQLite is an 8-byte float: DOUBLE PRECISION here, not PostgreSQL's 4-byte REAL)
    (
        """CREATE TABLE evaluations (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            pipeline TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            binding TEXT,
            decision TEXT NOT NULL,
            evaluation TEXT NOT NULL
        )""",
        "CREATE INDEX evaluations_pipeline_time ON evaluations (pipeline, time)",
        """CREATE TABLE binding_changes (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            pipeline TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            previous TEXT,
            binding TEXT,
            initial INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX binding_changes_pipeline_time ON binding_changes (pipeline, time)",
    ),
)
"""PostgreSQL migrations, version for version the same schema as `MIGRATIONS`."""

SCHEMA_VERSION = len(MIGRATIONS)

_PG_MIGRATION_LOCK = 0x637366_5354  # "csf" "ST": pg_advisory_xact_lock key for migrations
_PG_SCHEMES = ("postgresql", "postgres")

Backend = Literal["sqlite", "postgresql"]


class StateError(CsfError):
    """The state database could not be opened, written or read."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        """A stable failure type (sqlite error name or exception class) for counting/logging."""


@dataclass(frozen=True)
class StateLocation:
    """Where the state lives. `display` is safe to log; `url` may hold a password."""

    backend: Backend
    display: str
    path: Path | None = None
    """The SQLite database file (None for PostgreSQL)."""
    url: str | None = None
    """The PostgreSQL connection URI, password included (None for SQLite)."""

    def __repr__(self) -> str:
        return f"StateLocation(backend={self.backend!r}, display={self.display!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message (the password, raw and URL-decoded)."""
        if self.url is None:
            return ()
        password = urlsplit(self.url).password
        if not password:
            return ()
        return tuple({password, unquote(password)})


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (user, host, port, path and query kept)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{userinfo}:***@{netloc[1]}", parts.path, parts.query, parts.fragment))


def parse_state_url(url: str, base: Path | None = None) -> StateLocation:
    """A `StateLocation` from ``sqlite:///path`` or ``postgresql://...``; ValueError otherwise.

    A relative SQLite path resolves against `base` (the config file's directory) when given.
    Error messages never contain the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("must be a non-empty URL (sqlite:///path or postgresql://...)")
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ValueError(
                f"invalid SQLite URL {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        raw = url[len("sqlite:///") :]
        if raw in (":memory:",) or "?" in raw:
            raise ValueError(f"invalid SQLite URL {url!r}: a file path is required (no :memory:, no options)")
        path = Path(unquote(raw)).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return StateLocation("sqlite", f"sqlite:///{path}", path=path)
    if scheme in _PG_SCHEMES:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"invalid PostgreSQL URL {redact_url_safely(url)!r}") from None
        return StateLocation("postgresql", redact_url(url), url=url)
    raise ValueError(
        f"unsupported state URL scheme {scheme or '(none)'!r}: use sqlite:///path or postgresql://user@host/db"
    )


def redact_url_safely(url: str) -> str:
    """Like `redact_url`, but never raises (for URLs that do not even parse)."""
    try:
        return redact_url(url)
    except ValueError:
        at = url.rfind("@")
        return url.split("://", 1)[0] + "://***" + (url[at:] if at >= 0 else "")


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
    """Evaluations and binding changes of every pipeline. Thread-safe; never raises on construction.

    ``StateStore(data_dir)`` keeps SQLite at ``<data_dir>/csf.db``; ``StateStore(url=...)``
    takes a state URL (see the module docstring) and ignores `data_dir`.
    """

    def __init__(
        self, data_dir: str | Path | None = None, *, url: str | None = None, busy_timeout: float = 5.0
    ) -> None:
        if url is not None:
            self.location = parse_state_url(url)  # ValueError: a programming error, config validates
        elif data_dir is not None:
            path = Path(data_dir) / DB_NAME
            self.location = StateLocation("sqlite", f"sqlite:///{path}", path=path)
        else:
            raise ValueError("StateStore needs a data_dir or a url")
        self.backend: Backend = self.location.backend
        self.path: Path | None = self.location.path
        """The SQLite file (None on PostgreSQL)."""
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._last_binding: dict[str, str | None] = {}
        self.open_error: StateError | None = None
        """Why the database is unavailable (None when open)."""
        try:
            with self._lock:
                self._connect()
        except StateError as exc:
            self.open_error = exc

    def __repr__(self) -> str:
        return f"StateStore({self.location.display!r})"

    # ------------------------------------------------------------------ connection

    @property
    def available(self) -> bool:
        return self._conn is not None

    @property
    def display(self) -> str:
        """Where the state lives, safe to log (no password)."""
        return self.location.display

    def _scrub(self, text: str) -> str:
        for secret in self.location.secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, what: str, exc: BaseException) -> StateError:
        return StateError(self._scrub(f"{what}: {exc}".strip()), _kind(exc))

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.backend == "sqlite":
            return (sqlite3.Error, OSError)
        import psycopg  # optional dependency (the postgres extra): imported only for a postgresql:// URL

        return (psycopg.Error, OSError)

    def _connect(self) -> Any:
        """Open and migrate the database (caller holds the lock)."""
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise StateError(f"state database {self.display} is closed", "closed")
        if self.path is not None:
            conn = self._connect_sqlite(self.path)
        else:
            conn = self._connect_postgres()
        self._conn = conn
        self.open_error = None
        return conn

    def _connect_sqlite(self, path: Path) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(
                    f"state database {path}: cannot enable WAL mode (got {mode})", "journal_mode"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate_sqlite(conn)
        except StateError:
            if conn is not None:
                conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise StateError(f"state database {path} unavailable: {exc}", _kind(exc)) from exc
        return conn

    def _connect_postgres(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise StateError(
                f"state database {self.display}: PostgreSQL needs the psycopg package "
                "(pip install 'psycopg[binary]')",
                "missing_driver",
            ) from None
        conn: Any = None
        try:
            conn = psycopg.connect(
                self.location.url or "",
                autocommit=True,
                connect_timeout=max(1, math.ceil(self._busy_timeout)),
                application_name="csf",
            )
            self._migrate_postgres(conn)
        except StateError:
            if conn is not None:
                conn.close()
            raise
        except (psycopg.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise self._error(f"state database {self.display} unavailable", exc) from None
        return conn

    def _migrate_sqlite(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        self._check_version(current)
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

    def _migrate_postgres(self, conn: Any) -> None:
        if len(POSTGRES_MIGRATIONS) != SCHEMA_VERSION:  # pragma: no cover - guarded by a test
            raise StateError("PostgreSQL and SQLite migrations differ in number", "schema_version")
        with conn.transaction():
            # Serialise concurrent starts: the second waits here, then finds the schema current.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            self._check_version(current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in POSTGRES_MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (version, time.time())
                )

    def _check_version(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise StateError(
                f"state database {self.display} has schema version {current}, newer than this csf ({SCHEMA_VERSION})",
                "schema_version",
            )

    def _sql(self, sql: str) -> str:
        """Our statements use ``?`` placeholders; psycopg wants ``%s``."""
        return sql if self.backend == "sqlite" else sql.replace("?", "%s")

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(sql), tuple(params))

    @contextmanager
    def _transaction(self, conn: Any) -> Iterator[None]:
        """One write transaction (SQLite: BEGIN IMMEDIATE takes the write lock up front)."""
        if self.backend != "sqlite":
            with conn.transaction():
                yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _drop_if_broken(self) -> None:
        """Forget a PostgreSQL connection that was lost, so the next call reconnects (lock held)."""
        conn = self._conn
        if conn is None or self.backend == "sqlite":
            return
        if getattr(conn, "broken", False) or getattr(conn, "closed", False):
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is already unusable
                pass
            self._conn = None

    def schema_version(self) -> int:
        with self._lock:
            conn = self._require()
            try:
                return int(
                    self._execute(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                )
            except self._errors() as exc:
                self._drop_if_broken()
                raise self._error(f"cannot read {self.display}", exc) from None

    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``); PostgreSQL always answers ``postgresql``."""
        with self._lock:
            conn = self._require()
            if self.backend != "sqlite":
                return "postgresql"
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def _require(self) -> Any:
        try:
            return self._connect()
        except StateError as exc:
            self.open_error = exc
            raise

    # ------------------------------------------------------------------ writes

    def record(self, evaluation: Evaluation) -> bool:
        """Store one evaluation; returns True when it changed the pipeline's stored binding constraint.

        The first evaluation ever stored for a pipeline is recorded as an initial change
        (row with ``initial`` set) but returns False. The previous binding is the one of
        the newest stored evaluation, so a restarted process that reaches the same answer
        records no change.
        Raises StateError (with a `kind`) on any database or disk failure.
        """
        payload = json.dumps(_json_safe(evaluation.to_dict()), allow_nan=False, separators=(",", ":"))
        with self._lock:
            conn = self._require()
            try:
                if evaluation.pipeline not in self._last_binding:
                    row = self._execute(
                        conn,
                        "SELECT binding FROM evaluations WHERE pipeline = ? ORDER BY time DESC, id DESC LIMIT 1",
                        (evaluation.pipeline,),
                    ).fetchone()
                    initial = row is None
                    previous = None if row is None else row[0]
                else:
                    initial = False
                    previous = self._last_binding[evaluation.pipeline]
                changed = initial or previous != evaluation.binding
                with self._transaction(conn):
                    self._execute(
                        conn,
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
                        self._execute(
                            conn,
                            "INSERT INTO binding_changes (pipeline, time, previous, binding, initial) VALUES (?, ?, ?, ?, ?)",
                            (
                                evaluation.pipeline,
                                evaluation.time,
                                previous,
                                evaluation.binding,
                                int(initial),
                            ),
                        )
            except self._errors() as exc:
                self._drop_if_broken()
                raise self._error(f"cannot write evaluation to {self.display}", exc) from exc
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
                rows = [tuple(r) for r in self._execute(conn, sql, (pipeline, lower, int(limit))).fetchall()]
            except self._errors() as exc:
                self._drop_if_broken()
                raise self._error(f"cannot read {self.display}", exc) from exc
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


__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "POSTGRES_MIGRATIONS",
    "SCHEMA_VERSION",
    "StateError",
    "StateLocation",
    "StateStore",
    "parse_state_url",
    "redact_url",
]
