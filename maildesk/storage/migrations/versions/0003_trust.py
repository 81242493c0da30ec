"""trust and threading: outbox recipients as a list, per-recipient caps, identity,
body hash, linked tickets, first response, pending date, time spent

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("rcpt", sa.String(length=500), nullable=False, server_default="")
        )
        batch.create_index("ix_outbox_rcpt", ["rcpt", "created_at"], unique=False)
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("identity", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("identity_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("body_hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_message_sender_body", ["from_addr", "body_hash"], unique=False)
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("linked_to", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pending_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("time_spent_minutes", sa.Integer(), nullable=False, server_default="0")
        )
        batch.create_index("ix_ticket_linked_to", ["linked_to"], unique=False)
    # Comma-joined recipients become JSON arrays (split as the sender used to split them).
    conn = op.get_bind()
    outbox = sa.table("outbox", sa.column("id"), sa.column("recipients"), sa.column("rcpt"))
    for row_id, joined in conn.execute(sa.select(outbox.c.id, outbox.c.recipients)).all():
        listed = [a for a in str(joined).split(",") if a]
        conn.execute(
            outbox.update()
            .where(outbox.c.id == row_id)
            .values(recipients=json.dumps(listed), rcpt=listed[0] if listed else "")
        )


def downgrade() -> None:
    conn = op.get_bind()
    outbox = sa.table("outbox", sa.column("id"), sa.column("recipients"))
    for row_id, listed in conn.execute(sa.select(outbox.c.id, outbox.c.recipients)).all():
        conn.execute(
            outbox.update()
            .where(outbox.c.id == row_id)
            .values(recipients=",".join(json.loads(listed)))
        )
    with op.batch_alter_table("ticket") as batch:
        batch.drop_index("ix_ticket_linked_to")
        batch.drop_column("linked_to")
        batch.drop_column("first_response_at")
        batch.drop_column("pending_until")
        batch.drop_column("time_spent_minutes")
    with op.batch_alter_table("message") as batch:
        batch.drop_index("ix_message_sender_body")
        batch.drop_column("body_hash")
        batch.drop_column("identity_reason")
        batch.drop_column("identity")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_rcpt")
        batch.drop_column("rcpt")
