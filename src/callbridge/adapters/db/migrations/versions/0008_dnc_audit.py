"""do_not_call_audit: who added or removed a number on the do-not-call list, and when

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:00:00

Numbered after its issue (16) so that it collides with no other branch's number; whoever
merges chains ``down_revision`` so that there is one head.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "do_not_call_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("masked", sa.String(length=24), nullable=False),
        sa.Column("number_hash", sa.String(length=64), nullable=False),
        sa.Column("by", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("do_not_call_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_do_not_call_audit_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_do_not_call_audit_number_hash"), ["number_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("do_not_call_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_do_not_call_audit_number_hash"))
        batch_op.drop_index(batch_op.f("ix_do_not_call_audit_at"))
    op.drop_table("do_not_call_audit")
