"""Pruning of rows nobody needs any more, so the tables do not grow for ever.

- Audit events older than ``MFA_AUDIT_RETENTION_DAYS`` (0 keeps them for ever).
- Login transactions that expired more than a day ago (spent or not: dead either way).
- Refresh-token families whose every link was revoked or expired more than a day ago. A family
  with a live link keeps all its links, spent ones too: a spent link presented again is how
  reuse is detected.

Each batch is its own short transaction, so a large prune never holds the database (on SQLite
the whole file) for long. ``mfa db prune`` runs it; the server runs it every
``MFA_PRUNE_INTERVAL`` seconds in each process (cheap when there is nothing to do; several
instances pruning at once only delete the same rows).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from ..models import LoginTransaction, RefreshToken
from . import audit

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

GRACE = 24 * 3600
BATCH = 5000
DAY = 24 * 3600


@dataclass(frozen=True)
class Pruned:
    audit_events: int = 0
    login_transactions: int = 0
    refresh_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def audit_cutoff(ctx: Context, days: int | None = None) -> int | None:
    """The time before which audit events go, or None to keep them all."""
    days = ctx.settings.audit_retention_days if days is None else days
    return ctx.now() - days * DAY if days > 0 else None


def prune_audit(ctx: Context, days: int | None = None) -> int:
    cutoff = audit_cutoff(ctx, days)
    if cutoff is None:
        return 0
    return _in_batches(ctx, lambda s: audit.prune_batch(s, cutoff, BATCH))


def prune_all(ctx: Context) -> Pruned:
    cutoff = ctx.now() - GRACE
    return Pruned(
        audit_events=prune_audit(ctx),
        login_transactions=_in_batches(ctx, lambda s: _login_transactions(s, cutoff)),
        refresh_tokens=_in_batches(ctx, lambda s: _refresh_families(s, cutoff)),
    )


def _in_batches(ctx: Context, step: Callable[[Session], int]) -> int:
    total = 0
    while True:
        with ctx.db.write() as session:
            deleted = step(session)
        total += deleted
        if deleted == 0:
            return total


def _login_transactions(session: Session, cutoff: int) -> int:
    ids = (
        select(col(LoginTransaction.id))
        .where(col(LoginTransaction.expires_at) <= cutoff)
        .limit(BATCH)
    )
    result = session.execute(
        delete(LoginTransaction)
        .where(col(LoginTransaction.id).in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _refresh_families(session: Session, cutoff: int) -> int:
    # A link stops mattering when it is revoked, or else when it expires.
    ended = func.coalesce(col(RefreshToken.revoked_at), col(RefreshToken.expires_at))
    families = (
        select(col(RefreshToken.family_id))
        .group_by(col(RefreshToken.family_id))
        .having(func.max(ended) <= cutoff)
        .limit(BATCH // 10)
    )
    result = session.execute(
        delete(RefreshToken)
        .where(col(RefreshToken.family_id).in_(families.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def run_periodically(ctx: Context) -> None:
    """The server's own pruning: every ``MFA_PRUNE_INTERVAL`` seconds, after a random part of
    the first interval (so that instances started together do not prune together)."""
    interval = ctx.settings.prune_interval
    await anyio.sleep(interval / 2 + secrets.randbelow(max(interval // 2, 1)))
    while True:
        try:
            pruned = await ctx.run(prune_all, ctx)
        except Exception as exc:  # a failed prune must not stop the server; the next one retries
            log.warning("pruning failed: %s", type(exc).__name__)
        else:
            if any(pruned.as_dict().values()):
                log.info("pruned %s", pruned.as_dict())
        await anyio.sleep(interval)
