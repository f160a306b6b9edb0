"""calls: scheduled_for, retry_on_no_answer, retry_of, attempt (call me later, issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 19:00:00

Numbered after its issue so that it collides with no other branch in flight; whoever
merges chains ``down_revision`` so that there is one head.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("retry_on_no_answer", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("retry_of", sa.String(40), nullable=True))
        batch.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
    # The scheduler's one query: due calls, oldest first.
    op.create_index("ix_calls_status_scheduled", "calls", ["status", "scheduled_for"])
    op.create_index("ix_calls_retry_of", "calls", ["retry_of"])


def downgrade() -> None:
    op.drop_index("ix_calls_retry_of", table_name="calls")
    op.drop_index("ix_calls_status_scheduled", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("attempt")
        batch.drop_column("retry_of")
        batch.drop_column("retry_on_no_answer")
        batch.drop_column("scheduled_for")
