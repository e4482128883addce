"""Health, readiness and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .common import context
from .openapi import document

_OK = b'{"status":"ok"}'


async def healthz(request: Request) -> Response:
    # No database call: this says the process serves, nothing more.
    return Response(_OK, media_type="application/json")


async def readyz(request: Request) -> Response:
    ctx = context(request)
    try:
        await ctx.run(ctx.db.ping)
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"error": "not_ready", "message": "The database does not answer."}, status_code=503
        )
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> Response:
    return JSONResponse(document())
