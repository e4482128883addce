"""WAL checkpoints off the request path (SQLite only: PostgreSQL has no such thing to move)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfa import schema
from mfa.checkpoints import CATCH_UP_PASSES, Checkpointer
from mfa.db import Database

from .helpers import write_rows


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mfa.db'}")
    schema.create(database)
    yield database
    database.dispose()


def test_the_server_turns_automatic_checkpoints_off_in_its_connections(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    db.checkpoint_in_background()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0


def test_a_pass_copies_the_log_without_holding_writers(tmp_path: Path, db: Database) -> None:
    write_rows(db, 50)
    path = tmp_path / "mfa.db"
    checkpointer = Checkpointer(path, db._writer, limit_pages=10_000)
    try:
        done = checkpointer.once()
    finally:
        checkpointer.stop()
    assert done.log_pages > 0
    assert done.copied_pages == done.log_pages
    assert not done.held_writers


def test_a_long_log_that_a_pass_cannot_finish_is_retried_under_the_write_lock(
    tmp_path: Path, db: Database
) -> None:
    db.checkpoint_in_background()  # no automatic checkpoints: the log only grows
    path = tmp_path / "mfa.db"
    write_rows(db, 20)
    # A reader holding an old snapshot keeps any checkpoint from copying what came after it.
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM throttles").fetchone()
    write_rows(db, 100)
    taken = threading.Event()
    checkpointer = Checkpointer(path, _Recording(db._writer, taken), limit_pages=10)
    try:
        stuck = checkpointer.once()
        assert stuck.held_writers
        assert taken.is_set()
        assert stuck.copied_pages < stuck.log_pages

        reader.execute("COMMIT")
        reader.close()
        done = checkpointer.once()
        assert done.held_writers
        assert done.copied_pages == done.log_pages > 0
    finally:
        checkpointer.stop()

    write_rows(db, 1)  # the log was all copied: the next writer starts it over
    with sqlite3.connect(path) as conn:
        _busy, log_pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert log_pages < 10


def test_a_long_log_is_finished_under_the_write_lock_even_when_a_pass_copied_it_all(
    tmp_path: Path, db: Database
) -> None:
    """Under steady writes each pass copies all it saw, yet writers have appended by the time
    it ends, so no pass alone leaves the log complete and it never starts over: in the
    server the log grew past 500 MB in a minute of verifications. Past the limit, a pass
    holds the writers whatever the pass before it managed, and the log starts over."""
    db.checkpoint_in_background()
    path = tmp_path / "mfa.db"
    write_rows(db, 100)
    taken = threading.Event()
    checkpointer = Checkpointer(path, _Recording(db._writer, taken), limit_pages=10)
    try:
        done = checkpointer.once()
    finally:
        checkpointer.stop()
    assert taken.is_set()
    assert done.held_writers
    assert done.copied_pages == done.log_pages >= 10

    write_rows(db, 1)
    with sqlite3.connect(path) as conn:
        _busy, log_pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert log_pages < 10


class _Passes(Checkpointer):
    """A checkpointer that notes, at each pass, whether the writers were held."""

    def __init__(self, path: Path, writer: _Recording) -> None:
        super().__init__(path, writer, limit_pages=10)
        self.held: list[bool] = []
        self._taken = writer.taken

    def _checkpoint(self) -> tuple[int, int]:
        self.held.append(self._taken.is_set())
        return super()._checkpoint()


@pytest.mark.parametrize(
    ("rows", "held"),
    [(100, [False] * (1 + CATCH_UP_PASSES) + [True]), (1, [False])],
    ids=["past the limit", "short"],
)
def test_passes_catch_up_beside_the_writers_before_one_holds_them_past_the_limit(
    tmp_path: Path, db: Database, rows: int, held: list[bool]
) -> None:
    db.checkpoint_in_background()
    write_rows(db, rows)
    checkpointer = _Passes(tmp_path / "mfa.db", _Recording(db._writer, threading.Event()))
    try:
        done = checkpointer.once()
    finally:
        checkpointer.stop()
    assert checkpointer.held == held  # whether the writers were held, pass by pass
    assert done.held_writers == held[-1]


def test_the_server_stops_its_checkpoint_thread_when_it_shuts_down(db: Database) -> None:
    db.checkpoint_in_background()
    assert any(t.name == "mfa-checkpoints" for t in threading.enumerate())
    db.dispose()
    assert not any(t.name == "mfa-checkpoints" for t in threading.enumerate())


def test_postgresql_has_no_checkpoint_thread(pg_database: str) -> None:
    database = Database(pg_database)
    try:
        database.checkpoint_in_background()
        assert not database.checkpoints_in_background
    finally:
        database.dispose()


class _Recording:
    """The write lock, noting when it was taken."""

    def __init__(self, inner: object, taken: threading.Event) -> None:
        self.inner = inner
        self.taken = taken

    def __enter__(self) -> None:
        self.taken.set()
        self.inner.__enter__()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)  # type: ignore[attr-defined]
