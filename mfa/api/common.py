"""What every endpoint shares: parsing bodies, who is calling, bearer tokens, responses."""

from __future__ import annotations

import ipaddress
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..context import Context, RequestMeta
from ..errors import Forbidden, InvalidRequest, Unauthorized
from ..services import tokens, users
from ..services.tokens import Principal

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_USER_AGENT_MAX = 256


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def body(request: Request, model: type[M]) -> M:
    """Parse the JSON body strictly into ``model``; any mismatch is a 400 that names the field."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise InvalidRequest(describe(e)) from None


async def body_as(request: Request, adapter: TypeAdapter[T]) -> T:
    raw = await request.body()
    try:
        return adapter.validate_json(raw)
    except ValidationError as e:
        raise InvalidRequest(describe(e)) from None


def shaped(value: Any, model: type[M]) -> M:
    """Check a nested JSON value against ``model``, as ``body`` checks a whole body."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise InvalidRequest(describe(e)) from None


def describe(error: ValidationError, what: str = "request body") -> str:
    """A readable summary of what is wrong, without echoing the input (it may be a secret)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return f"Invalid {what}. " + "; ".join(parts) + "."


def meta(request: Request) -> RequestMeta:
    ua = request.headers.get("user-agent")
    if ua is not None:
        ua = "".join(ch for ch in ua if ch.isprintable())[:_USER_AGENT_MAX]
    return RequestMeta(ip=client_ip(request), user_agent=ua)


def client_ip(request: Request) -> str | None:
    """The peer's address, or the forwarded one when the peer is a trusted proxy.

    ``X-Forwarded-For`` is read right to left, skipping trusted proxies: anything further left
    was written by the client and proves nothing.
    """
    peer = request.client.host if request.client else None
    trusted = context(request).settings.trusted_proxies
    if not trusted or peer is None or not _trusted(peer, trusted):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            return hop if _is_ip(hop) else peer
    return peer


def _trusted(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip() or len(value) > 4096:
        raise Unauthorized
    return value.strip()


async def principal(request: Request) -> Principal:
    """The caller of an access token; an ``mfa_token`` or anything else gets a 401."""
    ctx = context(request)
    return await tokens.authenticate_in_loop(ctx, bearer_token(request))


async def admin(request: Request) -> Principal:
    """The caller, who must hold the admin role (checked in the database on every call, so a
    role taken away takes effect at once); anyone else gets 403."""
    who = await principal(request)
    ctx = context(request)
    if not await ctx.run(users.is_admin, ctx, who.user_id):
        raise Forbidden("This needs the admin role.")
    return who


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def no_content() -> Response:
    return Response(status_code=204, headers={"Cache-Control": "no-store"})
