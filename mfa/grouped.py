"""On SQLite: login verifications that wait for the writer lock together commit together.

SQLite has one writer, and at the peak of verifications the workers held its lock about 88% of
the time, 460 µs per verify; much of that was the transaction's own overhead: BEGIN, re-reading
pages that the other worker's last commit had made stale, and a commit that writes each page it
changed to the log with two system calls (about 12 µs a page here; 14 pages a verify). So the
calls of one worker that wait for the lock at the same time run, when it is theirs, one after
another in one transaction, each in a savepoint of its own (``Database.together``): one BEGIN,
one commit for the lot, and the pages they share (the ends of the audit log and of the token
tables) written once. Measured with wrk at the peak: about 2,200 to 2,400 verifications/s,
against 1,400 to 1,900 before, and 640 to 720 µs of CPU each, against 850 to 1,230.

Each call behaves as its own transaction would: what it wrote stays if it returns (or raises
after its ``direct`` block, as a verify that records a failure does) and is undone if its block
raises; none of them answers before the commit, and if the commit fails, all of them fail. A
caller cancelled before its turn is skipped. The lock is waited for in a thread, so that the
event loop reads and answers other requests meanwhile; the calls among them join the group. A
call that finds the lock free and nobody waiting runs at once in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .db import Database

P = ParamSpec("P")
T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class WriteGroups:
    """Grouped writes on one SQLite database, from the event loop that first uses it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[_Call] = []
        self._flushes: set[asyncio.Task[None]] = set()  # referenced until done

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` (whose writes go through ``Database.direct`` only) in the next group."""
        if not self._waiting:
            with self._db.loop_write_now() as free:
                if free:
                    # Nobody writes or waits: a transaction of its own, at once, as
                    # ``Context.run_write`` would run it.
                    return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        # With the caller's context variables: the request id of its log lines.
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        self._waiting.append((call, done))
        if len(self._waiting) == 1:
            flush = loop.create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await done

    async def _flush(self) -> None:
        group: list[_Call] = []
        try:
            async with self._db.loop_write(wait_in_place=False):
                # Everything that came in while the lock was awaited goes too.
                group, self._waiting = self._waiting, []
                outcomes = self._run(group)
        except BaseException as e:
            for _, done in group or self._take_waiting():
                if not done.done():
                    done.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for done, result, error in outcomes:
            if done.done():
                continue  # cancelled meanwhile: its writes stand, as a cancelled call's would
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

    def _take_waiting(self) -> list[_Call]:
        waiting, self._waiting = self._waiting, []
        return waiting

    def _run(self, group: list[_Call]) -> list[tuple[asyncio.Future[Any], Any, Exception | None]]:
        outcomes: list[tuple[asyncio.Future[Any], Any, Exception | None]] = []
        with self._db.together():
            for call, done in group:
                if done.cancelled():
                    continue
                try:
                    outcomes.append((done, call(), None))
                except Exception as e:  # its own failure: the others go on
                    outcomes.append((done, None, e))
        return outcomes
