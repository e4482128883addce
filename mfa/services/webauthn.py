"""The storage side of security keys: ceremonies kept server-side, credentials, counters.

A registration ceremony is kept on its pending factor, a login's on its login transaction
(WebAuthn Level 3, section 13.4.3: the challenge is generated and checked by the server). Either
is answerable once, right or wrong, and only until it expires. An assertion is accepted by a
conditional update of the signature counter in the caller's transaction, the same one that
spends the login transaction; a counter that does not increase disables the key. On SQLite the
assertion's signature is checked before that transaction, outside the writer lock
(``precheck``).
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, FromClause, Join, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from ..db import Writer, dialect_name
from ..direct import prepared
from ..factors.base import Disabled, Enrollment, Rejected
from ..factors.webauthn import (
    Ceremony,
    KeyDescriptor,
    NewCredential,
    RelyingParty,
    StoredCredential,
    VerifiedAssertion,
    counter_regressed,
    from_b64url,
    new_user_handle,
    relying_party,
)
from ..models import (
    FACTOR_ROW_COLUMNS,
    Factor,
    FactorRow,
    FactorState,
    FactorView,
    LoginTransaction,
    User,
    WebauthnCredential,
    WebauthnUser,
    table_of,
)
from ..opaque import digest
from . import transactions
from .transactions import Login

if TYPE_CHECKING:
    from ..context import Context

Answer = str | dict[str, Any]


def rp_of(ctx: Context) -> RelyingParty:
    s = ctx.settings
    return relying_party(s.rp_id, s.rp_name, s.origins)


def user_handle(session: Session, user_id: str, now: int) -> bytes:
    """The user's handle, made on first use and the same ever after (section 14.6.1)."""
    table = table_of(WebauthnUser)
    dialect_insert = sqlite.insert if dialect_name(session) == "sqlite" else postgresql.insert
    # Two first enrollments at once must not both insert: the second one keeps the first handle.
    session.execute(
        dialect_insert(table)
        .values(user_id=user_id, user_handle=new_user_handle(), created_at=now)
        .on_conflict_do_nothing(index_elements=[table.c.user_id])
    )
    handle: bytes = session.execute(
        select(col(WebauthnUser.user_handle)).where(col(WebauthnUser.user_id) == user_id)
    ).scalar_one()
    return handle


def keys_of(session: Session, user_id: str, *, active_only: bool) -> list[KeyDescriptor]:
    """The user's registered keys, oldest first."""
    query = (
        select(WebauthnCredential)
        .join(Factor, col(Factor.id) == col(WebauthnCredential.factor_id))
        .where(col(Factor.user_id) == user_id, col(Factor.type) == "webauthn")
        .order_by(col(WebauthnCredential.created_at), col(WebauthnCredential.factor_id))
    )
    if active_only:
        query = query.where(col(Factor.status) == "active")
    return [
        KeyDescriptor(row.credential_id, tuple(_transports(row.transports)))
        for row in session.scalars(query)
    ]


_C = table_of(WebauthnCredential)
_F = table_of(Factor)
# A key's details its factor's view shows (``factors.VIEW_COLUMNS``), from a select over
# factors joined with ``with_credential``.
VIEW_COLUMNS = (
    _C.c.aaguid,
    _C.c.transports,
    _C.c.backup_eligible,
    _C.c.backed_up,
    _C.c.user_verified,
)


def with_credential(factors: FromClause) -> Join:
    """``factors`` (the factors table, or a join that holds it) with each factor's security
    key, if it has one: one per webauthn factor, none for the other types."""
    return factors.outerjoin(_C, _C.c.factor_id == _F.c.id)


