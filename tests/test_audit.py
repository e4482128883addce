"""The audit trail: every listed event, recorded with who and where, and never a secret."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from typing import Any

import pytest
from sqlalchemy import select

from mfa.cli import main as mfa_main
from mfa.factors.base import Rejected
from mfa.factors.recovery import normalize
from mfa.models import AuditEvent
from mfa.services.audit import EVENTS

from .drivers import RecoveryDriver
from .helpers import PASSWORD, bearer, enroll_first_totp, hotp_code, login, signup
from .operators import lock_out, log_in_again, make_admin

# Fields of request and response bodies that hold a secret, a code or a password.
SECRET_FIELDS = {
    "password",
    "code",
    "code1",
    "code2",
    "secret",
    "codes",
    "mfa_token",
    "refresh_token",
    "access_token",
}
WINDOW = 16
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The hardware-token inventory's events have their own tests (tests/test_hardware_tokens.py).
ELSEWHERE = {"token_imported", "token_assigned", "token_unassigned"}


class SecretRecorder:
    """Sees every request and response of the test client and keeps each secret in them."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def keep(self, value: Any) -> None:
        if isinstance(value, list):
            for v in value:
                self.keep(v)
        elif isinstance(value, str) and len(value) >= 6:
            self.secrets.add(value)
            with contextlib.suppress(Rejected):  # not a recovery code
                self.secrets.add(normalize(value))  # a recovery code as it is hashed

    def walk(self, data: Any) -> None:
        if isinstance(data, dict):
            for k, v in data.items():
                if k in SECRET_FIELDS:
                    self.keep(v)
                self.walk(v)
        elif isinstance(data, list):
            for v in data:
                self.walk(v)

    def on_request(self, request: Any) -> None:
        with contextlib.suppress(ValueError):
            self.walk(json.loads(request.content or b"null"))
        auth = request.headers.get("authorization", "")
        if auth:
            self.keep(auth.partition(" ")[2])

    def on_response(self, response: Any) -> None:
        response.read()
        with contextlib.suppress(ValueError):
            self.walk(response.json())


@pytest.fixture
def recorder(client) -> SecretRecorder:
    rec = SecretRecorder()
    client.event_hooks = {"request": [rec.on_request], "response": [rec.on_response]}
    return rec


