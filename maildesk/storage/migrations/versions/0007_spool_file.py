"""spool file: the inbound row remembers the spool record it was replayed from

The intake spool is an append-only file replayed into `inbound`; a unique spool key
per record makes the replay idempotent (INSERT ... ON CONFLICT DO NOTHING), so a
segment replayed again after a crash stores nothing twice. Rows from before have none
(NULL: the unique index allows any number).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN (no batch copy of the table and its raw mail on SQLite)
    op.add_column(
        "inbound",
        sa.Column("spool_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    )
    op.create_index("ux_inbound_spool_key", "inbound", ["spool_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_inbound_spool_key", table_name="inbound")
    with op.batch_alter_table("inbound") as batch:
        batch.drop_column("spool_key")
