"""Migrations on existing data, on SQLite and the PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlmodel import Session, select

from maildesk.storage.db import make_engine, upgrade
from maildesk.storage.models import Outbox


def test_0003_turns_joined_recipients_into_lists(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0002")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "insert into outbox (kind, automatic, mail_from, recipients, message_id, raw,"
                    " status, attempts, next_attempt_at, created_at) values ('notification',"
                    " true, 'support@localhost', :r, 'm1@localhost', :raw, 'queued', 0, :t, :t)"
                ),
                {"r": "alice@example.com,bob@example.com", "raw": b"x", "t": now},
            )
        upgrade(engine)
        with Session(engine) as session:
            row = session.exec(select(Outbox)).one()
        assert row.recipients == ["alice@example.com", "bob@example.com"]
        assert row.rcpt == "alice@example.com"
    finally:
        engine.dispose()


def test_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    """A column added to a model without a migration (or the reverse) fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import maildesk.storage.models  # noqa: F401  (registers the tables)

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == []
    finally:
        engine.dispose()
