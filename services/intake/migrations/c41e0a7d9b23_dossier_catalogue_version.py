"""dossier catalogue version

Revision ID: c41e0a7d9b23
Revises: 875c5abeaeeb
Created: 2026-12-03 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c41e0a7d9b23"
down_revision: str | None = "875c5abeaeeb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_dossier", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("catalogue_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("intake_dossier", schema=None) as batch_op:
        batch_op.drop_column("catalogue_version")
