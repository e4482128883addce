"""Bad input of every shape gets a 4xx JSON error and changes nothing; never a 500."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from mfa.models import AuditEvent, Factor, LoginTransaction, User

from .helpers import bearer, enroll_first_totp, login, signup

MISSING = "00000000-0000-0000-0000-000000000000"

# (method, path, raw body or JSON-able body, expected status)
CASES = [
    ("POST", "/api/users", b"{not json", 400),
    ("POST", "/api/users", b"", 400),
    ("POST", "/api/users", [], 400),
    ("POST", "/api/users", "a string", 400),
    ("POST", "/api/users", {"username": "bob"}, 400),
    ("POST", "/api/users", {"username": 5, "password": "long enough password"}, 400),
    ("POST", "/api/users", {"username": "bob", "password": ["x"]}, 400),
    ("POST", "/api/users", {"username": "bo b", "password": "long enough password"}, 400),
    ("POST", "/api/users", {"username": "", "password": "long enough password"}, 400),
    ("POST", "/api/users", {"username": "x" * 65, "password": "long enough password"}, 400),
    ("POST", "/api/users", {"username": "bob\u0000", "password": "long enough password"}, 400),
    ("POST", "/api/users", {"username": "bob", "password": "short"}, 400),
    ("POST", "/api/users", {"username": "bob", "password": "password123"}, 400),
    ("POST", "/api/users", {"username": "bob", "password": "x" * 1025}, 400),
    ("POST", "/api/login", {"username": None, "password": None}, 400),
    ("POST", "/api/login", {"username": "a\u0000b", "password": "whatever123"}, 400),
    ("POST", "/api/login", {"username": "ghost", "password": "whatever123"}, 401),
    ("POST", "/api/login/challenge", {"mfa_token": "nope", "factor_id": MISSING}, 401),
    ("POST", "/api/login/challenge", {"mfa_token": 1, "factor_id": 2}, 400),
    (
        "POST",
        "/api/login/verify",
        {"mfa_token": "nope", "factor_id": MISSING, "code": "123456"},
        401,
    ),
    ("POST", "/api/login/verify", {"mfa_token": "nope"}, 400),
    ("POST", "/api/login/verify", {"mfa_token": "x", "factor_id": MISSING, "code": 123456}, 400),
    ("POST", "/api/login/verify", {"mfa_token": "x\u0000", "factor_id": MISSING, "code": "1"}, 400),
    ("POST", "/api/login/verify", {"mfa_token": "x", "credential": "not an object"}, 400),
    ("POST", "/api/token/refresh", {"refresh_token": {"a": 1}}, 400),
    ("POST", "/api/token/refresh", {}, 400),
    ("POST", "/api/logout", {"refresh_token": 7}, 400),
    ("GET", "/api/nothing-here", None, 404),
    ("DELETE", "/api/users", None, 405),
]


def _send(client, method, path, body, headers=None):
    if isinstance(body, bytes):
        return client.request(method, path, content=body, headers=headers)
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, content=json.dumps(body), headers=headers)


def _counts(client):
    with client.app.state.ctx.db.read() as s:
        return [
            s.execute(select(func.count()).select_from(m)).scalar()
            for m in (User, Factor, LoginTransaction)
        ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)]
)
def test_bad_input_gets_a_json_error(client, method, path, body, status):
    before = _counts(client)
    r = _send(client, method, path, body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "message"}
    assert r.headers["content-type"].startswith("application/json")
    assert _counts(client) == before


def test_an_oversize_body_gets_413(client):
    r = client.post("/api/users", content=b'{"username": "' + b"a" * 70_000 + b'"}')
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


def test_an_oversize_streamed_body_gets_413(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/api/login", content=chunks())
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"


@pytest.fixture
def user_with_factor(client, clock):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    return account, factor


FACTOR_CASES = [
    ("POST", "/api/factors", {"type": "sms", "label": "x"}, 400),
    ("POST", "/api/factors", {"type": "totp", "digits": 7}, 400),
    ("POST", "/api/factors", {"type": "totp", "period": 45}, 400),
    ("POST", "/api/factors", {"type": "totp", "algorithm": "MD5"}, 400),
    ("POST", "/api/factors", {"type": "totp", "label": ""}, 400),
    ("POST", "/api/factors", {"type": "totp", "label": "x" * 65}, 400),
    ("POST", "/api/factors", {"type": "totp", "label": "a\u0007b"}, 400),
    ("POST", "/api/factors", {"label": "no type"}, 400),
    ("POST", "/api/factors", [1, 2], 400),
    ("POST", f"/api/factors/{MISSING}/confirm", {"code": "123456"}, 404),
    ("POST", "/api/factors/%00/confirm", {"code": "123456"}, 404),
    ("POST", "/api/factors/{id}/confirm", {}, 400),
    ("POST", "/api/factors/{id}/confirm", {"code": "123456"}, 400),  # already active
    ("PATCH", f"/api/factors/{MISSING}", {"label": "new"}, 404),
    ("PATCH", "/api/factors/{id}", {"label": None}, 400),
    ("PATCH", "/api/factors/{id}", {"label": 3}, 400),
    ("DELETE", f"/api/factors/{MISSING}", None, 404),
    ("POST", "/api/factors/{id}/resync", {"code1": "1"}, 400),
    ("POST", "/api/factors/{id}/resync", {"code1": "123456", "code2": "654321"}, 400),  # not HOTP
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    FACTOR_CASES,
    ids=[f"{i}-{c[1]}" for i, c in enumerate(FACTOR_CASES)],
)
def test_bad_factor_input_gets_a_json_error(client, user_with_factor, method, path, body, status):
    account, factor = user_with_factor
    before = _counts(client)
    r = _send(client, method, path.replace("{id}", factor["id"]), body, headers=account.access)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "message"}
    assert _counts(client) == before


def test_another_users_factor_is_not_found(client, clock, user_with_factor):
    _, factor = user_with_factor
    mallory = signup(client, "mallory")
    enroll_first_totp(client, mallory, clock)
    for method, path in [("PATCH", "/api/factors/{id}"), ("DELETE", "/api/factors/{id}")]:
        r = _send(
            client,
            method,
            path.replace("{id}", factor["id"]),
            {"label": "mine"},
            headers=mallory.access,
        )
        assert r.status_code == 404


def test_errors_never_echo_what_was_sent(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    secret_looking = "S3CR3T-VALUE-" + "Q" * 10
    for body in (
        {"mfa_token": mfa_token, "factor_id": secret_looking, "code": 123},
        {"username": secret_looking, "password": 5},
        {"mfa_token": secret_looking + "\u0000"},
    ):
        r = client.post("/api/login/verify", json=body)
        assert secret_looking not in r.text
        r = client.post("/api/login", json=body)
        assert secret_looking not in r.text
    with client.app.state.ctx.db.read() as s:
        details = " ".join(e.detail + (e.username or "") for e in s.scalars(select(AuditEvent)))
    assert account.password not in details


def test_a_junk_mfa_token_as_bearer_on_enrollment_is_401(client):
    r = client.post("/api/factors", json={"type": "totp"}, headers=bearer("junk"))
    assert r.status_code == 401
