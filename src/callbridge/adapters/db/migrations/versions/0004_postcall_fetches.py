"""post-call reconciliation: the attempts at fetching each conversation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "postcall_fetches",
        sa.Column("conversation_id", sa.String(length=200), nullable=False),
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    with op.batch_alter_table("postcall_fetches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_postcall_fetches_call_id"), ["call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("postcall_fetches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_postcall_fetches_call_id"))
    op.drop_table("postcall_fetches")
