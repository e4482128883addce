"""Short writes in the event loop (SQLite): who waits where for the writer lock.

Two ``Database`` objects on one file stand for two worker processes: each has its own thread
lock and its own open file descriptions, so their file locks conflict as two processes' do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from mfa import schema
from mfa.context import Context
from mfa.db import Database, _WriterLock

from .helpers import write_rows

WAIT_S = 0.2  # long enough that a lock that should not be had would have been


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "mfa.db"


@pytest.fixture
def workers(path: Path) -> Iterator[tuple[Database, Database]]:
    first = Database(f"sqlite:///{path}")
    schema.create(first)
    second = Database(f"sqlite:///{path}")
    yield first, second
    first.dispose()
    second.dispose()


def _lock(db: Database) -> _WriterLock:
    lock = db._writer
    assert isinstance(lock, _WriterLock)
    return lock


def _rows(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(text("SELECT count(*) FROM throttles")).scalar_one())


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    return thread, result


def test_a_loop_write_waits_in_place_for_another_processs_short_write(workers) -> None:
    ours, theirs = (_lock(db) for db in workers)
    theirs.acquire(long=False)
    thread, result = _in_thread(ours.acquire_short)
    thread.join(WAIT_S)
    assert thread.is_alive(), "took the lock while another process held it"
    theirs.release()
    thread.join(5)
    assert result == [True]
    ours.release()


def test_a_loop_write_does_not_wait_in_place_behind_a_long_write(workers) -> None:
    ours, theirs = (_lock(db) for db in workers)
    theirs.acquire()  # a thread's write, a checkpoint, a command: possibly long
    started = time.monotonic()
    assert ours.acquire_short() is False
    assert time.monotonic() - started < WAIT_S
    theirs.release()
    assert ours.acquire_short() is True
    ours.release()


def test_a_loop_write_does_not_wait_in_place_while_a_long_write_waits(workers, path: Path) -> None:
    """A checkpoint that must hold the writers queues for the lock: the loops must not queue
    in place beside it, or one of them could get the lock after it and stall that long."""
    ours, theirs = (_lock(db) for db in workers)
    third = Database(f"sqlite:///{path}")
    try:
        theirs.acquire(long=False)
        waiting, _ = _in_thread(_lock(third).acquire)
        waiting.join(WAIT_S)
        assert waiting.is_alive()
        started = time.monotonic()
        assert ours.acquire_short() is False
        assert time.monotonic() - started < WAIT_S
        theirs.release()
        waiting.join(5)
        _lock(third).release()
    finally:
        third.dispose()


def test_a_loop_write_does_not_wait_in_place_behind_a_thread_of_its_own_process(workers) -> None:
    ours = _lock(workers[0])
    thread, _ = _in_thread(ours.acquire)
    thread.join(5)
    assert ours.acquire_short() is False
    ours.release()  # what the thread took
    assert ours.acquire_short() is True
    ours.release()


def test_the_lent_lock_goes_to_the_next_write_and_is_free_after_it(workers) -> None:
    ours, theirs = workers

    async def main() -> None:
        async with ours.loop_write():
            # Would wait for the lock its own caller holds (and time out), if it were not lent.
            write_rows(ours, 1)
            # Its end let the lock go: another process gets it at once.
            assert _lock(theirs).acquire_short() is True
            _lock(theirs).release()
            write_rows(ours, 1)  # a second write in the block waits for the lock as any other

    anyio.run(main)
    assert _rows(ours) == 2


def test_a_loop_write_that_writes_nothing_lets_the_lock_go(workers) -> None:
    ours, theirs = workers

    async def main() -> None:
        async with ours.loop_write():
            pass

    anyio.run(main)
    assert _lock(theirs).acquire_short() is True
    _lock(theirs).release()


def test_the_loop_serves_other_requests_while_a_long_write_holds_the_lock(workers) -> None:
    ours, theirs = workers
    holding, finish = threading.Event(), threading.Event()

    def long_write() -> None:
        with theirs.write() as session:
            session.execute(text("DELETE FROM throttles WHERE key = 'none'"))
            holding.set()
            finish.wait(10)

    writer = threading.Thread(target=long_write)
    writer.start()
    assert holding.wait(5)
    ticks = 0
    wrote = False

    async def loop_write() -> None:
        nonlocal wrote
        async with ours.loop_write():
            write_rows(ours, 1)
        wrote = True

    async def main() -> None:
        nonlocal ticks
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(loop_write)
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                await anyio.sleep(0.01)
                ticks += 1
            assert not wrote, "wrote while another process's long write held the lock"
            finish.set()

    anyio.run(main)
    writer.join(5)
    assert wrote
    assert ticks >= 5, "the event loop stalled behind the long write"
    assert _rows(ours) == 1


def test_a_cancelled_loop_write_still_lets_the_lock_go(workers) -> None:
    ours, theirs = workers
    _lock(theirs).acquire()
    timer = threading.Timer(WAIT_S, _lock(theirs).release)
    timer.start()
    ran = False

    async def main() -> None:
        nonlocal ran
        with anyio.move_on_after(0.05):
            async with ours.loop_write():
                ran = True

    anyio.run(main)
    timer.join()
    # The wait was shielded: it ended with the lock, and the block let it go.
    assert _lock(theirs).acquire_short() is True
    _lock(theirs).release()
    assert ran


def test_run_write_runs_in_the_event_loops_thread_on_sqlite_and_in_a_worker_on_postgresql(
    settings,
) -> None:
    ctx = Context.create(settings)
    try:

        async def main() -> bool:
            loop_thread = threading.get_ident()
            ran_in = await ctx.run_write(threading.get_ident)
            return ran_in == loop_thread

        assert anyio.run(main) is ctx.db.is_sqlite
    finally:
        ctx.close()
        ctx.db.dispose()
