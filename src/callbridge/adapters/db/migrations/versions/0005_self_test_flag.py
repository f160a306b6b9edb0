"""calls.is_test: a call placed by `callbridge call --self-test`

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:30:00

Numbered 0007 because other branches in flight add 0005 and 0006; whoever merges them
chains ``down_revision`` so that there is one head.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("is_test")
