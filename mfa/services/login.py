"""The login: a password opens a login transaction; a second factor finishes it.

No path here issues an access token without a second factor. A verify call is one write
transaction that, in this order, locks the login transaction and the user's throttle row
(reading the factor it names along with them), lets the attempt through unless the user is in
a back-off or locked, checks the answer and accepts it with a conditional update, and spends
the login transaction. Failures are recorded in that same transaction and raised after it
commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, false, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel import Session, col

from .. import passwords
from ..db import Writer
from ..direct import Direct, prepared
from ..errors import (
    InvalidCredentials,
    InvalidMfaToken,
    InvalidRequest,
    Locked,
    MfaError,
    NotFound,
    TooManyAttempts,
    Unauthorized,
    VerificationFailed,
)
from ..factors.base import Disabled, Rejected
from ..models import (
    FACTOR_ROW_COLUMNS,
    Account,
    Factor,
    FactorRow,
    FactorView,
    LoginTransaction,
    Throttle,
    User,
    table_of,
)
from ..opaque import digest
from . import audit, recovery, throttle, tokens, transactions, users
from .factors import VIEW_COLUMNS, active, login_view, record_failure, record_throttled, view_from
from .handlers import HANDLERS, Answer
from .transactions import Owner

if TYPE_CHECKING:
    from joserfc.jwk import ECKey

    from ..context import Context, RequestMeta
    from .tokens import Principal


@dataclass(frozen=True)
class _Candidate:
    """The account a password attempt is about, and its active factors; no id and no hash if
    there is none."""

    username: str
    user_id: str | None
    password_hash: str | None
    factors: tuple[FactorView, ...] = ()


async def password_login(
    ctx: Context, username: str, password: str, meta: RequestMeta
) -> dict[str, Any]:
    """Check the password and open a login transaction. An unknown username costs and answers
    exactly as a wrong password does."""
    if not ctx.db.is_sqlite:
        # One trip to a thread for the whole attempt: its statements wait on the network.
        return await ctx.run_hashing(_password_login, ctx, username, password, meta)
    # On SQLite the claim and the writes are short and run in the event loop, as a verify's
    # do (``Context.run_write``); only the hash goes to a thread. Each trip between threads
    # woke a core from its hash and found the caches cold: two trips cost less than four.
    candidate = await ctx.run_write(_claim_password_attempt, ctx, None, username, meta)
    try:
        if candidate.password_hash is None:
            await ctx.run_hash(passwords.dummy_verify, password)
            raise passwords.WrongPassword
        rehash = await ctx.run_hash(passwords.verify_password, candidate.password_hash, password)
    except passwords.WrongPassword:
        await ctx.run_write(_password_failed, ctx, None, candidate, meta)
        raise InvalidCredentials from None
    new_hash = await ctx.run_hash(passwords.hash_password, password) if rehash else None
    return await ctx.run_write(_open_login, ctx, None, candidate, new_hash, meta)


def _password_login(
    ctx: Context, username: str, password: str, meta: RequestMeta
) -> dict[str, Any]:
    # Its write transactions, before and after the hash, share one connection.
    with ctx.db.driver_connection() as conn:
        candidate = _claim_password_attempt(ctx, conn, username, meta)
        try:
            if candidate.password_hash is None:
                ctx.hash(passwords.dummy_verify, password)
                raise passwords.WrongPassword
            rehash = ctx.hash(passwords.verify_password, candidate.password_hash, password)
        except passwords.WrongPassword:
            _password_failed(ctx, conn, candidate, meta)
            raise InvalidCredentials from None
        new_hash = ctx.hash(passwords.hash_password, password) if rehash else None
        return _open_login(ctx, conn, candidate, new_hash, meta)


def _claim_password_attempt(
    ctx: Context, conn: PoolProxiedConnection | None, username: str, meta: RequestMeta
) -> _Candidate:
    now = ctx.now()
    error: MfaError | None = None
    # No transaction: the read and the claim (one atomic statement) need none between them.
    with ctx.db.direct(conn, autocommit=True) as writer:
        key = users.username_key(username)
        rows = writer.execute(_CREDENTIALS, {"key": key}).all()
        user = rows[0] if rows else None
        try:
            throttle.claim(writer, throttle.PASSWORD, key, now)
        except TooManyAttempts as e:
            audit.record(
                writer,
                "throttled",
                now=now,
                meta=meta,
                user_id=user.account_id if user else None,
                username=user.username if user else username,
                stage="password",
                retry_after=e.retry_after,
            )
            error = e
    if error:
        raise error
    if user is None:
        return _Candidate(username, None, None)
    factors = tuple(row for row in rows if row.id is not None)
    return _Candidate(user.username, user.account_id, user.password_hash, factors)


def _password_failed(
    ctx: Context, conn: PoolProxiedConnection | None, candidate: _Candidate, meta: RequestMeta
) -> None:
    with ctx.db.batch(conn) as writer:
        audit.record(
            writer,
            "password_failed",
            now=ctx.now(),
            meta=meta,
            user_id=candidate.user_id,
            username=candidate.username,
        )


def _open_login(
    ctx: Context,
    conn: PoolProxiedConnection | None,
    candidate: _Candidate,
    new_hash: str | None,
    meta: RequestMeta,
) -> dict[str, Any]:
    assert candidate.user_id is not None
    now = ctx.now()
    user_id = candidate.user_id
    # Only writes: one round trip on PostgreSQL (``Database.batch``).
    with ctx.db.batch(conn) as writer:
        throttle.succeeded(writer, throttle.PASSWORD, users.username_key(candidate.username))
        if new_hash is not None:
            users.set_password_hash(writer, user_id, new_hash)
        token = transactions.create(writer, user_id, now, ctx.settings.mfa_token_ttl)
        audit.record(
            writer,
            "login_started",
            now=now,
            meta=meta,
            user_id=user_id,
            username=candidate.username,
        )
        return {
            "mfa_token": token,
            "expires_in": ctx.settings.mfa_token_ttl,
            "enroll_required": not candidate.factors,
            "factors": [login_view(f) for f in candidate.factors],
        }


def step_up(ctx: Context, principal: Principal, meta: RequestMeta) -> dict[str, Any]:
    """Open a login transaction for a signed-in user who needs a fresh second factor (to remove
    a factor, say), without the password again. Its verify continues the caller's refresh-token
    family: a step-up raises the assurance of the same login rather than starting another, so
    logout and reuse detection keep covering everything the caller holds."""
    now = ctx.now()
    with ctx.db.write() as session:
        user = users.get(session, principal.user_id)
        family = principal.family_id
        if family is not None and not tokens.family_live(session, family, now):
            # The login this token came from has ended (logged out, revoked): nothing to raise.
            raise Unauthorized
        factors = active(session, user.id)
        if not factors:
            raise InvalidRequest("There is no active factor to confirm this with.")
        token = transactions.create(
            session,
            user.id,
            now,
            ctx.settings.mfa_token_ttl,
            purpose=transactions.STEP_UP,
            family_id=family,
        )
        audit.record(
            session, "step_up_started", now=now, meta=meta, user_id=user.id, username=user.username
        )
        return {
            "mfa_token": token,
            "expires_in": ctx.settings.mfa_token_ttl,
            "factors": [login_view(f) for f in factors],
        }


def challenge(ctx: Context, mfa_token: str, factor_id: str) -> dict[str, Any]:
    """Begin a second factor: a question for OCRA, request options for a security key,
    nothing more for codes."""
    now = ctx.now()
    with ctx.db.write() as session:
        tx = transactions.open_live(session, mfa_token, now)
        factor = _active_factor(session, tx.user_id, factor_id)
        if factor is None:
            raise NotFound("No such active factor for this login.")
        response = HANDLERS[factor.type].challenge(session, ctx, factor, tx, now)
        return {"type": factor.type, **response}


@dataclass(frozen=True)
class Verified:
    """A login finished with its second factor: the tokens stored, and what else the answer
    tells (the recovery codes left). The access token is signed afterwards (``body``), outside
    the write: on SQLite, after the commit of its group (``Context.run_write_together``)."""

    issued: tokens.Issued
    told: dict[str, Any]

    def body(self, signer: ECKey) -> dict[str, Any]:
        return self.issued.signed(signer) | self.told


def verify(
    ctx: Context, mfa_token: str, factor_id: str | None, answer: Answer, meta: RequestMeta
) -> Verified:
    """Finish the login with a second factor; return its tokens (``Verified``). Writes through
    ``Database.direct`` only."""
    now = ctx.now()
    error: MfaError | None = None
    # The hottest write path: statements on the driver's connection (``mfa.direct``).
    with ctx.db.direct() as writer:
        tx, user, factor, throttled = _open_with_factor(writer, mfa_token, factor_id, now)
        family = tx.family_id if tx.purpose == transactions.STEP_UP else None
        if family is not None and not tokens.family_live(writer, family, now):
            raise InvalidMfaToken  # the login this step-up would raise has ended meanwhile
        try:
            attempt = throttle.admit_read(throttle.MFA, user.id, now, throttled)
        except (TooManyAttempts, Locked) as e:
            transactions.count_failure(writer, tx)
            record_throttled(writer, user, e, now, meta, stage="second_factor")
            error = e
        else:
            if factor_id is None:
                factor = _locate(writer, user, answer)
            try:
                if factor is None:
                    raise Rejected("unknown_factor")
                methods = HANDLERS[factor.type].check(writer, ctx, factor, answer, now, tx)
            except Rejected as r:
                transactions.count_failure(writer, tx)
                record_failure(writer, attempt, user, factor, r.reason, now, meta, stage="login")
                if isinstance(r, Disabled) and factor is not None:
                    audit.about_factor(
                        writer,
                        "factor_disabled",
                        user,
                        factor,
                        now=now,
                        meta=meta,
                        reason=r.reason,
                    )
                error = VerificationFailed()
            else:
                if family is not None and not tokens.supersede(writer, family, now):
                    raise InvalidMfaToken  # rolls the whole verify back: nothing is spent
                # The writes whose results nothing reads: one round trip on PostgreSQL, with
                # the COMMIT (``PipelinedTransaction``).
                with writer.batch() as batch:
                    transactions.spend_locked(batch, tx, now)  # locked by _open_with_factor
                    attempt.succeeded(batch)
                    audit.about_factor(
                        batch,
                        "factor_succeeded",
                        user,
                        factor,
                        now=now,
                        meta=meta,
                        stage=tx.purpose,
                    )
                    # A step-up keeps "pwd": the login it continues began with the password.
                    issued = tokens.issue(
                        batch,
                        ctx,
                        user_id=user.id,
                        amr=["pwd", *methods, "mfa"],
                        auth_time=now,
                        now=now,
                        family_id=family,
                    )
                told: dict[str, Any] = {}
                if factor.type == recovery.TYPE:
                    told = recovery.after_login(writer, user, factor, now, meta)
    if error:
        raise error
    return Verified(issued, told)


_T = table_of(LoginTransaction)
_U = table_of(User)
_F = table_of(Factor)
_TH = table_of(Throttle)
# A password login's one read: the account called that (any case) and the views of its active
# factors, a row per factor (or one with none: id NULL), read with the claim before the hash
# so that the writes after it need no read of their own.
_CREDENTIALS = prepared(
    select(_U.c.id.label("account_id"), _U.c.username, _U.c.password_hash, *VIEW_COLUMNS)
    .select_from(view_from(_U.outerjoin(_F, (_F.c.user_id == _U.c.id) & (_F.c.status == "active"))))
    .where(_U.c.username_key == bindparam("key"))
    .order_by(_F.c.created_at, _F.c.id)
)
_LOGIN_FIELDS = len(transactions.LOGIN_COLUMNS)
_STATE_FIELDS = len(throttle.STATE_COLUMNS)
_MFA_KEY = throttle.key_of_id(throttle.MFA, _T.c.user_id)
# On PostgreSQL the user's throttle row, made (with nothing counted) at the user's first verify,
# so that the read after it can lock it: FOR UPDATE locks no row that is not there. It waits to
# go with that read, in one round trip (``Direct.batch``).
_ENSURE_THROTTLE = prepared(
    postgresql.insert(_TH)
    .from_select(
        ["key", "failures", "blocked_until", "locked"],
        select(_MFA_KEY, literal(0), literal(0), false()).where(
            _T.c.token_hash == bindparam("hash")
        ),
    )
    .on_conflict_do_nothing(index_elements=[_TH.c.key])
)


def _live_with_factor(*, locking: bool) -> Any:
    """A verify's read of its login, the login's user name, the factor it names (if it names
    one, and that one is the user's and active) and the user's throttle row, in one query.

    On PostgreSQL (``locking``) it locks the login's row and the throttle row until the commit:
    two verifies of one login take turns, and so do two of one user, as they must for the
    throttle's count (``throttle.admit_read``). On SQLite its transaction holds the writer lock,
    and so every row; the throttle row may be missing there (nothing was ever counted)."""
    read = (
        select(
            *transactions.LOGIN_COLUMNS,
            _U.c.username,
            *FACTOR_ROW_COLUMNS,
            *throttle.STATE_COLUMNS,
        )
        .join(_U, _U.c.id == _T.c.user_id)
        .outerjoin(
            _F,
            (_F.c.id == bindparam("factor_id"))
            & (_F.c.user_id == _T.c.user_id)
            & (_F.c.status == "active"),
        )
        .where(_T.c.token_hash == bindparam("hash"))
    )
    if locking:
        return read.join(_TH, _TH.c.key == _MFA_KEY).with_for_update(of=[_T, _TH])
    return read.outerjoin(_TH, _TH.c.key == _MFA_KEY)


_LIVE_WITH_FACTOR = {
    "sqlite": prepared(_live_with_factor(locking=False)),
    "postgresql": prepared(_live_with_factor(locking=True)),
}


def _open_with_factor(
    writer: Direct, mfa_token: str, factor_id: str | None, now: int
) -> tuple[transactions.Login, Owner, FactorRow | None, throttle.State | None]:
    """The live login transaction of ``mfa_token``, its owner, the owner's active factor
    ``factor_id`` (None if there is no such factor, or no id), and the owner's throttle row for
    second factors (None if there is none)."""
    dialect, token_hash = writer.dialect.name, digest(mfa_token)
    if dialect != "sqlite":
        with writer.batch() as batch:
            batch.execute(_ENSURE_THROTTLE, {"hash": token_hash})
    row = writer.execute(
        _LIVE_WITH_FACTOR[dialect], {"hash": token_hash, "factor_id": factor_id}
    ).first()
    if row is None:
        raise InvalidMfaToken
    tx = transactions.Login(*row[:_LOGIN_FIELDS])
    transactions.check_live(tx, now)
    owner = Owner(tx.user_id, row[_LOGIN_FIELDS])
    factor = row[_LOGIN_FIELDS + 1 : -_STATE_FIELDS]
    state = row[-_STATE_FIELDS:]
    return (
        tx,
        owner,
        FactorRow(*factor) if factor[0] is not None else None,
        throttle.State(*state) if state[0] is not None else None,
    )


def _locate(writer: Writer, user: Account, answer: Answer) -> FactorRow | None:
    """The factor a security key's credential names by its credential id."""
    locate = getattr(HANDLERS.get("webauthn"), "locate", None)
    if isinstance(answer, dict) and locate is not None:
        found: FactorRow | None = locate(writer, user.id, answer)
        return found
    return None


_ACTIVE_FACTOR = select(Factor).where(
    col(Factor.id) == bindparam("id"),
    col(Factor.user_id) == bindparam("user_id"),
    col(Factor.status) == "active",
)


def _active_factor(session: Session, user_id: str, factor_id: str) -> Factor | None:
    return session.scalars(_ACTIVE_FACTOR, {"id": factor_id, "user_id": user_id}).first()
