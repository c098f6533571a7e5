"""The state store on a real PostgreSQL: the same behaviour as SQLite, faults, and no leaked password.

A throw-away cluster is created with Debian's ``initdb`` + ``pg_ctl`` in a temporary
directory (as the ``postgres`` user when the tests run as root: initdb refuses root),
listening on 127.0.0.1:<free port> with scram-sha-256 password authentication, and is
stopped and deleted afterwards. Every test gets its own database. A missing PostgreSQL
skips locally and fails under CI=true.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.service.state import (
    MIGRATIONS,
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION,
    StateError,
    StateStore,
    parse_state_url,
    redact_url,
)
from tests.conftest import free_port, in_ci, make_evaluation, make_result, start_csf_server

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")

T0 = 1_800_000_000.0
PASSWORD = "s3cr3t-Pg-pa55word"
"""Distinctive, so that grepping logs and responses for it is meaningful."""
USER = "csf"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]  # the newest installed major version
    path = shutil.which(name)
    if path is None:
        message = f"PostgreSQL {name!r} not found (Debian package: postgresql)"
        if in_ci():
            pytest.fail(f"{message}; required when CI=true")
        pytest.skip(message)
    return path


class PostgresServer:
    """A throw-away PostgreSQL cluster; `start()`/`stop()` may be repeated (same port and data)."""

    def __init__(self) -> None:
        self.initdb = _pg_bin("initdb")
        self.pg_ctl = _pg_bin("pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="csf-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.sockets.mkdir()
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = None
            if runuser is None or pw is None:
                message = "running as root needs the 'postgres' user and runuser to start PostgreSQL"
                if in_ci():
                    pytest.fail(message)
                pytest.skip(message)
            for p in (self.root, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self._run_as = [runuser, "-u", "postgres", "--"]
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._run_as:
            os.chown(pwfile, os.stat(self.root).st_uid, os.stat(self.root).st_gid)
        self._run(
            [
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],
            timeout=120,
        )
        pwfile.unlink()

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._run_as, *cmd], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            90,
        )

    def stop(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"], 90)

    def running(self) -> bool:
        result = subprocess.run(
            [*self._run_as, self.pg_ctl, "-D", str(self.data), "status"], capture_output=True, timeout=30
        )
        return result.returncode == 0

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def cleanup(self) -> None:
        if self.running():
            try:
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], 60)
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def db(pg: PostgresServer) -> str:
    """A fresh, empty database's URL."""
    return pg.url(pg.create_database())


def _sequence():
    bindings = [None, "latency", "latency", "protocol", "protocol", None]
    return [
        make_evaluation(T0 + 60 * i, binding=b, decision="invest" if b else "stop")
        for i, b in enumerate(bindings)
    ]


# --------------------------------------------------------------------------- same behaviour as SQLite


def test_round_trip_history_and_binding_changes_match_sqlite(db: str, tmp_path: Path) -> None:
    pg_store = StateStore(url=db)
    lite = StateStore(tmp_path)
    assert pg_store.available and pg_store.backend == "postgresql" and lite.backend == "sqlite"
    evaluations = _sequence()
    changed = [pg_store.record(ev) for ev in evaluations]
    assert changed == [False, True, False, True, False, True]
    assert changed == [lite.record(ev) for ev in evaluations]

    history = pg_store.history("default")
    assert history == [json.loads(json.dumps(ev.to_dict())) for ev in evaluations]
    assert [h["binding"] for h in pg_store.history("default", since=T0 + 180)] == [
        "protocol",
        "protocol",
        None,
    ]
    limited = pg_store.history("default", since=T0 + 60, limit=2)
    assert [h["time"] for h in limited] == [
        evaluations[4].to_dict()["time"],
        evaluations[5].to_dict()["time"],
    ]
    assert pg_store.history("other") == []
    changes = pg_store.binding_changes("default")
    assert [(c["previous"], c["binding"], c["initial"]) for c in changes] == [
        (None, None, True),
        (None, "latency", False),
        ("latency", "protocol", False),
        ("protocol", None, False),
    ]
    # identical answers from both backends, query by query
    for since in (None, T0, T0 + 61, T0 + 300, T0 + 301):
        for limit in (1, 3, 1000):
            assert pg_store.history("default", since, limit) == lite.history("default", since, limit)
            assert pg_store.binding_changes("default", since, limit) == lite.binding_changes(
                "default", since, limit
            )
    pg_store.close()
    lite.close()

    # a reopened store (a restarted process) continues from the stored binding: no spurious change
    again = StateStore(url=db)
    assert again.record(make_evaluation(T0 + 600, binding=None)) is False
    assert again.record(make_evaluation(T0 + 660, binding="supply")) is True
    assert len(again.history("default")) == len(evaluations) + 2
    assert [c["binding"] for c in again.binding_changes("default")][-1] == "supply"
    assert len(again.binding_changes("default")) == 5
    again.close()


