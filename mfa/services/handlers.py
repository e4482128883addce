"""The storage side of each factor type, behind one interface.

``mfa.factors`` does the math and keeps no state; a handler opens the secret, asks the factor
type, and makes the acceptance stick with a conditional update inside the caller's transaction.
Every ``confirm`` and ``check`` either accepts an answer for good or raises ``Rejected``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from .. import ocra
from ..db import Writer
from ..direct import prepared
from ..errors import InvalidRequest
from ..factors.base import Accepted, CodeFactorType, Enrollment, Rejected
from ..factors.hotp import Hotp
from ..factors.ocra import Ocra
from ..factors.totp import Totp
from ..models import (
    Factor,
    FactorState,
    FactorView,
    HardwareToken,
    LoginTransaction,
    User,
    table_of,
)
from ..secretbox import SealError
from . import transactions
from .recovery import RecoveryHandler
from .transactions import Login
from .webauthn import WebauthnHandler

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..context import Context

Answer = str | dict[str, Any]

# OCRA questions one login transaction may ask (each challenge asks a new one).
MAX_QUESTIONS = 10


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
        writer: Writer,
        ctx: Context,
        factor: FactorState,
        answer: Answer,
        now: int,
        tx: Login | None,
    ) -> list[str]:
        """Accept ``answer`` for good and return its RFC 8176 ``amr`` values, or raise. Runs in
        a login's verify, on its ``Direct`` transaction: statements only, no ORM."""
        ...

    def describe(self, factor: FactorView, out: dict[str, Any]) -> None: ...


def secret_context(factor_id: str) -> str:
    return f"factor:{factor_id}:secret"


def open_secret(ctx: Context, factor: FactorState) -> bytes:
    """The factor's key. A sealed value that does not open here (copied from another row, or
    sealed under another encryption key) verifies nothing."""
    if factor.secret is None:
        raise Rejected("no_secret")
    try:
        return ctx.box.open(factor.secret, context=secret_context(factor.id))
    except SealError:
        log.error("the secret of factor %s does not open: wrong key or a copied row", factor.id)
        raise Rejected("secret_does_not_open") from None


_F = table_of(Factor)
# Statements on the login path are built once: building one costs more than running it.
_ACCEPT_COUNTER = prepared(
    update(_F)
    .where(
        _F.c.id == bindparam("factor"),
        _F.c.status == bindparam("want"),
        _F.c.counter <= bindparam("c"),
    )
    .values(counter=bindparam("next"), last_used_at=bindparam("at"))
)
_TOUCH = prepared(
    update(_F)
    .where(_F.c.id == bindparam("factor"), _F.c.status == bindparam("want"))
    .values(last_used_at=bindparam("at"))
)
_H = table_of(HardwareToken)
_VALIDITY = prepared(
    select(_H.c.not_before, _H.c.not_after).where(_H.c.factor_id == bindparam("factor"))
)


def accept_counter(
    session: Writer, factor: FactorState, counter: int, now: int, *, status: str
) -> None:
    """Accept ``counter`` for good: the row changes only if no answer at or past it was
    accepted before, in any process. This is the single-use guarantee."""
    result = session.execute(
        _ACCEPT_COUNTER,
        {"factor": factor.id, "want": status, "c": counter, "next": counter + 1, "at": now},
    )
    if result.rowcount != 1:  # type: ignore[union-attr]
        raise Rejected("replayed")
    _committed(factor, counter=counter + 1, last_used_at=now)


def accept_answer(
    session: Writer, factor: FactorState, counter: int | None, now: int, *, status: str
) -> None:
    """Accept an answer for good. With a counter, as ``accept_counter``; without one (an OCRA
    suite with neither C nor T), the answer is single-use because its question is, and this
    only checks that the factor is still in ``status``."""
    if counter is not None:
        accept_counter(session, factor, counter, now, status=status)
        return
    result = session.execute(_TOUCH, {"factor": factor.id, "want": status, "at": now})
    if result.rowcount != 1:  # type: ignore[union-attr]
        raise Rejected("replayed")
    _committed(factor, last_used_at=now)


def _committed(factor: FactorState, **values: int) -> None:
    """An ORM ``Factor`` kept in step with what an UPDATE just wrote, so that the Session does
    not write it again at commit; a ``FactorRow`` is only read."""
    if isinstance(factor, Factor):
        for key, value in values.items():
            set_committed_value(factor, key, value)


