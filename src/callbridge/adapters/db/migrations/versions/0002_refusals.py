"""policy refusals

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("number_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("policy_refusals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_policy_refusals_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_policy_refusals_number_hash"), ["number_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("policy_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_refusals_number_hash"))
        batch_op.drop_index(batch_op.f("ix_policy_refusals_at"))
    op.drop_table("policy_refusals")
