"""Refresh tokens (rotation, reuse detection, logout) and signing-key rotation."""

from __future__ import annotations

import time

import jwt as pyjwt
from starlette.testclient import TestClient

from mfa.app import create_app
from mfa.cli import main as mfa_main
from mfa.context import CLI
from mfa.services import keys

from .helpers import bearer, enroll_first_totp, signup, totp_login


def refresh(client: TestClient, token: str):
    return client.post("/api/token/refresh", json={"refresh_token": token})


def test_refresh_rotates_and_keeps_the_login(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    first = account.tokens
    clock.advance(60)
    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token", "amr"}
    assert second["refresh_token"] != first["refresh_token"]
    assert second["amr"] == first["amr"]
    claims = pyjwt.decode(second["access_token"], options={"verify_signature": False})
    assert claims["auth_time"] == int(clock()) - 60  # when the second factor succeeded
    assert client.get("/api/me", headers=bearer(second["access_token"])).status_code == 200


def test_a_spent_refresh_token_is_refused_and_revokes_the_family(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    first = account.tokens["refresh_token"]
    second = refresh(client, first).json()["refresh_token"]
    # The first token again: someone else holds the family. Both links die.
    reuse = refresh(client, first)
    assert reuse.status_code == 401
    assert reuse.json()["error"] == "invalid_grant"
    assert refresh(client, second).status_code == 401


def test_reuse_revokes_only_that_login(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    stolen = account.tokens["refresh_token"]
    refresh(client, stolen)
    # A second login of the same user, elsewhere.
    other_login = _second_login(client, account, clock)
    refresh(client, stolen)
    assert refresh(client, other_login).status_code == 200


def _second_login(client, account, clock):
    factor = next(iter(account.factors.values()))
    return totp_login(client, account, factor, clock)["refresh_token"]


def test_an_expired_refresh_token_is_refused(client, clock, settings):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    clock.advance(settings.refresh_token_ttl + 1)
    r = refresh(client, account.tokens["refresh_token"])
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_grant"


def test_an_unknown_refresh_token_is_refused(client):
    r = refresh(client, "A" * 43)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_grant"


def test_logout_revokes_the_refresh_token(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    r = client.post("/api/logout", json={"refresh_token": account.tokens["refresh_token"]})
    assert r.status_code == 204
    assert refresh(client, account.tokens["refresh_token"]).status_code == 401


def test_logout_of_an_unknown_token_is_quiet(client):
    assert client.post("/api/logout", json={"refresh_token": "nothing"}).status_code == 204


def test_key_rotation_keeps_earlier_tokens_valid_and_signs_new_ones_with_the_new_key(
    client, clock, env, monkeypatch
):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    old = account.tokens["access_token"]
    old_kid = pyjwt.get_unverified_header(old)["kid"]

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert mfa_main(["keys", "rotate"]) == 0

    # The running app meets the new key when its cache expires; make that now.
    client.app.state.ctx.keys.invalidate()
    jwks = client.get("/.well-known/jwks.json").json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert old_kid in kids
    assert len(kids) == 2

    new = refresh(client, account.tokens["refresh_token"]).json()["access_token"]
    assert pyjwt.get_unverified_header(new)["kid"] == kids[0] != old_kid
    assert client.get("/api/me", headers=bearer(old)).status_code == 200
    assert client.get("/api/me", headers=bearer(new)).status_code == 200


def test_a_retired_key_leaves_the_jwks_once_its_tokens_have_expired(
    client, clock, env, monkeypatch
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    old_kid = client.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    mfa_main(["keys", "rotate"])
    ctx = client.app.state.ctx
    ctx.keys.invalidate()
    assert old_kid in [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]]
    # The CLI rotated at the real time; the app's clock must pass that plus a token's lifetime.
    clock.now = time.time() + 600 + 61
    ctx.keys.invalidate()
    assert old_kid not in [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]]


def test_an_instance_sees_a_rotation_made_elsewhere_by_the_unknown_kid(client, clock, settings):
    # A second instance on the same database rotates and signs; the first has its keys cached.
    account = signup(client)
    enroll_first_totp(client, account, clock)
    other = create_app(settings, clock=clock)
    with TestClient(other, base_url="http://localhost:8000") as c2:
        ctx2 = c2.app.state.ctx
        keys.rotate_now(ctx2.db, ctx2.box, ctx2.now(), CLI)
        ctx2.keys.invalidate()
        token = refresh(c2, account.tokens["refresh_token"]).json()["access_token"]
    assert client.get("/api/me", headers=bearer(token)).status_code == 200
