"""Access and refresh tokens: issuing, rotating, revoking, and checking a bearer token.

A refresh-token family is one login: every refresh spends one link and adds the next. A spent
link presented again means two parties hold the family, so the whole family is revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc.jwk import ECKey, KeySet
from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session, col

from .. import jwt
from ..db import Writer
from ..direct import prepared
from ..errors import InvalidGrant, MfaError, Unauthorized
from ..models import RefreshToken, User, new_id, table_of
from ..opaque import digest, new_token
from . import audit

if TYPE_CHECKING:
    from ..context import Context, RequestMeta


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for."""

    user_id: str
    auth_time: int
    amr: tuple[str, ...]
    family_id: str | None
    claims: dict[str, Any]


_R = table_of(RefreshToken)
_INSERT = prepared(insert(_R))
# A family's live link: neither spent, revoked nor expired.
_LIVE_LINK = (
    (_R.c.family_id == bindparam("family"))
    & _R.c.spent_at.is_(None)
    & _R.c.revoked_at.is_(None)
    & (_R.c.expires_at > bindparam("now"))
)
_FAMILY_LIVE = prepared(select(_R.c.id).where(_LIVE_LINK).limit(1))
_SUPERSEDE = prepared(update(_R).where(_LIVE_LINK).values(spent_at=bindparam("now")))


@dataclass(frozen=True)
class Issued:
    """Tokens stored but not yet signed: the access token is signed after the transaction
    commits, outside the database's write lock, where the signature costs no one a wait."""

    claims: dict[str, Any]
    refresh_token: str

    def signed(self, signer: ECKey) -> dict[str, Any]:
        return {
            "access_token": jwt.sign(signer, self.claims),
            "token_type": "Bearer",
            "expires_in": self.claims["exp"] - self.claims["iat"],
            "refresh_token": self.refresh_token,
            "amr": self.claims["amr"],
        }


def issue(
    session: Writer,
    ctx: Context,
    *,
    user_id: str,
    amr: list[str],
    auth_time: int,
    now: int,
    family_id: str | None = None,
) -> Issued:
    """Store the next refresh token of ``family_id`` (a new family if None) and make the claims
    of its access token; ``Issued.signed`` then signs them."""
    family_id = family_id or new_id()
    refresh, refresh_hash = new_token()
    session.execute(
        _INSERT,
        {
            "id": new_id(),
            "token_hash": refresh_hash,
            "family_id": family_id,
            "user_id": user_id,
            "auth_time": auth_time,
            "amr": " ".join(amr),
            "created_at": now,
            "expires_at": now + ctx.settings.refresh_token_ttl,
        },
    )
    ttl = ctx.settings.access_token_ttl
    claims = {
        "iss": ctx.settings.issuer,
        "sub": user_id,
        "aud": ctx.settings.audience,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
        "auth_time": auth_time,
        "amr": amr,
        "sid": family_id,
    }
    return Issued(claims, refresh)


