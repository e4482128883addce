"""The whole journey over HTTP, and the access token checked by an independent library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from mfa.app import create_app

from .helpers import bearer, enroll_first_totp, login, signup, totp_code


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def test_sign_up_log_in_enroll_confirm_and_use_the_token(client, clock):
    account = signup(client, "alice")
    start = login(client, account)
    assert start["enroll_required"] is True
    assert start["factors"] == []
    assert start["expires_in"] == 300
    assert "access_token" not in start

    factor = enroll_first_totp(client, account, clock)
    tokens = account.tokens
    assert tokens["token_type"] == "Bearer"
    assert tokens["amr"] == ["pwd", "otp", "mfa"]

    me = client.get("/api/me", headers=account.access)
    assert me.status_code == 200
    body = me.json()
    assert body["sub"] == account.id
    assert body["username"] == "alice"
    assert body["amr"] == ["pwd", "otp", "mfa"]
    assert body["auth_time"] == int(clock())
    assert [f["id"] for f in body["factors"]] == [factor["id"]]
    assert "secret" not in body["factors"][0]

    # The next login asks for that factor, and a code from the app finishes it.
    clock.advance(30)
    again = login(client, account)
    assert again["enroll_required"] is False
    assert again["factors"] == [{"id": factor["id"], "type": "totp", "label": "phone"}]
    r = client.post(
        "/api/login/verify",
        json={
            "mfa_token": again["mfa_token"],
            "factor_id": factor["id"],
            "code": totp_code(factor["secret"], clock()),
        },
    )
    assert r.status_code == 200, r.text


def test_the_access_token_verifies_with_pyjwt_from_the_jwks(client, clock, settings):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    token = account.tokens["access_token"]
    jwks = client.get("/.well-known/jwks.json").json()
    assert all(k["alg"] == "ES256" and k["use"] == "sig" and "kid" in k for k in jwks["keys"])
    assert all("d" not in k for k in jwks["keys"])

    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": header["kid"]}
    key = pyjwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = pyjwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=settings.audience,
        issuer=settings.issuer,
        options={"require": ["exp", "iat", "sub", "jti", "auth_time", "amr"]},
    )
    assert claims["sub"] == account.id
    assert claims["exp"] - claims["iat"] == 600
    assert claims["auth_time"] == int(clock())
    assert claims["amr"] == ["pwd", "otp", "mfa"]


@pytest.fixture
def real_token(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    return account.tokens["access_token"]


def _parts(token: str) -> tuple[dict, dict]:
    head, body, _ = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(head + "==")),
        json.loads(base64.urlsafe_b64decode(body + "==")),
    )


def assert_refused(client: TestClient, token: str) -> None:
    r = client.get("/api/me", headers=bearer(token))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_alg_none_is_refused(client, real_token):
    header, claims = _parts(real_token)
    assert_refused(client, forge({**header, "alg": "none"}, claims))


def test_hs256_keyed_with_the_public_key_is_refused(client, real_token):
    header, claims = _parts(real_token)
    jwk = next(
        k for k in client.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == header["kid"]
    )
    public_pem = pyjwt.PyJWK(jwk).key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    h = {**header, "alg": "HS256"}
    signing_input = f"{b64url(json.dumps(h).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert_refused(client, f"{signing_input}.{b64url(sig)}")


def test_a_tampered_token_is_refused(client, real_token):
    head, _body, sig = real_token.split(".")
    _, claims = _parts(real_token)
    claims["sub"] = "someone-else"
    assert_refused(client, f"{head}.{b64url(json.dumps(claims).encode())}.{sig}")


def test_an_expired_token_is_refused(client, clock, real_token):
    assert client.get("/api/me", headers=bearer(real_token)).status_code == 200
    clock.advance(601)
    assert_refused(client, real_token)


def test_a_token_for_another_audience_is_refused(client, clock, settings):
    # Another deployment on the same database and keys, minting for another audience.
    other = create_app(replace(settings, audience="https://elsewhere.example"), clock=clock)
    with TestClient(other, base_url="http://localhost:8000") as c2:
        account = signup(c2, "bob")
        enroll_first_totp(c2, account, clock)
        token = account.tokens["access_token"]
        assert c2.get("/api/me", headers=bearer(token)).status_code == 200
    assert_refused(client, token)


def test_an_mfa_token_is_not_an_access_token(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    assert_refused(client, mfa_token)
    assert client.get("/api/factors", headers=bearer(mfa_token)).status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer a.b.c",
        "Bearer ....",
        "Bearer x y z",
        "Bearer " + "a" * 5000,
    ],
)
def test_junk_authorization_headers_get_401(client, value):
    r = client.get("/api/me", headers={"Authorization": value})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


def test_a_login_without_a_second_factor_cannot_reach_the_api(client, clock):
    account = signup(client)
    start = login(client, account)
    assert start["enroll_required"] is True
    # The mfa_token enrolls, and nothing else.
    assert client.get("/api/me", headers=bearer(start["mfa_token"])).status_code == 401
    assert (
        client.post("/api/token/refresh", json={"refresh_token": start["mfa_token"]}).status_code
        == 401
    )


def test_abandoned_enrollments_give_their_place_back_after_an_hour(client, clock):
    account = signup(client)
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(20):
        r = client.post("/api/factors", json={"type": "totp"}, headers=bearer(mfa_token))
        assert r.status_code == 201
    full = client.post("/api/factors", json={"type": "totp"}, headers=bearer(mfa_token))
    assert full.status_code == 400
    assert "at most 20" in full.json()["message"]
    clock.advance(3601)
    fresh = login(client, account)["mfa_token"]
    r = client.post("/api/factors", json={"type": "totp"}, headers=bearer(fresh))
    assert r.status_code == 201, r.text
