"""post-call webhooks: one row per ElevenLabs conversation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "postcall_webhooks",
        sa.Column("conversation_id", sa.String(length=200), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("call_id", sa.String(length=40), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    with op.batch_alter_table("postcall_webhooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_postcall_webhooks_call_id"), ["call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("postcall_webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_postcall_webhooks_call_id"))
    op.drop_table("postcall_webhooks")
