"""Users: sign-up and creation, lookup, unlock."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from .. import passwords
from ..db import Writer
from ..direct import prepared
from ..errors import InvalidRequest, MfaError, NotFound
from ..models import User, new_id, table_of
from ..schemas import USERNAME_PATTERN
from . import audit, throttle

if TYPE_CHECKING:
    from ..context import Context, RequestMeta


class UsernameTaken(MfaError):
    status, error = 409, "username_taken"

    def __init__(self) -> None:
        super().__init__("This username is taken.")


def username_key(username: str) -> str:
    return username.lower()


async def create(
    ctx: Context,
    username: str,
    password: str,
    meta: RequestMeta,
    *,
    admin: bool = False,
    event: str = "signup",
) -> dict[str, Any]:
    """Create a user after checking the password policy; the hash runs in a limited thread."""
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise InvalidRequest(
            "Usernames are 1-64 letters, digits and . _ @ + - (starting with a letter or digit)."
        )
    passwords.check_policy(password)
    if await ctx.run(find, ctx, username) is not None:
        raise UsernameTaken
    password_hash = await ctx.run_hash(passwords.hash_password, password)
    return await ctx.run(_insert, ctx, username, password_hash, admin, meta, event)


def _insert(
    ctx: Context, username: str, password_hash: str, admin: bool, meta: RequestMeta, event: str
) -> dict[str, Any]:
    now = ctx.now()
    user = User(
        id=new_id(),
        username=username,
        username_key=username_key(username),
        password_hash=password_hash,
        is_admin=admin,
        created_at=now,
    )
    try:
        with ctx.db.write() as session:
            session.add(user)
            session.flush()
            audit.record(
                session, event, now=now, meta=meta, user_id=user.id, username=username, admin=admin
            )
    except IntegrityError:
        # Two sign-ups for one name at once: the unique index decides.
        raise UsernameTaken from None
    return {"id": user.id, "username": user.username}


def find(ctx: Context, username: str) -> User | None:
    with ctx.db.read() as session:
        return by_username(session, username)


def by_username(session: Session, username: str) -> User | None:
    return session.scalars(
        select(User).where(col(User.username_key) == username_key(username))
    ).first()


_U = table_of(User)


_NEW_HASH = prepared(
    update(_U).where(_U.c.id == bindparam("user")).values(password_hash=bindparam("new"))
)


def set_password_hash(session: Writer, user_id: str, password_hash: str) -> None:
    session.execute(_NEW_HASH, {"user": user_id, "new": password_hash})


def is_admin(ctx: Context, user_id: str) -> bool:
    with ctx.db.read() as session:
        user = session.get(User, user_id)
        return bool(user and user.is_admin)


_BY_ID = select(User).where(col(User.id) == bindparam("id"))


def get(session: Session, user_id: str) -> User:
    user = session.scalars(_BY_ID, {"id": user_id}).first()
    if user is None:
        raise NotFound("No such user.")
    return user


def for_update(session: Session, user_id: str) -> User:
    """The user's row, locked until the transaction ends (``SELECT ... FOR UPDATE``; SQLite's
    ``BEGIN IMMEDIATE`` already serializes writers): for changes that must not interleave,
    like replacing a recovery set or resetting every factor."""
    user = session.scalars(
        select(User)
        .where(col(User.id) == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if user is None:
        raise NotFound("No such user.")
    return user


def unlock(ctx: Context, username: str, meta: RequestMeta, *, actor: str | None = None) -> bool:
    """Clear a user's second-factor lock, failure count and back-off, and their password
    back-off. Returns whether anything was set."""
    now = ctx.now()
    with ctx.db.write() as session:
        user = by_username(session, username)
        if user is None:
            raise NotFound("No such user.")
        cleared = throttle.clear(session, throttle.MFA, user.id)
        cleared = throttle.clear(session, throttle.PASSWORD, user.username_key) or cleared
        detail = {"actor": actor} if actor else {}
        audit.record(
            session,
            "unlocked",
            now=now,
            meta=meta,
            user_id=user.id,
            username=user.username,
            **detail,
        )
    return cleared