def test_every_event_is_recorded_with_who_and_where_and_never_a_secret(
    client, clock, env, monkeypatch, recorder
):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    client.post("/api/login", json={"username": "alice", "password": "not her password"})
    totp = enroll_first_totp(client, alice, clock)

    # A second factor of another kind: confirmed, resynchronized, renamed.
    hotp = client.post("/api/factors", json={"type": "hotp"}, headers=alice.access).json()
    client.post(
        f"/api/factors/{hotp['id']}/confirm",
        json={"code": hotp_code(hotp["secret"], 0)},
        headers=alice.access,
    )
    r = client.post(
        f"/api/factors/{hotp['id']}/resync",
        json={"code1": hotp_code(hotp["secret"], 40), "code2": hotp_code(hotp["secret"], 41)},
        headers=alice.access,
    )
    assert r.status_code == 200, r.text
    client.patch(f"/api/factors/{hotp['id']}", json={"label": "keyring"}, headers=alice.access)

    # Recovery codes, used up to the last one.
    recovery = RecoveryDriver().generate(client, alice)
    for code in recovery["codes"]:
        mfa_token = login(client, alice)["mfa_token"]
        r = client.post(
            "/api/login/verify",
            json={"mfa_token": mfa_token, "factor_id": recovery["id"], "code": code},
        )
        assert r.status_code == 200, r.text
        last = r.json()

    # A step-up begun (a fresh second factor without the password).
    assert client.post("/api/step-up", headers=bearer(last["access_token"])).status_code == 200

    # A refresh token used twice, and a logout.
    first = client.post("/api/token/refresh", json={"refresh_token": last["refresh_token"]})
    client.post("/api/token/refresh", json={"refresh_token": last["refresh_token"]})
    assert first.status_code == 200
    client.post("/api/logout", json={"refresh_token": alice.tokens["refresh_token"]})

    # Locked out, unlocked by an admin, in again; a factor removed; then the lost-device reset.
    driver = lock_out(client, alice, totp, clock)
    log_in_again(client, clock, root)
    assert client.post("/api/admin/users/alice/unlock", headers=root.access).status_code == 200
    right = driver.right(client, login(client, alice)["mfa_token"], totp, clock)
    alice.tokens = client.post("/api/login/verify", json=right).json()
    assert client.delete(f"/api/factors/{hotp['id']}", headers=alice.access).status_code == 204
    r = client.post("/api/admin/users/alice/reset-factors", headers=root.access)
    assert r.status_code == 200

    # The operator's commands.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert mfa_main(["keys", "rotate"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert mfa_main(["user", "add", "carol", "--password-stdin"]) == 0

    with client.app.state.ctx.db.read() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    recorded = {row.event for row in rows}
    assert recorded == EVENTS - ELSEWHERE

    for row in rows:
        detail = json.loads(row.detail)
        assert row.time > 0
        if row.user_agent == "mfa-cli":
            assert row.ip is None
        else:
            assert (row.ip, row.user_agent) == ("testclient", "testclient"), row.event
        if row.event != "signing_key_rotated":
            assert row.username, row.event
        if row.event in ("factor_failed", "factor_succeeded"):
            assert detail["factor_id"], row.event
            assert detail["factor_type"] in ("totp", "hotp", "recovery")
        if row.event in ("unlocked", "factors_reset"):
            assert detail["actor"] == "root" or detail["actor"].startswith("cli")

    # Ids are no secret, and a six-digit code could turn up inside one by chance.
    everything = UUID.sub(
        "<id>",
        json.dumps([[r.event, r.username, r.user_id, r.ip, r.user_agent, r.detail] for r in rows]),
    )
    secrets = recorder.secrets | {PASSWORD, "not her password"}
    assert len(secrets) > 50
    leaked = sorted(s for s in secrets if s in everything)
    assert leaked == [], leaked
    # Nor any part of a long one (a prefix of a token, say).
    pieces = {everything[i : i + WINDOW] for i in range(len(everything) - WINDOW + 1)}
    partly = sorted(
        s for s in secrets if any(s[i : i + WINDOW] in pieces for i in range(len(s) - WINDOW + 1))
    )
    assert partly == [], partly


def test_an_enrolling_mfa_token_is_never_recorded(client, clock, recorder):
    alice = signup(client, "alice")
    start = login(client, alice)
    r = client.post("/api/factors", json={"type": "totp"}, headers=bearer(start["mfa_token"]))
    client.post(
        f"/api/factors/{r.json()['id']}/confirm",
        json={"code": "000000"},
        headers=bearer(start["mfa_token"]),
    )
    with client.app.state.ctx.db.read() as s:
        dump = json.dumps([r.detail for r in s.scalars(select(AuditEvent))])
    assert start["mfa_token"] not in dump
    assert r.json()["secret"] not in dump


def test_a_long_unknown_username_is_audited_clipped_and_throttled(client):
    name = "x" * 200
    for _ in range(10):
        r = client.post("/api/login", json={"username": name, "password": "whatever12345"})
        assert r.status_code == 401, r.text
    r = client.post("/api/login", json={"username": name, "password": "whatever12345"})
    assert r.status_code == 429
    # A name that differs only past the 64th character is another name.
    other = client.post("/api/login", json={"username": name + "y", "password": "whatever12345"})
    assert other.status_code == 401
    with client.app.state.ctx.db.read() as s:
        names = set(s.scalars(select(AuditEvent.username)))
    assert names == {"x" * 64}
