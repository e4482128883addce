"""The administrators' endpoints, ``/api/admin/...``: the admin role or 403 ``forbidden``.

Query strings are parsed here with models of their own: unlike JSON bodies, every value in a
query string is text, so numbers are converted (and then range-checked).
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidRequest, NotFound
from ..schemas import USERNAME_PATTERN
from ..services import admin as service
from ..services import audit
from ..services.factors import require_recent
from ..times import parse_time
from .common import admin, context, describe, json, meta
from .openapi import EXTRA_OPERATIONS

MAX_USERS = 1000
MAX_AUDIT_ROWS = 1000


def _time(value: object) -> object:
    return parse_time(value) if isinstance(value, str) else value


Time = Annotated[int, BeforeValidator(_time)]


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


Q = TypeVar("Q", bound=Query)


class UsersQuery(Query):
    limit: int = Field(default=100, ge=1, le=MAX_USERS)
    offset: int = Field(default=0, ge=0, le=2**31)


class AuditQuery(Query):
    username: str | None = Field(default=None, min_length=1, max_length=256)
    event: str | None = Field(default=None, min_length=1, max_length=40)
    since: Time | None = None
    until: Time | None = None
    # Asking for more than the cap gets the cap, not an error.
    limit: int = Field(default=100, ge=1)


def _query(request: Request, model: type[Q]) -> Q:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise InvalidRequest(describe(e, "query")) from None


def _username(request: Request) -> str:
    username: str = request.path_params["username"]
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise NotFound("No such user.")
    return username


async def _actor(request: Request) -> str:
    ctx = context(request)
    who = await admin(request)
    return await ctx.run(service.actor_name, ctx, who.user_id)


async def users(request: Request) -> Response:
    ctx = context(request)
    await admin(request)
    q = _query(request, UsersQuery)
    return json(await ctx.run(service.list_users, ctx, limit=q.limit, offset=q.offset))


async def user(request: Request) -> Response:
    ctx = context(request)
    await admin(request)
    return json(await ctx.run(service.show_user, ctx, _username(request)))


async def unlock(request: Request) -> Response:
    ctx = context(request)
    actor = await _actor(request)
    return json(await ctx.run(service.unlock, ctx, _username(request), actor, meta(request)))


async def reset_factors(request: Request) -> Response:
    """Destructive, so a step-up as for removing one's own factor: a stolen admin refresh
    token (which keeps its old ``auth_time``) cannot do it."""
    ctx = context(request)
    who = await admin(request)
    require_recent(ctx, who)
    actor = await ctx.run(service.actor_name, ctx, who.user_id)
    return json(await ctx.run(service.reset_factors, ctx, _username(request), actor, meta(request)))


async def audit_log(request: Request) -> Response:
    ctx = context(request)
    await admin(request)
    q = _query(request, AuditQuery)
    where = audit.Filter(username=q.username, event=q.event, since=q.since, until=q.until)
    return json(await ctx.run(service.audit_log, ctx, where, min(q.limit, MAX_AUDIT_ROWS)))


def routes() -> list[Route]:
    return [
        Route("/api/admin/users", users, methods=["GET"]),
        Route("/api/admin/users/{username}", user, methods=["GET"]),
        Route("/api/admin/users/{username}/unlock", unlock, methods=["POST"]),
        Route("/api/admin/users/{username}/reset-factors", reset_factors, methods=["POST"]),
        Route("/api/admin/audit", audit_log, methods=["GET"]),
    ]


EXTRA_OPERATIONS.extend(
    [
        ("get", "/api/admin/users", "Admin: users with lock state and factors", None, 200, True),
        ("get", "/api/admin/users/{username}", "Admin: one user", None, 200, True),
        (
            "post",
            "/api/admin/users/{username}/unlock",
            "Admin: clear a user's lock, failure counts and back-off",
            None,
            200,
            True,
        ),
        (
            "post",
            "/api/admin/users/{username}/reset-factors",
            "Admin: remove every factor of a user (lost device; step-up)",
            None,
            200,
            True,
        ),
        ("get", "/api/admin/audit", "Admin: the audit log, newest first", None, 200, True),
    ]
)