# A login's verify: the statements of ``check`` and ``locate``, built once.
_U = table_of(WebauthnUser)
_STORED = prepared(
    select(
        _C.c.credential_id,
        _C.c.public_key,
        _C.c.backup_eligible,
        _C.c.sign_count,
        _U.c.user_handle,
    )
    .join(_U, _U.c.user_id == bindparam("user"))
    .where(_C.c.factor_id == bindparam("factor"))
)
# ``precheck``'s read: the ceremony a login keeps, and the credential an answer names by its id,
# among the keys of that login's user.
_T = table_of(LoginTransaction)
_PRECHECK = prepared(
    select(
        _T.c.challenge, _C.c.credential_id, _C.c.public_key, _C.c.backup_eligible, _U.c.user_handle
    )
    .join(_F, _F.c.user_id == _T.c.user_id)
    .join(_C, _C.c.factor_id == _F.c.id)
    .join(_U, _U.c.user_id == _T.c.user_id)
    .where(
        _T.c.token_hash == bindparam("hash"),
        _T.c.spent_at.is_(None),
        _T.c.expires_at > bindparam("now"),
        _C.c.credential_id == bindparam("credential"),
    )
)
_LOCATE = prepared(
    select(*FACTOR_ROW_COLUMNS)
    .join(_C, _C.c.factor_id == _F.c.id)
    .where(
        _C.c.credential_id == bindparam("credential"),
        _F.c.user_id == bindparam("user"),
        _F.c.type == "webauthn",
        _F.c.status == "active",
    )
)
# The counter moves only forward; an authenticator without one (always 0) stays at 0. The
# user_verified flag, once set, stays set.
_ADVANCE = prepared(
    update(_C)
    .where(
        _C.c.factor_id == bindparam("factor"),
        or_(
            _C.c.sign_count < bindparam("count"),
            (_C.c.sign_count == 0) & bindparam("zero", type_=Boolean),
        ),
    )
    .values(
        sign_count=bindparam("count"),
        backed_up=bindparam("backed_up"),
        last_used_at=bindparam("at"),
        user_verified=or_(_C.c.user_verified, bindparam("uv", type_=Boolean)),
    )
)
_STILL_ACTIVE = prepared(
    update(_F)
    .where(_F.c.id == bindparam("factor"), _F.c.status == "active")
    .values(last_used_at=bindparam("at"))
)
_DISABLE = prepared(
    update(_F)
    .where(_F.c.id == bindparam("factor"), _F.c.status == "active")
    .values(status="disabled")
)


def _transports(stored: str) -> list[str]:
    value = json.loads(stored)
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


