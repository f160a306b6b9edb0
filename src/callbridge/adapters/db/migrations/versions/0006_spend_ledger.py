"""spend ledger: each call's reserved, estimated and actual spend

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:30:00

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend_ledger",
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("country_code", sa.String(length=4), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("estimated_micros", sa.BigInteger(), nullable=True),
        sa.Column("actual_micros", sa.BigInteger(), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id"),
    )
    with op.batch_alter_table("spend_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spend_ledger_day"), ["day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spend_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spend_ledger_day"))
    op.drop_table("spend_ledger")
