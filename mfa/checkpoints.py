"""SQLite WAL checkpoints off the request path.

By default SQLite copies the write-ahead log back into the database file inside whichever
commit pushes the log past 1,000 pages: that commit, and every writer queued behind it, waits
for the copy and its fsync. Under a steady stream of logins that was the slowest 1% of
verifications (p99 11 ms at half the peak rate; 4.5 ms with the copies moved out). The server
turns those automatic checkpoints off and runs them here, in a thread, while writers go on.

A checkpoint that runs beside writers never quite finishes (they append while it copies), and
the log only starts over once one has; so when the log passes ``limit_pages`` the next one
takes the write lock for the moment it needs to finish, which keeps the log's size bounded.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Small passes, often: each copies what came in since the last, and its writes and fsync of
# the database file slow the writers beside it for that long. At half the peak verification
# rate (800/s on 2 cores) requests slowed past 5 ms came in bursts every half second with
# passes every 0.5 s; with passes every 0.1 s the p99 over six runs each fell from a median of
# 14 ms to 7.5 ms, and the peak rate did not move.
INTERVAL_S = 0.1
# Pages in the log before writers are held for a checkpoint to finish; the hold costs them 4 to
# 7 ms. At 20,000 pages it came every 3 s at half the peak verification rate, often enough to
# reach the slowest 1% (p99 8.8 and 16 ms, against 5.2 and 5.8 ms at this size, where it comes
# every 11 s or more; measured with 4 KiB pages). In pages: 64 MB of log with the 1 KiB pages
# of new databases (``db.SQLITE_PAGE_SIZE``). A verify logs about 9 of those against 4 or 5 of
# 4 KiB, so the limit comes about twice as soon at a given rate; but the log often starts over
# before: in passes logged at about 1,300 verifications/s (2026-11-27) it did at 12,000 to
# 60,000 pages, and no pass held the writers.
LIMIT_PAGES = 65_536
# Past the limit, passes back to back before the one that holds the writers: each copies what
# came in during the one before, a shrinking backlog, so the held pass has little left to copy.
# At ~950 verifications/s its hold fell from 4.5-7.6 ms to 1.2-2.5 ms (four of each).
CATCH_UP_PASSES = 5
# The log file is cut back to this size once it starts over.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Pass:
    """What one checkpoint did: pages in the log, pages copied, and whether it held writers."""

    log_pages: int
    copied_pages: int
    held_writers: bool


class Checkpointer:
    def __init__(
        self,
        database: Path,
        writer: AbstractContextManager[Any],
        *,
        interval_s: float = INTERVAL_S,
        limit_pages: int = LIMIT_PAGES,
        busy_timeout_s: float = 15.0,
    ) -> None:
        self.database = database
        self.writer = writer
        self.interval_s = interval_s
        self.limit_pages = limit_pages
        self.busy_timeout_s = busy_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mfa-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.busy_timeout_s)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def once(self) -> Pass:
        """One checkpoint beside the writers; then, if the log is long, a few more beside them
        (``CATCH_UP_PASSES``) and one that holds them off until it is done, so that the next
        writer starts the log over.

        Copying everything a pass saw is not enough: writers append while it copies, so under
        steady load no pass leaves the log complete, and it grew without bound (past 500 MB in
        a minute of verifications). The held pass only has what came in during the last.
        """
        log_pages, copied = self._checkpoint()
        if log_pages >= self.limit_pages:
            for _ in range(CATCH_UP_PASSES):
                log_pages, copied = self._checkpoint()
        if log_pages < self.limit_pages:  # short, or started over meanwhile
            return Pass(log_pages, copied, held_writers=False)
        with self.writer:
            log_pages, copied = self._checkpoint()
        return Pass(log_pages, copied, held_writers=True)

    def _checkpoint(self) -> tuple[int, int]:
        if self._conn is None:
            # Autocommit (no transaction of its own), so nothing pins an old snapshot.
            # Used by one thread at a time: the checkpoint thread, then ``stop`` after joining it.
            self._conn = sqlite3.connect(
                self.database,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        # PASSIVE: copy what no reader still needs, never wait for readers or writers. A
        # checkpoint already running elsewhere (another worker's) answers busy; the next pass
        # catches up.
        _busy, log_pages, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(int(log_pages), 0), max(int(copied), 0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.once()
            except (sqlite3.Error, TimeoutError) as e:  # a bad pass must not end the thread
                log.warning("a WAL checkpoint failed: %s", e)
