"""Hardware tokens: import from seed files, the inventory, assignment to users.

An imported token is in stock: its key sealed to its own row. Assigned, it becomes an ``active``
factor of one user (the key sealed again for the factor's row, the factor showing the token's
serial); unassigned, the factor is deleted and the token is back in stock with the furthest
counter its holder reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from .. import seedfile
from ..errors import Conflict, InvalidRequest, MfaError, NotFound
from ..models import Factor, HardwareToken, User, new_id
from ..secretbox import SealError
from ..seedfile import Seed, SeedFileError
from . import audit, inventory, users
from .factors import MAX_FACTORS_PER_USER, view_of
from .handlers import pin_context, secret_context

if TYPE_CHECKING:
    from ..context import Context, RequestMeta

log = logging.getLogger(__name__)

# A pre-shared key for AES-128, -192 or -256 (RFC 6030 section 6.1) or two- or three-key 3DES.
KEY_SIZES = (16, 24, 32)
# Serials looked up per statement (SQLite caps the number of bound parameters).
_CHUNK = 500


def token_secret_context(token_id: str) -> str:
    return f"hardware_token:{token_id}:secret"


def token_pin_context(token_id: str) -> str:
    return f"hardware_token:{token_id}:pin"


def parse_key_hex(key_hex: str) -> bytes:
    """The pre-shared key of a PSKC file, given in hex."""
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise InvalidRequest("The pre-shared key must be hex.") from None
    if len(key) not in KEY_SIZES:
        raise InvalidRequest("The pre-shared key must be 16, 24 or 32 bytes (32, 48 or 64 hex).")
    return key


@dataclass
class ImportReport:
    imported: list[Seed] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (serial, why)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """One line per serial, for the command line."""
        verb = "would be imported" if self.dry_run else "imported"
        out = [f"{s.serial} {verb} ({describe_seed(s)})" for s in self.imported]
        out += [f"{serial} skipped: {why}" for serial, why in self.skipped]
        return out + [f"note: {note}" for note in self.notes]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "imported": [
                {"serial": s.serial, "type": s.type, "digits": s.digits} for s in self.imported
            ],
            "skipped": [{"serial": serial, "reason": why} for serial, why in self.skipped],
            "notes": self.notes,
        }


def describe_seed(seed: Seed) -> str:
    if seed.type == "ocra":
        return f"ocra, {seed.suite}"
    if seed.type == "totp":
        return f"totp, {seed.digits} digits, {seed.period} s"
    return f"hotp, {seed.digits} digits"


def import_file(
    ctx: Context,
    data: bytes,
    meta: RequestMeta,
    *,
    password: str | None = None,
    key: bytes | None = None,
    form: Literal["pskc", "csv"] | None = None,
    dry_run: bool = False,
    actor_id: str | None = None,
) -> ImportReport:
    """Import every token of a seed file in one transaction, or none: serials already present
    (or given twice) are skipped and named; any other problem raises ``InvalidRequest``."""
    try:
        parsed = seedfile.read(data, password=password, key=key, form=form)
    except SeedFileError as e:
        raise InvalidRequest(str(e)) from None
    report = ImportReport(notes=parsed.notes, dry_run=dry_run)
    now = ctx.now()
    try:
        with ctx.db.read() if dry_run else ctx.db.write() as session:
            present = _present(session, [s.serial for s in parsed.seeds])
            actor = _actor(session, actor_id)
            for seed in parsed.seeds:
                if seed.serial in present:
                    report.skipped.append((seed.serial, _why_skipped(seed, report)))
                    continue
                present.add(seed.serial)
                report.imported.append(seed)
                if not dry_run:
                    _insert(session, ctx, seed, now, meta, actor)
    except IntegrityError:
        # Another import added one of these serials in the meantime: this one added nothing.
        raise Conflict(
            "Another import added some of these serials at the same time; nothing was "
            "imported. Run the import again."
        ) from None
    return report


def _why_skipped(seed: Seed, report: ImportReport) -> str:
    if any(s.serial == seed.serial for s in report.imported):
        return "given twice in the file (the first key was taken)"
    return "already present"


def _present(session: Session, serials: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(serials), _CHUNK):
        chunk = serials[i : i + _CHUNK]
        found.update(
            session.scalars(
                select(col(HardwareToken.serial)).where(col(HardwareToken.serial).in_(chunk))
            )
        )
    return found


def _insert(
    session: Session, ctx: Context, seed: Seed, now: int, meta: RequestMeta, actor: str | None
) -> None:
    token_id = new_id()
    session.add(
        HardwareToken(
            id=token_id,
            serial=seed.serial,
            type=seed.type,
            secret=ctx.box.seal(seed.secret, context=token_secret_context(token_id)),
            algorithm=seed.algorithm,
            digits=seed.digits,
            counter=seed.counter,
            period=seed.period,
            suite=seed.suite,
            pin=(
                ctx.box.seal(seed.pin_hash, context=token_pin_context(token_id))
                if seed.pin_hash is not None
                else None
            ),
            manufacturer=seed.manufacturer,
            not_before=seed.not_before,
            not_after=seed.not_after,
            imported_at=now,
        )
    )
    audit.record(
        session,
        "token_imported",
        now=now,
        meta=meta,
        serial=seed.serial,
        token_type=seed.type,
        **_actor_detail(actor),
    )


def token_view(token: HardwareToken, username: str | None) -> dict[str, Any]:
    """A hardware token as the inventory shows it: never its key or PIN."""
    out: dict[str, Any] = {
        "serial": token.serial,
        "type": token.type,
        "digits": token.digits,
        "username": username,
        "factor_id": token.factor_id,
        "imported_at": token.imported_at,
        "assigned_at": token.assigned_at,
        "not_before": token.not_before,
        "not_after": token.not_after,
        "manufacturer": token.manufacturer,
    }
    if token.type == "ocra":
        out["suite"] = token.suite
    else:
        out["algorithm"] = token.algorithm
    if token.period is not None:
        out["period"] = token.period
    return out


def listing(ctx: Context) -> list[dict[str, Any]]:
    with ctx.db.read() as session:
        rows = session.execute(
            select(HardwareToken, col(User.username))
            .join(User, col(User.id) == col(HardwareToken.user_id), isouter=True)
            .order_by(col(HardwareToken.serial))
        ).all()
        return [token_view(token, username) for token, username in rows]


def assign(
    ctx: Context, serial: str, username: str, meta: RequestMeta, *, actor_id: str | None = None
) -> dict[str, Any]:
    """Give a token in stock to a user: it becomes an active factor of theirs at once."""
    now = ctx.now()
    with ctx.db.write() as session:
        token = _token(session, serial)
        if token.factor_id is not None:
            raise Conflict("This hardware token is assigned already; unassign it first.")
        if token.not_after is not None and now > token.not_after:
            raise Conflict("This hardware token's key has expired (its validity period is over).")
        user = users.by_username(session, username)
        if user is None:
            raise NotFound("No such user.")
        count = session.execute(
            select(func.count()).select_from(Factor).where(col(Factor.user_id) == user.id)
        ).scalar_one()
        if count >= MAX_FACTORS_PER_USER:
            raise InvalidRequest(f"A user can have at most {MAX_FACTORS_PER_USER} factors.")
        factor = _factor_from(ctx, token, user, now)
        session.add(factor)
        session.flush()
        taken = session.execute(
            update(HardwareToken)
            .where(col(HardwareToken.id) == token.id, col(HardwareToken.factor_id).is_(None))
            .values(factor_id=factor.id, user_id=user.id, assigned_at=now)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("This hardware token is assigned already; unassign it first.")
        token.factor_id, token.user_id, token.assigned_at = factor.id, user.id, now
        audit.record(
            session,
            "token_assigned",
            now=now,
            meta=meta,
            user_id=user.id,
            username=user.username,
            serial=token.serial,
            factor_id=factor.id,
            factor_type=factor.type,
            **_actor_detail(_actor(session, actor_id)),
        )
        return {**token_view(token, user.username), "factor": view_of(session, factor)}


def _factor_from(ctx: Context, token: HardwareToken, user: User, now: int) -> Factor:
    """The token's key and state, sealed again for a new factor row."""
    try:
        key = ctx.box.open(token.secret, context=token_secret_context(token.id))
        pin_hash = (
            ctx.box.open(token.pin, context=token_pin_context(token.id))
            if token.pin is not None
            else None
        )
    except SealError:
        log.error("the key of hardware token %s does not open: wrong key or a copied row", token.id)
        raise MfaError(
            "This hardware token's key does not open here.", error="internal_error", status=500
        ) from None
    factor_id = new_id()
    return Factor(
        id=factor_id,
        user_id=user.id,
        type=token.type,
        label=f"{token.type.upper()} token {token.serial}"[:64],
        status="active",
        created_at=now,
        confirmed_at=now,
        secret=ctx.box.seal(key, context=secret_context(factor_id)),
        algorithm=token.algorithm,
        digits=token.digits,
        period=token.period,
        counter=token.counter,
        suite=token.suite,
        pin=(
            ctx.box.seal(pin_hash, context=pin_context(factor_id)) if pin_hash is not None else None
        ),
        serial=token.serial,
    )


