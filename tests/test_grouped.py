"""Group commit on SQLite (``mfa.grouped``): calls that wait for the writer lock together run
in one transaction, each as if alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, column, insert, table, text

from mfa.db import Database
from mfa.grouped import WriteGroups

_T = table("t", column("x"))
_INSERT = insert(_T).values(x=bindparam("x"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "grouped.db"


@pytest.fixture
def db(path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{path}")
    with database.write() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield database
    database.dispose()


def _committed(path: Path) -> list[int]:
    """The rows another connection sees: what has been committed."""
    with sqlite3.connect(path) as conn:
        return sorted(x for (x,) in conn.execute("SELECT x FROM t"))


def _insert(db: Database, path: Path, x: int, seen: dict[int, list[int]]) -> int:
    with db.direct() as writer:
        writer.execute(_INSERT, {"x": x})
        seen[x] = _committed(path)
    return x


class _Failed(Exception):
    pass


def _insert_then_fail_inside(db: Database, x: int) -> int:
    with db.direct() as writer:
        writer.execute(_INSERT, {"x": x})
        raise _Failed


def _insert_then_fail_after(db: Database, x: int) -> int:
    with db.direct() as writer:
        writer.execute(_INSERT, {"x": x})
    raise _Failed  # as a verify raises the failure it recorded


@pytest.fixture
def other_worker(path: Path) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Another worker's write (a Database of its own: its own lock files' descriptors) that
    holds the lock from ``holding`` until ``release`` is set."""
    other = Database(f"sqlite:///{path}")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other.write():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    yield holding, release
    release.set()
    thread.join()
    other.dispose()


async def _while_held(release: threading.Event, *calls) -> list:  # type: ignore[no-untyped-def]
    """Start ``calls`` while the other worker holds the lock; then let it go; gather them."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0.1)  # all of them are waiting now
    assert not any(t.done() for t in tasks)
    release.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_calls_that_wait_together_commit_together(db, path, other_worker):
    _, release = other_worker
    groups = WriteGroups(db)
    seen: dict[int, list[int]] = {}

    async def main() -> list:  # type: ignore[type-arg]
        return await _while_held(
            release, *(groups.run(_insert, db, path, x, seen) for x in range(5))
        )

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    # Each ran in turn inside one transaction: none saw another's row committed, and all
    # five were committed at its end.
    assert seen == {x: [] for x in range(5)}
    assert _committed(path) == [0, 1, 2, 3, 4]


def test_a_call_that_fails_in_its_block_undoes_only_its_own_writes(db, path, other_worker):
    _, release = other_worker
    groups = WriteGroups(db)
    seen: dict[int, list[int]] = {}

    async def main() -> list:  # type: ignore[type-arg]
        return await _while_held(
            release,
            groups.run(_insert, db, path, 1, seen),
            groups.run(_insert_then_fail_inside, db, 2),
            groups.run(_insert_then_fail_after, db, 3),
            groups.run(_insert, db, path, 4, seen),
        )

    results = asyncio.run(main())
    assert [results[0], results[3]] == [1, 4]
    assert [type(results[1]), type(results[2])] == [_Failed, _Failed]
    # 2 raised inside its block: undone. 3 raised after it: its writes stand, as a verify's
    # recorded failure does.
    assert _committed(path) == [1, 3, 4]


def test_a_caller_cancelled_before_its_turn_is_skipped(db, path, other_worker):
    _, release = other_worker
    groups = WriteGroups(db)
    seen: dict[int, list[int]] = {}

    async def main() -> None:
        kept = asyncio.ensure_future(groups.run(_insert, db, path, 1, seen))
        dropped = asyncio.ensure_future(groups.run(_insert, db, path, 2, seen))
        await asyncio.sleep(0.1)
        dropped.cancel()
        release.set()
        assert await kept == 1
        with pytest.raises(asyncio.CancelledError):
            await dropped

    asyncio.run(main())
    assert _committed(path) == [1]
    assert 2 not in seen


def test_a_lone_call_with_the_lock_free_runs_at_once_in_a_transaction_of_its_own(db, path):
    groups = WriteGroups(db)
    seen: dict[int, list[int]] = {}

    def alone() -> bool:
        _insert(db, path, 7, seen)
        return db._joined() is None  # not in a group

    async def main() -> bool:
        return await groups.run(alone)

    assert asyncio.run(main()) is True
    assert _committed(path) == [7]


def test_a_grouped_call_that_opens_a_session_is_refused_at_once(db, path, other_worker):
    _, release = other_worker
    groups = WriteGroups(db)

    def with_a_session() -> None:
        with db.write():
            pass

    async def main() -> list:  # type: ignore[type-arg]
        return await _while_held(release, groups.run(with_a_session))

    (result,) = asyncio.run(main())
    assert isinstance(result, RuntimeError)


def _open_temporary_files() -> list[str]:
    """The SQLite temporary files this process holds open (made, then unlinked at once)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue  # closed meanwhile
        if "etilqs_" in target.name:
            found.append(str(target))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_groups_savepoints_keep_their_journal_in_memory(db, path):
    # Each call of a group runs in a savepoint, which journals the pages it changes; past
    # 64 KiB SQLite moved that journal to a temporary file, made and written for the rest of
    # the transaction. Each call here changes over 100 pages.
    with db.write() as session:
        session.execute(
            text(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 50000)"
                " INSERT INTO t (x) SELECT x FROM n"
            )
        )
    with db.together():
        for n in range(3):
            with db.direct() as writer:  # a savepoint
                writer.execute(text("UPDATE t SET x = x + :n"), {"n": n})
        held = _open_temporary_files()
    assert held == []
    assert _committed(path)[:1] == [1 + 0 + 1 + 2]  # and the group committed
