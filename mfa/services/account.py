"""The caller's own account."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from ..direct import prepared
from ..errors import Unauthorized
from ..models import Factor, User, table_of
from . import tokens
from .factors import VIEW_COLUMNS, view, view_from

if TYPE_CHECKING:
    from ..context import Context

_U, _F = table_of(User), table_of(Factor)


def _me(ids: Any) -> Select[Any]:
    """The users ``ids`` names (one id, or ANY of a list) and the views of their factors in one
    query: a row per factor, or one with no factor (id NULL), each led by its user's id.

    The factors are restricted by ``ids`` too, not only through the join: so even a generic
    plan PostgreSQL made before a table's first statistics looks them up by index, where for a
    list it read them all (12 ms, not 0.2)."""
    return (
        select(_U.c.id.label("of_user"), _U.c.username, _U.c.is_admin, *VIEW_COLUMNS)
        .select_from(view_from(_U.outerjoin(_F, (_F.c.user_id == _U.c.id) & (_F.c.user_id == ids))))
        .where(_U.c.id == ids)
        .order_by(_F.c.created_at, _F.c.id)
    )


_ME = prepared(_me(bindparam("id")))
# For many users at once: on PostgreSQL the calls that come while one read is out share the
# next (``Database.fetch_gathered``).
_ME_MANY = prepared(_me(any_(bindparam("keys", type_=ARRAY(String)))))


async def me_by_token(ctx: Context, bearer: str) -> dict[str, Any]:
    """/api/me, all in the event loop: the token check, then one query on the driver's
    connection (``Database.fetch``). This runs on every call, and there SQLAlchemy's execution
    of the statement, and a trip to a worker thread, each cost more than the database's work."""
    principal = await tokens.authenticate_in_loop(ctx, bearer)
    if ctx.db.is_sqlite:
        rows: Sequence[Any] = await ctx.db.fetch(_ME, {"id": principal.user_id})
    else:
        rows = await ctx.db.fetch_gathered(_ME_MANY, principal.user_id)
    if not rows:
        # A valid token for a user deleted since: the token speaks for nobody.
        raise Unauthorized
    return {
        "sub": principal.user_id,
        "username": rows[0].username,
        "admin": bool(rows[0].is_admin),  # SQLite gives 0 or 1 (mfa.direct)
        "amr": list(principal.amr),
        "auth_time": principal.auth_time,
        "factors": [view(row) for row in rows if row.id is not None],
    }
