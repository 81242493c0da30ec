"""SLA clocks: due and warning times per target, the pause, the next scan time;
the steps (warnings, breaches, escalations) each sent once

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = ("first_response_warn", "next_response_due", "next_response_warn", "resolution_due",
       "resolution_warn", "sla_paused_at", "sla_next_at", "last_customer_at")


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        for column in _TS:
            batch.add_column(sa.Column(column, sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_ticket_sla_next_at", ["sla_next_at"], unique=False)
    op.create_table(
        "sla_step",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.UniqueConstraint("ticket_id", "step", name="uq_sla_step"),
    )
    op.create_index("ix_sla_step_ticket_id", "sla_step", ["ticket_id"], unique=False)
    op.create_index("ix_sla_step_fired_at", "sla_step", ["fired_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sla_step_fired_at", table_name="sla_step")
    op.drop_index("ix_sla_step_ticket_id", table_name="sla_step")
    op.drop_table("sla_step")
    with op.batch_alter_table("ticket") as batch:
        batch.drop_index("ix_ticket_sla_next_at")
        for column in reversed(_TS):
            batch.drop_column(column)
