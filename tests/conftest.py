"""Fixtures: a fresh database per test on SQLite and on PostgreSQL, an app with a clock the test
moves, and live server processes for the tests that need real sockets and real concurrency."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel
from starlette.testclient import TestClient

from mfa import schema
from mfa.app import create_app
from mfa.config import Settings
from mfa.db import Database

from .helpers import Clock

PG_ADMIN_URL = os.environ.get("MFA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A new PostgreSQL database (its URL for SQLAlchemy), dropped when the block ends."""
    name = f"mfa_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for this test run, dropped at the end."""
    with new_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a new SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mfa.db'}"
    url: str = request.getfixturevalue("pg_database")
    empty(url)
    return url


def empty(url: str) -> None:
    """Create the schema if needed and remove every row."""
    db = Database(url)
    schema.ensure(db, upgrade_if_behind=False)
    with db.engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A ``Database`` on ``database_url``, for tests of the storage layer below the app."""
    database = Database(database_url)
    schema.ensure(database, upgrade_if_behind=False)
    yield database
    database.dispose()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": database_url,
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock)
    with TestClient(app, base_url="http://localhost:8000") as c:
        yield c
