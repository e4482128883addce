"""What a service call needs: the process-wide collaborators and who is asking."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from .config import Settings
from .db import Database
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
    _hash_limiter: CapacityLimiter | None = field(default=None, repr=False)
    _hash_slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _work_limiter: CapacityLimiter | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Made here, not on first use: threads would race to make it.
        self._hash_slots = threading.BoundedSemaphore(self.settings.hash_concurrency)

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
        if self._work_limiter is None:
            self._work_limiter = CapacityLimiter(self.settings.worker_threads)
        return await anyio.to_thread.run_sync(
            lambda: fn(*args, **kwargs), limiter=self._work_limiter
        )

    async def run_hashing(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run work around a password hash (a login: its claim, the hash, its writes) in a
        thread; the hash itself takes a slot with ``hashing``.

        There are twice as many such threads as slots: while one waits for the database
        before or after its hash (a commit's flush on PostgreSQL), another can hash.
        """
        if self._hash_limiter is None:
            self._hash_limiter = CapacityLimiter(2 * self.settings.hash_concurrency)
        return await anyio.to_thread.run_sync(
            lambda: fn(*args, **kwargs), limiter=self._hash_limiter
        )

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """Hold one of ``hash_concurrency`` slots for a password hash, in a worker thread.

        argon2id is memory-hard and CPU-bound: more hashes at once than cores only queue
        inside the kernel and thrash the caches.
        """
        with self._hash_slots:
            yield