def check_validity(session: Writer, factor: FactorState, now: int) -> None:
    """A factor lent by a hardware token is usable only within the key's validity period
    (RFC 6030 section 5: "the key is only used between the start and the end date")."""
    if factor.serial is None:
        return
    window = session.execute(_VALIDITY, {"factor": factor.id}).first()
    if window is None:
        return
    not_before, not_after = window
    if not_before is not None and now < not_before:
        raise Rejected("token_not_yet_valid")
    if not_after is not None and now > not_after:
        raise Rejected("token_expired")


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
        accept_answer(session, factor, counter, now, status="pending")

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]:
        result = self.kind.challenge(factor, now=now)
        if result.state is not None:
            transactions.keep_challenge(session, tx, factor.id, result.state)
        return result.response

    def check(
        self,
        writer: Writer,
        ctx: Context,
        factor: FactorState,
        answer: Answer,
        now: int,
        tx: Login | None,
    ) -> list[str]:
        check_validity(writer, factor, now)
        state = transactions.challenge_for(tx, factor.id)
        counter = self._verify(ctx, factor, answer, now, state)
        accept_answer(writer, factor, counter, now, status="active")
        if tx is not None and state is not None:
            # A question is answerable once.
            transactions.keep_challenge(writer, tx, None, None)
        return ["otp"]

    def describe(self, factor: FactorView, out: dict[str, Any]) -> None:
        out["algorithm"] = factor.algorithm
        out["digits"] = factor.digits
        if factor.period is not None:
            out["period"] = factor.period

    def _verify(
        self, ctx: Context, factor: FactorState, answer: Answer, now: int, state: str | None
    ) -> int | None:
        if not isinstance(answer, str):
            raise Rejected("not_a_code")
        return self._accepted(ctx, factor, answer, now, state).counter

    def _accepted(
        self, ctx: Context, factor: FactorState, code: str, now: int, state: str | None
    ) -> Accepted:
        return self.kind.verify(factor, open_secret(ctx, factor), code, now=now, state=state)


def pin_context(factor_id: str) -> str:
    return f"factor:{factor_id}:pin"


class OcraHandler(CodeHandler):
    """OCRA: a new question at every challenge, and the sealed PIN hash of PIN suites."""

    def __init__(self) -> None:
        self.ocra = Ocra()
        super().__init__(self.ocra)

    def enroll(
        self, session: Session, ctx: Context, request: Any, user: User, factor_id: str, now: int
    ) -> Enrollment:
        enrollment = super().enroll(session, ctx, request, user, factor_id, now)
        if request.pin is None:
            return enrollment
        # Only the PIN's hash is kept (it is what DataInput holds), sealed to this row.
        pin_hash = ocra.hash_pin(ocra.parse_suite(request.suite), request.pin)
        sealed = ctx.box.seal(pin_hash, context=pin_context(factor_id))
        return replace(enrollment, columns={**enrollment.columns, "pin": sealed})

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]:
        # A question-only suite is single-use only while its questions do not repeat: a caller
        # who could ask without limit could fish for one whose answer they saw before.
        if tx.questions >= MAX_QUESTIONS:
            raise InvalidRequest("This login has asked too many questions; log in again.")
        tx.questions += 1
        return super().challenge(session, ctx, factor, tx, now)

    def describe(self, factor: FactorView, out: dict[str, Any]) -> None:
        out["suite"] = factor.suite
        out["digits"] = factor.digits
        if factor.period is not None:
            out["period"] = factor.period

    def _accepted(
        self, ctx: Context, factor: FactorState, code: str, now: int, state: str | None
    ) -> Accepted:
        pin_hash = None
        if factor.pin is not None:
            try:
                pin_hash = ctx.box.open(factor.pin, context=pin_context(factor.id))
            except SealError:
                log.error(
                    "the PIN hash of factor %s does not open: wrong key or a copied row", factor.id
                )
                raise Rejected("secret_does_not_open") from None
        secret = open_secret(ctx, factor)
        return self.ocra.verify(factor, secret, code, now=now, state=state, pin_hash=pin_hash)


HANDLERS: dict[str, Handler] = {
    "totp": CodeHandler(Totp()),
    "hotp": CodeHandler(Hotp()),
    "webauthn": WebauthnHandler(),
    "ocra": OcraHandler(),
    "recovery": RecoveryHandler(),
}


def handler(factor_type: str) -> Handler:
    return HANDLERS[factor_type]
