"""Recovery codes in the database: a set is one factor of type ``recovery`` and its codes.

Codes are stored as ``SecretBox.digest`` values: an HMAC under a key derived from the
encryption key, so a copy of the database alone cannot be searched offline, and bound to the
factor's id, so a hash copied to another user's set matches nothing there. A code is looked up
by that hash in the database; the hash of a guess reveals nothing an attacker could steer, so
the lookup's timing leaks nothing useful (as for ``mfa.opaque``).

Decisions the contract leaves open:

- A set is generated only by a user who has an active factor of another type: recovery codes
  stand in for a lost device, they are not the first factor.
- While a set has codes left it is an active factor like any other: it is listed at login, it
  answers ``/api/login/verify``, and a user whose other factors are gone is *not*
  ``enroll_required`` (otherwise the password alone could enroll a new factor and bypass the
  codes). Such a user logs in with a code and enrolls a new factor with the access token.
- When the last code is spent the set becomes ``disabled`` (``factor_disabled``, reason
  ``exhausted``); a user left with no other factor is then ``enroll_required`` as after
  removing every factor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, case, delete, func, insert, select, update
from sqlmodel import Session, col

from ..db import Reader, Writer
from ..direct import prepared
from ..errors import InvalidRequest
from ..factors import recovery as codes
from ..factors.base import Enrollment, Rejected
from ..models import (
    Account,
    Factor,
    FactorState,
    FactorView,
    LoginTransaction,
    RecoveryCode,
    User,
    new_id,
    table_of,
)
from . import audit

if TYPE_CHECKING:
    from ..context import Context, RequestMeta
    from .transactions import Login

TYPE = "recovery"
LABEL = "Recovery codes"
# From this many codes left (and fewer), a login with a code says that a new set is due.
LOW = 3


def code_hash(ctx: Context, factor_id: str, code: str) -> bytes:
    """The stored form of a code (already normalized)."""
    return ctx.box.digest(f"{factor_id}:{code}".encode(), purpose="recovery")


_R = table_of(RecoveryCode)
_F = table_of(Factor)


def _unused(factor_id: Any) -> Select[int]:
    """The count of a recovery set's unused codes; ``factor_id`` a parameter or a column."""
    return (
        select(func.count())
        .select_from(_R)
        .where(_R.c.factor_id == factor_id, _R.c.used_at.is_(None))
    )


# Built once: a login with a code runs these on its ``Direct`` transaction.
_REMAINING = prepared(_unused(bindparam("factor")))
_SPEND = prepared(
    update(_R)
    .where(
        _R.c.factor_id == bindparam("factor"),
        _R.c.code_hash == bindparam("hash"),
        _R.c.used_at.is_(None),
    )
    .values(used_at=bindparam("at"))
)
_SPENT_BEFORE = prepared(
    select(_R.c.id).where(
        _R.c.factor_id == bindparam("factor"), _R.c.code_hash == bindparam("hash")
    )
)
_USED = prepared(
    update(_F).where(_F.c.id == bindparam("factor")).values(last_used_at=bindparam("at"))
)
_EXHAUSTED = prepared(update(_F).where(_F.c.id == bindparam("factor")).values(status="disabled"))
_ANOTHER_FACTOR = prepared(
    select(_F.c.id)
    .where(_F.c.user_id == bindparam("user"), _F.c.status == "active", _F.c.type != TYPE)
    .limit(1)
)


# A recovery factor's unused codes, as a column of a select over factors (``factors.VIEW_COLUMNS``);
# NULL for a factor of another type, whose row it does not count for.
REMAINING = case((_F.c.type == TYPE, _unused(_F.c.id).scalar_subquery()), else_=None).label(
    "remaining"
)


def remaining(reader: Reader, factor_id: str) -> int:
    count: int = reader.execute(_REMAINING, {"factor": factor_id}).scalar_one()
    return count


