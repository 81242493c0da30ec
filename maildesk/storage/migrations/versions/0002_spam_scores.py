"""spam scores on messages

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("spam_probability", sa.Float(), nullable=True))
        batch.add_column(sa.Column("spam_band", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("spam_model", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_column("spam_model")
        batch.drop_column("spam_band")
        batch.drop_column("spam_probability")
