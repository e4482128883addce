"""What an administrator does to other users' accounts: look, unlock, reset the factors of a
lost device, and read the audit log. The caller checks the admin role; ``actor`` names the
admin (or ``cli:<os user>``) for the audit trail's ``detail.actor``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlmodel import Session, col

from ..errors import NotFound
from ..models import Factor, LoginTransaction, Throttle, User
from . import audit, throttle, tokens, users
from .factors import listing_in

if TYPE_CHECKING:
    from ..context import Context, RequestMeta


def actor_name(ctx: Context, user_id: str) -> str:
    with ctx.db.read() as session:
        return users.get(session, user_id).username


def _named(session: Session, username: str) -> User:
    user = users.by_username(session, username)
    if user is None:
        raise NotFound("No such user.")
    return user


def _throttles(session: Session, people: list[User]) -> dict[str, Throttle]:
    keys = [throttle.key(throttle.MFA, u.id) for u in people]
    keys += [throttle.key(throttle.PASSWORD, u.username_key) for u in people]
    if not keys:
        return {}
    rows = session.scalars(select(Throttle).where(col(Throttle.key).in_(keys)))
    return {row.key: row for row in rows}


def user_view(
    session: Session, user: User, throttles: dict[str, Throttle], now: int
) -> dict[str, Any]:
    """A user as an admin sees them: the contract's ``{id, username, admin, locked, factors}``
    and the state of both throttles (a back-off time only while it runs)."""
    mfa = throttles.get(throttle.key(throttle.MFA, user.id))
    pwd = throttles.get(throttle.key(throttle.PASSWORD, user.username_key))

    def until(row: Throttle | None) -> int | None:
        return row.blocked_until if row is not None and row.blocked_until > now else None

    return {
        "id": user.id,
        "username": user.username,
        "admin": user.is_admin,
        "created_at": user.created_at,
        "locked": bool(mfa and mfa.locked),
        "failures": mfa.failures if mfa else 0,
        "blocked_until": None if mfa and mfa.locked else until(mfa),
        "password_failures": pwd.failures if pwd else 0,
        "password_blocked_until": until(pwd),
        "factors": listing_in(session, user.id),
    }


def list_users(ctx: Context, *, limit: int, offset: int) -> list[dict[str, Any]]:
    now = ctx.now()
    with ctx.db.read() as session:
        people = list(
            session.scalars(
                select(User).order_by(col(User.username_key)).limit(limit).offset(offset)
            )
        )
        throttles = _throttles(session, people)
        return [user_view(session, u, throttles, now) for u in people]


def show_user(ctx: Context, username: str) -> dict[str, Any]:
    now = ctx.now()
    with ctx.db.read() as session:
        user = _named(session, username)
        return user_view(session, user, _throttles(session, [user]), now)


def unlock(ctx: Context, username: str, actor: str, meta: RequestMeta) -> dict[str, Any]:
    """Clear the user's lock, failure counts and back-offs (``users.unlock``); the user after."""
    cleared = users.unlock(ctx, username, meta, actor=actor)
    return {**show_user(ctx, username), "cleared": cleared}


def reset_factors(ctx: Context, username: str, actor: str, meta: RequestMeta) -> dict[str, Any]:
    """A lost device: remove every factor of the user (recovery codes too), end every login and
    open login transaction, and clear the second-factor lock, so that the next login with the
    password enrolls a new first factor.

    Whoever logs in first with the password then enrolls: an admin should be sure who asked,
    and may want the password changed too."""
    now = ctx.now()
    with ctx.db.write() as session:
        user = users.for_update(session, _named(session, username).id)
        # Rows are locked in the order a login's verify locks them (its login transaction, the
        # throttle, then the factor), so a reset during a login waits instead of deadlocking.
        ended = session.execute(
            update(LoginTransaction)
            .where(
                col(LoginTransaction.user_id) == user.id,
                col(LoginTransaction.spent_at).is_(None),
                col(LoginTransaction.expires_at) > now,
            )
            .values(spent_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        unlocked = throttle.clear(session, throttle.MFA, user.id)
        gone = listing_in(session, user.id)
        # Recovery codes go with their factor (ON DELETE CASCADE).
        session.execute(
            delete(Factor)
            .where(col(Factor.user_id) == user.id)
            .execution_options(synchronize_session=False)
        )
        revoked = tokens.revoke_other_families(session, user.id, None, now)
        audit.record(
            session,
            "factors_reset",
            now=now,
            meta=meta,
            user_id=user.id,
            username=user.username,
            actor=actor,
            factors=[{k: f[k] for k in ("id", "type", "status", "serial") if k in f} for f in gone],
            refresh_tokens_revoked=revoked,
            login_transactions_ended=int(ended),
            unlocked=unlocked,
        )
    return {
        "username": user.username,
        "factors_removed": len(gone),
        "refresh_tokens_revoked": revoked,
        "login_transactions_ended": int(ended),
        "unlocked": unlocked,
    }


def audit_log(ctx: Context, where: audit.Filter, limit: int) -> list[dict[str, Any]]:
    with ctx.db.read() as session:
        return audit.newest(session, where, limit)
