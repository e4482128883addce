"""Migrations: empty to head on both databases, the same schema as the models, and a service
that refuses an old schema until it is upgraded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from mfa import schema
from mfa.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path: Path):
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    else:
        url = request.getfixturevalue("pg_database")
        db = Database(url)
        with db.engine.begin() as conn:
            # Start from nothing: drop whatever other tests created.
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    yield db
    db.dispose()


def test_migrations_build_the_schema_of_the_models(empty_db):
    schema.upgrade(empty_db)
    assert schema.current(empty_db) == schema.head()
    with empty_db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


def test_an_empty_database_is_created_at_head(empty_db):
    schema.ensure(empty_db, upgrade_if_behind=False)
    assert schema.current(empty_db) == schema.head()
    tables = set(inspect(empty_db.engine).get_table_names())
    assert {t.name for t in SQLModel.metadata.sorted_tables} <= tables


def _at_first_revision(db: Database) -> str:
    first = next(r for r in schema.script().walk_revisions() if r.down_revision is None)
    with db.write_engine.begin() as conn:
        config = schema.config()
        config.attributes["connection"] = conn
        command.upgrade(config, first.revision)
    return str(first.revision)


@pytest.mark.skipif(len(list(schema.script().walk_revisions())) < 2, reason="one revision only")
def test_the_service_refuses_an_old_schema_until_it_is_upgraded(empty_db, tmp_path):
    first = _at_first_revision(empty_db)
    env = {**os.environ, "MFA_DATABASE_URL": empty_db.url, "MFA_DATA_DIR": str(tmp_path)}
    refused = subprocess.run(
        [sys.executable, "-m", "mfa", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "mfa db upgrade" in refused.stderr
    assert schema.current(empty_db) == first
    upgraded = subprocess.run(
        [sys.executable, "-m", "mfa", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert schema.current(empty_db) == schema.head()
