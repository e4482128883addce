"""Returning a hardware token to stock when the factor it lent its key to goes away."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from ..models import Factor, HardwareToken


def release(session: Session, factor: Factor) -> HardwareToken | None:
    """Take the token behind ``factor`` back into stock, before the factor row is deleted.

    The token keeps the furthest counter (or time step) its holder reached, so that codes
    already used can never be used again by its next holder. Both rows are locked first: a
    login accepting a code at this moment either finishes before (and its counter is kept) or
    finds the factor gone.
    """
    if factor.serial is None:
        return None
    token = session.scalars(
        select(HardwareToken).where(col(HardwareToken.factor_id) == factor.id).with_for_update()
    ).first()
    if token is None:
        return None
    counter = session.execute(
        select(col(Factor.counter)).where(col(Factor.id) == factor.id).with_for_update()
    ).scalar_one()
    token.counter = max(token.counter, counter)
    token.factor_id = None
    token.user_id = None
    token.assigned_at = None
    session.flush()
    return token
