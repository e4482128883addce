"""Throttling of passwords and second factors, and the lock an admin clears."""

from __future__ import annotations

import pytest
from sqlalchemy import literal, select

from mfa.cli import main as mfa_main
from mfa.errors import Locked, TooManyAttempts
from mfa.models import Throttle, new_id
from mfa.services import throttle
from mfa.services.throttle import MFA, PASSWORD, backoff

from .helpers import enroll_first_totp, hotp_code, login, signup, totp_code
from .operators import lock_out


def test_backoff_starts_at_30_seconds_doubles_and_stops_at_15_minutes():
    assert [backoff(n, MFA) for n in range(4, 12)] == [0, 30, 60, 120, 240, 480, 900, 900]
    assert backoff(9, PASSWORD) == 0
    assert backoff(10, PASSWORD) == 30
    assert backoff(10_000, MFA) == 900


def _claimed(writer, policy, now):
    throttle.claim(writer, policy, "someone", now)


def _admitted_and_failed(writer, policy, now):
    throttle.admit(writer, policy, "someone", now).failed(writer)


@pytest.mark.parametrize("count", [_claimed, _admitted_and_failed], ids=["claim", "admit"])
@pytest.mark.parametrize("policy", [MFA, PASSWORD], ids=["mfa", "password"])
def test_each_failure_counted_starts_the_back_off_it_earns(db, policy, count):
    # The claim computes the back-off in SQL: it must agree with ``backoff`` at every count,
    # and refuse the next attempt until the back-off it started has passed. A failure counted
    # after its check (``admit``, then ``failed``) must leave exactly what a claim leaves.
    now = 1_000_000
    for n in range(1, policy.free_failures + 9):
        with db.direct() as writer:
            count(writer, policy, now)
        failures, until = _state(db, policy, "someone")
        assert failures == n
        wait = backoff(n, policy)
        if wait:
            assert until == now + wait
            with pytest.raises(TooManyAttempts) as refused, db.direct() as writer:
                count(writer, policy, now + wait - 1)
            assert refused.value.retry_after == 1
            now += wait
        else:
            assert until <= now


def test_an_admitted_success_clears_the_failures_before_it(db):
    now = 1_000_000
    for _ in range(3):
        with db.direct() as writer:
            throttle.admit(writer, MFA, "someone", now).failed(writer)
    with db.direct() as writer:
        throttle.admit(writer, MFA, "someone", now).succeeded(writer)
    assert _state(db, MFA, "someone") == (0, 0)


def test_a_success_with_no_failure_before_it_writes_no_row_on_sqlite_only(db):
    # The point of ``admit``: on SQLite, whose one writer is this transaction, a success
    # writes nothing; PostgreSQL claims the attempt first and clears the claim.
    with db.direct() as writer:
        throttle.admit(writer, MFA, "someone", 1_000_000).succeeded(writer)
    assert _state(db, MFA, "someone") == (None if db.is_sqlite else (0, 0))


def test_a_locked_subject_is_refused_unchecked(db):
    with db.write() as session:
        session.add(Throttle(key=throttle.key(MFA, "someone"), failures=100, locked=True))
    with pytest.raises(Locked), db.direct() as writer:
        throttle.admit(writer, MFA, "someone", 1_000_000)
    assert _state(db, MFA, "someone") == (100, 0)


def test_the_key_a_statement_makes_of_an_id_is_the_key(db):
    # A verify reads the user's row by a key made in SQL (``key_of_id``); ``key`` makes the
    # one every other use reads and writes.
    user_id = new_id()
    with db.read() as session:
        made = session.execute(select(throttle.key_of_id(MFA, literal(user_id)))).scalar_one()
    assert made == throttle.key(MFA, user_id)


