"""The results table: on the terminal and in ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from . import settings
from .wrk import Result

# Above this share of the cores used by other processes, a figure is flagged.
BUSY_WARNING = 0.10


@dataclass(frozen=True)
class Row:
    scenario: str
    database: str
    result: Result | None = None
    rate: float | None = None
    vs_healthz: float | None = None
    target: str = ""
    measured: str = ""
    passed: bool | None = None  # None: no target for this row
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The share of the cores other processes took while this row was measured, when it is not
    # (only) its wrk run's: the password logins also lean on the raw argon2id runs.
    others: float | None = None

    @property
    def noisy(self) -> bool:
        """Whether other load on the machine makes the verdict doubtful."""
        shares = [self.others, self.result.others if self.result else None]
        return any(s is not None and s > BUSY_WARNING for s in shares)


HEADER = (
    "Scenario",
    "DB",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "vs /healthz",
    "errors",
    "Target",
    "Measured",
    "Result",
)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def cells(row: Row) -> tuple[str, ...]:
    r = row.result
    verdict = {None: "—", True: "PASS", False: "FAIL"}[row.passed]
    if row.passed is not None and row.noisy:
        verdict += "*"
    return (
        row.scenario,
        row.database,
        "—" if row.rate is None else f"{row.rate:,.0f}",
        _ms(r.p50_ms if r else None),
        _ms(r.p95_ms if r else None),
        _ms(r.p99_ms if r else None),
        "—" if row.vs_healthz is None else f"{row.vs_healthz:.1%}",
        "—" if r is None else str(r.errors),
        row.target or "—",
        row.measured or "—",
        verdict,
    )


def table(rows: list[Row]) -> str:
    """A Markdown table padded so that it also reads well in a terminal."""
    body = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADER), rule, *(line(v) for v in body[1:])])


NOISY = (
    f"*: other processes took more than {BUSY_WARNING:.0%} of the cores while this was "
    "measured, so the verdict is doubtful; run scripts/bench again on a quiet machine."
)


def notes(rows: list[Row]) -> list[str]:
    out: list[str] = [NOISY] if any(r.noisy and r.passed is not None for r in rows) else []
    for row in rows:
        out.extend(f"{row.scenario} ({row.database}): {note}" for note in row.notes)
        r = row.result
        if r is not None and r.statuses:
            codes = ", ".join(f"{n} x {code}" for code, n in sorted(r.statuses.items()))
            out.append(f"{row.scenario} ({row.database}): non-2xx answers: {codes}")
        if r is not None and r.others is not None and r.others > BUSY_WARNING:
            out.append(
                f"{row.scenario} ({row.database}): other processes used {r.others:.0%} of the "
                "cores during this run; the figure is lower than this machine can do"
            )
        if r is not None and r.exhausted:
            knob = "WEBAUTHN_USERS" if "security key" in row.scenario else "VERIFY_USERS"
            out.append(
                f"{row.scenario} ({row.database}): ran out of prepared users before the end; "
                f"its rate is a lower bound (raise {knob} in bench/settings.py)"
            )
    return out


@dataclass(frozen=True)
class Environment:
    date: str
    cores: int
    cpu: str
    memory: str
    kernel: str
    python: str
    versions: dict[str, str]
    commit: str


def environment(pg_version: str | None) -> Environment:
    versions = {
        name: _version(name)
        for name in ("mfa", "starlette", "uvicorn", "SQLAlchemy", "psycopg", "argon2-cffi")
    }
    versions["SQLite"] = sqlite3.sqlite_version
    if pg_version:
        versions["PostgreSQL"] = pg_version
    versions["wrk"] = _wrk_version()
    return Environment(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 0,
        cpu=_cpu_model(),
        memory=_memory(),
        kernel=platform.release(),
        python=platform.python_version(),
        versions=versions,
        commit=_git_commit(),
    )


def markdown(rows: list[Row], env: Environment, schema: str, extra_notes: list[str]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    note_lines = notes(rows) + extra_notes
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by `scripts/bench` (the driver is `bench/`); run it again to refresh this "
            "page. Figures from one machine are comparable with each other, not across machines. "
            "Where one scenario's CPU goes per request (the service, PostgreSQL, wrk, the rest) "
            "and how long the service itself took: `.venv/bin/python -m bench.probe --help`.",
            "",
            f"- Date: {env.date}; code at {env.commit}",
            f"- Machine: {env.cores} cores ({env.cpu}), {env.memory} RAM, Linux {env.kernel}, "
            f"Python {env.python}",
            f"- Versions: {versions}",
            "",
            table(rows),
            "",
            *(["Notes:", "", *(f"- {n}" for n in note_lines), ""] if note_lines else []),
            "## How it was measured",
            "",
            f"- The service runs as users run it: `mfa serve --workers {settings.WORKERS}` on "
            "127.0.0.1, with SQLite (WAL) in a fresh file and, when PostgreSQL answers on "
            "127.0.0.1:5432, in a fresh database dropped afterwards. The load generator, wrk, "
            "runs on the same cores.",
            f"- Schema: {schema}. Data is written before the server starts, with the service's "
            "own models and secret box in bulk inserts: users with an active TOTP factor whose "
            "key the bench knows and an open login transaction each, so every verification is "
            "the first use of its code by its own user (one code per user per time step); "
            f"{settings.ME_USERS} users with access tokens minted by `tokens.issue`; "
            f"{settings.PASSWORD_USERS:,} users with a known password (one argon2id hash shared "
            "by all).",
            f"- Each wrk run: {settings.DURATION_S} s, {settings.THREADS} threads, "
            f"{settings.CONNECTIONS} connections ({settings.LOGIN_CONNECTIONS} for password "
            "logins), after a warm-up. req/s counts 2xx answers only; errors are non-2xx "
            "answers, socket errors and timeouts. Latencies are wrk's (from the request's "
            "write to its answer).",
            "- vs /healthz: the rate as a share of `GET /healthz` measured against the same "
            "server in the same run: the mean of a run before `/api/me` and one after the TOTP "
            "verifications, since the speed of a shared machine drifts from minute to minute.",
            "- Verification at half peak: the same request on fresh users, paced at half the "
            "peak rate just measured: each wrk thread hands out evenly spaced send slots to "
            "its free connections through wrk's `delay()`.",
            "- Security-key logins (when the build has them): "
            f"{settings.WEBAUTHN_USERS['sqlite']:,} (SQLite) or "
            f"{settings.WEBAUTHN_USERS['postgresql']:,} (PostgreSQL) users register a "
            "key of `tests/softauthn.py` through the service's own enroll and confirm; then "
            "each opens a login transaction, which keeps the ceremony of `login.challenge` "
            "that one assertion made beforehand answers. The run comes first after the "
            "warm-up, since a ceremony lives 300 s: the assertions go youngest first, each at "
            "most once, `{mfa_token, "
            f"credential}}`, over {settings.WEBAUTHN_DURATION_S} s.",
            "- Other load: the bench reads /proc to tell its own processes' CPU time (driver, "
            "server, wrk, and PostgreSQL's while it is measured) from everything else's, waits "
            "up to a minute for quiet before each database, and flags every run during which "
            "others took more than 10% of the cores. Before each run it waits until the server "
            "has finished the requests the last one left open (wrk stops with one in flight on "
            "each connection).",
            "- /healthz under login saturation: password logins at full load and, at the same "
            f"time, a light /healthz probe ({settings.PROBE_RATE} requests/s over "
            f"{settings.PROBE_CONNECTIONS} connections).",
            f"- Raw argon2id: {settings.ARGON_PROCESSES} processes verifying one hash in a loop "
            f"for {settings.ARGON_SECONDS:g} s with the service's `mfa.passwords.HASHER`, right "
            "before and right after the password logins while the server idles; the logins "
            "are compared with the mean of the two sums.",
            "",
        ]
    )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    except OSError:
        return "?"
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(  # noqa: S603  (git with arguments of our own)
            ["git", *args],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str:
    """The commit measured, marked when the working tree differs from it (this page aside)."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown commit"
    changed = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks.md"
    )
    return f"{commit} with uncommitted changes" if changed else commit
