"""Managing one's factors: step-up for removal, and other logins signed out on every change."""

from __future__ import annotations

from .drivers import RecoveryDriver
from .helpers import (
    Account,
    another_totp_login,
    enroll_first_totp,
    hotp_code,
    signup,
    totp_login,
)


def add_hotp(client, account: Account) -> dict:
    r = client.post("/api/factors", json={"type": "hotp", "label": "key"}, headers=account.access)
    assert r.status_code == 201, r.text
    factor = r.json()
    r = client.post(
        f"/api/factors/{factor['id']}/confirm",
        json={"code": hotp_code(factor["secret"], 0)},
        headers=account.access,
    )
    assert r.status_code == 200, r.text
    return factor


def refresh(client, tokens: dict):
    return client.post("/api/token/refresh", json={"refresh_token": tokens["refresh_token"]})


def test_removing_an_active_factor_needs_a_recent_second_factor(client, clock, settings):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    hotp = add_hotp(client, account)
    clock.advance(settings.step_up_max_age + 1)
    r = client.delete(f"/api/factors/{hotp['id']}", headers=account.access)
    assert r.status_code == 401
    assert r.json()["error"] == "step_up_required"
    assert hotp["id"] in [
        f["id"] for f in client.get("/api/factors", headers=account.access).json()
    ]

    # A refreshed access token keeps the login's auth_time: still no.
    refreshed = refresh(client, account.tokens).json()
    r = client.delete(
        f"/api/factors/{hotp['id']}",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
    )
    assert r.json()["error"] == "step_up_required"

    totp_login(client, account, totp, clock)
    assert client.delete(f"/api/factors/{hotp['id']}", headers=account.access).status_code == 204
    assert [f["id"] for f in client.get("/api/factors", headers=account.access).json()] == [
        totp["id"]
    ]


def test_exactly_the_step_up_age_is_still_recent(client, clock, settings):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    hotp = add_hotp(client, account)
    clock.advance(settings.step_up_max_age)
    assert client.delete(f"/api/factors/{hotp['id']}", headers=account.access).status_code == 204


def test_a_pending_factor_is_removed_without_step_up(client, clock, settings):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    r = client.post("/api/factors", json={"type": "totp", "label": "new"}, headers=account.access)
    clock.advance(settings.step_up_max_age + 1)
    assert (
        client.delete(f"/api/factors/{r.json()['id']}", headers=account.access).status_code == 204
    )


def test_confirming_a_factor_signs_out_the_users_other_logins(client, clock):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    other = another_totp_login(client, account, totp, clock)
    add_hotp(client, account)
    assert refresh(client, other).json()["error"] == "invalid_grant"
    assert refresh(client, account.tokens).status_code == 200


def test_removing_a_factor_signs_out_the_users_other_logins(client, clock):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    hotp = add_hotp(client, account)
    other = another_totp_login(client, account, totp, clock)
    assert client.delete(f"/api/factors/{hotp['id']}", headers=account.access).status_code == 204
    assert refresh(client, other).json()["error"] == "invalid_grant"
    assert refresh(client, account.tokens).status_code == 200


def test_new_recovery_codes_sign_out_the_users_other_logins(client, clock):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    other = another_totp_login(client, account, totp, clock)
    RecoveryDriver().generate(client, account)
    assert refresh(client, other).json()["error"] == "invalid_grant"
    assert refresh(client, account.tokens).status_code == 200


def test_renaming_a_factor_signs_out_nobody(client, clock):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    other = another_totp_login(client, account, totp, clock)
    r = client.patch(
        f"/api/factors/{totp['id']}", json={"label": "old phone"}, headers=account.access
    )
    assert r.json()["label"] == "old phone"
    assert refresh(client, other).status_code == 200
