"""The Starlette application: routes, middleware, error handling, start-up."""

from __future__ import annotations

import gc
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import outage, schema
from .api import admin, admin_tokens, factors, login, ops, pages, session
from .config import Settings
from .context import Context
from .errors import MfaError
from .observability import Observe, metrics_endpoint, stamp_request_ids
from .services import maintenance

log = logging.getLogger("mfa")

MAX_BODY_BYTES = 64 * 1024


def routes() -> list[Route]:
    return [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        Route("/.well-known/jwks.json", login.jwks, methods=["GET"]),
        Route("/api/users", login.signup, methods=["POST"]),
        Route("/api/login", login.password, methods=["POST"]),
        Route("/api/login/challenge", login.challenge, methods=["POST"]),
        Route("/api/login/verify", login.verify, methods=["POST"]),
        Route("/api/token/refresh", login.refresh, methods=["POST"]),
        Route("/api/logout", login.logout, methods=["POST"]),
        Route("/api/step-up", login.step_up, methods=["POST"]),
        Route(session.COOKIE_PATH + "/refresh", session.refresh, methods=["POST"]),
        Route(session.COOKIE_PATH + "/logout", session.logout, methods=["POST"]),
        Route("/api/me", login.me, methods=["GET"]),
        Route("/api/factors", factors.listing, methods=["GET"]),
        Route("/api/factors", factors.create, methods=["POST"]),
        Route("/api/factors/{factor_id}", factors.rename, methods=["PATCH"]),
        Route("/api/factors/{factor_id}", factors.remove, methods=["DELETE"]),
        Route("/api/factors/{factor_id}/confirm", factors.confirm, methods=["POST"]),
        Route("/api/factors/{factor_id}/resync", factors.resync, methods=["POST"]),
        *(Route(path, pages.page, methods=["GET"]) for path in pages.PAGES),
        Route(pages.STATIC_PREFIX + "/{version}/{path:path}", pages.static, methods=["GET"]),
        Route("/api/admin/tokens", admin_tokens.listing, methods=["GET"]),
        Route("/api/admin/tokens/import", admin_tokens.import_file, methods=["POST"]),
        Route("/api/admin/tokens/{serial}/assign", admin_tokens.assign, methods=["POST"]),
        Route("/api/admin/tokens/{serial}/unassign", admin_tokens.unassign, methods=["POST"]),
        Route("/api/recovery-codes", factors.recovery_codes, methods=["POST"]),
        *admin.routes(),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    freeze_after_startup: bool = False,
) -> Starlette:
    settings = settings or Settings.from_env()
    stamp_request_ids()
    for origin in settings.origins_outside_rp_id():
        log.warning(
            "MFA_RP_ID %r does not cover the origin %s: security keys will refuse to register "
            "or log in there; set MFA_RP_ID to that host or a parent domain of it",
            settings.rp_id,
            origin,
        )
    ctx = Context.create(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ctx.run(schema.ensure, ctx.db, upgrade_if_behind=False)
        await ctx.run(ctx.keys.jwks)  # makes the first signing key if there is none
        ctx.db.checkpoint_in_background()
        await ctx.db.open_loop_reads()
        if freeze_after_startup:
            # Everything made so far (modules, engine, keys) lives as long as the process.
            # Out of the collector's sight, it no longer makes each full collection a pause of
            # 15 to 75 ms in the middle of requests (15 such pauses in 8 s of verifications
            # before, none after).
            gc.collect()
            gc.freeze()
        async with anyio.create_task_group() as background:
            if settings.prune_interval:
                background.start_soon(maintenance.run_periodically, ctx)
            yield
            background.cancel_scope.cancel()
        await ctx.db.close_loop_reads()
        ctx.db.dispose()
        ctx.close()

    table = routes()
    table.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    app = Starlette(
        routes=table,
        exception_handlers={MfaError: _mfa_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.site = pages.Site.load()
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(CatchAll)
    app.add_middleware(Observe)
    return app


def app_from_env() -> Starlette:
    """Entry point for ``uvicorn --factory`` and ``mfa serve``."""
    return create_app(freeze_after_startup=True)


def error_body(error: str, message: str) -> dict[str, str]:
    return {"error": error, "message": message}


async def _mfa_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MfaError)
    return JSONResponse(error_body(exc.error, exc.message), exc.status, headers=exc.headers)


_HTTP_ERRORS = {
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "This method is not allowed here."),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error, message = _HTTP_ERRORS.get(exc.status_code, ("invalid_request", "Bad request."))
    return JSONResponse(error_body(error, message), exc.status_code, headers=exc.headers)


class PayloadTooLarge(MfaError):
    status, error = 413, "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request bodies are limited to {limit // 1024} KiB.")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes, by Content-Length or while they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    await _send_error(send, PayloadTooLarge(self.limit))
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


class CatchAll:
    """The last line: an unexpected error becomes a 500 JSON body, and the log gets the
    exception's type and where it happened, never its message (which may quote input). A
    database that cannot serve just now (``mfa.outage``) is a 503 with Retry-After instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            error: MfaError
            if outage.is_outage(exc):
                log.warning(
                    "database unavailable (%s) on %s %s",
                    outage.describe(exc),
                    scope.get("method"),
                    scope.get("path"),
                )
                error = outage.Unavailable()
            else:
                frames = "".join(traceback.format_tb(exc.__traceback__))
                log.error(
                    "unhandled %s on %s %s\n%s",
                    type(exc).__name__,
                    scope.get("method"),
                    scope.get("path"),
                    frames,
                )
                error = MfaError(
                    "Something went wrong on our side.", error="internal_error", status=500
                )
            if not started:
                await _send_error(send, error)


async def _send_error(send: Send, error: MfaError) -> None:
    payload = json.dumps(error_body(error.error, error.message)).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
