"""The raw argon2id rate: what the cores can verify per second at the service's parameters,
with nothing else running. Password logins are measured against it."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

from mfa.passwords import HASHER

from . import machine

_PASSWORD = "correct horse battery staple"  # noqa: S105  (hashed here, for timing)


@dataclass(frozen=True)
class ArgonRate:
    per_second: float
    processes: int
    seconds: float
    parameters: str
    others: float | None = None  # the share of the cores other processes used meanwhile


def _verify_loop(stored: str, start_at: float, seconds: float) -> tuple[int, float]:
    """Verify in a loop inside one shared wall-clock window, so the processes overlap fully."""
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    deadline = began + seconds
    done = 0
    while time.perf_counter() < deadline:
        HASHER.verify(stored, _PASSWORD)
        done += 1
    return done, time.perf_counter() - began


def measure(processes: int, seconds: float) -> ArgonRate:
    stored = HASHER.hash(_PASSWORD)
    start_at = time.time() + 1.5  # time for the spawned interpreters to import argon2
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pending = pool.starmap_async(_verify_loop, [(stored, start_at, seconds)] * processes)
        time.sleep(max(0.0, start_at - time.time()))
        before = machine.sample()
        results = pending.get()
        others = machine.others_share(before, machine.sample())
    return ArgonRate(
        per_second=sum(done / elapsed for done, elapsed in results),
        processes=processes,
        seconds=seconds,
        parameters=(
            f"argon2id m={HASHER.memory_cost} KiB, t={HASHER.time_cost}, p={HASHER.parallelism}"
        ),
        others=others,
    )


def mean(rates: list[ArgonRate]) -> ArgonRate:
    """Several measurements as one: the machine's load may drift between them."""
    first = rates[0]
    return ArgonRate(
        per_second=sum(r.per_second for r in rates) / len(rates),
        processes=first.processes,
        seconds=first.seconds,
        parameters=first.parameters,
        others=max((r.others for r in rates if r.others is not None), default=None),
    )
