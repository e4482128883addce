"""Whether the machine is quiet: the bench shares the cores with whatever else runs there.

``/proc/stat`` says how busy all cores were; ``/proc/<pid>/stat`` and ``getrusage`` say how
much of that was the bench's own processes (the driver, the server and its workers, wrk). The
rest is other load, and a figure measured under it is lower than the machine can do.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")

# Commands whose processes count as the service's too while a phase uses them: the database
# server (PostgreSQL's backends do the queries of the service under test).
SERVICE_COMMANDS: set[str] = set()


@dataclass(frozen=True)
class Sample:
    busy: int  # ticks over all cores: user, nice, system, and steal (the hypervisor's share)
    total: int  # ticks over all cores, idle included
    ours: float  # ticks spent by the bench's own processes


def _system() -> tuple[int, int] | None:
    try:
        fields = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return None
    user, nice, system = fields[0], fields[1], fields[2]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + steal, sum(fields[:8])


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command, parent pid, own and reaped children's CPU ticks) of a live process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    command = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return command, int(rest[1]), float(sum(int(v) for v in rest[11:15]))


def _ours() -> float:
    """Ticks of this process, its reaped children, every live descendant, and the processes
    of ``SERVICE_COMMANDS``."""
    me = os.getpid()
    parents: dict[int, int] = {}
    ticks: dict[int, float] = {}
    total = 0.0
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            found = _stat(int(entry.name))
            if found is None:
                continue
            command, parents[int(entry.name)], ticks[int(entry.name)] = found
            if command in SERVICE_COMMANDS:
                total += ticks.pop(int(entry.name))
    for pid, cpu in ticks.items():
        ancestor, hops = parents.get(pid), 0
        while ancestor is not None and ancestor not in (me, 0, 1) and hops < 64:
            ancestor, hops = parents.get(ancestor), hops + 1
        if ancestor == me:
            total += cpu
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += (usage.ru_utime + usage.ru_stime) * _TICKS
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
