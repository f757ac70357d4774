"""contact catalogue version

Revision ID: e5a3b19c0f47
Revises: 6af34931d4a0
Created: 2026-12-03 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a3b19c0f47"
down_revision: str | None = "6af34931d4a0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notify_contact", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("catalogue_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("notify_contact", schema=None) as batch_op:
        batch_op.drop_column("catalogue_version")
