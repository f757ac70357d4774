"""catalogue snapshots

Revision ID: 9f2d6c81a4e0
Revises: 24b2f8971449
Created: 2026-12-03 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9f2d6c81a4e0"
down_revision: str | None = "24b2f8971449"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_catalogue_snapshot",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    with op.batch_alter_table("routing_dossier", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("catalogue_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("routing_dossier", schema=None) as batch_op:
        batch_op.drop_column("catalogue_version")
    op.drop_table("routing_catalogue_snapshot")
