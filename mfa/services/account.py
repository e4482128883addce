"""The caller's own account."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from ..errors import Unauthorized
from ..models import Factor, User, table_of
from . import tokens
from .factors import view

if TYPE_CHECKING:
    from ..context import Context
    from .tokens import Principal

_U, _F = table_of(User), table_of(Factor)
# The user and their factors in one query: a row per factor, or one with no factor (id NULL).
_ME = (
    select(_U.c.username, _U.c.is_admin, _F)
    .select_from(_U.outerjoin(_F, _F.c.user_id == _U.c.id))
    .where(_U.c.id == bindparam("id"))
    .order_by(_F.c.created_at, _F.c.id)
)


def me_by_token(ctx: Context, bearer: str) -> dict[str, Any]:
    return me(ctx, tokens.authenticate(ctx, bearer))


def me(ctx: Context, principal: Principal) -> dict[str, Any]:
    # One query for rows on a bare connection: this runs on every call of /api/me, and there
    # the ORM's session and object loading cost more than the query.
    with ctx.db.connect() as conn:
        rows = conn.execute(_ME, {"id": principal.user_id}).all()
        if not rows:
            # A valid token for a user deleted since: the token speaks for nobody.
            raise Unauthorized
        return {
            "sub": principal.user_id,
            "username": rows[0].username,
            "admin": rows[0].is_admin,
            "amr": list(principal.amr),
            "auth_time": principal.auth_time,
            "factors": [view(conn, row) for row in rows if row.id is not None],
        }
