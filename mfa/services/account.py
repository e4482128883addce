"""The caller's own account."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlmodel import col

from ..errors import Unauthorized
from ..models import User
from . import tokens
from .factors import listing_in

if TYPE_CHECKING:
    from ..context import Context
    from .tokens import Principal

_USER = select(User).where(col(User.id) == bindparam("id"))


def me_by_token(ctx: Context, bearer: str) -> dict[str, Any]:
    return me(ctx, tokens.authenticate(ctx, bearer))


def me(ctx: Context, principal: Principal) -> dict[str, Any]:
    with ctx.db.read() as session:
        user = session.scalars(_USER, {"id": principal.user_id}).first()
        if user is None:
            # A valid token for a user deleted since: the token speaks for nobody.
            raise Unauthorized
        return {
            "sub": user.id,
            "username": user.username,
            "admin": user.is_admin,
            "amr": list(principal.amr),
            "auth_time": principal.auth_time,
            "factors": listing_in(session, user.id),
        }
