"""The database: engines, transactions and schema creation.

SQLite (the default, a file in ``MFA_DATA_DIR``) runs in WAL mode; write transactions start
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing with
"database is locked" when one upgrades from reading to writing. PostgreSQL runs at READ
COMMITTED: every guarantee rests on conditional updates that re-check their ``WHERE`` against
the row they lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from . import models  # noqa: F401  (registers the tables on SQLModel.metadata)

SQLITE_BUSY_TIMEOUT_MS = 15_000


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                pool_size=pool_size,
                max_overflow=max_overflow,
            )
            _tune_sqlite(self.engine)
            # SQLite has one writer at a time. Threads of one process queue here, in order,
            # rather than in SQLite's busy handler, whose growing sleeps (up to 100 ms each)
            # made the slowest writes wait seconds under load; only processes meet there.
            self._writer: AbstractContextManager[Any] = threading.Lock()
            self.write_engine: Engine = self.engine.execution_options(
                sqlite_begin="BEGIN IMMEDIATE"
            )
        else:
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
                pool_pre_ping=False,
            )
            self.write_engine = self.engine
            self._writer = nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction: commits when the block ends, rolls back if it raises."""
        with (
            self._writer,
            Session(self.write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _tune_sqlite(engine: Engine) -> None:
    # pysqlite opens transactions on its own and never with IMMEDIATE; take that job over
    # (the recipe of SQLAlchemy's SQLite dialect documentation, "Serializable isolation").
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL is durable against application crashes and consistent
        # after a power loss; it saves an fsync per commit.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
