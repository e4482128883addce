"""The contract every factor type keeps, after django-otp's ``verify_token``.

A factor type checks an answer against a factor and says which counter (or time step) the
answer used; it keeps no state. The caller then accepts that counter in the database with a
conditional update, which is what makes every answer single-use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..models import FactorState


class Rejected(Exception):
    """The answer is wrong (or malformed, or too old); ``reason`` goes to the audit log."""

    def __init__(self, reason: str = "wrong_code") -> None:
        super().__init__(reason)
        self.reason = reason


class Disabled(Rejected):
    """The answer showed that the factor can no longer be trusted (a security key whose
    signature counter went back: a clone); the handler has disabled the factor, and the caller
    records that next to the failure."""


@dataclass(frozen=True)
class Accepted:
    """A right answer. ``counter`` is the counter or time step it used, if the type has one."""

    counter: int | None = None


@dataclass(frozen=True)
class Enrollment:
    """A new factor: its non-secret columns, its secret (sealed by the caller) and what the
    enrolling user is shown, this once."""

    columns: dict[str, Any]
    secret: bytes | None
    reveal: dict[str, Any] = field(default_factory=dict)
    challenge: str | None = None  # kept on the pending factor until it is confirmed


@dataclass(frozen=True)
class Challenge:
    """What ``/api/login/challenge`` answers, and the state the login transaction keeps."""

    response: dict[str, Any] = field(default_factory=dict)
    state: str | None = None


class CodeFactorType(Protocol):
    """A factor answered with a code: TOTP, HOTP, OCRA."""

    type: ClassVar[str]

    def enroll(self, options: Any, *, issuer: str, account: str) -> Enrollment: ...

    def challenge(self, factor: FactorState, *, now: int) -> Challenge: ...

    def verify(
        self, factor: FactorState, secret: bytes, code: str, *, now: int, state: str | None
    ) -> Accepted: ...


def digits_only(code: str, length: int) -> str:
    """Normalize a typed code (spaces are common) and check its shape; raise if it cannot match."""
    code = code.replace(" ", "")
    if len(code) != length or not code.isascii() or not code.isdigit():
        raise Rejected("malformed_code")
    return code
