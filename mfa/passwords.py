"""Password hashing (argon2id) and the password policy.

Pure and blocking: callers run ``verify``/``hash`` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
from functools import cache
from importlib import resources

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import MfaError

MIN_LENGTH = 8
MAX_LENGTH = 1024

# OWASP's minimum for argon2id (m=19 MiB, t=2, p=1); RFC 9106 section 4 lets us go higher when
# logins per second allow it. Changing these rehashes each password at its next login.
HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class WrongPassword(Exception):
    """The password does not match the stored hash."""


class WeakPassword(MfaError):
    status, error = 400, "weak_password"


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Check ``password``; raise ``WrongPassword`` if it does not match.

    Returns whether the hash should be replaced because the parameters changed.
    """
    try:
        HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise WrongPassword from None
    return HASHER.check_needs_rehash(stored_hash)


def dummy_verify(password: str) -> None:
    """Spend what a real verification costs, for usernames that do not exist."""
    with contextlib.suppress(VerificationError):
        HASHER.verify(_dummy_hash(), password)


@cache
def _dummy_hash() -> str:
    return HASHER.hash("an unguessable dummy password that nobody is using")


def check_policy(password: str) -> None:
    """NIST SP 800-63B 3.1.1.2: length limits and a blocklist, no composition rules."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"Passwords need at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"Passwords can have at most {MAX_LENGTH} characters.")
    if password.lower() in _common_passwords():
        raise WeakPassword("This password is among the most commonly used; choose another.")


@cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("mfa").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("# "))
