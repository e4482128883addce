"""Two server processes on one PostgreSQL database: every guarantee holds across them."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2 as httpx
import jwt as pyjwt
import pytest

from .conftest import empty
from .helpers import PASSWORD, bearer, totp_code
from .live import serve
from .test_concurrency import verify_all_at_once

pytestmark = pytest.mark.live


@pytest.fixture
def shared_env(pg_database: str) -> dict[str, str]:
    empty(pg_database)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return {
        "MFA_DATABASE_URL": pg_database,
        "MFA_ENCRYPTION_KEY": key,
        "MFA_KEY_CACHE_SECONDS": "2",
        "MFA_ORIGIN": "http://localhost:8000",  # one deployment: one issuer and audience
    }


@pytest.fixture
def two(shared_env, tmp_path) -> Iterator[tuple[str, str]]:
    # Each instance has its own data directory: all they share is the database and the key.
    with (
        serve({**shared_env, "MFA_DATA_DIR": str(tmp_path / "a")}) as a,
        serve({**shared_env, "MFA_DATA_DIR": str(tmp_path / "b")}) as b,
    ):
        yield a, b


def post(base: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(base + path, json=body, headers=headers, timeout=30)


def password_login(base: str, username: str) -> dict:
    r = post(base, "/api/login", {"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def enroll(base: str, username: str) -> tuple[dict, dict]:
    assert post(base, "/api/users", {"username": username, "password": PASSWORD}).status_code == 201
    mfa_token = password_login(base, username)["mfa_token"]
    factor = post(base, "/api/factors", {"type": "totp"}, bearer(mfa_token)).json()
    code = totp_code(factor["secret"], time.time())
    tokens = post(base, f"/api/factors/{factor['id']}/confirm", {"code": code}, bearer(mfa_token))
    assert tokens.status_code == 200, tokens.text
    return factor, tokens.json()


def test_enroll_on_one_and_log_in_on_the_other(two):
    a, b = two
    factor, _ = enroll(a, "alice")
    mfa_token = password_login(b, "alice")["mfa_token"]
    code = totp_code(factor["secret"], time.time(), steps=1)
    r = post(
        a, "/api/login/verify", {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}
    )
    assert r.status_code == 200, r.text


def test_one_code_sent_sixteen_times_across_both_verifies_once(two):
    a, b = two
    factor, _ = enroll(a, "alice")
    code = totp_code(factor["secret"], time.time(), steps=1)
    tokens = [password_login((a, b)[i % 2], "alice")["mfa_token"] for i in range(16)]
    bodies = [{"mfa_token": t, "factor_id": factor["id"], "code": code} for t in tokens]
    statuses = verify_all_at_once([a, b], bodies)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses


def test_wrong_codes_alternating_between_instances_are_throttled(two):
    a, b = two
    factor, _ = enroll(a, "alice")
    right = totp_code(factor["secret"], time.time(), steps=1)
    wrong = "000000" if right != "000000" else "111111"
    mfa_token = password_login(a, "alice")["mfa_token"]
    for i in range(5):
        r = post(
            (a, b)[i % 2],
            "/api/login/verify",
            {"mfa_token": mfa_token, "factor_id": factor["id"], "code": wrong},
        )
        assert r.status_code == 401
    fresh = password_login(b, "alice")["mfa_token"]
    r = post(b, "/api/login/verify", {"mfa_token": fresh, "factor_id": factor["id"], "code": right})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0


def test_both_publish_the_same_jwks_and_accept_each_others_tokens(two):
    a, b = two
    _, tokens = enroll(a, "alice")
    assert (
        httpx.get(a + "/.well-known/jwks.json").json()
        == httpx.get(b + "/.well-known/jwks.json").json()
    )
    access = tokens["access_token"]
    assert httpx.get(b + "/api/me", headers=bearer(access)).status_code == 200
    refreshed = post(b, "/api/token/refresh", {"refresh_token": tokens["refresh_token"]}).json()
    assert httpx.get(a + "/api/me", headers=bearer(refreshed["access_token"])).status_code == 200


def test_a_key_rotation_on_one_is_seen_by_the_other(two, shared_env, tmp_path):
    a, b = two
    _, tokens = enroll(a, "alice")
    old_kid = pyjwt.get_unverified_header(tokens["access_token"])["kid"]
    env = {**os.environ, **shared_env, "MFA_DATA_DIR": str(tmp_path / "a")}
    rotated = subprocess.run(
        [sys.executable, "-m", "mfa", "keys", "rotate"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    new_kid = rotated.stdout.split()[-1]
    time.sleep(2.5)  # both instances' key caches (MFA_KEY_CACHE_SECONDS=2) have expired
    for base in (a, b):
        kids = [k["kid"] for k in httpx.get(base + "/.well-known/jwks.json").json()["keys"]]
        assert kids[0] == new_kid
        assert old_kid in kids
    refreshed = post(a, "/api/token/refresh", {"refresh_token": tokens["refresh_token"]}).json()
    assert pyjwt.get_unverified_header(refreshed["access_token"])["kid"] == new_kid
    assert httpx.get(b + "/api/me", headers=bearer(refreshed["access_token"])).status_code == 200
    assert httpx.get(b + "/api/me", headers=bearer(tokens["access_token"])).status_code == 200