def refresh(ctx: Context, refresh_token: str, meta: RequestMeta) -> dict[str, Any]:
    now = ctx.now()
    token_hash = digest(refresh_token)
    signer = ctx.keys.signer()
    error: MfaError | None = None
    with ctx.db.write() as session:
        row = session.execute(
            update(RefreshToken)
            .where(
                col(RefreshToken.token_hash) == token_hash,
                col(RefreshToken.spent_at).is_(None),
                col(RefreshToken.revoked_at).is_(None),
                col(RefreshToken.expires_at) > now,
            )
            .values(spent_at=now)
            .returning(
                col(RefreshToken.family_id),
                col(RefreshToken.user_id),
                col(RefreshToken.auth_time),
                col(RefreshToken.amr),
            )
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            _detect_reuse(session, token_hash, now, meta)
            error = InvalidGrant()
        else:
            issued = issue(
                session,
                ctx,
                user_id=row.user_id,
                amr=row.amr.split(),
                auth_time=row.auth_time,
                now=now,
                family_id=row.family_id,
            )
    if error:
        raise error
    return issued.signed(signer)


def _detect_reuse(session: Session, token_hash: bytes, now: int, meta: RequestMeta) -> None:
    spent = session.execute(
        select(col(RefreshToken.family_id), col(RefreshToken.user_id)).where(
            col(RefreshToken.token_hash) == token_hash,
            col(RefreshToken.spent_at).is_not(None),
        )
    ).first()
    if spent is None:
        return
    revoked = revoke_family(session, spent.family_id, now)
    if revoked:
        audit.record(
            session,
            "refresh_reuse_detected",
            now=now,
            meta=meta,
            user_id=spent.user_id,
            username=_username(session, spent.user_id),
            family=spent.family_id,
            revoked=revoked,
        )


def revoke_family(session: Session, family_id: str, now: int) -> int:
    result = session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def family_live(session: Writer, family_id: str, now: int) -> bool:
    """Whether the login ``family_id`` goes on: it has a link neither spent, revoked nor expired."""
    return session.execute(_FAMILY_LIVE, {"family": family_id, "now": now}).first() is not None


def supersede(session: Writer, family_id: str, now: int) -> bool:
    """Spend the live link of ``family_id`` before a step-up adds the next one, so that a family
    keeps one live link and the replaced one, presented again, counts as reuse.

    False if there was no live link to spend: the login ended (a logout or a reuse revoked it,
    or it expired) or a refresh replaced the link meanwhile, and the step-up must not add one.
    The conditional update re-checks each row it waits for, so a concurrent logout is seen.
    """
    result = session.execute(_SUPERSEDE, {"family": family_id, "now": now})
    return bool(result.rowcount)  # type: ignore[union-attr]


def revoke_other_families(session: Session, user_id: str, keep: str | None, now: int) -> int:
    """Revoke every live refresh token of the user except those of family ``keep``."""
    stmt = update(RefreshToken).where(
        col(RefreshToken.user_id) == user_id, col(RefreshToken.revoked_at).is_(None)
    )
    if keep is not None:
        stmt = stmt.where(col(RefreshToken.family_id) != keep)
    result = session.execute(
        stmt.values(revoked_at=now).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def logout(ctx: Context, refresh_token: str, meta: RequestMeta) -> None:
    """Revoke the login the refresh token belongs to. Unknown tokens are ignored (RFC 7009 2.2)."""
    now = ctx.now()
    with ctx.db.write() as session:
        row = session.execute(
            select(col(RefreshToken.family_id), col(RefreshToken.user_id)).where(
                col(RefreshToken.token_hash) == digest(refresh_token)
            )
        ).first()
        if row is not None and revoke_family(session, row.family_id, now):
            audit.record(
                session,
                "logout",
                now=now,
                meta=meta,
                user_id=row.user_id,
                username=_username(session, row.user_id),
            )


def authenticate(ctx: Context, bearer: str) -> Principal:
    """Check an access token; raise ``Unauthorized`` for anything else (an mfa_token too).
    May read the signing keys: call it in a worker thread."""
    try:
        if not ctx.keys.knows(jwt.peek_kid(bearer)):
            raise jwt.InvalidToken("kid")
    except jwt.InvalidToken:
        raise Unauthorized from None
    return _checked(ctx, bearer, ctx.keys.keyset())


async def authenticate_in_loop(ctx: Context, bearer: str) -> Principal:
    """``authenticate`` right here in the event loop while the keys it needs are cached (a
    signature check of about a tenth of a millisecond, no I/O: less than a worker thread's
    round trip); in a worker thread when the keys must be read first."""
    try:
        keys = ctx.keys.cached(jwt.peek_kid(bearer))
    except jwt.InvalidToken:
        raise Unauthorized from None
    if keys is None:
        return await ctx.run(authenticate, ctx, bearer)
    return _checked(ctx, bearer, keys)


def _checked(ctx: Context, bearer: str, keys: KeySet) -> Principal:
    try:
        claims = jwt.verify(
            bearer, keys, issuer=ctx.settings.issuer, audience=ctx.settings.audience, now=ctx.now()
        )
    except jwt.InvalidToken:
        raise Unauthorized from None
    family = claims.get("sid")
    return Principal(
        user_id=str(claims["sub"]),
        auth_time=int(claims["auth_time"]),
        amr=tuple(str(a) for a in claims["amr"]),
        family_id=family if isinstance(family, str) else None,
        claims=claims,
    )


def _username(session: Session, user_id: str) -> str | None:
    return session.execute(select(col(User.username)).where(col(User.id) == user_id)).scalar()
