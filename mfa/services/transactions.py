"""Login transactions: what an ``mfa_token`` points at between the password and the second
factor. Short-lived, stored as a hash, dead after 5 failed verify calls, spent on success."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session, col

from ..db import Writer
from ..direct import prepared
from ..errors import InvalidMfaToken
from ..models import LoginTransaction, new_id, table_of
from ..opaque import digest, new_token

MAX_FAILURES = 5


_T = table_of(LoginTransaction)
_INSERT = prepared(insert(_T))

LOGIN = "login"
STEP_UP = "step_up"


def create(
    session: Writer,
    user_id: str,
    now: int,
    ttl: int,
    *,
    purpose: str = LOGIN,
    family_id: str | None = None,
) -> str:
    """Open a login transaction; return its ``mfa_token`` (only its hash is stored)."""
    token, token_hash = new_token()
    session.execute(
        _INSERT,
        {
            "id": new_id(),
            "token_hash": token_hash,
            "user_id": user_id,
            "created_at": now,
            "expires_at": now + ttl,
            "failures": 0,
            "purpose": purpose,
            "family_id": family_id,
        },
    )
    return token


# Built once: a challenge and an enrollment by mfa_token open the transaction with it.
_LIVE = (
    select(LoginTransaction)
    .where(col(LoginTransaction.token_hash) == bindparam("hash"))
    .with_for_update()
)


@dataclass(frozen=True)
class Owner:
    """The user a login transaction belongs to: what its audit events name."""

    id: str
    username: str


@dataclass(frozen=True)
class Login:
    """A login transaction's columns as a verify reads them, without the ORM (``mfa.direct``);
    a ``LoginTransaction`` has the same attributes."""

    id: str
    user_id: str
    expires_at: int
    failures: int
    spent_at: int | None
    challenge_factor_id: str | None
    challenge: str | None
    purpose: str
    family_id: str | None
    questions: int


# The columns of a ``Login``, in its fields' order, for selects that build one from a row.
LOGIN_COLUMNS = [_T.c[f.name] for f in fields(Login)]

_FAILED = prepared(update(_T).where(_T.c.id == bindparam("tx")).values(failures=_T.c.failures + 1))
_SPEND = prepared(
    update(_T)
    .where(_T.c.id == bindparam("tx"), _T.c.spent_at.is_(None))
    .values(spent_at=bindparam("at"))
)
_KEEP_CHALLENGE = prepared(
    update(_T)
    .where(_T.c.id == bindparam("tx"))
    .values(challenge_factor_id=bindparam("factor"), challenge=bindparam("state"))
)


def open_live(session: Session, mfa_token: str, now: int) -> LoginTransaction:
    """The live transaction of ``mfa_token``, locked until this database transaction ends, so
    that two calls with one token take turns."""
    tx = session.scalars(_LIVE, {"hash": digest(mfa_token)}).first()
    if tx is None:
        raise InvalidMfaToken
    check_live(tx, now)
    return tx


def check_live(tx: Login | LoginTransaction, now: int) -> None:
    """Raise ``InvalidMfaToken`` unless the transaction is unspent, unexpired and not failed
    out."""
    if tx.spent_at is not None or tx.expires_at <= now or tx.failures >= MAX_FAILURES:
        raise InvalidMfaToken


def count_failure(session: Writer, tx: Login | LoginTransaction) -> None:
    session.execute(_FAILED, {"tx": tx.id})


def spend(session: Writer, tx: Login | LoginTransaction, now: int) -> None:
    result = session.execute(_SPEND, {"tx": tx.id, "at": now})
    if result.rowcount != 1:  # type: ignore[union-attr]
        raise InvalidMfaToken


def spend_locked(batch: Writer, tx: Login, now: int) -> None:
    """``spend`` for a transaction whose row this write transaction read locked (``FOR UPDATE``
    on PostgreSQL; SQLite's writer lock holds every row) and found live (``check_live``): nothing
    else can spend it before the commit, so the update needs no check of its count, and may go
    in a batch (``Direct.batch``), one round trip fewer on PostgreSQL."""
    batch.execute(_SPEND, {"tx": tx.id, "at": now})


def keep_challenge(
    session: Writer, tx: Login | LoginTransaction, factor_id: str | None, state: str | None
) -> None:
    """Remember the open challenge; a newer one replaces the older, which is then dead."""
    session.execute(_KEEP_CHALLENGE, {"tx": tx.id, "factor": factor_id, "state": state})


def challenge_for(tx: Login | None, factor_id: str) -> str | None:
    if tx is not None and tx.challenge_factor_id == factor_id:
        return tx.challenge
    return None
