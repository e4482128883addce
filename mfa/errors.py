"""The service's errors: each carries the contract's error code, a sentence and a status.

One handler in ``mfa.app`` renders them as ``{"error": ..., "message": ...}``. Messages are
written for the client and never contain a secret, a code or a password.
"""

from __future__ import annotations


class MfaError(Exception):
    status: int = 400
    error: str = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status
        self.headers = headers or {}


class InvalidRequest(MfaError):
    status, error = 400, "invalid_request"


class Unauthorized(MfaError):
    """A missing, malformed or unacceptable access token."""

    status, error = 401, "unauthorized"

    def __init__(self, message: str = "A valid access token is required.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class InvalidCredentials(MfaError):
    status, error = 401, "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("The username or password is wrong.")


class InvalidMfaToken(MfaError):
    status, error = 401, "invalid_mfa_token"

    def __init__(self) -> None:
        super().__init__("The login transaction is unknown, expired or spent; log in again.")


class VerificationFailed(MfaError):
    status, error = 401, "verification_failed"

    def __init__(self, message: str = "The second factor was not accepted.") -> None:
        super().__init__(message)


class InvalidGrant(MfaError):
    status, error = 401, "invalid_grant"

    def __init__(self) -> None:
        super().__init__("The refresh token is unknown, expired or revoked.")


class StepUpRequired(MfaError):
    status, error = 401, "step_up_required"

    def __init__(self) -> None:
        super().__init__("This action needs a recent second factor; log in again.")


class Forbidden(MfaError):
    status, error = 403, "forbidden"

    def __init__(self, message: str = "You are not allowed to do this.") -> None:
        super().__init__(message)


class NotFound(MfaError):
    status, error = 404, "not_found"

    def __init__(self, message: str = "No such resource.") -> None:
        super().__init__(message)


class Conflict(MfaError):
    status, error = 409, "conflict"


class TooManyAttempts(MfaError):
    status, error = 429, "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        retry_after = max(1, retry_after)
        super().__init__(
            f"Too many failed attempts; try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class Locked(MfaError):
    status, error = 423, "locked"

    def __init__(self) -> None:
        super().__init__("Second factors are locked after too many failures; ask an administrator.")
