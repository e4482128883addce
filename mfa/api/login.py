"""Sign-up, login, tokens and the caller's own account."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import schemas
from ..errors import InvalidRequest, MfaError
from ..services import account, login, tokens, users, webauthn
from . import openapi, session
from .common import bearer_token, body, context, json, meta, no_content, principal, shaped


class SignupDisabled(MfaError):
    status, error = 403, "signup_disabled"

    def __init__(self) -> None:
        super().__init__("Sign-up is closed on this service; ask an administrator for an account.")


async def signup(request: Request) -> Response:
    ctx = context(request)
    if not ctx.settings.open_signup:
        raise SignupDisabled
    data = await body(request, schemas.Signup)
    return json(await users.create(ctx, data.username, data.password, meta(request)), 201)


async def password(request: Request) -> Response:
    data = await body(request, schemas.Login)
    return json(
        await login.password_login(context(request), data.username, data.password, meta(request))
    )


async def challenge(request: Request) -> Response:
    ctx = context(request)
    data = await body(request, schemas.LoginChallenge)
    return json(await ctx.run_write(login.challenge, ctx, data.mfa_token, data.factor_id))


async def verify(request: Request) -> Response:
    ctx = context(request)
    data = await body(request, schemas.LoginVerify)
    answer: str | dict[str, Any]
    if data.credential is not None:
        shaped(data.credential, schemas.AssertionCredential)  # a 400 for the wrong shape
        answer = data.credential
    elif data.code is not None and data.factor_id is not None:
        answer = data.code
    else:
        raise InvalidRequest("Send factor_id and code, or a security key's credential.")
    if data.cookie:
        session.check_origin(request)
    await webauthn.precheck(ctx, data.mfa_token, answer)
    verified = await ctx.run_write_together(
        login.verify, ctx, data.mfa_token, data.factor_id, answer, meta(request)
    )
    result = verified.body(await ctx.signer())
    return session.tokens_response(result, ctx.settings) if data.cookie else json(result)


async def step_up(request: Request) -> Response:
    """A fresh second factor for a signed-in user: a login transaction without the password,
    finished with the usual ``/api/login/challenge`` and ``/api/login/verify``."""
    ctx = context(request)
    who = await principal(request)
    return json(await ctx.run(login.step_up, ctx, who, meta(request)))


openapi.EXTRA_OPERATIONS.append(
    (
        "post",
        "/api/step-up",
        "Open a login transaction for a fresh second factor, without the password",
        None,
        200,
        True,
    )
)


async def refresh(request: Request) -> Response:
    ctx = context(request)
    data = await body(request, schemas.RefreshTokenBody)
    return json(await ctx.run(tokens.refresh, ctx, data.refresh_token, meta(request)))


async def logout(request: Request) -> Response:
    ctx = context(request)
    data = await body(request, schemas.RefreshTokenBody)
    await ctx.run(tokens.logout, ctx, data.refresh_token, meta(request))
    return no_content()


async def jwks(request: Request) -> Response:
    ctx = context(request)
    keys = await ctx.run(ctx.keys.jwks)
    # Verifiers may cache the set briefly and fetch it again when they meet an unknown kid.
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})


async def me(request: Request) -> Response:
    ctx = context(request)
    return json(await account.me_by_token(ctx, bearer_token(request)))
