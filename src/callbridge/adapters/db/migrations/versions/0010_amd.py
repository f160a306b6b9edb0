"""answering machine detection: how long Twilio took, and whether a message was left

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amd_duration_ms", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("message_left", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("message_left")
        batch_op.drop_column("amd_duration_ms")
