"""Whether the machine is quiet: the bench shares the cores with whatever else runs there.

``/proc/stat`` says how busy all cores were; ``/proc/<pid>/stat`` and ``getrusage`` say how
much of that was the bench's own processes (the driver, the server and its workers, wrk). The
rest is other load, and a figure measured under it is lower than the machine can do.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# /proc and its clock ticks, also read by `bench.probe`.
PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")

# Commands whose processes count as the service's too while a phase uses them: the database
# server (PostgreSQL's backends do the queries of the service under test).
SERVICE_COMMANDS: set[str] = set()


@dataclass(frozen=True)
class Sample:
    busy: int  # ticks over all cores: user, nice, system, and steal (the hypervisor's share)
    total: int  # ticks over all cores, idle included
    ours: float  # ticks spent by the bench's own processes


def cores() -> list[int] | None:
    """The ticks of all cores by kind, as ``/proc/stat``'s first line gives them: user, nice,
    system, idle, iowait, irq, softirq, steal (as many as the kernel gives)."""
    try:
        return [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, IndexError, ValueError):
        return None


def _system() -> tuple[int, int] | None:
    fields = cores()
    if fields is None or len(fields) < 3:
        return None
    user, nice, system = fields[0], fields[1], fields[2]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + steal, sum(fields)


@dataclass(frozen=True)
class Process:
    """A live process as ``/proc/<pid>/stat`` gives it; CPU times in ticks."""

    pid: int
    command: str
    parent: int
    user: int
    system: int
    reaped: int  # its reaped children's user and system time


def processes() -> Iterator[Process]:
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
        rest = text[text.rindex(")") + 2 :].split()
        yield Process(
            pid=int(entry.name),
            command=text[text.index("(") + 1 : text.rindex(")")],
            parent=int(rest[1]),
            user=int(rest[11]),
            system=int(rest[12]),
            reaped=int(rest[13]) + int(rest[14]),
        )


def descendants(found: Iterable[Process], root: int) -> list[Process]:
    """The processes among ``found`` that descend from ``root`` (not ``root`` itself)."""
    listed = list(found)
    parents = {p.pid: p.parent for p in listed}
    mine = []
    for process in listed:
        ancestor, hops = parents.get(process.pid), 0
        while ancestor is not None and ancestor not in (root, 0, 1) and hops < 64:
            ancestor, hops = parents.get(ancestor), hops + 1
        if ancestor == root:
            mine.append(process)
    return mine


def settle(patience_s: float = 15.0) -> None:
    """Wait (up to ``patience_s``) until the server has finished what the last load left in
    flight: wrk stops with a request open on each connection, and the server still answers
    them into closed sockets. 64 password logins are ~0.7 s of both cores, which whatever ran
    next was charged for: the second of two login runs in a row came out 8% slower (p99 1.3 s
    against 0.8 s), and an argon2id measurement right after logins ran beside them."""
    window_s = 0.25
    deadline = time.monotonic() + patience_s
    last = _theirs()
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = _theirs()
        if now - last < 0.1 * window_s * TICKS:  # under a tenth of one core
            return
        last = now


def _theirs() -> int:
    """Ticks of every live descendant of this process (the server, and wrk while it runs)
    and of the processes of ``SERVICE_COMMANDS``, with what each has reaped."""
    found = list(processes())
    service = [p for p in found if p.command in SERVICE_COMMANDS]
    mine = [p for p in descendants(found, os.getpid()) if p.command not in SERVICE_COMMANDS]
    return sum(p.user + p.system + p.reaped for p in service + mine)


def _ours() -> float:
    """``_theirs``, and the ticks of this process and of its reaped children (wrk)."""
    total = float(_theirs())
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += (usage.ru_utime + usage.ru_stime) * TICKS
    return total


def sample() -> Sample | None:
    system = _system()
    if system is None:
        return None
    return Sample(busy=system[0], total=system[1], ours=_ours())


def others_share(before: Sample | None, after: Sample | None) -> float | None:
    """The share of all cores used by processes other than the bench's between two samples."""
    if before is None or after is None or after.total <= before.total:
        return None
    others = (after.busy - before.busy) - (after.ours - before.ours)
    return max(0.0, others / (after.total - before.total))


def busy_share(seconds: float = 1.0) -> float | None:
    """The share of all cores that others keep busy over ``seconds`` while the bench waits."""
    before = sample()
    time.sleep(seconds)
    return others_share(before, sample())


def wait_until_quiet(threshold: float, patience_s: float) -> float | None:
    """Wait up to ``patience_s`` for other load to drop under ``threshold``; return the last
    share seen (None where it cannot be measured)."""
    deadline = time.monotonic() + patience_s
    share = busy_share()
    while share is not None and share > threshold and time.monotonic() < deadline:
        share = busy_share()
    return share
