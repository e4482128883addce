"""The browser's session: the refresh token in an HttpOnly cookie, never within reach of script.

The pages keep the access token in memory only. The refresh token is set as a cookie by
``/api/login/verify`` or ``/api/factors/{id}/confirm`` when their body asks for it
(``"cookie": true``), and only the endpoints under ``COOKIE_PATH`` ever receive it back: they
rotate it (``refresh``) and revoke it (``logout``). ``SameSite=Strict`` keeps other sites'
requests from carrying it; every endpoint that sets or reads the cookie also checks ``Origin``
against ``MFA_ORIGIN`` (the OWASP CSRF cheat sheet's "verifying origin with standard headers"),
which also covers browsers without SameSite and same-site but cross-origin pages.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import Settings
from ..errors import Forbidden, InvalidGrant
from ..services import tokens
from . import openapi
from .common import context, meta

COOKIE_NAME = "mfa_refresh"
COOKIE_PATH = "/api/session"
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,512}")


def check_origin(request: Request) -> None:
    """Refuse a cookie-acting request that does not come from one of our own origins."""
    origin = request.headers.get("origin")
    if origin is None or origin.rstrip("/") not in context(request).settings.origins:
        raise Forbidden("This request must come from the service's own pages.")


def tokens_response(result: dict[str, Any], settings: Settings, status: int = 200) -> Response:
    """Render a result that holds a refresh token, moving that token into the cookie."""
    body = {k: v for k, v in result.items() if k != "refresh_token"}
    response = JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    if "refresh_token" in result:
        response.set_cookie(
            COOKIE_NAME,
            result["refresh_token"],
            max_age=settings.refresh_token_ttl,
            path=COOKIE_PATH,
            secure=settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
    return response


def _clear(response: Response, settings: Settings) -> Response:
    response.delete_cookie(
        COOKIE_NAME,
        path=COOKIE_PATH,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


def _cookie(request: Request) -> str | None:
    value = request.cookies.get(COOKIE_NAME)
    return value if value is not None and _TOKEN.fullmatch(value) else None


async def refresh(request: Request) -> Response:
    """Rotate the cookie's refresh token; answer with a new access token."""
    check_origin(request)
    ctx = context(request)
    token = _cookie(request)
    try:
        if token is None:
            raise InvalidGrant
        result = await ctx.run(tokens.refresh, ctx, token, meta(request))
    except InvalidGrant as e:
        # The cookie is of no more use: drop it, so the browser stops sending it.
        error = JSONResponse(
            {"error": e.error, "message": e.message},
            status_code=e.status,
            headers={"Cache-Control": "no-store"},
        )
        return _clear(error, ctx.settings)
    return tokens_response(result, ctx.settings)


async def logout(request: Request) -> Response:
    """Revoke the cookie's login and clear the cookie."""
    check_origin(request)
    ctx = context(request)
    token = _cookie(request)
    if token is not None:
        await ctx.run(tokens.logout, ctx, token, meta(request))
    return _clear(Response(status_code=204, headers={"Cache-Control": "no-store"}), ctx.settings)


openapi.EXTRA_OPERATIONS.extend(
    [
        (
            "post",
            COOKIE_PATH + "/refresh",
            "Rotate the refresh-token cookie; return an access token (checks Origin)",
            None,
            200,
            False,
        ),
        (
            "post",
            COOKIE_PATH + "/logout",
            "Revoke the refresh-token cookie's login and clear it (checks Origin)",
            None,
            204,
            False,
        ),
    ]
)