def test_times_keep_double_precision_and_nan_is_null(db: str) -> None:
    store = StateStore(url=db)
    t = T0 + 0.123456  # a 4-byte REAL would round this to whole minutes at this magnitude
    bad = make_result("latency", target=math.nan, guards=(("floor", math.inf),))
    store.record(make_evaluation(t, binding="latency", constraints=[bad]))
    (row,) = store.history("default")
    assert row["constraints"][0]["target"] is None
    assert row["constraints"][0]["guards"] == {"floor": None}
    with psycopg.connect(db) as conn:
        stored = conn.execute("SELECT time FROM evaluations").fetchone()[0]
    assert stored == t
    assert [h["time"] for h in store.history("default", since=t)] == [row["time"]]
    assert store.history("default", since=t + 0.001) == []
    store.close()


def test_schema_version_tables_and_columns_match_sqlite(db: str, tmp_path: Path) -> None:
    assert len(POSTGRES_MIGRATIONS) == len(MIGRATIONS) == SCHEMA_VERSION
    store = StateStore(url=db)
    assert store.schema_version() == SCHEMA_VERSION == 1
    assert store.journal_mode() == "postgresql"
    store.close()
    lite = StateStore(tmp_path)
    lite.close()

    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        pg_columns = {}
        for table, column, nullable, dtype in conn.execute(
            "SELECT table_name, column_name, is_nullable, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ):
            pg_columns.setdefault(table, []).append((column, nullable == "NO", dtype))
        pg_indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
    with sqlite3.connect(tmp_path / "csf.db") as lconn:
        lite_columns = {}
        for (table,) in lconn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            lite_columns[table] = [
                (name, bool(notnull) or bool(pk), ctype)
                for _, name, ctype, notnull, _, pk in lconn.execute(f"PRAGMA table_info({table})")
            ]
        lite_indexes = {
            r[0]
            for r in lconn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }
    lconn.close()
    assert set(pg_columns) == set(lite_columns) == {"schema_version", "evaluations", "binding_changes"}
    for table in lite_columns:
        assert [(c, nn) for c, nn, _ in pg_columns[table]] == [(c, nn) for c, nn, _ in lite_columns[table]], (
            table
        )
    # every 8-byte float column in SQLite (REAL) is an 8-byte float in PostgreSQL
    type_map = {"INTEGER": {"integer", "bigint"}, "REAL": {"double precision"}, "TEXT": {"text"}}
    for table, cols in lite_columns.items():
        for (name, _, ltype), (_, _, ptype) in zip(cols, pg_columns[table], strict=True):
            assert ptype in type_map[ltype], (table, name, ltype, ptype)
    assert {"evaluations_pipeline_time", "binding_changes_pipeline_time"} <= pg_indexes & lite_indexes

    # reopening does not re-apply the migrations
    again = StateStore(url=db)
    assert again.schema_version() == 1
    again.close()
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def test_concurrent_first_starts_migrate_once(db: str) -> None:
    stores: list[StateStore] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait(timeout=30)
        stores.append(StateStore(url=db))

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(stores) == 4
    assert all(s.available and s.open_error is None for s in stores), [str(s.open_error) for s in stores]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    for s in stores:
        s.close()


def test_newer_schema_is_refused(db: str) -> None:
    StateStore(url=db).close()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    store = StateStore(url=db)
    assert not store.available
    assert store.open_error is not None and store.open_error.kind == "schema_version"
    assert "newer than this csf" in str(store.open_error)
    with pytest.raises(StateError):
        store.record(make_evaluation(T0))
    store.close()


def test_concurrent_reads_during_writes(db: str) -> None:
    store = StateStore(url=db)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                assert len(store.history("default", limit=5)) <= 5
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        store.record(make_evaluation(T0 + i, binding="latency" if i % 2 else None))
    thread.join(timeout=60)
    assert not errors
    assert len(store.history("default", limit=10000)) == 60
    assert len(store.binding_changes("default", limit=10000)) == 60  # initial + 59 alternations
    store.close()


# --------------------------------------------------------------------------- faults and secrets


def test_server_down_then_back_reconnects_without_losing_rows(pg: PostgresServer, db: str) -> None:
    store = StateStore(url=db)
    assert store.record(make_evaluation(T0, binding="latency")) is False
    pg.stop()
    try:
        with pytest.raises(StateError) as info:
            store.record(make_evaluation(T0 + 60, binding="latency"))
        assert info.value.kind in ("OperationalError", "AdminShutdown", "InterfaceError")
        assert PASSWORD not in str(info.value)
        with pytest.raises(StateError) as again:
            store.history("default")  # the next call tries to reconnect and says why it cannot
        assert PASSWORD not in str(again.value) and "***" in str(again.value)
        assert not store.available
    finally:
        pg.start()
    # back: reconnects on the next call, the committed row is there, the failed one is not
    assert store.record(make_evaluation(T0 + 120, binding="protocol")) is True
    assert [h["binding"] for h in store.history("default")] == ["latency", "protocol"]
    assert [(c["previous"], c["binding"]) for c in store.binding_changes("default")] == [
        (None, "latency"),
        ("latency", "protocol"),
    ]
    store.close()


def test_wrong_password_and_unreachable_server_never_show_the_password(pg: PostgresServer) -> None:
    wrong = "Wr0ng-pa55word-xyz"
    store = StateStore(url=pg.url(password=wrong))
    assert not store.available and store.open_error is not None
    assert wrong not in str(store.open_error) and wrong not in repr(store)
    assert store.open_error.kind == "OperationalError"
    closed = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    down = StateStore(url=closed)
    assert not down.available and down.open_error is not None
    assert PASSWORD not in str(down.open_error) and PASSWORD not in repr(down)
    assert down.display == redact_url(closed) and "***" in down.display


def test_state_urls_parse_and_redact(tmp_path: Path) -> None:
    loc = parse_state_url("sqlite:///rel/csf.db", base=tmp_path)
    assert loc.backend == "sqlite" and loc.path == tmp_path / "rel" / "csf.db"
    assert parse_state_url("sqlite:////var/lib/csf/csf.db").path == Path("/var/lib/csf/csf.db")
    pgloc = parse_state_url("postgres://u:p%40ss@db.example:5433/csf?sslmode=require")
    assert pgloc.backend == "postgresql"
    assert pgloc.display == "postgres://u:***@db.example:5433/csf?sslmode=require"
    assert set(pgloc.secrets) == {"p%40ss", "p@ss"}
    assert "p%40ss" not in repr(pgloc)
    for bad in (
        "mysql://u@h/db",
        "sqlite://relative.db",
        "sqlite:///:memory:",
        "",
        "postgresql://u:pw@h:99999/db",
    ):
        with pytest.raises(ValueError) as info:
            parse_state_url(bad)
        assert ":pw@" not in str(info.value)


@pytest.mark.slow
def test_csf_serve_records_to_postgres_and_never_shows_the_password(
    pg: PostgresServer, db: str, tmp_path: Path
) -> None:
    from tests.integration.test_faults import fast_config

    config = fast_config(tmp_path)
    server = start_csf_server(tmp_path, "--config", str(config), env={"CSF_STATE_URL": db})
    try:
        server.wait_ready()

        def stored() -> int:
            with psycopg.connect(db) as conn:
                return int(
                    conn.execute("SELECT COUNT(*) FROM evaluations WHERE pipeline = 'default'").fetchone()[0]
                )

        from tests._procs import wait_until

        wait_until(lambda: stored() >= 2, 30, 0.2, "two evaluations stored in PostgreSQL")
        history = server.get("/api/v1/history")
        assert history.status_code == 200
        body = history.json()
        assert body["count"] >= 2 and body["binding_changes"][0]["initial"] is True
        assert not (server.data_dir / "csf.db").exists()  # nothing went to SQLite
        outputs = [
            history.text,
            server.get("/api/v1/status").text,
            server.get("/api/v1/pipelines").text,
            server.get("/metrics").text,
            server.get("/").text,
            server.get("/openapi.json").text,
        ]
    finally:
        server.stop()
    log = server.log()
    assert "state=" in log and ":***@127.0.0.1" in log  # where the state lives is logged, redacted
    for text in [log, *outputs]:
        assert PASSWORD not in text


def test_state_url_in_the_config_file(tmp_path: Path) -> None:
    from detector.service.config import ConfigError, load_config

    cfg = tmp_path / "csf.yaml"
    cfg.write_text("state:\n  url: sqlite:///var/csf.db\n")
    assert load_config(cfg, {}).state_url == f"sqlite:///{tmp_path / 'var' / 'csf.db'}"
    cfg.write_text(f"state:\n  url: postgresql://csf:{PASSWORD}@db/csf\n")
    assert load_config(cfg, {}).state_url == f"postgresql://csf:{PASSWORD}@db/csf"
    # the environment wins over the file
    env_url = f"sqlite:///{tmp_path / 'env.db'}"
    assert load_config(cfg, {"CSF_STATE_URL": env_url}).state_url == env_url
    for text, message in (
        ("state: {}\n", "csf.yaml:1:8: state.url: missing"),
        (
            f"state:\n  url: mysql://csf:{PASSWORD}@db/csf\n",
            "csf.yaml:2:8: state.url: unsupported state URL scheme",
        ),
        ("state:\n  url: x\n  pool: 3\n", "csf.yaml:3:3: state.pool: unknown key"),
    ):
        cfg.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(cfg, {})
        assert message in str(info.value) and PASSWORD not in str(info.value)
