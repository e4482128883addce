"""Throttling of failed attempts, counted in the database.

An attempt first *claims* its place: one atomic upsert counts it as a failure in advance and,
from the threshold on, starts the back-off in the same statement. A success then clears the
count. Counting before checking is what keeps the limit exact when many attempts arrive at
once on many instances: each one takes its own number, and those past the threshold are
refused without being checked.

A second factor checked inside one write transaction on SQLite needs no claim (``admit``): that
transaction is the database's only writer until it commits, so no attempt runs beside it, and
it counts only a failure, with the same statement. A login's verify on PostgreSQL needs none
either: it reads the user's row locked until it commits (``admit_read``), so attempts beside
it wait for its outcome, as they waited for a claim's.

Second factors (per user): 5 failures, then 30 s doubling to 15 min; locked at 100 until an
admin unlocks. Passwords (per username, known or not): 10 failures, then the same back-off.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, false, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..db import Reader, Writer, dialect_name
from ..direct import prepared
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


def key_of_id(policy: Policy, subject: ColumnElement[str]) -> ColumnElement[str]:
    """``key`` in SQL, of an id a statement reads: ids are short enough to be keyed as they
    are. A caller checks the key that comes back against ``key`` (``admit_read``)."""
    return literal(f"{policy.prefix}:") + subject


def backoff(failures: int, policy: Policy) -> int:
    """Seconds to wait after ``failures`` consecutive failures. The claim computes the same in
    SQL (``_backoff_until``); a test holds the two equal."""
    excess = failures - policy.free_failures
    if excess < 0:
        return 0
    return min(BACKOFF_START << min(excess, 16), BACKOFF_MAX)


_T = table_of(Throttle)


def _backoff_until(failures: Any) -> Any:
    """SQL for the end of the back-off after ``failures`` (an expression) for the policy whose
    ``free_failures`` is bound as "free": ``backoff`` as a CASE over the few steps before its
    cap, so that one statement both counts a failure and starts the wait it earns."""
    excess = failures - bindparam("free")
    steps: list[tuple[Any, int]] = []
    while (wait := min(BACKOFF_START << len(steps), BACKOFF_MAX)) < BACKOFF_MAX:
        steps.append((excess == len(steps), wait))
    return bindparam("now") + case(*steps, else_=BACKOFF_MAX)


def _claim_statement(insert: Any) -> Any:
    # Insert the first failure, or count one more, but only outside a back-off and a lock; the
    # row that comes back says which number this attempt is. No row: refused unchecked. One
    # statement, so that it is atomic on its own: no attempt slips in between the count that
    # reaches the threshold and the back-off it starts.
    counted = _T.c.failures + 1
    return (
        insert(_T)
        .values(key=bindparam("k"), failures=1, blocked_until=bindparam("first"), locked=False)
        .on_conflict_do_update(
            index_elements=[_T.c.key],
            set_={
                "failures": counted,
                "blocked_until": case(
                    (counted >= bindparam("free"), _backoff_until(counted)),
                    else_=_T.c.blocked_until,
                ),
            },
            where=(_T.c.blocked_until <= bindparam("now")) & (_T.c.locked == false()),
        )
        .returning(_T.c.failures)
    )


# Built once: statement construction costs more than running them.
_CLAIM = {
    "sqlite": prepared(_claim_statement(sqlite.insert)),
    "postgresql": prepared(_claim_statement(postgresql.insert)),
}


@dataclass(frozen=True)
class State:
    """A throttle row as ``STATE_COLUMNS`` reads it."""

    key: str
    failures: int
    blocked_until: int
    locked: bool


STATE_COLUMNS = (_T.c.key, _T.c.failures, _T.c.blocked_until, _T.c.locked)
_STATE = prepared(select(*STATE_COLUMNS).where(_T.c.key == bindparam("k")))
_RESET = prepared(
    update(_T)
    .where(_T.c.key == bindparam("k"), _T.c.locked == false())
    .values(failures=0, blocked_until=0)
)
_LOCK = prepared(
    update(_T)
    .where(_T.c.key == bindparam("k"), _T.c.failures >= LOCK_AFTER, _T.c.locked == false())
    .values(locked=True)
)
_CLEAR = (
    update(_T)
    .where(_T.c.key == bindparam("k"), (_T.c.failures > 0) | _T.c.locked)
    .values(failures=0, blocked_until=0, locked=False)
)


def claim(session: Writer, policy: Policy, subject: str, now: int) -> int:
    """Count an attempt before it is checked; raise if it must not be checked at all.

    Returns the attempt's number in the current run of failures.
    """
    k = key(policy, subject)
    first_wait = backoff(1, policy)
    number: int | None = session.execute(
        _CLAIM[dialect_name(session)],
        {
            "k": k,
            "now": now,
            "free": policy.free_failures,
            "first": now + first_wait if first_wait else 0,
        },
    ).scalar()
    if number is None:
        raise _refusal(State(*session.execute(_STATE, {"k": k}).one()), now)
    return number


def _refusal(state: State, now: int) -> Locked | TooManyAttempts:
    """Why an attempt in ``state`` (a row that the claim's condition refuses) is not
    checked: the lock, or the back-off with the seconds left of it."""
    return Locked() if state.locked else TooManyAttempts(state.blocked_until - now)


def succeeded(session: Writer, policy: Policy, subject: str) -> None:
    session.execute(_RESET, {"k": key(policy, subject)})


@dataclass(frozen=True)
class Attempt:
    """An attempt let through to be checked (``admit``), and what its outcome still writes."""

    policy: Policy
    subject: str
    now: int
    claimed: bool  # counted as a failure in advance (``claim``)
    failures: int  # the run of failures before it, where it was read instead

    def failed(self, session: Writer) -> None:
        """Count the failure, unless the claim did."""
        if not self.claimed:
            claim(session, self.policy, self.subject, self.now)

    def succeeded(self, session: Writer) -> None:
        """Clear the run of failures, the claimed one included, if there is any."""
        if self.claimed or self.failures:
            succeeded(session, self.policy, self.subject)


def admit(session: Writer, policy: Policy, subject: str, now: int) -> Attempt:
    """Let an attempt that is checked in this same write transaction through, or raise as
    ``claim`` does; ``Attempt.failed`` or ``Attempt.succeeded`` then writes its outcome.

    On SQLite the transaction is the only writer from its first statement to its commit (it
    holds the writer lock that every write takes, ``Database.write`` and ``direct``): nothing
    can count an attempt beside it. So it reads the state, and counts only a failure, with the
    claim's own statement. A success with no failure before it writes nothing, where a claim
    and its clearing wrote the row twice (a new row at each user's first success): at the
    peak of TOTP verifications those two writes cost about a sixth of each verify's CPU.
    Where writers run side by side (PostgreSQL), the attempt claims its place first.
    """
    if dialect_name(session) != "sqlite":
        claim(session, policy, subject, now)
        return Attempt(policy, subject, now, claimed=True, failures=0)
    return admit_read(policy, subject, now, _read(session, key(policy, subject)))


def admit_read(policy: Policy, subject: str, now: int, state: State | None) -> Attempt:
    """``admit`` on the state its caller read in this same write transaction: ``STATE_COLUMNS``
    (None where there is no row), read on SQLite, or on PostgreSQL with the row locked until the
    commit (``FOR UPDATE``), so that no attempt is checked beside this one. Counts only a
    failure, as on SQLite (``Attempt.failed``)."""
    if state is None:
        return Attempt(policy, subject, now, claimed=False, failures=0)
    if state.key != key(policy, subject):
        raise ValueError("the state read is another subject's")
    if state.locked or state.blocked_until > now:  # the claim's own condition, ``_claim_statement``
        raise _refusal(state, now)
    return Attempt(policy, subject, now, claimed=False, failures=state.failures)


def lock_if_exhausted(session: Writer, policy: Policy, subject: str) -> bool:
    """After a failure: lock once the run of failures reaches the limit. True if it locked now."""
    if not policy.locks:
        return False
    result = session.execute(_LOCK, {"k": key(policy, subject)})
    return bool(result.rowcount)  # type: ignore[union-attr]


def clear(session: Writer, policy: Policy, subject: str) -> bool:
    """Forget failures, back-off and lock (an admin's unlock). True if anything was set."""
    result = session.execute(_CLEAR, {"k": key(policy, subject)})
    return bool(result.rowcount)  # type: ignore[union-attr]


def is_locked(session: Reader, policy: Policy, subject: str) -> bool:
    state = _read(session, key(policy, subject))
    return state is not None and bool(state.locked)


def _read(session: Reader, k: str) -> State | None:
    row = session.execute(_STATE, {"k": k}).first()
    return State(*row) if row else None
