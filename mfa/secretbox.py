"""Secrets at rest: AES-256-GCM with the row bound in as associated data.

A sealed value is ``version (1 byte) | nonce (12 bytes) | ciphertext+tag``. The associated data
names the table, the row and the column (``"factor:<id>:secret"``), so a ciphertext copied into
another row or column fails to open instead of lending its secret there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12
KEY_FILE = "encryption.key"


class SealError(Exception):
    """A sealed value does not open: wrong key, wrong row, or damaged."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        # Separate subkeys per use (RFC 5869), so the sealing key never doubles as a MAC key.
        self._aead = AESGCM(_hkdf(key, b"mfa seal v1"))
        self._pepper = _hkdf(key, b"mfa pepper v1")

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, *, context: str) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SealError("not a sealed value")
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise SealError("the sealed value does not open here") from None

    def digest(self, value: bytes, *, purpose: str) -> bytes:
        """A keyed hash for lookups of short secrets (recovery codes, PINs).

        Keyed so that a copy of the database alone cannot be searched offline.
        """
        return hmac.new(self._pepper, purpose.encode() + b"\x00" + value, hashlib.sha256).digest()


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def load_or_create_key(data_dir: Path) -> bytes:
    """Read the key file in ``data_dir``, creating it (mode 0600) on first use.

    ``O_EXCL`` makes the creation safe when several workers start at once: one writes the
    file, the others read what it wrote.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    with os.fdopen(fd, "wb") as f:
        f.write(encoded + b"\n")
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            break
        # Another worker created the file a moment ago and has not written it yet.
        time.sleep(0.02)
    key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(key) != 32:
        raise ValueError(f"{path} does not hold a 32-byte key")
    return key
