"""signing keys: the moment a key starts signing, so that a rotation can publish its key first

Revision ID: 0003_key_signs_from
Revises: 0002_factor_tables
Create Date: 2026-11-28 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_key_signs_from"
down_revision: str | Sequence[str] | None = "0002_factor_tables"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: NULL says a key signs at once, as every key made before this revision did.
    # The previous release never reads the column, so it keeps working during a roll-over.
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signs_from", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("signs_from")
