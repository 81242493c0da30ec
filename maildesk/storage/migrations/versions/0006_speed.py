"""speed: indexes that keep the per-mail facts bounded lookups as the database grows

The auto-reply cap and the notification caps count an hour of one recipient's mail of
one kind (outbox rcpt, kind, created_at); the storm guard counts a sender's tickets of
the last hour (ticket requester, created_at) and looks for the same body within the
hour (message from_addr, body_hash, created_at); least_open counts the open tickets of
a group's members (ticket assignee, status: read from the index alone).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_rcpt", table_name="outbox")
    op.create_index("ix_outbox_rcpt_kind", "outbox", ["rcpt", "kind", "created_at"])
    op.drop_index("ix_ticket_requester", table_name="ticket")
    op.create_index("ix_ticket_requester_created", "ticket", ["requester", "created_at"])
    op.drop_index("ix_ticket_assignee", table_name="ticket")
    op.create_index("ix_ticket_assignee_status", "ticket", ["assignee", "status"])
    op.drop_index("ix_message_sender_body", table_name="message")
    op.create_index(
        "ix_message_sender_body", "message", ["from_addr", "body_hash", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_message_sender_body", table_name="message")
    op.create_index("ix_message_sender_body", "message", ["from_addr", "body_hash"])
    op.drop_index("ix_ticket_assignee_status", table_name="ticket")
    op.create_index("ix_ticket_assignee", "ticket", ["assignee"])
    op.drop_index("ix_ticket_requester_created", table_name="ticket")
    op.create_index("ix_ticket_requester", "ticket", ["requester"])
    op.drop_index("ix_outbox_rcpt_kind", table_name="outbox")
    op.create_index("ix_outbox_rcpt", "outbox", ["rcpt", "created_at"])
