"""The database: engines, transactions and schema creation.

SQLite (the default, a file in ``MFA_DATA_DIR``) runs in WAL mode; write transactions start
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing with
"database is locked" when one upgrades from reading to writing. PostgreSQL runs at READ
COMMITTED: every guarantee rests on conditional updates that re-check their ``WHERE`` against
the row they lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import select
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, Executable, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Session

from . import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from .checkpoints import Checkpointer
from .direct import AsyncDirect, Direct, PipelinedTransaction
from .gather import Gather

SQLITE_BUSY_TIMEOUT_MS = 15_000
# The page size of a new SQLite database (SQLite's own default is 4096): see ``_tune_sqlite``.
SQLITE_PAGE_SIZE = 1024
LOOP_READS_NAME = "mfa loop reads"
LOOP_READ_WAIT_S = 5.0

# What a read or a write runs on: a Session, or the driver's own connection where SQLAlchemy's
# execution costs more than the statements (the login path and the event loop's reads:
# ``mfa.direct``).
Reader: TypeAlias = Session | Direct
Writer: TypeAlias = Session | Direct


def libpq_url(url: str) -> str:
    """A PostgreSQL URL of the service (``postgresql+psycopg://``) as psycopg's own
    connections take it, password included."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def dialect_name(runner: Reader) -> str:
    """The backend's name ("sqlite" or "postgresql"), for the few statements that differ."""
    if isinstance(runner, Direct):
        return runner.dialect.name
    return runner.get_bind().dialect.name


class CannotOpen(OSError):
    """A SQLite file whose directory cannot be made (no permission, a read-only or missing
    mount): like a file SQLite cannot open, the database cannot be reached."""


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                try:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise CannotOpen(f"its directory cannot be made ({e.strerror or e})") from None
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                pool_size=pool_size,
                max_overflow=max_overflow,
            )
            self._path = (
                Path(parsed.database) if parsed.database not in (None, "", ":memory:") else None
            )
            self._checkpointer: Checkpointer | None = None
            _tune_sqlite(self.engine, self)
            # SQLite has one writer at a time. Writers queue here, woken the moment the lock is
            # free, rather than in SQLite's busy handler, whose growing sleeps (up to 100 ms
            # each) made the slowest writes wait seconds under load.
            self._writer: AbstractContextManager[Any] = _WriterLock(self._path)
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
            _replace_closed_connections(self.engine)
            self._writer = nullcontext()
            self._path = None
            self._checkpointer = None
        self._pool_size = pool_size
        self._loop_reads: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._loop_writers: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._gathers: dict[int, Gather[str, Sequence[Any]]] = {}  # by statement
        self._together: tuple[int, Direct] | None = None  # (thread, the group's transaction)
        # On SQLite: the connection the event loop keeps for its own statements, and whether
        # one of them is using it now (``driver_connection``).
        self._kept: tuple[asyncio.AbstractEventLoop, PoolProxiedConnection] | None = None
        self._kept_in_use = False  # set and cleared by the loop that keeps it only
        self._kept_changing = threading.Lock()

    def checkpoint_in_background(self) -> None:
        """On a SQLite file: move WAL checkpoints out of the commits into a thread of their own
        (``mfa.checkpoints``). For the server, whose commits never stop; short-lived commands
        keep SQLite's own, which also runs when the last connection closes."""
        if self._path is None or self._checkpointer is not None:
            return
        self._checkpointer = Checkpointer(
            self._path, self._writer, busy_timeout_s=SQLITE_BUSY_TIMEOUT_MS / 1000
        )
        self._let_kept_go()
        self.engine.dispose()  # connections opened from now on leave checkpoints to it
        self._checkpointer.start()

    @property
    def checkpoints_in_background(self) -> bool:
        return self._checkpointer is not None

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (on SQLite, each statement its own snapshot)."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    async def fetch(self, statement: Executable, params: Mapping[str, Any]) -> list[Any]:
        """The rows of one read (``mfa.direct``), from the event loop without a worker thread,
        whose round trip (the GIL handed over each way) cost more than the read: on SQLite
        right here, a local read of microseconds that never waits for a writer (WAL); on
        PostgreSQL on a connection of the event loop's own pool (``open_loop_reads``), in
        autocommit: one round trip, without BEGIN and ROLLBACK around it. Each reads one
        consistent snapshot of its own (SQLite's connections begin nothing: ``_tune_sqlite``)."""
        if self.is_sqlite:
            with self.driver_connection() as own, self._each_statement(own) as reader:
                return reader.execute(statement, params).all()
        pool = self._loop_reads
        if pool is None:
            raise RuntimeError("open_loop_reads() first: the app does at startup")
        # A pooled connection the server has closed since its last use is closed here, and the
        # pool replaces it; after a restart of the server every one of them is. One that breaks
        # during the read (the server went away just then) is safe to repeat once on another.
        repeated = False
        for _ in range(self._pool_size + 2):
            async with pool.connection() as conn:
                if _closed_by_server(conn):
                    await conn.close()
                    continue
                try:
                    async with conn.cursor() as cursor:
                        direct = AsyncDirect(cursor, self.engine.dialect)
                        return (await direct.execute(statement, params)).all()
                except psycopg.OperationalError:
                    if repeated or not conn.broken:
                        raise
                    repeated = True
        raise psycopg.OperationalError("no live connection to the database")

    async def fetch_gathered(self, statement: Executable, key: str) -> Sequence[Any]:
        """The rows of ``statement`` about ``key``, read on PostgreSQL together with those of
        the calls waiting meanwhile (``mfa.gather``): ``statement`` takes a list of keys as its
        parameter "keys", and each row's first column names the key it is about."""
        gather = self._gathers.get(id(statement))
        if gather is None:
            read_many = functools.partial(self._fetch_keyed, statement)
            gather = self._gathers[id(statement)] = Gather(read_many, missing=())
        return await gather.get(key)

    async def _fetch_keyed(self, statement: Executable, keys: list[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for row in await self.fetch(statement, {"keys": keys}):
            found.setdefault(row[0], []).append(row)
        return found

    async def open_loop_reads(self) -> None:
        """On PostgreSQL: open the pool ``fetch`` reads on, in the running event loop (the
        server's, at startup), up to ``pool_size`` connections. Its connections open in the
        background: the first ``fetch`` waits for one."""
        if self.is_sqlite or self._loop_reads is not None:
            return
        self._loop_reads = AsyncConnectionPool(
            libpq_url(self.url),
            # Named, so that an operator tells them apart in pg_stat_activity.
            kwargs={"autocommit": True, "application_name": LOOP_READS_NAME},
            min_size=1,
            max_size=self._pool_size,
            # How long a read waits for a connection: only an outage makes it wait that long
            # (connections take a millisecond each), and its callers then get a 503 soon.
            timeout=LOOP_READ_WAIT_S,
            name="loop-reads",
            open=False,
        )
        await self._loop_reads.open(wait=False)

    async def close_loop_reads(self) -> None:
        if self._loop_reads is not None:
            pool, self._loop_reads = self._loop_reads, None
            await pool.close()

    @asynccontextmanager
    async def loop_write(self, *, wait_in_place: bool = True) -> AsyncIterator[None]:
        """On SQLite: the writer lock, for a write that then runs right here in the event loop
        (``Context.run_write``); the write's own ``with`` takes the lock held for it. The loop
        waits in place for another worker's such write (``_WriterLock.acquire_short``), and in
        a thread for anything longer (one at a time per loop: the others queue here), or for
        any write at all if not ``wait_in_place`` (``mfa.grouped``, whose groups are longer).
        On PostgreSQL: nothing.

        A write in a worker thread held the lock while it waited for the GIL, which the event
        loop and the other threads held in turn at each statement; the other worker waited for
        the lock meanwhile. In the loop it holds the GIL from start to end."""
        lock = self._writer
        if not isinstance(lock, _WriterLock):
            yield
            return
        async with self._queue_for_writer():
            if not lock.acquire_short(wait_for_short=wait_in_place):
                # Shielded: a cancelled caller still gets the lock, and lets it go below.
                with anyio.CancelScope(shield=True):
                    await asyncio.get_running_loop().run_in_executor(
                        None, functools.partial(lock.acquire, long=False)
                    )
        with lock.lent():
            yield

    @contextmanager
    def loop_write_now(self) -> Iterator[bool]:
        """``loop_write`` without any wait: True, with the lock lent, if it is free right now;
        False if anyone holds it or waits for it. On PostgreSQL: True."""
        lock = self._writer
        if not isinstance(lock, _WriterLock):
            yield True
            return
        if self._queue_for_writer().locked() or not lock.acquire_short(wait_for_short=False):
            yield False
            return
        with lock.lent():
            yield True

    def _queue_for_writer(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop_writers is None or self._loop_writers[0] is not loop:
            self._loop_writers = (loop, asyncio.Lock())
        return self._loop_writers[1]

    @contextmanager
    def together(self) -> Iterator[None]:
        """One write transaction for writes run one after another on this thread (a group of
        ``mfa.grouped``): each ``direct`` opened meanwhile is a savepoint in it, undone alone if
        its block raises. Commits when the block ends; rolls everything back if it raises."""
        with self.direct() as writer:
            self._together = (threading.get_ident(), writer)
            try:
                yield
            finally:
                self._together = None

    def _joined(self) -> Direct | None:
        """The transaction of the group this thread writes in (``together``), if any."""
        together = self._together
        if together is not None and together[0] == threading.get_ident():
            return together[1]
        return None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction: commits when the block ends, rolls back if it raises."""
        if self._joined() is not None:
            # It would wait for the lock its own group holds: a mistake, and said at once.
            raise RuntimeError("a grouped write writes through Database.direct only")
        with (
            self._writer,
            Session(self.write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def driver_connection(self) -> Iterator[PoolProxiedConnection]:
        """A pooled driver connection: for a read (``fetch`` on SQLite), or for several
        ``direct`` transactions in a row (a password login's, before and after its hash): one
        checkout instead of one each. A checkout costs more than such a transaction, most of all
        on a core whose caches a password hash has just flushed.

        On SQLite, in the event loop, the connection the loop keeps instead, with no checkout
        at all, unless another use holds it (one nested in it, or suspended at an ``await``):
        that one gets a pooled connection. The loop's writes and reads run one at a time, each
        from start to end (``Context.run_write``, ``mfa.grouped``, ``fetch``), so its own
        connection serves nearly all of them. A checkout and checkin took 18 µs here, hot; at
        the peak of /api/me on SQLite (a read each) the service spent about 7% less CPU a
        request without them (three alternating pairs of runs)."""
        kept = self._take_kept()
        if kept is not None:
            try:
                yield kept
            finally:
                if kept.driver_connection.in_transaction:  # type: ignore[union-attr]
                    kept.rollback()  # what the pool does to a connection that comes back
                self._kept_in_use = False
            return
        conn = self.write_engine.raw_connection()
        try:
            yield conn
        finally:
            conn.close()  # back to the pool

    def _take_kept(self) -> PoolProxiedConnection | None:
        """The event loop's own connection, marked in use; None outside an event loop, off
        SQLite, or while the loop's connection is in use (a nested or suspended use)."""
        if not self.is_sqlite:
            return None
        loop = _running_loop()
        if loop is None:
            return None
        kept = self._kept
        if kept is None or kept[0] is not loop:
            kept = self._keep_for(loop)
        if kept is None or self._kept_in_use:
            return None
        self._kept_in_use = True
        return kept[1]

    def _keep_for(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.AbstractEventLoop, PoolProxiedConnection] | None:
        """Make the kept connection ``loop``'s, if there is none yet or the loop that kept it
        has closed (a test's loops, one after another); None while another loop runs with it.
        Under a lock: two loops on two threads may both find it missing at once."""
        with self._kept_changing:
            kept = self._kept
            if kept is not None and kept[0] is not loop:
                if not kept[0].is_closed():
                    return None
                self._let_kept_go()  # nobody uses it: its loop can run nothing any more
            if self._kept is None:
                self._kept = (loop, self.write_engine.raw_connection())
                self._kept_in_use = False
            return self._kept

    def _let_kept_go(self) -> None:
        """Return the loop's connection to the pool (at shutdown, or for a new one)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept[1].close()

    @contextmanager
    def direct(
        self, conn: PoolProxiedConnection | None = None, *, autocommit: bool = False
    ) -> Iterator[Direct]:
        """``write``'s transaction on the driver's own connection (``mfa.direct``), or on
        ``conn`` from ``driver_connection``: for the login path, where SQLAlchemy's execution of
        each statement cost more than the database's.

        With ``autocommit``, each statement is a transaction of its own: for statements that
        need no atomicity between them (a read, then one atomic upsert), it saves the BEGIN and
        the COMMIT, two round trips on PostgreSQL. The writer lock is held all the same."""
        joined = self._joined() if conn is None and not autocommit else None
        if joined is not None:
            with joined.savepoint():
                yield joined
            return
        # The checkout first: it needs no lock, and the lock is held for the statements only.
        with nullcontext(conn) if conn else self.driver_connection() as own, self._writer:
            if autocommit:
                with self._each_statement(own) as each:
                    yield each
                return
            if not self.is_sqlite:
                with self._pipelined(own) as transaction:
                    yield transaction
                return
            try:
                cursor = own.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                yield Direct(cursor, self.engine.dialect)
                cursor.close()
                own.commit()
            except BaseException:
                own.rollback()
                raise

    @contextmanager
    def _pipelined(self, own: PoolProxiedConnection) -> Iterator[PipelinedTransaction]:
        """A PostgreSQL write transaction that begins and commits in its own statements' round
        trips (``PipelinedTransaction``), on ``own`` in autocommit until it ends."""
        with _autocommit(own):
            try:
                cursor = own.cursor()
                transaction = PipelinedTransaction(
                    cursor, self.engine.dialect, own.driver_connection
                )
                yield transaction
                transaction.commit()
                cursor.close()
            except BaseException:
                own.rollback()  # psycopg rolls back an open transaction in autocommit too
                raise

    @contextmanager
    def batch(self, conn: PoolProxiedConnection | None = None) -> Iterator[Direct]:
        """A write transaction of statements whose results nobody reads (``Direct.batch``).
        On PostgreSQL they go as one statement in autocommit, atomic by itself: one round trip
        where BEGIN, each statement and COMMIT took one each. On SQLite, one transaction."""
        with self.direct(conn, autocommit=not self.is_sqlite) as writer, writer.batch() as batch:
            yield batch

    @contextmanager
    def _each_statement(self, own: PoolProxiedConnection) -> Iterator[Direct]:
        """Statements on ``own`` with no transaction around them: each reads, or commits, on
        its own. SQLite's connections already begin nothing unless told (``_tune_sqlite``);
        psycopg's begin a transaction unless in autocommit, which ``own`` leaves afterwards."""
        with nullcontext() if self.is_sqlite else _autocommit(own):
            cursor = own.cursor()
            try:
                yield Direct(cursor, self.engine.dialect)
            finally:
                cursor.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._let_kept_go()
        self.engine.dispose()


@contextmanager
def _autocommit(own: PoolProxiedConnection) -> Iterator[None]:
    """A psycopg connection in autocommit for the block, and back in transactions after it."""
    driver = own.driver_connection
    driver.autocommit = True  # type: ignore[union-attr]
    try:
        yield
    finally:
        # A broken connection refuses the change (and goes from the pool at checkin).
        if not driver.broken:  # type: ignore[union-attr]
            driver.autocommit = False  # type: ignore[union-attr]


def _closed_by_server(conn: psycopg.Connection[Any] | AsyncConnection[Any]) -> bool:
    """Whether PostgreSQL has closed this idle pooled connection since its last use (a restart,
    a failover, ``pg_terminate_backend``, an idle timeout on the way). It then has something to
    read, its notice and the end of the stream, where a live idle one has nothing: one poll of
    the socket tells, where a pre-ping would cost a round trip on every checkout."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _replace_closed_connections(engine: Engine) -> None:
    """Check each PostgreSQL connection as it leaves the pool: one the server has closed is
    replaced there by a new one (the pool does that for ``DisconnectionError``), instead of
    failing the request it was given to with a 500."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        if _closed_by_server(dbapi_conn):
            raise DisconnectionError("closed by the server since its last use")


class WriterBusy(TimeoutError):
    """The writer lock of a SQLite database stayed taken for the whole busy timeout."""


class _WriterLock:
    """One writer at a time: a thread lock within the process, and an advisory file lock
    (flock) beside the database between processes (the workers of `mfa serve`).

    Writes in the event loop (``Database.loop_write``) are short, and wait for each other right
    there. Everything else (a thread's write, a checkpoint, a command) may take longer, so it
    also holds a second file lock while it waits and writes: a loop that finds that one held
    waits in a thread instead of stalling every request it serves. The loop ``lent`` the lock it
    took to the write it then runs: that write's ``with`` takes the held lock, and its end
    releases it."""

    def __init__(self, database: Path | None) -> None:
        self._threads = threading.Lock()
        self._paths = (
            None
            if database is None
            else (
                database.with_name(database.name + ".writer"),
                database.with_name(database.name + ".long-writer"),
            )
        )
        self._fds: tuple[int, int] | None = None
        self._long = False  # whether this process holds the second lock too
        self._lent_to: int | None = None  # the thread whose next write takes the held lock

    def __enter__(self) -> None:
        if self._lent_to == threading.get_ident():
            self._lent_to = None
            return
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, *, long: bool = True) -> None:
        """Wait for the lock, as a write that may be long (unless told otherwise)."""
        # A write opened inside another on the same thread could never get the lock: fail as
        # SQLite's own busy timeout would, rather than hang.
        if not self._threads.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise WriterBusy("timed out waiting for the database's write lock")
        fds = None
        try:
            fds = self._files()
            if fds is not None:
                # The second lock first: the event loops see it while this waits, and do not
                # queue behind it in place.
                if long:
                    fcntl.flock(fds[1], fcntl.LOCK_EX)
                fcntl.flock(fds[0], fcntl.LOCK_EX)
        except BaseException:
            if fds is not None:  # unlocking what is not held is harmless
                fcntl.flock(fds[0], fcntl.LOCK_UN)
                fcntl.flock(fds[1], fcntl.LOCK_UN)
            self._threads.release()
            raise
        self._long = long and fds is not None

    def acquire_short(self, *, wait_for_short: bool = True) -> bool:
        """For a short write in the event loop: the lock if it is free, or once another
        process's short write lets it go. False, having waited for nothing, when a long write
        or another thread of this process holds it (or anyone, unless ``wait_for_short``): wait
        for it with ``acquire`` in a thread. (Which of the two holds it can change between the
        look and the wait; the look only decides where to wait.)"""
        if not self._threads.acquire(blocking=False):
            return False
        try:
            fds = self._files()
            if fds is not None and not _try_flock(fds[0], fcntl.LOCK_EX):
                if not wait_for_short:
                    self._threads.release()
                    return False
                # No thread of ours holds the second lock (the thread lock is ours): a shared
                # lock on it is refused only while another process writes long, or waits to.
                if not _try_flock(fds[1], fcntl.LOCK_SH):
                    self._threads.release()
                    return False
                fcntl.flock(fds[1], fcntl.LOCK_UN)
                fcntl.flock(fds[0], fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        self._long = False
        return True

    def release(self) -> None:
        try:
            if self._fds is not None:
                if self._long:
                    fcntl.flock(self._fds[1], fcntl.LOCK_UN)
                fcntl.flock(self._fds[0], fcntl.LOCK_UN)
        finally:
            self._long = False
            self._threads.release()

    @contextmanager
    def lent(self) -> Iterator[None]:
        """With the lock held: the calling thread's next write takes it (and releases it when
        it ends); released here if no write took it."""
        self._lent_to = threading.get_ident()
        try:
            yield
        finally:
            if self._lent_to is not None:
                self._lent_to = None
                self.release()

    def _files(self) -> tuple[int, int] | None:
        if self._fds is None and self._paths is not None:
            writer, long = (os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in self._paths)
            self._fds = (writer, long)
        return self._fds


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None: ``asyncio.get_running_loop`` without
    the exception, which a worker thread would pay for at each call."""
    return asyncio._get_running_loop()


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _tune_sqlite(engine: Engine, db: Database) -> None:
    # pysqlite opens transactions on its own and never with IMMEDIATE; take that job over
    # (the recipe of SQLAlchemy's SQLite dialect documentation, "Serializable isolation").
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # Small pages for a new database. The write-ahead log takes whole pages, and a verify
        # changes about ten, each for a row or an index entry of well under 100 bytes. Paced
        # at 700-840 verifies/s on 2 cores, a verify wrote 36-42 KB to the disk with 4 KiB
        # pages, 15-22 KB with 1 KiB and 14 KB with 512 bytes (so no smaller). In nine
        # alternated runs each, the median of the service's own p50 fell from 1.56 to 1.21 ms
        # (a later series was too disturbed by the host's steal to tell); /api/me and password
        # logins did not move. Only a database without pages yet takes it: once in WAL mode a
        # database keeps its page size (docs/deploy.md says how to change it).
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL is durable against application crashes and consistent
        # after a power loss; it saves an fsync per commit.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Temporary data in memory: above all the journal of each savepoint of a group of
        # verifies (``mfa.grouped``), which otherwise spills past 64 KiB to a new file in
        # /var/tmp for the rest of the group. At the peak of verifications that was a file made
        # and deleted about 7 times a second per worker, with 3,000 writes a second to them;
        # in memory, a verify took 137 µs of system time instead of 172-185 (the peak rate
        # itself did not move).
        cur.execute("PRAGMA temp_store=MEMORY")
        if db.checkpoints_in_background:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writes begin IMMEDIATE. Reads begin nothing: each statement reads one consistent
        # snapshot on its own, and no read of ours needs two statements to agree; that saves
        # a BEGIN and a COMMIT on every read (the /api/me path).
        begin = conn.get_execution_options().get("sqlite_begin")
        if begin:
            conn.exec_driver_sql(begin)
