"""consent previews sealed

Consent rows kept the registry preview (personal IDs of the citizen and their household)
in clear. From here they keep it encrypted (services/identity/sealing.py). A migration
cannot encrypt (the key lives in the service's environment), so the clear copies are
erased: consents not yet used must be previewed again (they live minutes), used ones keep
their state and dossier without the data.

Revision ID: 5daf866009d4
Revises: a3160c6285cf
Created: 2026-12-02 15:17:31.224759
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5daf866009d4"
down_revision: str | None = "a3160c6285cf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identity_consent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("residence_sealed", sa.Text(), nullable=True))
        batch_op.drop_column("residence")


def downgrade() -> None:
    # Sealed previews cannot be turned back into clear ones here: the rows go.
    op.execute("DELETE FROM identity_consent")
    with op.batch_alter_table("identity_consent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("residence", sa.JSON(), nullable=False))
        batch_op.drop_column("residence_sealed")
