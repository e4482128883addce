"""Reads by key gathered in the event loop: while one read is out, the keys asked for meanwhile
wait for it, and then go together as the next one.

For /api/me on PostgreSQL (``Database.fetch_gathered``). There each read was a round trip of
its own: the pool's checkout, psycopg's work around the query, the send that wakes the server,
and the server's own work per statement cost more than the row. Under load, the calls that
arrive while one read is out now share the next: one query for all their users. Alone, a call
waits for nothing: its read goes out at once. Each call still gets rows read after it was
made, never older ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Gather(Generic[K, V]):
    """``get(key)``: the value ``read_many`` finds for ``key`` (``missing`` if none), read
    together with the keys of the other calls waiting at the time. One read at a time."""

    def __init__(self, read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]], missing: V):
        self._read_many = read_many
        self._missing = missing
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        answer: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(answer)
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())
        return await answer

    async def _read(self) -> None:
        batch: dict[K, list[asyncio.Future[V]]] = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self._read_many(list(batch))
                except Exception as e:  # each caller gets the read's error as its own
                    for _, answer in _awaited(batch):
                        answer.set_exception(e)
                    continue
                for key, answer in _awaited(batch):
                    answer.set_result(found.get(key, self._missing))
        except BaseException:
            # Cancelled (the loop shutting down): so are the calls still waiting.
            for _, answer in [*_awaited(batch), *_awaited(self._waiting)]:
                answer.cancel()
            self._waiting = {}
            raise
        finally:
            self._reading = None


def _awaited(batch: Mapping[K, list[asyncio.Future[V]]]) -> Iterator[tuple[K, asyncio.Future[V]]]:
    """The answers still awaited: a caller cancelled meanwhile has left, its answer done."""
    for key, answers in batch.items():
        for answer in answers:
            if not answer.done():
                yield key, answer
