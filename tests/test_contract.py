"""The contract every factor type keeps (after django-otp's ``verify_token``), run against each
type on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from .drivers import DRIVERS, Driver
from .helpers import Account, Clock, login, signup


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param]()


@pytest.fixture
def enrolled(client: TestClient, driver: Driver, clock: Clock) -> tuple[Account, dict[str, Any]]:
    account = signup(client)
    factor = driver.enroll_first(client, account, clock)
    return account, factor


def verify(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/api/login/verify", json=body)


def test_a_wrong_answer_is_refused(client, driver, enrolled, clock):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    r = verify(client, driver.wrong(client, mfa_token, factor, clock))
    assert r.status_code == 401
    assert r.json()["error"] == "verification_failed"
    assert "access_token" not in r.json()


def test_a_right_answer_verifies_once_and_never_again(client, driver, enrolled, clock):
    account, factor = enrolled
    body = driver.right(client, login(client, account)["mfa_token"], factor, clock)
    first = verify(client, body)
    assert first.status_code == 200, first.text
    assert first.json()["token_type"] == "Bearer"
    again = verify(client, {**body, "mfa_token": login(client, account)["mfa_token"]})
    assert again.status_code == 401
    assert again.json()["error"] == "verification_failed"


def test_a_spent_mfa_token_cannot_verify_again(client, driver, enrolled, clock):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    assert verify(client, driver.right(client, mfa_token, factor, clock)).status_code == 200
    r = verify(client, driver.right(client, mfa_token, factor, clock))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_mfa_token"


def test_a_pending_factor_never_verifies(client, driver, enrolled, clock):
    account, _ = enrolled
    pending = driver.enroll_pending(client, account)
    mfa_token = login(client, account)["mfa_token"]
    assert pending["id"] not in [f["id"] for f in login(client, account)["factors"]]
    r = verify(client, driver.right(client, mfa_token, pending, clock))
    assert r.status_code == 401
    assert r.json()["error"] == "verification_failed"


def test_the_sixth_consecutive_failure_is_throttled_even_with_a_right_answer(
    client, driver, enrolled, clock
):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(5):
        assert verify(client, driver.wrong(client, mfa_token, factor, clock)).status_code == 401
    r = verify(client, driver.right(client, login(client, account)["mfa_token"], factor, clock))
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_attempts"
    assert 1 <= int(r.headers["Retry-After"]) <= 30


def test_after_the_wait_a_right_answer_is_checked_again(client, driver, enrolled, clock):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(5):
        verify(client, driver.wrong(client, mfa_token, factor, clock))
    clock.advance(31)
    r = verify(client, driver.right(client, login(client, account)["mfa_token"], factor, clock))
    assert r.status_code == 200, r.text


def test_a_success_resets_the_failure_count(client, driver, enrolled, clock):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(4):
        assert verify(client, driver.wrong(client, mfa_token, factor, clock)).status_code == 401
    assert verify(client, driver.right(client, mfa_token, factor, clock)).status_code == 200
    # Four more failures and a right answer: the count started again from zero.
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(4):
        assert verify(client, driver.wrong(client, mfa_token, factor, clock)).status_code == 401
    r = verify(client, driver.right(client, mfa_token, factor, clock))
    assert r.status_code == 200, r.text


def test_an_mfa_token_dies_after_five_failed_verify_calls(client, driver, enrolled, clock):
    account, factor = enrolled
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(5):
        verify(client, driver.wrong(client, mfa_token, factor, clock))
    clock.advance(31)  # past the back-off: the transaction is dead for its own reason
    r = verify(client, driver.right(client, mfa_token, factor, clock))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_mfa_token"
