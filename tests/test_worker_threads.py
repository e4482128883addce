"""``Context.run``: blocking work on a few threads, handed over by the event loop."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from mfa.context import Context
from mfa.observability import request_id


@pytest.fixture
def ctx(settings):
    made = Context.create(settings)
    yield made
    made.close()
    made.db.dispose()


def test_a_cancelled_caller_still_waits_for_its_thread(ctx):
    # Shutdown cancels the prune task; its transaction must end before the pool is disposed.
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    async def main() -> None:
        with anyio.move_on_after(0.05):
            await ctx.run(slow)

    anyio.run(main)
    assert finished.is_set()


def test_the_work_sees_the_request_id_of_its_caller(ctx):
    async def main() -> str | None:
        request_id.set("req-1234")
        return await ctx.run(request_id.get)

    assert anyio.run(main) == "req-1234"


def test_no_more_threads_than_configured_run_at_once(ctx):
    running, peak = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(ctx.run, work)

    anyio.run(main)
    assert peak == ctx.settings.worker_threads
