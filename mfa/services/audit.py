"""The audit trail: one row per security event, written in the transaction it describes.

``detail`` holds ids, types and reasons; never a password, a code, a token or a secret.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlmodel import Session

from ..models import AuditEvent
from ..observability import count_event

if TYPE_CHECKING:
    from ..context import RequestMeta

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


def record(
    session: Session,
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
        insert(AuditEvent).values(
            time=now,
            event=event,
            user_id=user_id,
            username=username,
            ip=meta.ip,
            user_agent=meta.user_agent,
            detail=json.dumps(detail, separators=(",", ":"), sort_keys=True),
        )
    )