def test_a_verify_counts_its_users_failures_and_a_right_code_clears_them(client, clock):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    db = client.app.state.ctx.db
    for n in (1, 2, 3):
        body = {"mfa_token": login(client, account)["mfa_token"], "factor_id": factor["id"]}
        r = client.post("/api/login/verify", json={**body, "code": "000000"})
        assert r.status_code == 401, r.text
        assert _state(db, MFA, account.id) == (n, 0)
    clock.advance(30)  # a code the enrolment did not use
    code = totp_code(factor["secret"], clock())
    body = {"mfa_token": login(client, account)["mfa_token"], "factor_id": factor["id"]}
    r = client.post("/api/login/verify", json={**body, "code": code})
    assert r.status_code == 200, r.text
    assert _state(db, MFA, account.id) == (0, 0)


def test_wrong_resync_codes_count_toward_the_second_factor_throttle(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    hotp = client.post("/api/factors", json={"type": "hotp"}, headers=account.access).json()
    confirm = {"code": hotp_code(hotp["secret"], 0)}
    r = client.post(f"/api/factors/{hotp['id']}/confirm", json=confirm, headers=account.access)
    assert r.status_code == 200, r.text
    path = f"/api/factors/{hotp['id']}/resync"
    wrong = {"code1": hotp_code(hotp["secret"], 40), "code2": hotp_code(hotp["secret"], 42)}
    right = {"code1": hotp_code(hotp["secret"], 40), "code2": hotp_code(hotp["secret"], 41)}
    for _ in range(MFA.free_failures):
        r = client.post(path, json=wrong, headers=account.access)
        assert r.status_code == 401, r.text
    r = client.post(path, json=right, headers=account.access)
    assert r.status_code == 429, r.text  # refused unchecked
    clock.advance(30)
    r = client.post(path, json=right, headers=account.access)
    assert r.status_code == 200, r.text
    assert _state(client.app.state.ctx.db, MFA, account.id) == (0, 0)


def _state(db, policy, subject):
    """The subject's (failures, blocked_until), or None if it has no row."""
    with db.read() as session:
        row = session.execute(
            select(Throttle.failures, Throttle.blocked_until).where(
                Throttle.key == throttle.key(policy, subject)
            )
        ).first()
    return None if row is None else tuple(row)


def _wrong_password(client, username):
    return client.post("/api/login", json={"username": username, "password": "not the password"})


@pytest.mark.parametrize("known", [True, False], ids=["existing-user", "unknown-user"])
def test_ten_wrong_passwords_throttle_that_username(client, clock, known):
    if known:
        account = signup(client, "alice")
    for _ in range(10):
        r = _wrong_password(client, "alice")
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_credentials"
    r = client.post(
        "/api/login", json={"username": "alice", "password": "correct horse battery staple"}
    )
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_attempts"
    assert r.headers["Retry-After"] == "30"
    # Other usernames are not affected.
    assert _wrong_password(client, "bob").status_code == 401
    clock.advance(30)
    if known:
        assert login(client, account)["mfa_token"]
        # The success cleared the count.
        assert _wrong_password(client, "alice").status_code == 401
    else:
        assert _wrong_password(client, "alice").status_code == 401
        assert _wrong_password(client, "alice").status_code == 429


def test_usernames_are_throttled_whatever_their_case(client):
    signup(client, "alice")
    for i in range(10):
        _wrong_password(client, "ALICE" if i % 2 else "alice")
    assert _wrong_password(client, "Alice").status_code == 429


def test_a_hundred_second_factor_failures_lock_until_an_admin_unlocks(
    client, clock, env, monkeypatch
):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    driver = lock_out(client, account, factor, clock)  # a right code then gets 423
    right = driver.right(client, login(client, account)["mfa_token"], factor, clock)
    r = client.post("/api/login/verify", json=right)
    assert r.status_code == 423
    assert r.json()["error"] == "locked"

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert mfa_main(["user", "unlock", "alice"]) == 0
    right = driver.right(client, login(client, account)["mfa_token"], factor, clock)
    assert client.post("/api/login/verify", json=right).status_code == 200
