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
from sqlalchemy import event, text

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


# The event loop's own connection (``Database.driver_connection``).

_INSERT = text("INSERT INTO throttles (key, failures, blocked_until, locked) VALUES (:k, 1, 0, 0)")
_COUNT = text("SELECT count(*) FROM throttles")


def _checkouts(db: Database) -> list[object]:
    """The driver connections the pool hands out from now on, one entry per checkout."""
    handed: list[object] = []
    event.listen(db.engine, "checkout", lambda dbapi, _record, _proxy: handed.append(dbapi))
    return handed


def test_the_loops_writes_and_reads_share_one_connection_without_checkouts(workers) -> None:
    db, _ = workers
    handed = _checkouts(db)

    async def main() -> set[int]:
        used = set()
        for n in range(5):
            async with db.loop_write():
                with db.direct() as writer:
                    writer.execute(_INSERT, {"k": f"test:{n}"})
            rows = await db.fetch(_COUNT, {})
            assert rows[0][0] == n + 1
            with db.driver_connection() as own:
                used.add(id(own.driver_connection))
        return used

    assert len(anyio.run(main)) == 1
    assert len(handed) == 1, "a checkout for each statement instead of one for the loop"
    db.dispose()
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_use_of_the_loops_connection_inside_another_gets_a_pooled_one(workers) -> None:
    db, _ = workers

    async def main() -> tuple[object, object]:
        with db.driver_connection() as outer, db.driver_connection() as inner:
            return outer.driver_connection, inner.driver_connection

    outer, inner = anyio.run(main)
    assert outer is not inner


def test_a_worker_thread_gets_a_pooled_connection_not_the_loops(workers) -> None:
    db, _ = workers

    def in_thread() -> object:
        with db.driver_connection() as own:
            return own.driver_connection

    async def main() -> tuple[object, object]:
        with db.driver_connection() as own:
            ours = own.driver_connection
        theirs = await anyio.to_thread.run_sync(in_thread)
        return ours, theirs

    ours, theirs = anyio.run(main)
    assert ours is not theirs


def test_the_loops_connection_comes_back_out_of_the_transaction_a_failed_write_left(
    workers,
) -> None:
    db, _ = workers

    def abandon() -> None:
        with db.driver_connection() as own:
            cursor = own.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(_INSERT.text, {"k": "test:abandoned"})
            raise RuntimeError("the block failed inside its transaction")

    async def main() -> int:
        with pytest.raises(RuntimeError):
            abandon()
        # The next write begins its own transaction on the same connection, which it could
        # not if the last were still open.
        async with db.loop_write():
            with db.direct() as writer:
                writer.execute(_INSERT, {"k": "test:kept"})
        rows = await db.fetch(_COUNT, {})
        return int(rows[0][0])

    assert anyio.run(main) == 1
    assert _rows(db) == 1


def test_the_connection_of_a_closed_loop_goes_back_to_the_pool_for_the_next(workers) -> None:
    db, _ = workers
    handed = _checkouts(db)

    async def main() -> None:
        with db.driver_connection():
            pass

    anyio.run(main)
    anyio.run(main)
    assert len(handed) == 2  # one for each loop
    assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the first went back


def test_two_loops_at_once_never_share_a_connection(workers) -> None:
    # Two event loops on two threads, one Database: the first to ask keeps the connection,
    # the other uses pooled ones; neither ever holds a connection the other holds.
    db, _ = workers
    holders: dict[int, int] = {}  # a driver connection's id -> the thread that holds it
    shared: list[int] = []
    start = threading.Barrier(2)

    async def main() -> None:
        me = threading.get_ident()
        for n in range(100):
            async with db.loop_write():
                with db.driver_connection() as own:
                    conn = id(own.driver_connection)
                    if holders.setdefault(conn, me) != me:
                        shared.append(conn)
                    own.cursor().execute(_INSERT.text, {"k": f"test:{me}:{n}"})
                    own.commit()
                    del holders[conn]
            await anyio.sleep(0)

    def loop() -> None:
        start.wait()
        anyio.run(main)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not shared
    assert _rows(db) == 200
