"""The schema's version: upgrading it with Alembic, and refusing to run on an old one."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from .db import Database


class SchemaBehind(Exception):
    """The database's schema is older than this release expects."""


def config() -> Config:
    config = Config()
    config.set_main_option("script_location", "mfa:migrations")
    return config


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    revision = script().get_current_head()
    assert revision is not None
    return revision


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> None:
    """Create the schema, or bring it to this release's head."""
    with db.write_engine.begin() as conn:
        cfg = config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def create(db: Database) -> None:
    """Create the schema of an empty database from the models and mark it as at head.

    Alembic's recipe for new databases: the same result as running every migration (a test
    compares the two), in a fraction of the time.
    """
    with db.write_engine.begin() as conn:
        SQLModel.metadata.create_all(conn)
        cfg = config()
        cfg.attributes["connection"] = conn
        command.stamp(cfg, "head")


def ensure(db: Database, *, upgrade_if_behind: bool) -> None:
    """At start-up: create an empty database's schema; refuse an old one unless told to upgrade."""
    revision = current(db)
    if revision == head():
        return
    if revision is None and not _has_tables(db):
        create(db)
        return
    if not upgrade_if_behind:
        raise SchemaBehind(
            f"The database schema is at {revision or 'an unversioned state'}, this release needs "
            f"{head()}: run `mfa db upgrade` (or start with `mfa serve --upgrade`)."
        )
    upgrade(db)


def _has_tables(db: Database) -> bool:
    return bool(inspect(db.engine).get_table_names())