def unassign(
    ctx: Context, serial: str, meta: RequestMeta, *, actor_id: str | None = None
) -> dict[str, Any]:
    """Take a token back from its user: the factor is deleted, the token is in stock again."""
    now = ctx.now()
    with ctx.db.write() as session:
        token = _token(session, serial)
        factor = session.get(Factor, token.factor_id) if token.factor_id is not None else None
        if factor is None:
            raise Conflict("This hardware token is not assigned.")
        user = users.get(session, factor.user_id)
        inventory.release(session, factor)
        session.delete(factor)
        audit.about_factor(
            session,
            "token_unassigned",
            user,
            factor,
            now=now,
            meta=meta,
            serial=token.serial,
            **_actor_detail(_actor(session, actor_id)),
        )
        return token_view(token, None)


def _token(session: Session, serial: str) -> HardwareToken:
    token = session.scalars(
        select(HardwareToken).where(col(HardwareToken.serial) == serial).with_for_update()
    ).first()
    if token is None:
        raise NotFound("No such hardware token.")
    return token


def _actor(session: Session, actor_id: str | None) -> str | None:
    if actor_id is None:
        return None
    actor = session.get(User, actor_id)
    return actor.username if actor else None


def _actor_detail(actor: str | None) -> dict[str, str]:
    return {"actor": actor} if actor else {}
