"""An OCRA counter is single-use under real concurrency, across server processes."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from mfa import ocra

from .helpers import PASSWORD, bearer
from .live import serve
from .test_concurrency import ATTEMPTS, logins, verify_all_at_once

pytestmark = pytest.mark.live

SUITE = "OCRA-1:HOTP-SHA1-6:C-QN08"


def enroll_ocra(base: str, username: str) -> dict:
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/api/users", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201
        start = c.post("/api/login", json={"username": username, "password": PASSWORD}).json()
        f = c.post(
            "/api/factors",
            json={"type": "ocra", "suite": SUITE},
            headers=bearer(start["mfa_token"]),
        ).json()
        code = ocra.response(
            ocra.parse_suite(SUITE), bytes.fromhex(f["secret"]), question=f["question"], counter=0
        )
        r = c.post(
            f"/api/factors/{f['id']}/confirm",
            json={"code": code},
            headers=bearer(start["mfa_token"]),
        )
        assert r.status_code == 200, r.text
        return f


def test_one_counter_answered_to_sixteen_questions_at_once_verifies_once(env):
    with serve(env, workers=2) as base:
        factor = enroll_ocra(base, "alice")
        suite = ocra.parse_suite(SUITE)
        key = bytes.fromhex(factor["secret"])
        bodies = []
        with httpx.Client(base_url=base, timeout=30) as c:
            for mfa_token in logins(base, "alice", ATTEMPTS):
                question = c.post(
                    "/api/login/challenge",
                    json={"mfa_token": mfa_token, "factor_id": factor["id"]},
                ).json()["question"]
                code = ocra.response(suite, key, question=question, counter=1)
                bodies.append({"mfa_token": mfa_token, "factor_id": factor["id"], "code": code})
        statuses = verify_all_at_once([base], bodies)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses
