"""Database engine, sessions, and schema version checks (SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool, QueuePool
from sqlmodel import create_engine

from maildesk.errors import ConfigError, SchemaBehind

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine with durable settings: SQLite WAL + synchronous=FULL + busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        private = bool(path) and path != ":memory:"
        if private:
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Connections are pooled: the PRAGMAs below run once per connection, not once per
        # transaction. Overflow is unbounded (a thread never waits for a free connection
        # while holding one); the extra ones are closed when handed back.
        pool: dict[str, Any] = (
            {"poolclass": QueuePool, "pool_size": 5, "max_overflow": -1}
            if private
            else {"poolclass": NullPool}
        )
        # 32 prepared statements kept per connection (the sqlite3 default is 128): a
        # list of ids renders one statement per length, and 128 of those per pooled
        # connection grew the pipeline's process by ~15 MiB over its first 40,000 mails.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60, "cached_statements": 32},
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            if private:  # every mail is in here: the service user's only (WAL files follow)
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
            # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions are off).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the lock up front (IMMEDIATE), so two never deadlock; readers
            # (read_only engines) do not take it at all: in WAL mode they never wait.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("postgresql"):
        raise ConfigError(f"MAILDESK_DATABASE_URL: unsupported database {url.split(':')[0]!r}")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


READ_ONLY = "maildesk_read_only"


def read_only(engine: Engine) -> Engine:
    """The same engine for transactions that only read (no SQLite write lock)."""
    return engine.execution_options(**{READ_ONLY: True})


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def _alembic_config(engine: Engine | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise ConfigError(
            f"database unreachable: {str(exc.orig).strip().splitlines()[0]}"
        ) from None


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Apply the migrations up to `target` (all by default); returns (before, after)."""
    before = current_revision(engine)
    command.upgrade(_alembic_config(engine), target)
    return before, current_revision(engine)


def require_current_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "empty" if current is None else f"at {current}"
        raise SchemaBehind(
            f"database schema is {state}, code needs {head}: run `maildesk db upgrade`"
        )
