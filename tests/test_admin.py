"""Administration over HTTP: users, unlock, the lost-device reset, the audit log; admins only."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from mfa.models import Throttle, User

from .drivers import RecoveryDriver
from .helpers import bearer, enroll_first_totp, login, signup, totp_login
from .operators import lock_out, log_in_again, make_admin

ADMIN_ENDPOINTS = [
    ("GET", "/api/admin/users"),
    ("GET", "/api/admin/users/alice"),
    ("POST", "/api/admin/users/alice/unlock"),
    ("POST", "/api/admin/users/alice/reset-factors"),
    ("GET", "/api/admin/audit"),
    ("GET", "/api/admin/audit?username=alice&limit=5"),
]


def test_a_non_admin_gets_403_on_every_admin_endpoint(client, clock):
    alice = signup(client, "alice")
    totp = enroll_first_totp(client, alice, clock)
    for method, path in ADMIN_ENDPOINTS:
        r = client.request(method, path, headers=alice.access)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"error": "forbidden", "message": r.json()["message"]}
    # Nothing happened to alice's factors either.
    assert [f["id"] for f in client.get("/api/factors", headers=alice.access).json()] == [
        totp["id"]
    ]


def test_no_token_or_an_mfa_token_gets_401_on_every_admin_endpoint(client):
    alice = signup(client, "alice")
    mfa_token = login(client, alice)["mfa_token"]
    for method, path in ADMIN_ENDPOINTS:
        assert client.request(method, path).status_code == 401, (method, path)
        r = client.request(method, path, headers=bearer(mfa_token))
        assert r.status_code == 401, (method, path)
        assert r.json()["error"] == "unauthorized"


def test_the_admin_role_taken_away_takes_effect_at_once(client, clock):
    root = make_admin(client, clock)
    assert client.get("/api/admin/users", headers=root.access).status_code == 200
    with client.app.state.ctx.db.write() as s:
        s.execute(update(User).where(User.id == root.id).values(is_admin=False))
    assert client.get("/api/admin/users", headers=root.access).status_code == 403


def test_admins_see_users_with_lock_state_and_factors_but_no_secret(client, clock):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    totp = enroll_first_totp(client, alice, clock)
    signup(client, "bob")
    r = client.get("/api/admin/users", headers=root.access)
    assert r.status_code == 200
    users = {u["username"]: u for u in r.json()}
    assert sorted(users) == ["alice", "bob", "root"]
    a = users["alice"]
    assert {"id", "username", "admin", "locked", "factors"} <= set(a)
    assert (a["id"], a["admin"], a["locked"], a["failures"]) == (alice.id, False, False, 0)
    assert [(f["id"], f["type"], f["status"]) for f in a["factors"]] == [
        (totp["id"], "totp", "active")
    ]
    assert users["root"]["admin"] is True
    assert users["bob"]["factors"] == []
    assert totp["secret"] not in r.text
    assert "secret" not in a["factors"][0]
    assert client.get("/api/admin/users?limit=2", headers=root.access).json()[1]["username"] == (
        "bob"
    )
    assert [
        u["username"]
        for u in client.get("/api/admin/users?limit=2&offset=2", headers=root.access).json()
    ] == ["root"]
    one = client.get("/api/admin/users/ALICE", headers=root.access)
    assert one.json()["id"] == alice.id


def test_the_unlock_journey(client, clock):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    totp = enroll_first_totp(client, alice, clock)
    driver = lock_out(client, alice, totp, clock)
    log_in_again(client, clock, root)

    (listed,) = [
        u for u in client.get("/api/admin/users", headers=root.access).json() if u["id"] == alice.id
    ]
    assert listed["locked"] is True
    assert listed["failures"] >= 100

    r = client.post("/api/admin/users/alice/unlock", headers=root.access)
    assert r.status_code == 200, r.text
    assert (r.json()["locked"], r.json()["failures"], r.json()["cleared"]) == (False, 0, True)
    right = driver.right(client, login(client, alice)["mfa_token"], totp, clock)
    assert client.post("/api/login/verify", json=right).status_code == 200

    events = client.get("/api/admin/audit?username=alice&event=unlocked", headers=root.access)
    (unlocked,) = events.json()
    assert unlocked["detail"]["actor"] == "root"
    # Unlocking again changes nothing and says so.
    r = client.post("/api/admin/users/alice/unlock", headers=root.access)
    assert r.json()["cleared"] is False


def test_the_lost_device_journey(client, clock):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    enroll_first_totp(client, alice, clock)
    recovery = RecoveryDriver().generate(client, alice)
    pending_login = login(client, alice)["mfa_token"]

    r = client.post("/api/admin/users/alice/reset-factors", headers=root.access)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "username": "alice",
        "factors_removed": 2,
        "refresh_tokens_revoked": 1,
        "login_transactions_ended": 1,
        "unlocked": False,
    }
    # Every login of alice is over, and the login she had open too.
    refreshed = client.post(
        "/api/token/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"
    r = client.post(
        "/api/login/verify",
        json={
            "mfa_token": pending_login,
            "factor_id": recovery["id"],
            "code": recovery["codes"][0],
        },
    )
    assert r.json()["error"] == "invalid_mfa_token"
    # The next login enrolls a new first factor.
    start = login(client, alice)
    assert (start["enroll_required"], start["factors"]) == (True, [])
    alice.factors.clear()
    new = enroll_first_totp(client, alice, clock)
    assert [f["id"] for f in client.get("/api/factors", headers=alice.access).json()] == [new["id"]]

    (reset,) = client.get(
        "/api/admin/audit?username=alice&event=factors_reset", headers=root.access
    ).json()
    assert reset["detail"]["actor"] == "root"
    assert sorted(f["type"] for f in reset["detail"]["factors"]) == ["recovery", "totp"]


def test_a_reset_also_clears_the_lock(client, clock):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    enroll_first_totp(client, alice, clock)
    # Locked as 100 failures lock (test_the_unlock_journey goes through them).
    with client.app.state.ctx.db.write() as s:
        s.add(Throttle(key=f"mfa:{alice.id}", failures=100, blocked_until=0, locked=True))
    r = client.post("/api/admin/users/alice/reset-factors", headers=root.access)
    assert r.json()["unlocked"] is True
    alice.factors.clear()
    new = enroll_first_totp(client, alice, clock)
    totp_login(client, alice, new, clock)  # asserts the login succeeds


def test_a_reset_needs_a_recent_second_factor_of_the_admin(client, clock, settings):
    root = make_admin(client, clock)
    alice = signup(client, "alice")
    enroll_first_totp(client, alice, clock)
    clock.advance(settings.step_up_max_age + 1)
    r = client.post("/api/admin/users/alice/reset-factors", headers=root.access)
    assert r.status_code == 401
    assert r.json()["error"] == "step_up_required"
    assert login(client, alice)["enroll_required"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/users/ghost",
        "/api/admin/users/ghost/unlock",
        "/api/admin/users/ghost/reset-factors",
        "/api/admin/users/bad%20name/unlock",
    ],
)
def test_an_unknown_user_is_404(client, clock, path):
    root = make_admin(client, clock)
    method = "GET" if path.count("/") == 4 else "POST"
    r = client.request(method, path, headers=root.access)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_the_audit_log_newest_first_by_user_and_time(client, clock):
    root = make_admin(client, clock)
    start = int(clock())
    alice = signup(client, "alice")
    clock.advance(100)
    client.post("/api/login", json={"username": "alice", "password": "wrong password!"})
    clock.advance(100)
    login(client, alice)
    client.post("/api/login", json={"username": "Ghost", "password": "whatever12345"})

    rows = client.get("/api/admin/audit?username=alice", headers=root.access).json()
    assert [r["event"] for r in rows] == ["login_started", "password_failed", "signup"]
    assert [r["time"] for r in rows] == [start + 200, start + 100, start]
    assert all(r["username"] == "alice" for r in rows)
    assert all({"time", "event", "username", "ip", "detail"} <= set(r) for r in rows)
    assert rows[0]["ip"] == "testclient"
    assert rows[0]["user_agent"] == "testclient"
    assert isinstance(rows[0]["detail"], dict)

    def events(query: str) -> list[str]:
        r = client.get(f"/api/admin/audit?{query}", headers=root.access)
        assert r.status_code == 200, r.text
        return [row["event"] for row in r.json()]

    assert events("username=alice&limit=1") == ["login_started"]
    assert events(f"username=alice&since={start + 100}") == ["login_started", "password_failed"]
    assert events(f"username=alice&until={start + 100}") == ["signup"]
    iso = datetime.fromtimestamp(start + 100, UTC).isoformat().replace("+00:00", "Z")
    assert events(f"username=alice&since={iso}") == ["login_started", "password_failed"]
    assert events("username=alice&event=signup") == ["signup"]
    # An unknown username is found as it was typed.
    assert events("username=ghost") == ["password_failed"]
    # A limit past the cap is capped, not refused.
    assert len(events("limit=100000")) == len(events("limit=1000"))


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=-1", "since=yesterday", "until=1e9", "offset=-1"]
)
def test_bad_admin_queries_are_400(client, clock, query):
    root = make_admin(client, clock)
    path = "/api/admin/users" if query.startswith("offset") else "/api/admin/audit"
    r = client.get(f"{path}?{query}", headers=root.access)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert "yesterday" not in r.json()["message"]


def test_the_openapi_document_lists_the_admin_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/recovery-codes"]
    assert "post" in paths["/api/admin/users/{username}/reset-factors"]
    params = paths["/api/admin/users/{username}/unlock"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["username"]
    assert json.dumps(paths)  # serializable