def replace_set(session: Session, ctx: Context, user: User, now: int) -> tuple[Factor, list[str]]:
    """Delete the user's recovery set (its codes go with it) and create a new one; return the
    new factor and its codes, to be shown this once.

    The caller holds the user's row lock, so two regenerations at once cannot leave two sets.
    """
    session.execute(
        delete(Factor)
        .where(col(Factor.user_id) == user.id, col(Factor.type) == TYPE)
        .execution_options(synchronize_session=False)
    )
    factor = Factor(
        id=new_id(),
        user_id=user.id,
        type=TYPE,
        label=LABEL,
        status="active",
        created_at=now,
        confirmed_at=now,
    )
    session.add(factor)
    session.flush()
    fresh = codes.new_codes()
    session.execute(
        insert(RecoveryCode),
        [
            {
                "id": new_id(),
                "factor_id": factor.id,
                "code_hash": code_hash(ctx, factor.id, codes.normalize(c)),
                "created_at": now,
            }
            for c in fresh
        ],
    )
    return factor, fresh


def after_login(
    writer: Writer, user: Account, factor: FactorState, now: int, meta: RequestMeta
) -> dict[str, Any]:
    """Audit the code just spent; disable an exhausted set; say what the client should know.

    Runs after ``RecoveryHandler.check`` has written the factor's row, which holds that row's
    lock: a concurrent login with another code of this set counts only after this one commits.
    """
    left = remaining(writer, factor.id)
    audit.record(
        writer,
        "recovery_code_used",
        now=now,
        meta=meta,
        user_id=user.id,
        username=user.username,
        factor_id=factor.id,
        remaining=left,
    )
    if left == 0:
        writer.execute(_EXHAUSTED, {"factor": factor.id})
        audit.record(
            writer,
            "factor_disabled",
            now=now,
            meta=meta,
            user_id=user.id,
            username=user.username,
            factor_id=factor.id,
            factor_type=TYPE,
            reason="exhausted",
        )
    warnings = []
    if left <= LOW:
        warnings.append("recovery_codes_low")
    if writer.execute(_ANOTHER_FACTOR, {"user": user.id}).first() is None:
        warnings.append("no_other_factor")
    out: dict[str, Any] = {"recovery_codes_remaining": left}
    if warnings:
        out["warnings"] = warnings
    return out


class RecoveryHandler:
    """The ``Handler`` of recovery sets. A set is made whole by ``replace_set``; it is never
    enrolled through ``POST /api/factors`` and never pending."""

    type = TYPE

    def enroll(
        self, session: Session, ctx: Context, request: Any, user: User, factor_id: str, now: int
    ) -> Enrollment:
        raise InvalidRequest("Recovery codes are made by POST /api/recovery-codes.")

    def confirm(
        self, session: Session, ctx: Context, factor: Factor, answer: str | dict[str, Any], now: int
    ) -> None:
        raise Rejected("never_pending")

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]:
        return {}

    def check(
        self,
        writer: Writer,
        ctx: Context,
        factor: FactorState,
        answer: str | dict[str, Any],
        now: int,
        tx: Login | None,
    ) -> list[str]:
        if not isinstance(answer, str):
            raise Rejected("not_a_code")
        digest = code_hash(ctx, factor.id, codes.normalize(answer))
        # The single-use guarantee: only one transaction, in any process, sets used_at.
        found = {"factor": factor.id, "hash": digest}
        if writer.execute(_SPEND, {**found, "at": now}).rowcount != 1:  # type: ignore[union-attr]
            used = writer.execute(_SPENT_BEFORE, found).first()
            raise Rejected("replayed" if used else "wrong_code")
        writer.execute(_USED, {"factor": factor.id, "at": now})
        return ["otp"]  # RFC 8176 section 2: "otp" covers one-time passwords of any kind

    def describe(self, factor: FactorView, out: dict[str, Any]) -> None:
        out["remaining"] = factor.remaining or 0
