"""The page size of SQLite databases: small for a new one, left alone for an existing one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mfa import schema
from mfa.db import SQLITE_PAGE_SIZE, Database

from .helpers import write_rows


def _page_size_and_mode(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("PRAGMA page_size").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
        )
    finally:
        conn.close()


def test_a_new_database_gets_small_pages_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "mfa.db"
    db = Database(f"sqlite:///{path}")
    try:
        schema.create(db)
        write_rows(db, 5)
    finally:
        db.dispose()
    assert SQLITE_PAGE_SIZE == 1024
    assert _page_size_and_mode(path) == (SQLITE_PAGE_SIZE, "wal")


def test_a_database_made_with_other_pages_keeps_them_and_works(tmp_path: Path) -> None:
    path = tmp_path / "mfa.db"
    made = sqlite3.connect(path)
    made.execute("PRAGMA page_size=4096")
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE made_before (x INTEGER)")
    made.close()
    db = Database(f"sqlite:///{path}")
    try:
        schema.create(db)
        write_rows(db, 5)
        with db.read() as session:
            count = session.connection().exec_driver_sql("SELECT count(*) FROM throttles")
            assert count.scalar() == 5
    finally:
        db.dispose()
    assert _page_size_and_mode(path) == (4096, "wal")
