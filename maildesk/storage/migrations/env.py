"""Alembic environment: the engine comes from maildesk (config.attributes['engine'])."""

from alembic import context
from sqlmodel import SQLModel

import maildesk.storage.models  # noqa: F401  (registers the tables)

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
