"""Throttling of failed attempts, counted in the database.

An attempt first *claims* its place: one atomic upsert counts it as a failure in advance and,
from the threshold on, starts the back-off. A success then clears the count. Counting before
checking is what keeps the limit exact when many attempts arrive at once on many instances:
each one takes its own number, and those past the threshold are refused without being checked.

Second factors (per user): 5 failures, then 30 s doubling to 15 min; locked at 100 until an
admin unlocks. Passwords (per username, known or not): 10 failures, then the same back-off.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from ..errors import Locked, TooManyAttempts
from ..models import Throttle, table_of

BACKOFF_START = 30
BACKOFF_MAX = 15 * 60
LOCK_AFTER = 100


@dataclass(frozen=True)
class Policy:
    prefix: str
    free_failures: int
    locks: bool


MFA = Policy("mfa", free_failures=5, locks=True)
PASSWORD = Policy("pwd", free_failures=10, locks=False)


# Subjects longer than this (an unknown username may be up to 256 characters) are keyed by
# their SHA-256, so the key fits its column and distinct subjects stay distinct.
_SUBJECT_MAX = 64


def key(policy: Policy, subject: str) -> str:
    if len(subject) > _SUBJECT_MAX:
        subject = "#" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{policy.prefix}:{subject}"


def backoff(failures: int, policy: Policy) -> int:
    """Seconds to wait after ``failures`` consecutive failures."""
    excess = failures - policy.free_failures
    if excess < 0:
        return 0
    return min(BACKOFF_START << min(excess, 16), BACKOFF_MAX)


def claim(session: Session, policy: Policy, subject: str, now: int) -> int:
    """Count an attempt before it is checked; raise if it must not be checked at all.

    Returns the attempt's number in the current run of failures.
    """
    k = key(policy, subject)
    table = table_of(Throttle)
    dialect_insert = (
        sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    )
    upsert = dialect_insert(table).values(key=k, failures=1, blocked_until=0, locked=False)
    stmt = upsert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={"failures": table.c.failures + 1},
        where=(table.c.blocked_until <= now) & (table.c.locked == False),  # noqa: E712
    ).returning(table.c.failures)
    number: int | None = session.execute(stmt).scalar()
    if number is None:
        row = session.execute(
            select(col(Throttle.blocked_until), col(Throttle.locked)).where(col(Throttle.key) == k)
        ).one()
        if row.locked:
            raise Locked
        raise TooManyAttempts(row.blocked_until - now)
    wait = backoff(number, policy)
    if wait:
        session.execute(
            update(Throttle).where(col(Throttle.key) == k).values(blocked_until=now + wait)
        )
    return number


def succeeded(session: Session, policy: Policy, subject: str) -> None:
    session.execute(
        update(Throttle)
        .where(col(Throttle.key) == key(policy, subject), col(Throttle.locked) == False)  # noqa: E712
        .values(failures=0, blocked_until=0)
    )


def lock_if_exhausted(session: Session, policy: Policy, subject: str) -> bool:
    """After a failure: lock once the run of failures reaches the limit. True if it locked now."""
    if not policy.locks:
        return False
    result = session.execute(
        update(Throttle)
        .where(
            col(Throttle.key) == key(policy, subject),
            col(Throttle.failures) >= LOCK_AFTER,
            col(Throttle.locked) == False,  # noqa: E712
        )
        .values(locked=True)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def clear(session: Session, policy: Policy, subject: str) -> bool:
    """Forget failures, back-off and lock (an admin's unlock). True if anything was set."""
    result = session.execute(
        update(Throttle)
        .where(col(Throttle.key) == key(policy, subject))
        .where((col(Throttle.failures) > 0) | col(Throttle.locked))
        .values(failures=0, blocked_until=0, locked=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def is_locked(session: Session, policy: Policy, subject: str) -> bool:
    locked = session.execute(
        select(col(Throttle.locked)).where(col(Throttle.key) == key(policy, subject))
    ).scalar()
    return bool(locked)
