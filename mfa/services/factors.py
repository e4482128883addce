"""A user's factors: enroll, confirm, list, rename, remove, resync."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    FromClause,
    Join,
    Select,
    String,
    any_,
    bindparam,
    delete,
    func,
    select,
)
from sqlmodel import Session, col

from ..db import Reader, Writer
from ..direct import prepared
from ..errors import (
    InvalidRequest,
    Locked,
    MfaError,
    NotFound,
    StepUpRequired,
    TooManyAttempts,
    Unauthorized,
    VerificationFailed,
)
from ..factors.base import Rejected
from ..factors.hotp import Hotp
from ..models import (
    Account,
    Factor,
    FactorFields,
    FactorView,
    LoginTransaction,
    new_id,
    table_of,
)
from . import audit, inventory, recovery, throttle, tokens, transactions, users, webauthn
from .handlers import HANDLERS, Answer, accept_counter, open_secret, secret_context

if TYPE_CHECKING:
    from ..context import Context, RequestMeta
    from .tokens import Principal

MAX_FACTORS_PER_USER = 20
# A factor left pending this long (seconds) is dropped at the user's next enrollment.
PENDING_LIFETIME = 3600


_F = table_of(Factor)


# A factor's view in one row: its own columns, its security key's details (webauthn) and its
# unused codes (recovery). A listing reads all of it in one query, rather than one more query
# per key and per recovery set; ``view`` needs nothing else.
VIEW_COLUMNS = (*_F.c, *webauthn.VIEW_COLUMNS, recovery.REMAINING)


def view_from(factors: FromClause = _F) -> Join:
    """What ``VIEW_COLUMNS`` reads: ``factors`` (the factors table, or a join that ends with it)
    joined with the tables it reads besides. A join of its own, not one nested in another: for
    a nested one SQLite scans every factor."""
    return webauthn.with_credential(factors)


# The views of factors; the queries below add which ones.
_VIEWS = select(*VIEW_COLUMNS).select_from(view_from())


def view(factor: FactorView) -> dict[str, Any]:
    """A factor as the API shows it: never its secret."""
    out: dict[str, Any] = {
        "id": factor.id,
        "type": factor.type,
        "label": factor.label,
        "status": factor.status,
        "created_at": factor.created_at,
        "confirmed_at": factor.confirmed_at,
        "last_used_at": factor.last_used_at,
    }
    if factor.serial:
        out["serial"] = factor.serial
    HANDLERS[factor.type].describe(factor, out)
    return out


def login_view(factor: FactorView) -> dict[str, Any]:
    """The little a login shows about each factor before the second factor."""
    full = view(factor)
    return {k: full[k] for k in ("id", "type", "label", "remaining", "serial") if k in full}


_VIEW_ONE = prepared(_VIEWS.where(_F.c.id == bindparam("id")))


def view_of(reader: Reader, factor: Factor) -> dict[str, Any]:
    """The view of a factor changed in this session (enrolled, confirmed, renamed), as stored."""
    if isinstance(reader, Session):
        reader.flush()  # a Core select does not flush the session's changes by itself
    return view(reader.execute(_VIEW_ONE, {"id": factor.id}).one())


_ACTIVE = prepared(
    _VIEWS.where(_F.c.user_id == bindparam("user_id"), _F.c.status == "active").order_by(
        _F.c.created_at, _F.c.id
    )
)


def active(reader: Reader, user_id: str) -> list[FactorView]:
    """The user's active factors, oldest first, as rows (to show and to count, not to change)."""
    return list(reader.execute(_ACTIVE, {"user_id": user_id}))


def has_active(session: Session, user_id: str) -> bool:
    return (
        session.execute(
            select(col(Factor.id))
            .where(col(Factor.user_id) == user_id, col(Factor.status) == "active")
            .limit(1)
        ).first()
        is not None
    )


def _users_factors(users: Any) -> Select[Any]:
    """The views of the factors of the users ``users`` names (one id, or ANY of a list), each
    row led by its user's id. Rows, not ORM objects: the listing only reads them."""
    return (
        select(_F.c.user_id.label("of_user"), *VIEW_COLUMNS)
        .select_from(view_from())
        .where(_F.c.user_id == users)
        .order_by(_F.c.created_at, _F.c.id)
    )


_USERS_FACTORS = prepared(_users_factors(bindparam("user_id")))
# For many users at once: on PostgreSQL the calls that come while one read is out share the
# next (``Database.fetch_gathered``), as /api/me's do.
_USERS_FACTORS_MANY = prepared(_users_factors(any_(bindparam("keys", type_=ARRAY(String)))))