class WebauthnHandler:
    type = "webauthn"

    def enroll(
        self, session: Session, ctx: Context, request: Any, user: User, factor_id: str, now: int
    ) -> Enrollment:
        """Creation options for a new key. Every key the user has (also a disabled one) goes in
        ``excludeCredentials``, so an authenticator already registered refuses to register again
        (section 5.4.3)."""
        options, ceremony = rp_of(ctx).registration_options(
            user_handle=user_handle(session, user.id, now),
            username=user.username,
            exclude=keys_of(session, user.id, active_only=False),
            user_verification=ctx.settings.webauthn_user_verification,
            resident_key=ctx.settings.webauthn_resident_key,
            now=now,
        )
        return Enrollment(
            columns={}, secret=None, reveal={"publicKey": options}, challenge=ceremony.dumps()
        )

    def confirm(
        self, session: Session, ctx: Context, factor: Factor, answer: Answer, now: int
    ) -> None:
        kept, factor.challenge = factor.challenge, None  # one answer per ceremony
        ceremony = Ceremony.loads(kept, now)
        if not isinstance(answer, dict):
            raise Rejected("not_a_credential")
        new = rp_of(ctx).verify_registration(ceremony, answer)
        _store(session, factor, new, now)

    def challenge(
        self, session: Session, ctx: Context, factor: Factor, tx: LoginTransaction, now: int
    ) -> dict[str, Any]:
        """Request options naming every active key of the user: any of them may answer."""
        options, ceremony = rp_of(ctx).authentication_options(
            allow=keys_of(session, tx.user_id, active_only=True),
            user_verification=ctx.settings.webauthn_user_verification,
            now=now,
        )
        transactions.keep_challenge(session, tx, factor.id, ceremony.dumps())
        return {"publicKey": options}

    def check(
        self,
        writer: Writer,
        ctx: Context,
        factor: FactorState,
        answer: Answer,
        now: int,
        tx: Login | None,
    ) -> list[str]:
        if tx is None:
            raise Rejected("no_challenge")
        # Spent by this attempt, right or wrong: the caller commits a failure too.
        kept = tx.challenge
        transactions.keep_challenge(writer, tx, None, None)
        ceremony = Ceremony.loads(kept, now)
        if not isinstance(answer, dict):
            raise Rejected("not_a_credential")
        row = writer.execute(_STORED, {"factor": factor.id, "user": factor.user_id}).first()
        if row is None:
            raise Rejected("no_credential")
        stored = _stored(row)
        verified = _prechecked(kept, answer, stored) or rp_of(ctx).verify_assertion(
            ceremony, answer, stored
        )
        if counter_regressed(row.sign_count, verified.sign_count) or not _advance(
            writer, factor, verified, now
        ):
            writer.execute(_DISABLE, {"factor": factor.id})
            raise Disabled("sign_count_not_increased")
        if not writer.execute(_STILL_ACTIVE, {"factor": factor.id, "at": now}).rowcount:  # type: ignore[union-attr]
            raise Rejected("factor_not_active")
        # RFC 8176 "hwk": proof of possession of a hardware key; "user" is added when the key
        # also verified its user (the UV flag: a PIN or a biometric).
        return ["hwk", "user"] if verified.user_verified else ["hwk"]

    def describe(self, factor: FactorView, out: dict[str, Any]) -> None:
        if factor.aaguid is None:  # no key stored (never, once the factor is confirmed)
            return
        out["aaguid"] = factor.aaguid
        out["transports"] = _transports(factor.transports or "[]")
        # bool(): read through ``mfa.direct``, SQLite gives 0 or 1.
        out["backup_eligible"] = bool(factor.backup_eligible)
        out["backed_up"] = bool(factor.backed_up)
        out["user_verified"] = bool(factor.user_verified)

    def locate(self, writer: Writer, user_id: str, answer: dict[str, Any]) -> FactorRow | None:
        """The user's active key factor that ``answer`` (a ``toJSON()`` credential) names by its
        credential id; None for another user's key, a disabled or pending one, or junk."""
        credential_id = _credential_id(answer)
        if credential_id is None:
            return None
        row = writer.execute(_LOCATE, {"credential": credential_id, "user": user_id}).first()
        return None if row is None else FactorRow(*row)


def _store(session: Session, factor: Factor, new: NewCredential, now: int) -> None:
    """Keep the credential; a credential id that is registered already (to anyone) is refused
    (section 7.1 step 26)."""
    taken = session.execute(
        select(col(WebauthnCredential.factor_id)).where(
            col(WebauthnCredential.credential_id) == new.credential_id
        )
    ).first()
    if taken is not None:
        raise Rejected("credential_registered")
    try:
        # In a savepoint: a concurrent registration of the same id fails here alone, and the
        # caller can still record the failure in its transaction.
        with session.begin_nested():
            session.add(
                WebauthnCredential(
                    factor_id=factor.id,
                    credential_id=new.credential_id,
                    public_key=new.public_key,
                    algorithm=new.algorithm,
                    aaguid=new.aaguid,
                    sign_count=new.sign_count,
                    transports=json.dumps(list(new.transports)),
                    backup_eligible=new.backup_eligible,
                    backed_up=new.backed_up,
                    user_verified=new.user_verified,
                    attestation_format=new.attestation_format,
                    created_at=now,
                )
            )
    except IntegrityError:
        raise Rejected("credential_registered") from None


