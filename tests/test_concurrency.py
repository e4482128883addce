"""Single use under real concurrency: many requests at once against real server processes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from .helpers import PASSWORD, bearer, totp_code
from .live import serve

pytestmark = pytest.mark.live

ATTEMPTS = 16


def enroll_totp(base: str, username: str) -> dict:
    with httpx.Client(base_url=base, timeout=30) as c:
        assert (
            c.post("/api/users", json={"username": username, "password": PASSWORD}).status_code
            == 201
        )
        start = c.post("/api/login", json={"username": username, "password": PASSWORD}).json()
        f = c.post("/api/factors", json={"type": "totp"}, headers=bearer(start["mfa_token"])).json()
        r = c.post(
            f"/api/factors/{f['id']}/confirm",
            json={"code": totp_code(f["secret"], time.time())},
            headers=bearer(start["mfa_token"]),
        )
        assert r.status_code == 200, r.text
        f["tokens"] = r.json()
        return f


def logins(base: str, username: str, n: int) -> list[str]:
    with httpx.Client(base_url=base, timeout=30) as c:
        return [
            c.post("/api/login", json={"username": username, "password": PASSWORD}).json()[
                "mfa_token"
            ]
            for _ in range(n)
        ]


def verify_all_at_once(bases: list[str], bodies: list[dict]) -> list[int]:
    """POST every body to /api/login/verify at the same moment, round-robin over ``bases``."""
    barrier = threading.Barrier(len(bodies))
    clients = [httpx.Client(base_url=bases[i % len(bases)], timeout=30) for i in range(len(bodies))]
    for c in clients:
        c.get("/healthz")  # open the connection before the race starts

    def one(i: int) -> int:
        barrier.wait()
        return clients[i].post("/api/login/verify", json=bodies[i]).status_code

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(one, range(len(bodies))))
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_one_code_sent_sixteen_times_at_once_verifies_once(env, workers):
    with serve(env, workers=workers) as base:
        factor = enroll_totp(base, "alice")
        # The next time step's code: valid now (one step of drift), never used before.
        code = totp_code(factor["secret"], time.time(), steps=1)
        tokens = logins(base, "alice", ATTEMPTS)
        bodies = [{"mfa_token": t, "factor_id": factor["id"], "code": code} for t in tokens]
        statuses = verify_all_at_once([base], bodies)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses


def test_one_recovery_code_sent_sixteen_times_at_once_verifies_once(env):
    with serve(env, workers=2) as base:
        totp = enroll_totp(base, "alice")
        with httpx.Client(base_url=base, timeout=30) as c:
            r = c.post("/api/recovery-codes", headers=bearer(totp["tokens"]["access_token"]))
            assert r.status_code == 201, r.text
            recovery = r.json()
        code = recovery["codes"][0]
        tokens = logins(base, "alice", ATTEMPTS)
        bodies = [{"mfa_token": t, "factor_id": recovery["id"], "code": code} for t in tokens]
        statuses = verify_all_at_once([base], bodies)
        with httpx.Client(base_url=base, timeout=30) as c:
            listed = c.get("/api/factors", headers=bearer(totp["tokens"]["access_token"])).json()
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}, statuses
    assert [f["remaining"] for f in listed if f["type"] == "recovery"] == [9]


def test_sixteen_wrong_codes_at_once_across_two_workers_get_five_checks(env):
    # The throttle's limit holds under real concurrency: five failures are checked (401), the
    # fifth starts the back-off, and every other attempt is refused unchecked (429), whether
    # each attempt claims its place first (PostgreSQL) or is counted after its check inside
    # the one writer's transaction (SQLite).
    with serve(env, workers=2) as base:
        factor = enroll_totp(base, "alice")
        window = {totp_code(factor["secret"], time.time(), steps=s) for s in (-2, -1, 0, 1, 2)}
        wrong = next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in window)
        tokens = logins(base, "alice", ATTEMPTS)
        bodies = [{"mfa_token": t, "factor_id": factor["id"], "code": wrong} for t in tokens]
        statuses = verify_all_at_once([base], bodies)
    assert sorted(statuses) == [401] * 5 + [429] * (ATTEMPTS - 5), statuses
