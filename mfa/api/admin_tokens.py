"""The hardware-token inventory, for admins: import seed files, list, assign, unassign."""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from .. import schemas
from ..errors import NotFound
from ..seedfile import SERIAL_PATTERN
from ..services import hardware
from .common import admin, body, context, json, meta


def _serial(request: Request) -> str:
    serial: str = request.path_params["serial"]
    if not SERIAL_PATTERN.fullmatch(serial):
        raise NotFound("No such hardware token.")
    return serial


async def listing(request: Request) -> Response:
    ctx = context(request)
    await admin(request)
    return json(await ctx.run(hardware.listing, ctx))


async def import_file(request: Request) -> Response:
    ctx = context(request)
    who = await admin(request)
    data = await body(request, schemas.TokenImport)
    form: Literal["pskc", "csv"] = "pskc" if data.pskc is not None else "csv"
    text = data.pskc if data.pskc is not None else data.csv
    assert text is not None
    key = hardware.parse_key_hex(data.key_hex) if data.key_hex is not None else None
    report = await ctx.run(
        lambda: hardware.import_file(
            ctx,
            text.encode("utf-8"),
            meta(request),
            password=data.password,
            key=key,
            form=form,
            dry_run=data.dry_run,
            actor_id=who.user_id,
        )
    )
    return json(report.as_dict())


async def assign(request: Request) -> Response:
    ctx = context(request)
    who = await admin(request)
    data = await body(request, schemas.TokenAssign)
    serial = _serial(request)
    return json(
        await ctx.run(
            lambda: hardware.assign(ctx, serial, data.username, meta(request), actor_id=who.user_id)
        )
    )


async def unassign(request: Request) -> Response:
    ctx = context(request)
    who = await admin(request)
    serial = _serial(request)
    return json(
        await ctx.run(lambda: hardware.unassign(ctx, serial, meta(request), actor_id=who.user_id))
    )
