"""The caller's own account."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import Unauthorized
from ..models import User
from .factors import listing_in

if TYPE_CHECKING:
    from ..context import Context
    from .tokens import Principal


def me(ctx: Context, principal: Principal) -> dict[str, Any]:
    with ctx.db.read() as session:
        user = session.get(User, principal.user_id)
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
