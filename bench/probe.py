"""One scenario measured more closely than the bench does: where each request's CPU goes.

    python -m bench.probe --database sqlite --scenario verify --rate 900 --runs 3

It prepares the data and starts ``mfa serve --workers 2`` as the bench does (``--env
NAME=VALUE`` adds a setting, for experiments), warms up with /healthz, then loads the scenario
``--runs`` times: at full speed, or paced at ``--rate``, or (``--after-peak``, verify only)
paced at half of a peak run just before, which is the bench's order. Each run prints what wrk
saw, and:

- CPU per answered request: the service's processes (user and system time), PostgreSQL's
  processes, wrk, and the rest (the kernel's interrupt work among it), with how busy the cores
  were. A request served at a steady pace costs more here than one at the peak: on a VM the
  cores go idle between requests and come back with cold caches.
- context switches per request over all the service's threads;
- the service's own time per request from its access log (p50, p99): the gap to wrk's figures
  is time spent outside it, queued in wrk or in the socket.

PostgreSQL processes that exit during a run take their CPU time with them (the bench's pool
keeps its connections, so this is rare).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import databases, machine, prepare, settings, wrk
from .run import VERIFY, service_env, write_lines
from .server import free_port, serving
from .wrk import Feed, Load, Result

SCENARIOS = ("healthz", "me", "verify", "key", "login")
# How many prepared logins a run at full speed may use up: above the peak seen on 2 cores.
PEAK_USERS_PER_S = 3_000


@dataclass(frozen=True)
class Cpu:
    """Seconds of CPU (user, system) and context switches (voluntary, involuntary)."""

    user: float
    system: float
    voluntary: int
    involuntary: int


@dataclass(frozen=True)
class Snapshot:
    at: float
    service: Cpu
    postgres: float
    wrk: float  # reaped children of this process: wrk, once ``finish`` has waited for it
    busy: float  # seconds of CPU over all cores, idle and I/O wait left out
    total: float


def _switches(pid: int) -> tuple[int, int]:
    voluntary = involuntary = 0
    try:
        for task in (machine.PROC / str(pid) / "task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
    except OSError:
        pass  # gone meanwhile
    return voluntary, involuntary


def snapshot() -> Snapshot:
    """The CPU so far of the service (every live process this one started: wrk is not
    running between runs), of PostgreSQL, of reaped children (wrk), and of all cores."""
    found = list(machine.processes())
    service = machine.descendants(found, os.getpid())
    voluntary = involuntary = 0
    for process in service:
        v, i = _switches(process.pid)
        voluntary, involuntary = voluntary + v, involuntary + i
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = machine.cores() or []
    idle = sum(cores[3:5])
    return Snapshot(
        at=time.monotonic(),
        service=Cpu(
            sum(p.user for p in service) / machine.TICKS,
            sum(p.system for p in service) / machine.TICKS,
            voluntary,
            involuntary,
        ),
        postgres=sum(p.user + p.system for p in found if p.command == "postgres") / machine.TICKS,
        wrk=children.ru_utime + children.ru_stime,
        busy=(sum(cores) - idle) / machine.TICKS,
        total=sum(cores) / machine.TICKS,
    )


def server_times(log: Path, offset: int, path: str) -> list[float]:
    """Durations (ms) of the access-log lines about ``path`` written past ``offset``."""
    durations = []
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("logger") == "mfa.access" and f" {path} " in entry.get("message", ""):
                durations.append(float(entry["duration_ms"]))
    return sorted(durations)


def percentile(values: Sequence[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] if values else math.nan


def report(name: str, result: Result, before: Snapshot, after: Snapshot, times: list[float]) -> str:
    ok = max(result.ok, 1)
    seconds = after.at - before.at
    service = after.service
    user = (service.user - before.service.user) / ok * 1e6
    system = (service.system - before.service.system) / ok * 1e6
    postgres = (after.postgres - before.postgres) / ok * 1e6
    load = (after.wrk - before.wrk) / ok * 1e6
    busy = after.busy - before.busy
    # Clock ticks round each figure: the remainder can come out a little below zero.
    rest = max(0.0, busy / ok * 1e6 - user - system - postgres - load)
    cores = (after.total - before.total) / seconds if seconds else math.nan
    voluntary = (service.voluntary - before.service.voluntary) / ok
    involuntary = (service.involuntary - before.service.involuntary) / ok
    lines = [
        f"{name}: {result.rate:,.0f} ok/s, wrk p50 {result.p50_ms:.2f} ms p99 "
        f"{result.p99_ms:.2f} ms, {result.errors} errors"
        + (", ran out of prepared requests" if result.exhausted else ""),
        f"  CPU per request (µs): service {user:,.0f} user + {system:,.0f} system, "
        f"PostgreSQL {postgres:,.0f}, wrk {load:,.0f}, rest {rest:,.0f}; "
        f"cores busy {busy / seconds:.2f} of {cores:.0f}",
        f"  context switches per request: {voluntary:.2f} voluntary, {involuntary:.2f} "
        f"involuntary; service time p50 {percentile(times, 0.5):.2f} ms, "
        f"p99 {percentile(times, 0.99):.2f} ms ({len(times):,} lines)",
    ]
    return "\n".join(lines)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("MFA_"):
        raise argparse.ArgumentTypeError("expected MFA_NAME=VALUE")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=SCENARIOS, default="verify")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: full speed")
    parser.add_argument(
        "--after-peak", action="store_true", help="verify: pace at half a peak run just before"
    )
    parser.add_argument("--runs", type=int, default=1, help="loads in a row on one server")
    parser.add_argument("--seconds", type=int, default=settings.DURATION_S, help="per run")
    parser.add_argument("--connections", type=int, default=settings.CONNECTIONS)
    parser.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="MFA_X=V",
        help="a setting for the server (repeatable)",
    )
    parser.add_argument(
        "--keep-log", type=Path, metavar="FILE", help="copy the server's log (JSON lines) there"
    )
    args = parser.parse_args(argv)
    if args.after_peak and args.scenario != "verify":
        parser.error("--after-peak is for --scenario verify")

    runs = args.runs + (1 if args.after_peak else 0)
    # A margin: wrk's threads take their own shares of the bodies and run a little long.
    needed = math.ceil((args.rate or PEAK_USERS_PER_S) * args.seconds * runs * 1.25)
    if args.scenario == "key":
        # Preparing a security-key login costs milliseconds and its ceremony lives 300 s: no
        # more than the bench prepares, or the first would expire before the runs (a run that
        # uses them all up says so).
        needed = min(needed, settings.WEBAUTHN_USERS[args.database])
    verify_users = needed if args.scenario == "verify" else 0
    key_users = needed if args.scenario == "key" else 0
    with (
        tempfile.TemporaryDirectory(prefix="mfa-probe-") as tmp,
        databases.database(args.database, Path(tmp)) as url,
    ):
        files = Path(tmp)
        port = free_port()
        env = {**service_env(url, files / "data", port), **dict(args.env)}
        data, _ = prepare.prepare(env, verify_users, key_users)
        log = files / "server.log"
        with serving(env, port, log) as base:
            wrk.run(Load("warmup", "GET", "/healthz", duration_s=settings.WARMUP_S), base, files)
            pool = list(data.verify)
            rate = args.rate
            for run in range(runs):
                peak = args.after_peak and run == 0
                lines: Path | None = None
                if args.scenario in ("verify", "key"):
                    share = len(pool) // (runs - run)
                    chunk, pool = pool[:share], pool[share:]
                    bodies = (
                        prepare.verify_bodies(chunk, time.time())
                        if args.scenario == "verify"
                        # Youngest ceremonies first, as the bench sends them.
                        else reversed(data.webauthn[run::runs])
                    )
                    lines = write_lines(files / f"bodies-{run}.txt", bodies)
                load = _load(args.scenario, lines, data, files, 0.0 if peak else rate, args)
                machine.settle()
                before = snapshot()
                offset = log.stat().st_size
                result = wrk.run(load, base, files)
                after = snapshot()
                times = server_times(log, offset, load.path)
                name = f"{args.database} {args.scenario}" + (" peak" if peak else "")
                print(report(name, result, before, after, times), flush=True)
                if peak:
                    rate = result.rate / 2
        if args.keep_log is not None:
            shutil.copyfile(log, args.keep_log)
    return 0


def _load(
    scenario: str,
    lines: Path | None,
    data: prepare.Dataset,
    files: Path,
    rate: float,
    args: argparse.Namespace,
) -> Load:
    make = functools.partial(Load, connections=args.connections, rate=rate, duration_s=args.seconds)
    if scenario == "healthz":
        return make("healthz", "GET", "/healthz")
    if scenario == "me":
        tokens = write_lines(files / "tokens.txt", data.access_tokens)
        return make("me", "GET", "/api/me", Feed.BEARER, tokens)
    if scenario == "login":
        bodies = write_lines(
            files / "logins.txt", prepare.login_bodies(data.usernames, data.password)
        )
        return make("login", "POST", "/api/login", Feed.CYCLE, bodies)
    return make(scenario, "POST", VERIFY, Feed.ONCE, lines)


if __name__ == "__main__":
    sys.exit(main())