def _advance(writer: Writer, factor: FactorState, verified: VerifiedAssertion, now: int) -> bool:
    """Move the counter to the assertion's, in any process only forward (or, for an
    authenticator without a counter, from 0 to 0). False when another assertion with this count
    or a higher one was accepted first: in the order the database put them in, this one's count
    did not increase. (A key that fails this is disabled: possibly cloned, section 6.1.1.)"""
    moved = writer.execute(
        _ADVANCE,
        {
            "factor": factor.id,
            "count": verified.sign_count,
            "zero": verified.sign_count == 0,
            "backed_up": verified.backed_up,
            "at": now,
            "uv": verified.user_verified,
        },
    )
    return bool(moved.rowcount == 1)  # type: ignore[union-attr]


@dataclass(frozen=True)
class _Prechecked:
    """An assertion checked before the login's write transaction (``precheck``), and what it
    was checked against."""

    kept: str  # the ceremony, as the login transaction kept it
    answer: object  # the request's own credential, compared by identity
    stored: StoredCredential
    outcome: VerifiedAssertion | Rejected


_PRECHECKED: ContextVar[_Prechecked | None] = ContextVar("webauthn_prechecked", default=None)


async def precheck(ctx: Context, mfa_token: str, answer: object) -> None:
    """On SQLite: check a security key's assertion before the login's verify, outside the
    writer lock, for ``check`` to use if it finds the very same ceremony and credential.

    The check is the costliest step of a security-key login (about 0.5 ms of CPU: CBOR, the
    signature, fido2's own checks), and inside the write transaction every other writer of both
    workers waited for it. It depends on nothing but its inputs: ``RelyingParty.
    verify_assertion`` of the kept ceremony, the answer and the stored credential. So ``check``
    takes its outcome only when the transaction reads those same inputs (the ceremony still
    kept, unspent, the credential unchanged), and checks again itself otherwise; the expiry,
    the counter and the factor's status it decides in the transaction as before. A login whose
    answer names no credential of its user is left to ``check`` too. PostgreSQL, which has no
    such lock, is left as it was."""
    if not ctx.db.is_sqlite or not isinstance(answer, dict):
        return
    credential_id = _credential_id(answer)
    if credential_id is None:
        return
    now = ctx.now()
    params = {"hash": digest(mfa_token), "credential": credential_id, "now": now}
    rows = await ctx.db.fetch(_PRECHECK, params)
    if len(rows) != 1:
        return
    row = rows[0]
    try:
        ceremony = Ceremony.loads(row.challenge, now)  # refuses no ceremony (None) too
    except Rejected:
        return  # ``check`` says why, and records it
    stored = _stored(row)
    outcome: VerifiedAssertion | Rejected
    try:
        outcome = rp_of(ctx).verify_assertion(ceremony, answer, stored)
    except Rejected as r:
        outcome = r
    _PRECHECKED.set(_Prechecked(row.challenge, answer, stored, outcome))


def _prechecked(
    kept: str | None, answer: object, stored: StoredCredential
) -> VerifiedAssertion | None:
    """``precheck``'s outcome, if it was reached from exactly these inputs; None otherwise."""
    found = _PRECHECKED.get()
    if found is None or found.answer is not answer or found.kept != kept or found.stored != stored:
        return None
    if isinstance(found.outcome, Rejected):
        raise type(found.outcome)(found.outcome.reason)
    return found.outcome


def _credential_id(answer: dict[str, Any]) -> bytes | None:
    """The credential id a ``toJSON()`` credential names; None for junk."""
    raw_id = answer.get("rawId")
    if not isinstance(raw_id, str) or len(raw_id) > 2 * 1024:
        return None
    try:
        return from_b64url(raw_id)
    except Rejected:
        return None


def _stored(row: Any) -> StoredCredential:
    return StoredCredential(
        credential_id=row.credential_id,
        public_key=row.public_key,
        backup_eligible=bool(row.backup_eligible),  # SQLite's 0 or 1, read directly
        user_handle=row.user_handle,
    )
