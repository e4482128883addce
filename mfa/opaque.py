"""Opaque bearer tokens (``mfa_token``, refresh tokens): random, stored only as a hash.

256 random bits need no slow hash: SHA-256 makes a stolen table useless, and the lookup by
hash in the database leaks nothing a timing attack could use.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, bytes]:
    """A fresh token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
