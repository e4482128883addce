"""A security key's assertions under real concurrency, against real server processes."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from .helpers import PASSWORD, bearer
from .live import serve
from .softauthn import SoftAuthenticator
from .test_concurrency import ATTEMPTS, logins, verify_all_at_once

pytestmark = pytest.mark.live


def enroll_key(base: str, username: str, key: SoftAuthenticator) -> dict:
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/api/users", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201
        start = c.post("/api/login", json={"username": username, "password": PASSWORD}).json()
        headers = bearer(start["mfa_token"])
        f = c.post("/api/factors", json={"type": "webauthn"}, headers=headers).json()
        credential = key.make_credential(f["publicKey"], base)
        r = c.post(
            f"/api/factors/{f['id']}/confirm", json={"credential": credential}, headers=headers
        )
        assert r.status_code == 200, r.text
        return f


def options(base: str, mfa_token: str, factor_id: str) -> dict:
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor_id})
        assert r.status_code == 200, r.text
        return r.json()["publicKey"]


def test_one_assertion_sent_sixteen_times_at_once_verifies_once(env):
    key = SoftAuthenticator()
    with serve(env, workers=2) as base:
        factor = enroll_key(base, "alice", key)
        [mfa_token] = logins(base, "alice", 1)
        assertion = key.get_assertion(options(base, mfa_token, factor["id"]), base)
        body = {"mfa_token": mfa_token, "credential": assertion}
        statuses = verify_all_at_once([base], [body] * ATTEMPTS)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses


def test_clones_answering_eight_logins_at_once_with_one_counter_win_once(env):
    # Each login has its own challenge and each answer is correctly signed, but all carry the
    # same signature counter: only the conditional update decides, and it lets one through.
    key = SoftAuthenticator()
    with serve(env, workers=2) as base:
        factor = enroll_key(base, "alice", key)
        tokens = logins(base, "alice", 8)
        bodies = []
        for mfa_token in tokens:
            clone = key.clone()  # each starts from the same counter
            answer = clone.get_assertion(options(base, mfa_token, factor["id"]), base)
            bodies.append({"mfa_token": mfa_token, "credential": answer})
        statuses = verify_all_at_once([base], bodies)
        # The losers were clones (their count did not increase): the key is disabled.
        with httpx.Client(base_url=base, timeout=30) as c:
            again = c.post("/api/login", json={"username": "alice", "password": PASSWORD})
            assert again.json()["factors"] == []
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses
