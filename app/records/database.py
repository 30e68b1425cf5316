"""The database: the engine (SQLite tuned for several writers, or PostgreSQL), and its schema
brought up to date by Alembic, once, however many workers and replicas start at the same time."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Milliseconds a SQLite connection waits for another writer (another worker) before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5000
# Seconds to reach PostgreSQL: a stopped server must fail a write quickly, not hang a thread.
CONNECT_TIMEOUT_SECONDS = 3
# Any constant shared by every process of the service: the key of PostgreSQL's advisory lock.
MIGRATION_LOCK_KEY = 0x6D6E6973  # "mnis"
UPGRADE_HINT = "python -m app.records upgrade"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code writes (newer, or behind with migrations off)."""


def create_database_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created, and every connection gets WAL, a
    busy timeout and foreign keys (the feedback of a pruned answer goes with it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    # pre-ping: after the server restarts, the pool's dead connections are replaced, not used.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _tune_sqlite(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each commit's checkpoint in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_revision(revision: str | None, migrate: bool) -> None:
    """Refuses a schema newer than this code knows; one behind is refused only when it will not
    be migrated."""
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {script.revision for script in scripts.walk_revisions()}
    if revision is not None and revision not in known:
        raise SchemaError(
            f"the database's schema (revision {revision}) is newer than this code "
            f"(revision {scripts.get_current_head()}): run a release that knows it"
        )
    if not migrate and revision != scripts.get_current_head():
        raise SchemaError(
            f"the database's schema is at revision {revision or 'none'}, this code needs "
            f"{scripts.get_current_head()}: run `{UPGRADE_HINT}` (migrations at startup are off)"
        )


@contextlib.contextmanager
def _migration_lock(engine: Engine, connection: Connection) -> Iterator[None]:
    """One migrating process at a time: PostgreSQL's advisory lock, or a lock file beside a
    SQLite database (whose writers all share one machine)."""
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        return
    database = engine.url.database
    if backend != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_schema(engine: Engine, migrate: bool) -> None:
    """Upgrade the schema to this code's head (if `migrate`), under the lock, then check it: a
    second process finds it done and does nothing. SchemaError if it cannot serve this code."""
    with engine.connect() as connection, _migration_lock(engine, connection):
        check_revision(current_revision(connection), migrate)
        if migrate and current_revision(connection) != head_revision():
            log.info("upgrading the prediction log's schema to revision %s", head_revision())
            command.upgrade(alembic_config(connection), "head")
            connection.commit()
