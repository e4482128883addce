"""The caller's factors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from .. import schemas
from ..errors import InvalidRequest, NotFound
from ..services import factors
from ..services.factors import Enroller
from . import session
from .common import (
    bearer_token,
    body,
    body_as,
    context,
    json,
    looks_like_jwt,
    meta,
    no_content,
    principal,
    shaped,
)

_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_enroll_request: TypeAdapter[Any] = TypeAdapter(schemas.EnrollRequest)


async def _enroller(request: Request) -> Enroller:
    """An access token, or (for a login that must enroll first) its mfa_token."""
    token = bearer_token(request)
    if looks_like_jwt(token):
        return Enroller(principal=await principal(request))
    return Enroller(mfa_token=token)


def _factor_id(request: Request) -> str:
    factor_id: str = request.path_params["factor_id"]
    if not _ID.fullmatch(factor_id):
        raise NotFound("No such factor.")
    return factor_id


async def listing(request: Request) -> Response:
    ctx = context(request)
    who = await principal(request)
    return json(await factors.listing(ctx, who.user_id))


async def create(request: Request) -> Response:
    ctx = context(request)
    enroller = await _enroller(request)
    data = await body_as(request, _enroll_request)
    return json(await ctx.run(factors.enroll, ctx, enroller, data, meta(request)), 201)


async def confirm(request: Request) -> Response:
    ctx = context(request)
    enroller = await _enroller(request)
    data = await body(request, schemas.Confirm)
    answer: str | dict[str, Any]
    if data.credential is not None:
        shaped(data.credential, schemas.RegistrationCredential)  # a 400 for the wrong shape
        answer = data.credential
    elif data.code is not None:
        answer = data.code
    else:
        raise InvalidRequest("Send the code (or a security key's credential) to confirm.")
    if data.cookie:
        session.check_origin(request)
    result = await ctx.run(
        factors.confirm, ctx, enroller, _factor_id(request), answer, meta(request)
    )
    return session.tokens_response(result, ctx.settings) if data.cookie else json(result)


async def rename(request: Request) -> Response:
    ctx = context(request)
    who = await principal(request)
    data = await body(request, schemas.Rename)
    return json(
        await ctx.run(factors.rename, ctx, who, _factor_id(request), data.label, meta(request))
    )


async def remove(request: Request) -> Response:
    ctx = context(request)
    who = await principal(request)
    await ctx.run(factors.remove, ctx, who, _factor_id(request), meta(request))
    return no_content()


async def resync(request: Request) -> Response:
    ctx = context(request)
    who = await principal(request)
    data = await body(request, schemas.Resync)
    return json(
        await ctx.run(
            factors.resync, ctx, who, _factor_id(request), data.code1, data.code2, meta(request)
        )
    )


async def recovery_codes(request: Request) -> Response:
    ctx = context(request)
    who = await principal(request)
    return json(await ctx.run(factors.regenerate_recovery_codes, ctx, who, meta(request)), 201)
