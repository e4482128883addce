"""Login transactions: what an ``mfa_token`` points at between the password and the second
factor. Short-lived, stored as a hash, dead after 5 failed verify calls, spent on success."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlmodel import Session, col

from ..errors import InvalidMfaToken
from ..models import LoginTransaction, new_id
from ..opaque import digest, new_token

MAX_FAILURES = 5


LOGIN = "login"
STEP_UP = "step_up"


def create(
    session: Session,
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
        insert(LoginTransaction).values(
            id=new_id(),
            token_hash=token_hash,
            user_id=user_id,
            created_at=now,
            expires_at=now + ttl,
            failures=0,
            purpose=purpose,
            family_id=family_id,
        )
    )
    return token


def open_live(session: Session, mfa_token: str, now: int) -> LoginTransaction:
    """The live transaction of ``mfa_token``, locked until this database transaction ends, so
    that two calls with one token take turns."""
    tx = session.scalars(
        select(LoginTransaction)
        .where(col(LoginTransaction.token_hash) == digest(mfa_token))
        .with_for_update()
    ).first()
    if tx is None or tx.spent_at is not None or tx.expires_at <= now or tx.failures >= MAX_FAILURES:
        raise InvalidMfaToken
    return tx


def count_failure(session: Session, tx: LoginTransaction) -> None:
    session.execute(
        update(LoginTransaction)
        .where(col(LoginTransaction.id) == tx.id)
        .values(failures=col(LoginTransaction.failures) + 1)
        .execution_options(synchronize_session=False)
    )


def spend(session: Session, tx: LoginTransaction, now: int) -> None:
    result = session.execute(
        update(LoginTransaction)
        .where(col(LoginTransaction.id) == tx.id, col(LoginTransaction.spent_at).is_(None))
        .values(spent_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidMfaToken


def keep_challenge(tx: LoginTransaction, factor_id: str | None, state: str | None) -> None:
    """Remember the open challenge; a newer one replaces the older, which is then dead."""
    tx.challenge_factor_id = factor_id
    tx.challenge = state


def challenge_for(tx: LoginTransaction | None, factor_id: str) -> str | None:
    if tx is not None and tx.challenge_factor_id == factor_id:
        return tx.challenge
    return None
