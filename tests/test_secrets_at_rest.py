"""Secrets at rest: sealed with AES-GCM, bound to their row, never in the clear."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mfa.models import Factor
from mfa.secretbox import SealError, SecretBox, load_or_create_key

from .helpers import enroll_first_totp, login, signup, totp_code


def test_a_sealed_value_opens_only_in_its_own_context():
    box = SecretBox(os.urandom(32))
    sealed = box.seal(b"key material", context="factor:a:secret")
    assert box.open(sealed, context="factor:a:secret") == b"key material"
    with pytest.raises(SealError):
        box.open(sealed, context="factor:b:secret")
    with pytest.raises(SealError):
        SecretBox(os.urandom(32)).open(sealed, context="factor:a:secret")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError):
        box.open(tampered, context="factor:a:secret")


def test_the_key_file_is_created_once_with_mode_0600(tmp_path):
    key = load_or_create_key(tmp_path)
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / "encryption.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key


def test_the_database_holds_no_otp_secret_in_the_clear(client, clock, settings):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    secret_b32 = factor["secret"]
    raw = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    with client.app.state.ctx.db.read() as s:
        rows = list(s.execute(select(Factor)).scalars())
    dumped = repr([r.model_dump() for r in rows]).encode()
    for needle in (raw, raw.hex().encode(), secret_b32.encode()):
        assert needle not in dumped
    if settings.is_sqlite:
        path = settings.database_url.removeprefix("sqlite:///")
        files = [path, path + "-wal"]
        content = b"".join(Path(f).read_bytes() for f in files if os.path.exists(f))
        assert content  # the database is really there
        for needle in (raw, raw.hex().encode(), secret_b32.encode()):
            assert needle not in content


def test_a_secret_copied_to_another_factor_does_not_verify_there(client, clock):
    alice = signup(client, "alice")
    alice_factor = enroll_first_totp(client, alice, clock)
    mallory = signup(client, "mallory")
    mallory_factor = enroll_first_totp(client, mallory, clock)
    db = client.app.state.ctx.db
    with db.write() as s:
        sealed = s.execute(
            select(Factor.secret).where(Factor.id == alice_factor["id"])
        ).scalar_one()
        s.execute(update(Factor).where(Factor.id == mallory_factor["id"]).values(secret=sealed))
    clock.advance(30)
    start = login(client, mallory)
    r = client.post(
        "/api/login/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": mallory_factor["id"],
            "code": totp_code(alice_factor["secret"], clock()),
        },
    )
    assert r.status_code == 401
    assert r.json()["error"] == "verification_failed"