async def listing(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    """The caller's factors, read in the event loop: one query (``Database.fetch``), or on
    PostgreSQL one shared with the listings asked for meanwhile."""
    if ctx.db.is_sqlite:
        rows: Sequence[Any] = await ctx.db.fetch(_USERS_FACTORS, {"user_id": user_id})
    else:
        rows = await ctx.db.fetch_gathered(_USERS_FACTORS_MANY, user_id)
    return [view(row) for row in rows]


def listing_in(reader: Reader, user_id: str) -> list[dict[str, Any]]:
    return [view(row) for row in reader.execute(_USERS_FACTORS, {"user_id": user_id})]


@dataclass
class Enroller:
    """Who enrolls: a user with an access token, or a login that must enroll a first factor
    (its ``mfa_token`` as the bearer)."""

    principal: Principal | None = None
    mfa_token: str | None = None
    tx: LoginTransaction | None = None

    def user_id(self, session: Session, now: int) -> str:
        if self.principal is not None:
            return self.principal.user_id
        assert self.mfa_token is not None
        try:
            tx = transactions.open_live(session, self.mfa_token, now)
        except MfaError:
            raise Unauthorized from None
        # Only while the user has no active factor: otherwise an mfa_token would be a way
        # around the second factor the user already has. A step-up is never an enrollment.
        if tx.purpose != transactions.LOGIN or has_active(session, tx.user_id):
            raise Unauthorized
        self.tx = tx
        return tx.user_id


def enroll(ctx: Context, enroller: Enroller, request: Any, meta: RequestMeta) -> dict[str, Any]:
    """Create a pending factor and show its secret (or creation options) this once."""
    now = ctx.now()
    factor_id = new_id()
    with ctx.db.write() as session:
        user = users.get(session, enroller.user_id(session, now))
        # Enrollments abandoned long ago give their place back: an enrolling login cannot
        # remove them itself, and they would otherwise fill the user's quota for good.
        session.execute(
            delete(Factor).where(
                col(Factor.user_id) == user.id,
                col(Factor.status) == "pending",
                col(Factor.created_at) < now - PENDING_LIFETIME,
            )
        )
        count = session.execute(
            select(func.count()).select_from(Factor).where(col(Factor.user_id) == user.id)
        ).scalar_one()
        if count >= MAX_FACTORS_PER_USER:
            raise InvalidRequest(f"A user can have at most {MAX_FACTORS_PER_USER} factors.")
        enrollment = HANDLERS[request.type].enroll(session, ctx, request, user, factor_id, now)
        factor = Factor(
            id=factor_id,
            user_id=user.id,
            type=request.type,
            label=request.label,
            status="pending",
            created_at=now,
            challenge=enrollment.challenge,
            secret=(
                ctx.box.seal(enrollment.secret, context=secret_context(factor_id))
                if enrollment.secret is not None
                else None
            ),
            **enrollment.columns,
        )
        session.add(factor)
        session.flush()
        audit.about_factor(
            session,
            "factor_enrolled",
            user,
            factor,
            now=now,
            meta=meta,
        )
        return {**view_of(session, factor), **enrollment.reveal}


def confirm(
    ctx: Context, enroller: Enroller, factor_id: str, answer: Answer, meta: RequestMeta
) -> dict[str, Any]:
    """Activate a pending factor with one right answer. For a login that had to enroll, that
    answer is its second factor: the login transaction is spent and tokens come back."""
    now = ctx.now()
    signer = ctx.keys.signer()
    error: MfaError | None = None
    issued: tokens.Issued | None = None
    with ctx.db.write() as session:
        user = users.get(session, enroller.user_id(session, now))
        factor = owned(session, user.id, factor_id)
        if factor.status != "pending":
            raise InvalidRequest("This factor is not waiting for confirmation.")
        try:
            HANDLERS[factor.type].confirm(session, ctx, factor, answer, now)
        except Rejected as r:
            if enroller.tx is not None:
                transactions.count_failure(session, enroller.tx)
            audit.about_factor(
                session,
                "factor_failed",
                user,
                factor,
                now=now,
                meta=meta,
                reason=r.reason,
                stage="confirm",
            )
            error = VerificationFailed("The answer did not confirm the factor.")
        else:
            factor.status = "active"
            factor.confirmed_at = now
            factor.challenge = None
            audit.about_factor(
                session,
                "factor_confirmed",
                user,
                factor,
                now=now,
                meta=meta,
            )
            result = view_of(session, factor)
            if enroller.tx is not None:
                transactions.spend(session, enroller.tx, now)
                issued = tokens.issue(
                    session,
                    ctx,
                    user_id=user.id,
                    amr=["pwd", *amr_of(factor.type), "mfa"],
                    auth_time=now,
                    now=now,
                )
            else:
                assert enroller.principal is not None
                tokens.revoke_other_families(session, user.id, enroller.principal.family_id, now)
    if error:
        raise error
    if issued is not None:
        result |= issued.signed(signer)  # after the commit, outside the write lock
    return result


def record_failure(
    session: Writer,
    attempt: throttle.Attempt,
    user: Account,
    factor: FactorFields | None,
    reason: str,
    now: int,
    meta: RequestMeta,
    *,
    stage: str,
) -> None:
    """Count a wrong answer (unless its claim did) and audit it; lock at the limit."""
    attempt.failed(session)
    audit.about_factor(
        session, "factor_failed", user, factor, now=now, meta=meta, reason=reason, stage=stage
    )
    if throttle.lock_if_exhausted(session, throttle.MFA, user.id):
        audit.record(session, "locked", now=now, meta=meta, user_id=user.id, username=user.username)


def record_throttled(
    session: Writer,
    user: Account,
    refusal: TooManyAttempts | Locked,
    now: int,
    meta: RequestMeta,
    *,
    stage: str,
) -> None:
    """Audit an attempt refused unchecked (in a back-off, or locked)."""
    retry = {"retry_after": refusal.retry_after} if isinstance(refusal, TooManyAttempts) else {}
    audit.record(
        session,
        "throttled",
        now=now,
        meta=meta,
        user_id=user.id,
        username=user.username,
        stage=stage,
        **retry,
    )


def amr_of(factor_type: str) -> list[str]:
    """RFC 8176 method of a factor type (before what a single use adds, like ``user``)."""
    return ["hwk"] if factor_type == "webauthn" else ["otp"]


def owned(session: Session, user_id: str, factor_id: str) -> Factor:
    factor = session.scalars(
        select(Factor).where(col(Factor.id) == factor_id, col(Factor.user_id) == user_id)
    ).first()
    if factor is None:
        raise NotFound("No such factor.")
    return factor


def rename(
    ctx: Context, principal: Principal, factor_id: str, label: str, meta: RequestMeta
) -> dict[str, Any]:
    now = ctx.now()
    with ctx.db.write() as session:
        user = users.get(session, principal.user_id)
        factor = owned(session, user.id, factor_id)
        factor.label = label
        audit.about_factor(
            session,
            "factor_renamed",
            user,
            factor,
            now=now,
            meta=meta,
        )
        return view_of(session, factor)


def require_recent(ctx: Context, principal: Principal) -> None:
    """Step-up: a sensitive change needs a second factor from the last few minutes."""
    if ctx.now() - principal.auth_time > ctx.settings.step_up_max_age:
        raise StepUpRequired


def remove(ctx: Context, principal: Principal, factor_id: str, meta: RequestMeta) -> None:
    now = ctx.now()
    with ctx.db.write() as session:
        user = users.get(session, principal.user_id)
        factor = owned(session, user.id, factor_id)
        was_active = factor.status == "active"
        if was_active:
            require_recent(ctx, principal)
        token = inventory.release(session, factor)  # a hardware token goes back to stock
        session.delete(factor)
        audit.about_factor(
            session,
            "factor_removed",
            user,
            factor,
            now=now,
            meta=meta,
        )
        if token is not None:
            audit.about_factor(
                session,
                "token_unassigned",
                user,
                factor,
                now=now,
                meta=meta,
                serial=token.serial,
                reason="factor_removed",
            )
        if was_active:
            tokens.revoke_other_families(session, user.id, principal.family_id, now)


def regenerate_recovery_codes(
    ctx: Context, principal: Principal, meta: RequestMeta
) -> dict[str, Any]:
    """A new set of recovery codes, replacing the user's earlier set; shown this once.

    A step-up, like removing a factor; and only for a user who has another active factor
    (see ``services.recovery``). Other logins are signed out, as when a factor is added."""
    now = ctx.now()
    require_recent(ctx, principal)
    with ctx.db.write() as session:
        user = users.for_update(session, principal.user_id)
        if all(f.type == recovery.TYPE for f in active(session, user.id)):
            raise InvalidRequest(
                "Confirm a factor of another type first; recovery codes stand in for it."
            )
        factor, fresh = recovery.replace_set(session, ctx, user, now)
        audit.record(
            session,
            "recovery_codes_generated",
            now=now,
            meta=meta,
            user_id=user.id,
            username=user.username,
            factor_id=factor.id,
            count=len(fresh),
        )
        tokens.revoke_other_families(session, user.id, principal.family_id, now)
        return {**view_of(session, factor), "codes": fresh}


def resync(
    ctx: Context, principal: Principal, factor_id: str, code1: str, code2: str, meta: RequestMeta
) -> dict[str, Any]:
    """Bring an HOTP factor's counter up to a token that ran past the look-ahead window.

    Throttled like a login: two codes are a guess too."""
    now = ctx.now()
    error: MfaError | None = None
    with ctx.db.write() as session:
        user = users.get(session, principal.user_id)
        factor = owned(session, user.id, factor_id)
        if factor.type != "hotp" or factor.status != "active":
            raise InvalidRequest("Only an active HOTP factor can be resynchronized.")
        try:
            attempt = throttle.admit(session, throttle.MFA, user.id, now)
        except (TooManyAttempts, Locked) as e:
            record_throttled(session, user, e, now, meta, stage="resync")
            error = e
        else:
            try:
                accepted = Hotp().resync(factor, open_secret(ctx, factor), code1, code2)
                assert accepted.counter is not None
                accept_counter(session, factor, accepted.counter, now, status="active")
            except Rejected as r:
                record_failure(session, attempt, user, factor, r.reason, now, meta, stage="resync")
                error = VerificationFailed("The two codes are not consecutive codes of this token.")
            else:
                attempt.succeeded(session)
                audit.about_factor(session, "factor_resynced", user, factor, now=now, meta=meta)
                result = view_of(session, factor)
    if error:
        raise error
    return result
