"""Alembic's environment: migrations run on the connection ``mfa.schema`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

from mfa import models  # noqa: F401  (the tables, for autogenerate)

# Any number for the advisory lock, the same in every instance of every release.
_MIGRATION_LOCK = 0x6D666101

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying the table
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Instances started together: one migrates, the others wait and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    context.run_migrations()
