"""factor tables: security keys, hardware tokens, recovery codes; login transaction state

Revision ID: 0002_factor_tables
Revises: 0001_core
Create Date: 2026-11-25 16:21:12.119045
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002_factor_tables"
down_revision: str | Sequence[str] | None = "0001_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webauthn_users",
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("user_handle", sa.LargeBinary(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("user_handle"),
    )
    op.create_table(
        "hardware_tokens",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("serial", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("algorithm", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("digits", sa.Integer(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.Integer(), nullable=True),
        sa.Column("suite", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("pin", sa.LargeBinary(), nullable=True),
        sa.Column("manufacturer", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("not_before", sa.BigInteger(), nullable=True),
        sa.Column("not_after", sa.BigInteger(), nullable=True),
        sa.Column("imported_at", sa.BigInteger(), nullable=False),
        sa.Column("factor_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("assigned_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["factor_id"], ["factors.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("factor_id"),
        sa.UniqueConstraint("serial"),
    )
    with op.batch_alter_table("hardware_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hardware_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "recovery_codes",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("factor_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["factor_id"], ["factors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("factor_id", "code_hash", name="uq_recovery_codes_hash"),
    )
    op.create_table(
        "webauthn_credentials",
        sa.Column("factor_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(length=1023), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("algorithm", sa.Integer(), nullable=False),
        sa.Column("aaguid", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("backup_eligible", sa.Boolean(), nullable=False),
        sa.Column("backed_up", sa.Boolean(), nullable=False),
        sa.Column("user_verified", sa.Boolean(), nullable=False),
        sa.Column(
            "attestation_format", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["factor_id"], ["factors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("factor_id"),
        sa.UniqueConstraint("credential_id"),
    )
    # Login transactions open while upgrading are password logins that asked no question yet:
    # the server defaults fill the new columns of those rows.
    with op.batch_alter_table("login_transactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "purpose",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="login",
            )
        )
        batch_op.add_column(
            sa.Column("family_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True)
        )
        batch_op.add_column(
            sa.Column("questions", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("login_transactions", schema=None) as batch_op:
        batch_op.drop_column("questions")
        batch_op.drop_column("family_id")
        batch_op.drop_column("purpose")

    op.drop_table("webauthn_credentials")
    op.drop_table("recovery_codes")
    with op.batch_alter_table("hardware_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hardware_tokens_user_id"))

    op.drop_table("hardware_tokens")
    op.drop_table("webauthn_users")
