"""What a service call needs: the process-wide collaborators and who is asking."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import anyio
from joserfc.jwk import ECKey

from .config import Settings
from .db import Database
from .grouped import WriteGroups
from .secretbox import SecretBox, load_or_create_key
from .services.keys import KeyStore

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class RequestMeta:
    """Who is asking, for the audit log."""

    ip: str | None = None
    user_agent: str | None = None


CLI = RequestMeta(ip=None, user_agent="mfa-cli")


@dataclass
class Context:
    settings: Settings
    db: Database
    box: SecretBox
    keys: KeyStore
    clock: Callable[[], float] = time.time
    # Made at first use, in the event loop's thread (so no two at once).
    _work: ThreadPoolExecutor | None = field(default=None, repr=False)
    _hash_work: ThreadPoolExecutor | None = field(default=None, repr=False)
    _groups: WriteGroups | None = field(default=None, repr=False)
    # Made here, not on first use: the threads that hash would race to make it.
    _hashers: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._hashers = self._new_hashers()

    @classmethod
    def create(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Context:
        key = settings.encryption_key or load_or_create_key(settings.data_dir)
        box = SecretBox(key)
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        keys = KeyStore(db, box, settings=settings, clock=clock)
        return cls(settings=settings, db=db, box=box, keys=keys, clock=clock)

    def now(self) -> int:
        return int(self.clock())

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking work (database, crypto) in a worker thread.

        A few threads at a time: the work holds the GIL most of the time, so more threads only
        trade it back and forth, and a request waits less in the event loop's queue than in
        that scramble.
        """
        if self._work is None:
            self._work = ThreadPoolExecutor(self.settings.worker_threads, "mfa-work")
        return await _in_thread(self._work, fn, *args, **kwargs)

    async def run_write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a short write transaction and the work around it (a login's second factor, a
        few hundred microseconds of CPU): on SQLite right here in the event loop, once the
        writer lock is ours (``Database.loop_write``); on PostgreSQL in a worker thread
        (``run``), since its statements wait on the network.

        On SQLite the hand-off to a thread and back cost more than the write, and the thread
        held the writer lock while it waited for the GIL at each statement: in the loop, peak
        verifications ran at about 1.5 times the rate (1,690/s against 1,160/s, medians of six
        runs), and at 700/s the slowest 1% took 6 to 8 ms instead of 26 to 106.
        """
        if not self.db.is_sqlite:
            return await self.run(fn, *args, **kwargs)
        async with self.db.loop_write():
            return fn(*args, **kwargs)

    async def run_write_together(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``run_write`` for a write that goes through ``Database.direct`` only (a login's
        verify): on SQLite in one transaction with the others that wait for the lock at the
        same time (``mfa.grouped``); on PostgreSQL in a worker thread, as ``run``."""
        if not self.db.is_sqlite:
            return await self.run(fn, *args, **kwargs)
        if self._groups is None:
            self._groups = WriteGroups(self.db)
        return await self._groups.run(fn, *args, **kwargs)

    async def signer(self) -> ECKey:
        """The current signing key: in the event loop while the cache is fresh, else read in a
        worker thread."""
        signer = self.keys.cached_signer()
        return signer if signer is not None else await self.run(self.keys.signer)

    async def run_hashing(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run work around a password hash (a login on PostgreSQL: its claim, the hash, its
        writes) in a thread; the hash itself goes to a hashing thread with ``hash``.

        There are twice as many such threads as hashing threads: while one waits for the
        database before or after its hash (a commit's flush on PostgreSQL), another's hash can
        run.
        """
        if self._hash_work is None:
            # Named for what they run: the hashes themselves run on "mfa-argon2".
            self._hash_work = ThreadPoolExecutor(2 * self.settings.hash_concurrency, "mfa-login")
        return await _in_thread(self._hash_work, fn, *args, **kwargs)

    def close(self) -> None:
        """Let the worker threads go once their work is done (the app's shutdown); ``run``
        starts new ones if it is called again."""
        for pool in (self._work, self._hash_work, self._hashers):
            if pool is not None:
                pool.shutdown(wait=False)
        self._work = self._hash_work = None
        self._hashers = self._new_hashers()  # unstarted: its threads start at the first hash

    def _new_hashers(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.settings.hash_concurrency, "mfa-argon2")

    async def run_hash(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``hash`` awaited from the event loop."""
        return await _in_thread(self._hashers, fn, *args, **kwargs)

    def hash(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a password hash on one of ``hash_concurrency`` threads kept for hashing, and
        wait for it; from a worker thread, never the event loop.

        argon2id is memory-hard and CPU-bound: more hashes at once than cores only queue
        inside the kernel and thrash the caches. And its 19 MiB come from the allocator of
        the thread that hashes: on a thread that hashes one password after another they are
        the same memory each time, still cached, where threads taking turns each found
        theirs cold (on 2 cores, 2 threads taking turns spent 20.7-21.3 ms of CPU a hash
        against 18.4-18.6 for one thread).
        """
        return self._hashers.submit(fn, *args, **kwargs).result()


async def _in_thread(
    pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn`` on one of ``pool``'s threads, with this task's context variables (the request id
    of its log lines). The event loop's own executor hand-off, not anyio's ``to_thread``: under
    load that took twice the CPU per trip (about 50 µs against 23).

    As with ``to_thread``, a cancelled caller still waits for the thread: its work (a
    transaction, a checkout from the pool) cannot stop halfway, and must not outlive the
    shutdown that cancelled it (the pool would be disposed under it, its connection leaked).
    """
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    with anyio.CancelScope(shield=True):
        result = await asyncio.get_running_loop().run_in_executor(pool, call)
    return result  # noqa: RET504  (mypy: a CancelScope could swallow what the block raised)
