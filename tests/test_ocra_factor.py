"""The ``ocra`` factor over HTTP: a question-only, a counter, a time and a PIN suite."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from mfa import ocra
from mfa.models import AuditEvent, Factor, Throttle

from .helpers import Account, Clock, bearer, login, ocra_response, signup


def enroll_ocra(
    client: Any, account: Account, clock: Clock, *, suite: str | None = None, pin: str | None = None
) -> dict[str, Any]:
    """Enroll an OCRA factor as the account's first and confirm it with the response to its
    question (counter 0, the current time step, the PIN: whatever the suite takes)."""
    start = login(client, account)
    options: dict[str, Any] = {"type": "ocra", "label": "keypad"}
    if suite is not None:
        options["suite"] = suite
    if pin is not None:
        options["pin"] = pin
    r = client.post("/api/factors", json=options, headers=bearer(start["mfa_token"]))
    assert r.status_code == 201, r.text
    factor: dict[str, Any] = r.json()
    parsed = ocra.parse_suite(factor["suite"])
    code = ocra_response(
        factor,
        factor["question"],
        counter=0 if parsed.counter else None,
        timestamp=step_of(parsed, clock) if parsed.time_step_seconds else None,
        pin=pin,
    )
    r = client.post(
        f"/api/factors/{factor['id']}/confirm",
        json={"code": code},
        headers=bearer(start["mfa_token"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    account.tokens = r.json()
    return factor


def step_of(suite: ocra.Suite, clock: Clock) -> int:
    return ocra.time_step(suite, int(clock()))


def ask(client: Any, mfa_token: str, factor: dict[str, Any]) -> str:
    r = client.post(
        "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor["id"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "ocra"
    assert body["suite"] == factor["suite"]
    question: str = body["question"]
    return question


def answer(client: Any, mfa_token: str, factor: dict[str, Any], code: str) -> Any:
    return client.post(
        "/api/login/verify",
        json={"mfa_token": mfa_token, "factor_id": factor["id"], "code": code},
    )


def test_enrollment_returns_a_hex_key_of_the_hash_size_the_suite_and_a_question(client, clock):
    account = signup(client)
    start = login(client, account)
    r = client.post(
        "/api/factors",
        json={"type": "ocra", "label": "keypad", "suite": "OCRA-1:HOTP-SHA256-8:QA10"},
        headers=bearer(start["mfa_token"]),
    )
    assert r.status_code == 201, r.text
    factor = r.json()
    assert factor["type"] == "ocra"
    assert factor["status"] == "pending"
    assert factor["suite"] == "OCRA-1:HOTP-SHA256-8:QA10"
    assert len(bytes.fromhex(factor["secret"])) == 32
    assert len(factor["question"]) == 10
    assert factor["question"].isalnum()


def test_the_default_suite_is_question_only_with_eight_digits(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    assert factor["suite"] == "OCRA-1:HOTP-SHA1-6:QN08"
    assert len(bytes.fromhex(factor["secret"])) == 20
    assert len(factor["question"]) == 8
    assert factor["question"].isdigit()
    listed = client.get("/api/factors", headers=account.access).json()
    assert listed[0]["suite"] == "OCRA-1:HOTP-SHA1-6:QN08"
    assert listed[0]["digits"] == 6
    assert {"secret", "question", "pin", "challenge"}.isdisjoint(listed[0])


def test_a_question_only_suite_journey(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, question))
    assert r.status_code == 200, r.text
    assert r.json()["amr"] == ["pwd", "otp", "mfa"]
    me = client.get("/api/me", headers=bearer(r.json()["access_token"]))
    assert me.status_code == 200


def test_each_challenge_asks_a_new_question(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    questions = {ask(client, mfa_token, factor) for _ in range(5)}
    assert len(questions) == 5


def test_a_superseded_question_is_refused(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    first = ask(client, mfa_token, factor)
    second = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, first))
    assert r.status_code == 401
    assert r.json()["error"] == "verification_failed"
    r = answer(client, mfa_token, factor, ocra_response(factor, second))
    assert r.status_code == 200, r.text


def test_without_a_question_no_response_verifies(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    # The token can answer its enrollment question; this login never asked it.
    r = answer(client, mfa_token, factor, ocra_response(factor, factor["question"]))
    assert r.status_code == 401
    with client.app.state.ctx.db.read() as s:
        reasons = [e.detail for e in s.scalars(select(AuditEvent)) if e.event == "factor_failed"]
    assert any('"reason":"no_question"' in d for d in reasons)


def test_a_question_asked_of_another_login_is_not_answerable_here(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    first = login(client, account)["mfa_token"]
    second = login(client, account)["mfa_token"]
    question = ask(client, first, factor)
    r = answer(client, second, factor, ocra_response(factor, question))
    assert r.status_code == 401
    assert answer(client, first, factor, ocra_response(factor, question)).status_code == 200


def test_a_login_asks_at_most_ten_questions(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(10):
        last = ask(client, mfa_token, factor)
    r = client.post(
        "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor["id"]}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    # The last question asked is still the one to answer.
    assert answer(client, mfa_token, factor, ocra_response(factor, last)).status_code == 200


COUNTER_SUITE = "OCRA-1:HOTP-SHA256-8:C-QN08"


def test_a_counter_suite_starts_at_zero_and_looks_ahead_ten(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock, suite=COUNTER_SUITE)  # counter 0

    def attempt(counter: int) -> int:
        mfa_token = login(client, account)["mfa_token"]
        question = ask(client, mfa_token, factor)
        code = ocra_response(factor, question, counter=counter)
        status: int = answer(client, mfa_token, factor, code).status_code
        return status

    assert attempt(0) == 401  # used by the confirmation
    assert attempt(1) == 200
    assert attempt(1) == 401  # a counter already used, even for a new question
    assert attempt(5) == 200  # within the window: the token was pressed a few times
    assert attempt(3) == 401  # behind the counter now
    assert attempt(6 + 11) == 401  # beyond the window (6 to 16)
    assert attempt(16) == 200
    with client.app.state.ctx.db.read() as s:
        assert s.get(Factor, factor["id"]).counter == 17


def test_a_counter_suite_refuses_a_counter_already_used(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock, suite=COUNTER_SUITE)
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, question, counter=1))
    assert r.status_code == 200, r.text
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, question, counter=1))
    assert r.status_code == 401
    with client.app.state.ctx.db.read() as s:
        failed = [e.detail for e in s.scalars(select(AuditEvent)) if e.event == "factor_failed"]
    assert failed
    assert '"factor_type":"ocra"' in failed[-1]


TIME_SUITE = "OCRA-1:HOTP-SHA512-8:QN08-T1M"


def test_a_time_suite_takes_one_step_either_side_each_step_once(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock, suite=TIME_SUITE)  # uses step T
    suite = ocra.parse_suite(TIME_SUITE)
    t = step_of(suite, clock)

    def attempt(timestamp: int) -> int:
        mfa_token = login(client, account)["mfa_token"]
        question = ask(client, mfa_token, factor)
        code = ocra_response(factor, question, timestamp=timestamp)
        status: int = answer(client, mfa_token, factor, code).status_code
        return status

    assert attempt(t) == 401  # this step answered the confirmation
    assert attempt(t + 2) == 401  # two steps ahead of the server's clock
    assert attempt(t + 1) == 200  # a token clock one step fast
    assert attempt(t + 1) == 401  # each step once
    clock.advance(60 * 3)  # now T+3
    assert attempt(t + 1) == 401  # two steps behind
    assert attempt(t + 2) == 200  # one step behind: a token clock one step slow
    assert attempt(t + 3) == 200
    assert attempt(t + 2) == 401  # behind a step already used


PIN_SUITE = "OCRA-1:HOTP-SHA256-8:QN08-PSHA1"


def test_a_pin_suite_needs_the_pin_and_keeps_only_its_hash_sealed(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock, suite=PIN_SUITE, pin="1234")
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, question, pin="4321"))
    assert r.status_code == 401
    r = answer(client, mfa_token, factor, ocra_response(factor, question, pin="1234"))
    assert r.status_code == 200, r.text
    with client.app.state.ctx.db.read() as s:
        row = s.get(Factor, factor["id"])
    assert row.pin is not None
    pin_hash = hashlib.sha1(b"1234").digest()
    for needle in (b"1234", pin_hash, pin_hash.hex().encode()):
        assert needle not in row.pin
    box = client.app.state.ctx.box
    assert box.open(row.pin, context=f"factor:{factor['id']}:pin") == pin_hash


def test_a_wrong_response_is_counted_by_the_throttle(client, clock):
    account = signup(client)
    factor = enroll_ocra(client, account, clock)
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    right = ocra_response(factor, question)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        assert answer(client, mfa_token, factor, wrong).status_code == 401
    with client.app.state.ctx.db.read() as s:
        assert s.get(Throttle, f"mfa:{account.id}").failures == 5
    mfa_token = login(client, account)["mfa_token"]
    question = ask(client, mfa_token, factor)
    r = answer(client, mfa_token, factor, ocra_response(factor, question))
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_attempts"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"suite": "OCRA-1:HOTP-SHA1-6:QN08-S064"}, "session"),
        ({"suite": "OCRA-1:HOTP-SHA1-6:C-QN08-T1M"}, "counter"),
        ({"suite": "OCRA-1:HOTP-SHA1-4:QN08"}, "digits"),
        ({"suite": "OCRA-1:HOTP-SHA1-0:QN08"}, "digits"),
        ({"suite": "OCRA-1:HOTP-MD5-6:QN08"}, "not a valid OCRA suite"),
        ({"suite": "OCRA-2:HOTP-SHA1-6:QN08"}, "not a valid OCRA suite"),
        ({"suite": "OCRA-1:HOTP-SHA1-6:QN08-PSHA1"}, "give the pin"),
        ({"suite": "OCRA-1:HOTP-SHA1-6:QN08", "pin": "1234"}, "takes no PIN"),
        ({"suite": "OCRA-1:HOTP-SHA1-6:QN08-PSHA1", "pin": "12"}, "pin"),
        ({"suite": 7}, "suite"),
    ],
)
def test_enrollment_refuses_what_it_cannot_serve(client, clock, options, words):
    account = signup(client)
    start = login(client, account)
    r = client.post(
        "/api/factors",
        json={"type": "ocra", "label": "keypad", **options},
        headers=bearer(start["mfa_token"]),
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert words in r.json()["message"]
    with client.app.state.ctx.db.read() as s:
        assert s.scalars(select(Factor)).first() is None


def test_a_wrong_confirmation_leaves_the_factor_pending(client, clock):
    account = signup(client)
    start = login(client, account)
    r = client.post(
        "/api/factors", json={"type": "ocra", "label": "k"}, headers=bearer(start["mfa_token"])
    )
    factor = r.json()
    right = ocra_response(factor, factor["question"])
    wrong = "000000" if right != "000000" else "111111"
    r = client.post(
        f"/api/factors/{factor['id']}/confirm",
        json={"code": wrong},
        headers=bearer(start["mfa_token"]),
    )
    assert r.status_code == 401
    r = client.post(
        f"/api/factors/{factor['id']}/confirm",
        json={"code": right},
        headers=bearer(start["mfa_token"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
