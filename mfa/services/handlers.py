"""The storage side of each factor type, behind one interface.

``mfa.factors`` does the math and keeps no state; a handler opens the secret, asks the factor
type, and makes the acceptance stick with a conditional update inside the caller's transaction.
Every ``confirm`` and ``check`` either accepts an answer for good or raises ``Rejected``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import update
from sqlmodel import Session, col

from ..factors.base import CodeFactorType, Enrollment, Rejected
from ..factors.hotp import Hotp
from ..factors.totp import Totp
from ..models import Factor, LoginTransaction, User
from ..secretbox import SealError
from . import transactions
from .recovery import RecoveryHandler

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..context import Context

Answer = str | dict[str, Any]


class Handler(Protocol):
    type: str

    def enroll(
        self, session: Session, ctx: Context, request: Any, user: User, factor_id: str, now: int
    ) -> Enrollment: ...

    def confirm(
        self, session: Session, ctx: Context, factor: Factor, answer: Answer, now: int
    ) -> None: ...

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]: ...

    def check(
        self,
        session: Session,
        ctx: Context,
        factor: Factor,
        answer: Answer,
        now: int,
        tx: LoginTransaction | None,
    ) -> list[str]:
        """Accept ``answer`` for good and return its RFC 8176 ``amr`` values, or raise."""
        ...

    def describe(self, session: Session, factor: Factor, out: dict[str, Any]) -> None: ...


def secret_context(factor_id: str) -> str:
    return f"factor:{factor_id}:secret"


def open_secret(ctx: Context, factor: Factor) -> bytes:
    """The factor's key. A sealed value that does not open here (copied from another row, or
    sealed under another encryption key) verifies nothing."""
    if factor.secret is None:
        raise Rejected("no_secret")
    try:
        return ctx.box.open(factor.secret, context=secret_context(factor.id))
    except SealError:
        log.error("the secret of factor %s does not open: wrong key or a copied row", factor.id)
        raise Rejected("secret_does_not_open") from None


def accept_counter(
    session: Session, factor: Factor, counter: int, now: int, *, status: str
) -> None:
    """Accept ``counter`` for good: the row changes only if no answer at or past it was
    accepted before, in any process. This is the single-use guarantee."""
    result = session.execute(
        update(Factor)
        .where(
            col(Factor.id) == factor.id,
            col(Factor.status) == status,
            col(Factor.counter) <= counter,
        )
        .values(counter=counter + 1, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Rejected("replayed")
    factor.counter = counter + 1
    factor.last_used_at = now


class CodeHandler:
    """TOTP, HOTP and OCRA: a code, a sealed key and a counter (or time step)."""

    def __init__(self, kind: CodeFactorType) -> None:
        self.kind = kind
        self.type: str = kind.type

    def enroll(
        self, session: Session, ctx: Context, request: Any, user: User, factor_id: str, now: int
    ) -> Enrollment:
        return self.kind.enroll(request, issuer=ctx.settings.otp_issuer, account=user.username)

    def confirm(
        self, session: Session, ctx: Context, factor: Factor, answer: Answer, now: int
    ) -> None:
        counter = self._verify(ctx, factor, answer, now, factor.challenge)
        accept_counter(session, factor, counter, now, status="pending")

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]:
        result = self.kind.challenge(factor, now=now)
        if result.state is not None:
            transactions.keep_challenge(tx, factor.id, result.state)
        return result.response

    def check(
        self,
        session: Session,
        ctx: Context,
        factor: Factor,
        answer: Answer,
        now: int,
        tx: LoginTransaction | None,
    ) -> list[str]:
        state = transactions.challenge_for(tx, factor.id)
        counter = self._verify(ctx, factor, answer, now, state)
        accept_counter(session, factor, counter, now, status="active")
        if tx is not None and state is not None:
            transactions.keep_challenge(tx, None, None)  # a question is answerable once
        return ["otp"]

    def describe(self, session: Session, factor: Factor, out: dict[str, Any]) -> None:
        out["algorithm"] = factor.algorithm
        out["digits"] = factor.digits
        if factor.period is not None:
            out["period"] = factor.period

    def _verify(
        self, ctx: Context, factor: Factor, answer: Answer, now: int, state: str | None
    ) -> int:
        if not isinstance(answer, str):
            raise Rejected("not_a_code")
        accepted = self.kind.verify(factor, open_secret(ctx, factor), answer, now=now, state=state)
        assert accepted.counter is not None
        return accepted.counter


HANDLERS: dict[str, Handler] = {
    "totp": CodeHandler(Totp()),
    "hotp": CodeHandler(Hotp()),
    "recovery": RecoveryHandler(),
}


def handler(factor_type: str) -> Handler:
    return HANDLERS[factor_type]
