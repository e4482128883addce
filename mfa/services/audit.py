"""The audit trail: one row per security event, written in the transaction it describes.

``detail`` holds ids, types and reasons; never a password, a code, a token or a secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, func, insert, select
from sqlmodel import Session, col

from ..db import Writer
from ..direct import prepared
from ..models import Account, AuditEvent, FactorFields, User, table_of
from ..observability import count_event

if TYPE_CHECKING:
    from ..context import RequestMeta

USERNAME_MAX = 64

EVENTS = frozenset(
    {
        "signup",
        "password_failed",
        "login_started",
        "factor_failed",
        "factor_succeeded",
        "throttled",
        "locked",
        "unlocked",
        "factor_enrolled",
        "factor_confirmed",
        "factor_disabled",
        "factor_removed",
        "factor_renamed",
        "factor_resynced",
        "recovery_codes_generated",
        "recovery_code_used",
        "refresh_reuse_detected",
        "logout",
        "step_up_started",
        "factors_reset",
        "token_imported",
        "token_assigned",
        "token_unassigned",
        "signing_key_rotated",
        "user_created",
    }
)


# Built once: every login writes several. Inline: nothing reads the new row's id back, so
# PostgreSQL need not return it (and a batch, ``Direct.batch``, may hold it).
_INSERT = prepared(insert(table_of(AuditEvent)).inline())


def record(
    session: Writer,
    event: str,
    *,
    now: int,
    meta: RequestMeta,
    user_id: str | None = None,
    username: str | None = None,
    **detail: Any,
) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    count_event(event, detail)
    session.execute(
        _INSERT,
        {
            "time": now,
            "event": event,
            "user_id": user_id,
            # A username typed at login may be longer than any real one (and the column).
            "username": username[:USERNAME_MAX] if username is not None else None,
            "ip": meta.ip,
            "user_agent": meta.user_agent,
            "detail": json.dumps(detail, separators=(",", ":"), sort_keys=True),
        },
    )


def about_factor(
    session: Writer,
    event: str,
    user: Account,
    factor: FactorFields | None,
    *,
    now: int,
    meta: RequestMeta,
    **detail: Any,
) -> None:
    """An event about one of a user's factors: the user, and the factor's id and type."""
    record(
        session,
        event,
        now=now,
        meta=meta,
        user_id=user.id,
        username=user.username,
        factor_id=factor.id if factor else None,
        factor_type=factor.type if factor else None,
        **detail,
    )


@dataclass(frozen=True)
class Filter:
    """Which rows to read: about one user (by username; an unknown one matches the name as it
    was typed, e.g. in ``password_failed``), of one event, in ``since <= time < until``."""

    username: str | None = None
    event: str | None = None
    since: int | None = None
    until: int | None = None


def _select(session: Session, f: Filter) -> Select[AuditEvent]:
    stmt = select(AuditEvent)
    if f.username is not None:
        user_id = session.execute(
            select(col(User.id)).where(col(User.username_key) == f.username.lower())
        ).scalar()
        if user_id is not None:
            stmt = stmt.where(col(AuditEvent.user_id) == user_id)
        else:
            stmt = stmt.where(func.lower(col(AuditEvent.username)) == f.username.lower())
    if f.event is not None:
        stmt = stmt.where(col(AuditEvent.event) == f.event)
    if f.since is not None:
        stmt = stmt.where(col(AuditEvent.time) >= f.since)
    if f.until is not None:
        stmt = stmt.where(col(AuditEvent.time) < f.until)
    return stmt


def view(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "time": row.time,
        "event": row.event,
        "username": row.username,
        "user_id": row.user_id,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "detail": json.loads(row.detail),
    }


def newest(session: Session, f: Filter, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest rows that match, newest first."""
    stmt = (
        _select(session, f)
        .order_by(col(AuditEvent.time).desc(), col(AuditEvent.id).desc())
        .limit(limit)
    )
    return [view(row) for row in session.scalars(stmt)]


def oldest_first(session: Session, f: Filter, *, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching row, oldest first, read in batches (for ``mfa audit export``)."""
    stmt = _select(session, f).order_by(col(AuditEvent.time), col(AuditEvent.id))
    for row in session.scalars(stmt.execution_options(yield_per=batch)):
        yield view(row)


def prune_batch(session: Session, before: int, batch: int) -> int:
    """Delete up to ``batch`` rows older than ``before``; return how many went."""
    ids = select(col(AuditEvent.id)).where(col(AuditEvent.time) < before).limit(batch)
    result = session.execute(
        delete(AuditEvent)
        .where(col(AuditEvent.id).in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
