"""Security keys over HTTP, on SQLite and PostgreSQL: registration and login journeys, and every
refusal (each a 401 ``verification_failed``, or a 400 for a body of the wrong shape; never a
500), with the audit log saying why."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mfa.app import create_app
from mfa.context import RequestMeta
from mfa.errors import VerificationFailed
from mfa.factors.webauthn import RelyingParty
from mfa.models import AuditEvent, Factor, WebauthnCredential, WebauthnUser
from mfa.services import login as login_service
from mfa.services import webauthn

from .helpers import Account, bearer, login, signup
from .softauthn import (
    Flag,
    InvalidStateError,
    SoftAuthenticator,
    SoftCredential,
    b64url_decode,
    b64url_encode,
    cbor_encode,
    client_data_json,
    new_private_key,
    sha256,
    with_flipped_flags,
)

ORIGIN = "http://localhost:8000"


# The journeys, step by step.


def create_key(client: TestClient, headers: dict[str, str], label: str = "key") -> dict[str, Any]:
    r = client.post("/api/factors", json={"type": "webauthn", "label": label}, headers=headers)
    assert r.status_code == 201, r.text
    factor: dict[str, Any] = r.json()
    return factor


def confirm(client: TestClient, headers: dict[str, str], factor_id: str, credential: Any) -> Any:
    return client.post(
        f"/api/factors/{factor_id}/confirm", json={"credential": credential}, headers=headers
    )


def first_key(client: TestClient, account: Account, authenticator: SoftAuthenticator) -> dict:
    """Register the account's first factor, a key, with the mfa_token of its first login."""
    start = login(client, account)
    assert start["enroll_required"] is True
    headers = bearer(start["mfa_token"])
    factor = create_key(client, headers, "first")
    r = confirm(
        client, headers, factor["id"], authenticator.make_credential(factor["publicKey"], ORIGIN)
    )
    assert r.status_code == 200, r.text
    account.tokens = r.json()
    return factor


def add_key(
    client: TestClient, account: Account, authenticator: SoftAuthenticator, label: str = "second"
) -> dict[str, Any]:
    factor = create_key(client, account.access, label)
    credential = authenticator.make_credential(factor["publicKey"], ORIGIN)
    r = confirm(client, account.access, factor["id"], credential)
    assert r.status_code == 200, r.text
    return factor


def request_options(client: TestClient, mfa_token: str, factor_id: str) -> dict[str, Any]:
    r = client.post("/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor_id})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "webauthn"
    options: dict[str, Any] = r.json()["publicKey"]
    return options


def verify(
    client: TestClient, mfa_token: str, credential: Any, factor_id: str | None = None
) -> Any:
    body: dict[str, Any] = {"mfa_token": mfa_token, "credential": credential}
    if factor_id is not None:
        body["factor_id"] = factor_id
    return client.post("/api/login/verify", json=body)


def log_in(
    client: TestClient,
    account: Account,
    authenticator: SoftAuthenticator,
    factor: dict[str, Any],
    **tamper: Any,
) -> Any:
    """Password, challenge, touch the key, verify (without factor_id: the credential names it)."""
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, factor["id"])
    return verify(client, mfa_token, authenticator.get_assertion(options, ORIGIN, **tamper))


def events(client: TestClient, event: str) -> list[dict[str, Any]]:
    with client.app.state.ctx.db.read() as s:  # type: ignore[attr-defined]
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
        )
        return [json.loads(e.detail) for e in rows]


def last_reason(client: TestClient) -> str:
    reason: str = events(client, "factor_failed")[-1]["reason"]
    return reason


def status_of(client: TestClient, factor_id: str) -> str:
    with client.app.state.ctx.db.read() as s:  # type: ignore[attr-defined]
        factor = s.get(Factor, factor_id)
        assert factor is not None
        return factor.status


def stored_credential(client: TestClient, factor_id: str) -> WebauthnCredential:
    with client.app.state.ctx.db.read() as s:  # type: ignore[attr-defined]
        row = s.get(WebauthnCredential, factor_id)
        assert row is not None
        return row


def refused(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "verification_failed"
    assert "access_token" not in r.json()


@pytest.fixture
def key() -> SoftAuthenticator:
    return SoftAuthenticator()


@pytest.fixture
def alice(client, key) -> tuple[Account, dict[str, Any]]:
    account = signup(client)
    return account, first_key(client, account, key)


# Registration


def test_the_first_key_is_registered_during_login_and_that_logs_in(client, key):
    account = signup(client)
    start = login(client, account)
    assert start["enroll_required"] is True
    factor = create_key(client, bearer(start["mfa_token"]))
    assert (factor["type"], factor["label"], factor["status"]) == ("webauthn", "key", "pending")
    options = factor["publicKey"]
    assert options["rp"] == {"id": "localhost", "name": "MFA"}
    assert options["user"]["name"] == "alice"
    assert len(b64url_decode(options["user"]["id"])) == 64
    assert b"alice" not in b64url_decode(options["user"]["id"])
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert {p["type"] for p in options["pubKeyCredParams"]} == {"public-key"}
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options.get("excludeCredentials", []) == []
    assert len(b64url_decode(options["challenge"])) >= 16
    assert options["timeout"] == 300_000

    credential = key.make_credential(options, ORIGIN)
    r = confirm(client, bearer(start["mfa_token"]), factor["id"], credential)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "active"
    assert body["amr"] == ["pwd", "hwk", "mfa"]
    assert body["transports"] == ["usb"]
    listed = client.get("/api/factors", headers=bearer(body["access_token"])).json()
    assert [(f["id"], f["status"]) for f in listed] == [(factor["id"], "active")]
    assert "public_key" not in listed[0]
    row = stored_credential(client, factor["id"])
    assert row.credential_id == b64url_decode(credential["rawId"])
    assert (row.sign_count, row.attestation_format, row.algorithm) == (0, "none", -7)


def test_the_user_handle_is_random_and_the_same_for_every_key_of_a_user(client, key):
    account = signup(client)
    first_key(client, account, key)
    second = create_key(client, account.access)
    bob = signup(client, "bob")
    bobs = create_key(client, bearer(login(client, bob)["mfa_token"]))
    with client.app.state.ctx.db.read() as s:
        handle = s.get(WebauthnUser, account.id).user_handle
    assert b64url_decode(second["publicKey"]["user"]["id"]) == handle
    assert b64url_decode(bobs["publicKey"]["user"]["id"]) != handle


def test_a_second_key_excludes_the_first_and_the_same_authenticator_refuses(client, alice, key):
    account, first = alice
    first_id = stored_credential(client, first["id"]).credential_id
    factor = create_key(client, account.access)
    excluded = factor["publicKey"]["excludeCredentials"]
    assert [(d["type"], b64url_decode(d["id"]), d["transports"]) for d in excluded] == [
        ("public-key", first_id, ["usb"])
    ]
    with pytest.raises(InvalidStateError):
        key.make_credential(factor["publicKey"], ORIGIN)
    other = SoftAuthenticator()
    r = confirm(
        client, account.access, factor["id"], other.make_credential(factor["publicKey"], ORIGIN)
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"


def registration_of(credential: SoftCredential, options: dict[str, Any]) -> dict[str, Any]:
    """A create() answer carrying a credential the authenticator already holds: what an
    authenticator that ignores excludeCredentials would send."""
    client_data = client_data_json("webauthn.create", options["challenge"], ORIGIN)
    auth_data = (
        sha256(b"localhost")
        + struct.pack(">BI", Flag.UP | Flag.AT, 0)
        + bytes(16)
        + struct.pack(">H", len(credential.credential_id))
        + credential.credential_id
        + credential.cose_public_key
    )
    encoded = b64url_encode(credential.credential_id)
    return {
        "id": encoded,
        "rawId": encoded,
        "type": "public-key",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": b64url_encode(client_data),
            "attestationObject": b64url_encode(
                cbor_encode({"fmt": "none", "attStmt": {}, "authData": auth_data})
            ),
            "transports": ["usb"],
        },
    }


def test_a_credential_registered_already_is_refused_by_the_server_too(client, alice, key):
    account, _ = alice
    factor = create_key(client, account.access)
    r = confirm(
        client,
        account.access,
        factor["id"],
        registration_of(key.credentials[0], factor["publicKey"]),
    )
    refused(r)
    assert last_reason(client) == "credential_registered"
    # Nor can another user register it.
    bob = signup(client, "bob")
    mfa_token = login(client, bob)["mfa_token"]
    factor = create_key(client, bearer(mfa_token))
    r = confirm(
        client,
        bearer(mfa_token),
        factor["id"],
        registration_of(key.credentials[0], factor["publicKey"]),
    )
    refused(r)
    assert last_reason(client) == "credential_registered"


def test_a_removed_key_takes_its_credential_with_it(client, alice):
    account, _ = alice
    other = SoftAuthenticator()
    second = add_key(client, account, other)
    r = client.delete(f"/api/factors/{second['id']}", headers=account.access)
    assert r.status_code == 204, r.text
    with client.app.state.ctx.db.read() as s:
        assert s.get(WebauthnCredential, second["id"]) is None
    # No longer excluded: the same authenticator may register (a new credential) again.
    factor = create_key(client, account.access)
    excluded = {b64url_decode(d["id"]) for d in factor["publicKey"]["excludeCredentials"]}
    assert other.credentials[0].credential_id not in excluded
    credential = other.make_credential(factor["publicKey"], ORIGIN)
    assert confirm(client, account.access, factor["id"], credential).status_code == 200


def _registration_refused(client, account, reason, authenticator=None, **tamper):
    factor = create_key(client, account.access)
    authenticator = authenticator or SoftAuthenticator()
    credential = authenticator.make_credential(factor["publicKey"], ORIGIN, **tamper)
    r = confirm(client, account.access, factor["id"], credential)
    refused(r)
    assert last_reason(client) == reason
    assert status_of(client, factor["id"]) == "pending"
    return factor, credential


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"origin_override": "https://evil.example"}, "invalid_registration"),
        ({"origin_override": "http://sub.localhost:8000"}, "invalid_registration"),
        ({"origin_override": "http://localhost:8001"}, "invalid_registration"),
        ({"rp_id_for_hash": "evil.example"}, "invalid_registration"),
        ({"client_data_type": "webauthn.get"}, "invalid_registration"),
        ({"challenge_override": b64url_encode(os.urandom(32))}, "invalid_registration"),
        ({"cross_origin": True}, "cross_origin"),
        ({"flags_xor": Flag.UP}, "invalid_registration"),
        ({"flags_xor": Flag.BS}, "backed_up_without_eligibility"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_registration_that_is_wrong_in_any_way_is_refused(client, alice, tamper, reason):
    account, _ = alice
    _registration_refused(client, account, reason, **tamper)


def test_a_packed_attestation_signed_by_another_key_is_refused(client, alice):
    account, _ = alice
    _registration_refused(
        client,
        account,
        "invalid_attestation",
        SoftAuthenticator(attestation="packed"),
        sign_with=new_private_key(),
    )


def test_a_packed_self_attestation_is_verified_and_accepted(client, alice):
    account, _ = alice
    factor = add_key(client, account, SoftAuthenticator(attestation="packed"))
    assert stored_credential(client, factor["id"]).attestation_format == "packed"


def test_a_registration_ceremony_is_answerable_once(client, alice):
    account, _ = alice
    authenticator = SoftAuthenticator()
    factor, _ = _registration_refused(
        client, account, "invalid_registration", authenticator, rp_id_for_hash="evil.example"
    )
    other = SoftAuthenticator()
    r = confirm(
        client, account.access, factor["id"], other.make_credential(factor["publicKey"], ORIGIN)
    )
    refused(r)
    assert last_reason(client) == "no_challenge"


def test_a_registration_ceremony_expires(client, clock, alice):
    account, _ = alice
    factor = create_key(client, account.access)
    credential = SoftAuthenticator().make_credential(factor["publicKey"], ORIGIN)
    clock.advance(300)
    refused(confirm(client, account.access, factor["id"], credential))
    assert last_reason(client) == "challenge_expired"


# Login


def test_login_with_either_key_both_being_allowed(client, alice, key):
    account, first = alice
    other = SoftAuthenticator(transports=("nfc", "usb"))
    second = add_key(client, account, other)
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, first["id"])
    assert options["rpId"] == "localhost"
    assert options["userVerification"] == "preferred"
    allowed = {
        (b64url_decode(d["id"]), tuple(d["transports"])) for d in options["allowCredentials"]
    }
    assert allowed == {
        (key.credentials[0].credential_id, ("usb",)),
        (other.credentials[0].credential_id, ("nfc", "usb")),
    }
    assert {d["type"] for d in options["allowCredentials"]} == {"public-key"}
    # The challenge named the first key; the second one answers it.
    r = verify(client, mfa_token, other.get_assertion(options, ORIGIN))
    assert r.status_code == 200, r.text
    assert r.json()["amr"] == ["pwd", "hwk", "mfa"]
    assert events(client, "factor_succeeded")[-1]["factor_id"] == second["id"]

    r = log_in(client, account, key, first)
    assert r.status_code == 200, r.text
    assert events(client, "factor_succeeded")[-1]["factor_id"] == first["id"]


def test_a_factor_id_may_be_given_and_must_be_the_credentials(client, alice, key):
    account, first = alice
    second = add_key(client, account, SoftAuthenticator())
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, first["id"])
    refused(verify(client, mfa_token, key.get_assertion(options, ORIGIN), factor_id=second["id"]))
    assert last_reason(client) == "credential_mismatch"
    options = request_options(client, mfa_token, first["id"])
    r = verify(client, mfa_token, key.get_assertion(options, ORIGIN), factor_id=first["id"])
    assert r.status_code == 200, r.text


def test_user_verification_adds_user_to_amr_and_is_remembered(client):
    key = SoftAuthenticator(user_verification=True)
    account = signup(client)
    factor = first_key(client, account, key)
    assert stored_credential(client, factor["id"]).user_verified is True
    r = log_in(client, account, key, factor)
    assert r.status_code == 200, r.text
    assert r.json()["amr"] == ["pwd", "hwk", "user", "mfa"]
    me = client.get("/api/me", headers=bearer(r.json()["access_token"])).json()
    assert me["amr"] == ["pwd", "hwk", "user", "mfa"]


def test_a_key_without_user_verification_works_under_the_default_policy(client, alice, key):
    account, factor = alice
    assert log_in(client, account, key, factor).status_code == 200


def test_the_counter_and_backup_state_are_kept(client):
    key = SoftAuthenticator(backup_eligible=True, counter_step=7)
    account = signup(client)
    factor = first_key(client, account, key)
    key.backed_up = True
    assert log_in(client, account, key, factor).status_code == 200
    row = stored_credential(client, factor["id"])
    assert (row.sign_count, row.backup_eligible, row.backed_up) == (7, True, True)
    assert row.last_used_at is not None


def test_a_key_without_a_counter_logs_in_again_and_again(client):
    key = SoftAuthenticator(counter_step=0)
    account = signup(client)
    factor = first_key(client, account, key)
    for _ in range(3):
        assert log_in(client, account, key, factor).status_code == 200
    assert status_of(client, factor["id"]) == "active"


# Refusals at login


def test_a_replayed_assertion_is_refused(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    assertion = key.get_assertion(request_options(client, mfa_token, factor["id"]), ORIGIN)
    assert verify(client, mfa_token, assertion).status_code == 200
    # In a new login, for a new challenge...
    mfa_token = login(client, account)["mfa_token"]
    request_options(client, mfa_token, factor["id"])
    refused(verify(client, mfa_token, assertion))
    assert last_reason(client) == "invalid_assertion"
    # ... or with no challenge asked at all.
    refused(verify(client, login(client, account)["mfa_token"], assertion))
    assert last_reason(client) == "no_challenge"


def test_an_assertion_for_another_challenge_is_refused(client, alice, key):
    account, factor = alice
    first_token = login(client, account)["mfa_token"]
    options = request_options(client, first_token, factor["id"])
    second_token = login(client, account)["mfa_token"]
    request_options(client, second_token, factor["id"])
    refused(verify(client, second_token, key.get_assertion(options, ORIGIN)))
    assert last_reason(client) == "invalid_assertion"


def test_a_newer_challenge_replaces_the_older(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    older = request_options(client, mfa_token, factor["id"])
    request_options(client, mfa_token, factor["id"])
    refused(verify(client, mfa_token, key.get_assertion(older, ORIGIN)))


def test_an_assertion_is_checked_once_and_on_sqlite_outside_the_writer_lock(
    client, alice, key, monkeypatch
):
    account, factor = alice
    db = client.app.state.ctx.db
    held: list[bool] = []
    real = RelyingParty.verify_assertion

    def watched(self: RelyingParty, *args: Any, **kwargs: Any) -> Any:
        # SQLite's writer lock, as this process holds it (``mfa.db._WriterLock``).
        held.append(db.is_sqlite and db._writer._threads.locked())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RelyingParty, "verify_assertion", watched)
    r = log_in(client, account, key, factor)
    assert r.status_code == 200, r.text
    assert held == [False]


def test_an_assertion_checked_early_is_not_taken_for_a_ceremony_that_changed_since(
    client, alice, key
):
    """``webauthn.precheck`` runs before the verify's transaction; a newer challenge asked in
    between must make the transaction check the assertion itself, and refuse it."""
    ctx = client.app.state.ctx
    if not ctx.db.is_sqlite:
        pytest.skip("assertions are checked early on SQLite only")
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    assertion = key.get_assertion(request_options(client, mfa_token, factor["id"]), ORIGIN)

    async def answer_after_a_newer_challenge() -> None:
        await webauthn.precheck(ctx, mfa_token, assertion)  # right for the first challenge
        request_options(client, mfa_token, factor["id"])
        login_service.verify(ctx, mfa_token, None, assertion, RequestMeta())

    with pytest.raises(VerificationFailed):
        asyncio.run(answer_after_a_newer_challenge())
    assert last_reason(client) == "invalid_assertion"


def test_a_challenge_is_spent_by_a_failed_answer_too(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, factor["id"])
    refused(
        verify(client, mfa_token, key.get_assertion(options, ORIGIN, sign_with=new_private_key()))
    )
    refused(verify(client, mfa_token, key.get_assertion(options, ORIGIN)))
    assert last_reason(client) == "no_challenge"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"origin_override": "https://evil.example"}, "invalid_assertion"),
        # fido2's own origin check would take a subdomain of the RP id; ours wants MFA_ORIGIN.
        ({"origin_override": "http://sub.localhost:8000"}, "invalid_assertion"),
        ({"origin_override": "http://localhost:8001"}, "invalid_assertion"),
        ({"rp_id_for_hash": "evil.example"}, "invalid_assertion"),
        ({"client_data_type": "webauthn.create"}, "invalid_assertion"),
        ({"challenge_override": b64url_encode(os.urandom(32))}, "invalid_assertion"),
        ({"flags_xor": Flag.UP}, "invalid_assertion"),
        ({"cross_origin": True}, "cross_origin"),
        ({"flags_xor": Flag.BS}, "backed_up_without_eligibility"),
        ({"flags_xor": Flag.BE | Flag.BS}, "backup_eligibility_changed"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_an_assertion_wrong_in_any_way_is_refused(client, alice, key, tamper, reason):
    account, factor = alice
    refused(log_in(client, account, key, factor, **tamper))
    assert last_reason(client) == reason
    assert status_of(client, factor["id"]) == "active"
    assert stored_credential(client, factor["id"]).sign_count == 0


def test_flags_changed_after_signing_are_refused(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    assertion = key.get_assertion(request_options(client, mfa_token, factor["id"]), ORIGIN)
    refused(verify(client, mfa_token, with_flipped_flags(assertion, Flag.UV)))
    assert last_reason(client) == "invalid_assertion"


def test_a_signature_by_another_key_over_the_same_credential_id_is_refused(client, alice, key):
    account, factor = alice
    refused(log_in(client, account, key, factor, sign_with=new_private_key()))
    assert last_reason(client) == "invalid_assertion"
    # A forged assertion neither moves the counter nor disables the key.
    assert stored_credential(client, factor["id"]).sign_count == 0
    assert status_of(client, factor["id"]) == "active"
    assert log_in(client, account, key, factor).status_code == 200


def test_a_missing_user_presence_is_refused(client, alice, key):
    account, factor = alice
    key.user_presence = False
    refused(log_in(client, account, key, factor))
    assert last_reason(client) == "invalid_assertion"


def test_a_user_handle_of_someone_else_is_refused(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    assertion = key.get_assertion(request_options(client, mfa_token, factor["id"]), ORIGIN)
    assertion["response"]["userHandle"] = b64url_encode(os.urandom(64))
    refused(verify(client, mfa_token, assertion))
    assert last_reason(client) == "user_handle_mismatch"


def test_a_wrong_credential_type_is_refused(client, alice, key):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    assertion = key.get_assertion(request_options(client, mfa_token, factor["id"]), ORIGIN)
    refused(verify(client, mfa_token, {**assertion, "type": "password"}))
    assert last_reason(client) == "wrong_credential_type"


def test_a_counter_that_goes_back_disables_the_key(client, alice, key):
    account, factor = alice
    assert log_in(client, account, key, factor).status_code == 200  # counter 1
    assert log_in(client, account, key, factor).status_code == 200  # counter 2
    key.set_sign_count(key.credentials[0].credential_id, 1)
    refused(log_in(client, account, key, factor))  # counter 2 again
    assert last_reason(client) == "sign_count_not_increased"
    assert status_of(client, factor["id"]) == "disabled"
    disabled = events(client, "factor_disabled")
    assert disabled == [
        {"factor_id": factor["id"], "factor_type": "webauthn", "reason": "sign_count_not_increased"}
    ]
    listed = client.get("/api/factors", headers=account.access).json()
    assert [f["status"] for f in listed] == ["disabled"]
    # Even a counter far ahead is no longer accepted from this key.
    key.set_sign_count(key.credentials[0].credential_id, 1000)
    mfa_token = login(client, account)["mfa_token"]
    assert login(client, account)["factors"] == []
    r = client.post(
        "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor["id"]}
    )
    assert r.status_code == 404
    fake = {"challenge": b64url_encode(os.urandom(32)), "rpId": "localhost"}
    answer = key.get_assertion(fake, ORIGIN, credential_id=key.credentials[0].credential_id)
    refused(verify(client, mfa_token, answer))
    assert last_reason(client) == "unknown_factor"


def test_a_cloned_key_is_caught_when_the_original_is_used_after_the_clone(client, alice, key):
    account, factor = alice
    clone = key.clone()
    assert log_in(client, account, clone, factor).status_code == 200  # clone: counter 1
    refused(log_in(client, account, key, factor))  # original: counter 1 again
    assert status_of(client, factor["id"]) == "disabled"
    assert events(client, "factor_disabled")[-1]["factor_id"] == factor["id"]


def test_disabling_one_key_leaves_the_others(client, alice, key):
    account, factor = alice
    other = SoftAuthenticator()
    second = add_key(client, account, other)
    assert log_in(client, account, key, factor).status_code == 200
    key.set_sign_count(key.credentials[0].credential_id, 0)
    refused(log_in(client, account, key, factor))
    assert status_of(client, factor["id"]) == "disabled"
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, second["id"])
    assert [b64url_decode(d["id"]) for d in options["allowCredentials"]] == [
        other.credentials[0].credential_id
    ]
    assert verify(client, mfa_token, other.get_assertion(options, ORIGIN)).status_code == 200


def test_another_users_key_is_refused(client, alice):
    account, factor = alice
    bob = signup(client, "bob")
    bobs_key = SoftAuthenticator()
    first_key(client, bob, bobs_key)
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, factor["id"])
    answer = bobs_key.get_assertion(
        options, ORIGIN, credential_id=bobs_key.credentials[0].credential_id
    )
    refused(verify(client, mfa_token, answer))
    assert last_reason(client) == "unknown_factor"
    options = request_options(client, mfa_token, factor["id"])
    answer = bobs_key.get_assertion(
        options, ORIGIN, credential_id=bobs_key.credentials[0].credential_id
    )
    refused(verify(client, mfa_token, answer, factor_id=factor["id"]))
    assert last_reason(client) == "credential_not_allowed"


def test_a_key_registered_after_the_challenge_was_not_allowed(client, alice):
    account, factor = alice
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, factor["id"])
    late = SoftAuthenticator()
    add_key(client, account, late)
    refused(
        verify(
            client,
            mfa_token,
            late.get_assertion(options, ORIGIN, credential_id=late.credentials[0].credential_id),
        )
    )
    assert last_reason(client) == "credential_not_allowed"


def test_refusals_count_toward_the_throttle(client, alice, key):
    account, factor = alice
    for tamper in (
        {"sign_with": new_private_key()},
        {"origin_override": "https://evil.example"},
        {"rp_id_for_hash": "evil.example"},
        {"cross_origin": True},
        {"flags_xor": Flag.UP},
    ):
        refused(log_in(client, account, key, factor, **tamper))
    r = log_in(client, account, key, factor)
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_attempts"


@pytest.fixture
def uv_required(settings, clock) -> Iterator[TestClient]:
    strict = dataclasses.replace(settings, webauthn_user_verification="required")
    with TestClient(create_app(strict, clock=clock), base_url=ORIGIN) as c:
        yield c


def test_user_verification_required_refuses_keys_that_do_not_verify(uv_required):
    client = uv_required
    key = SoftAuthenticator(user_verification=False)
    account = signup(client)
    start = login(client, account)
    factor = create_key(client, bearer(start["mfa_token"]))
    assert factor["publicKey"]["authenticatorSelection"]["userVerification"] == "required"
    refused(
        confirm(
            client,
            bearer(start["mfa_token"]),
            factor["id"],
            key.make_credential(factor["publicKey"], ORIGIN),
        )
    )
    assert last_reason(client) == "invalid_registration"

    key = SoftAuthenticator(user_verification=True)
    factor = first_key(client, account, key)
    key.user_verification = False
    mfa_token = login(client, account)["mfa_token"]
    options = request_options(client, mfa_token, factor["id"])
    assert options["userVerification"] == "required"
    refused(verify(client, mfa_token, key.get_assertion(options, ORIGIN)))
    assert last_reason(client) == "invalid_assertion"
    key.user_verification = True
    r = log_in(client, account, key, factor)
    assert r.status_code == 200, r.text
    assert r.json()["amr"] == ["pwd", "hwk", "user", "mfa"]


# Junk


def _mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(data))
    *parents, last = path.split(".")
    target = copy
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return copy


_DELETE = object()
_B64_JUNK = [
    b64url_encode(b"junk"),
    b64url_encode(b"\x00" * 37),
    b64url_encode(b'{"type":"webauthn.get"}'),
    b64url_encode(b"[]"),
    b64url_encode(b"\xff\xfe"),
    b64url_encode(os.urandom(300)),
]
_SHAPE_JUNK = [None, 5, True, [], {}, "", "@@@", "a", "AAAA=", "A" * 20_000]
_COMMON = ["id", "rawId", "response.clientDataJSON"]
_JUNK_CASES = (
    [(f, v) for f in _COMMON for v in [*_SHAPE_JUNK, *_B64_JUNK, _DELETE]]
    + [("type", v) for v in [None, 5, "", "public-key ", "x" * 100, _DELETE]]
    + [("response", v) for v in [None, "x", [], {}, _DELETE]]
    + [("authenticatorAttachment", v) for v in [5, "x" * 100, "junk"]]
    + [("clientExtensionResults", v) for v in [None, "x", [], {"appid": "x"}]]
)
_ASSERTION_JUNK = [
    *_JUNK_CASES,
    *[
        (f"response.{f}", v)
        for f in ("authenticatorData", "signature")
        for v in [*_SHAPE_JUNK, *_B64_JUNK, _DELETE]
    ],
    *[("response.userHandle", v) for v in [5, "", "@@@", *_B64_JUNK]],
]
_REGISTRATION_JUNK = [
    *_JUNK_CASES,
    *[("response.attestationObject", v) for v in [*_SHAPE_JUNK, *_B64_JUNK, _DELETE]],
    *[
        ("response.attestationObject", b64url_encode(cbor_encode(v)))
        for v in [{}, [], {"fmt": "none"}, {"fmt": 5, "attStmt": {}, "authData": b""}]
    ],
    *[("response.transports", v) for v in ["usb", [5], ["x" * 100], ["\u0000"], _DELETE]],
    *[("response.publicKeyAlgorithm", v) for v in ["x", 1.5, _DELETE]],
]


def _case(path: str, value: Any) -> str:
    return f"{path} = {'(deleted)' if value is _DELETE else repr(value)[:40]}"


def _sane_refusal(r: Any, case: str) -> None:
    assert r.status_code in (400, 401), f"{case}: {r.status_code} {r.text}"
    assert set(r.json()) == {"error", "message"}, case
    assert r.json()["error"] in ("invalid_request", "verification_failed"), case


# Fields we read nothing from (an unknown attachment, extension outputs we did not ask for,
# transports we drop when they are junk) may be anything: those answers may still pass.
_LENIENT = (
    "authenticatorAttachment",
    "clientExtensionResults",
    "response.transports",
    "response.publicKeyAlgorithm",
)


def test_junk_in_any_field_of_an_assertion_is_refused(subtests, client, alice, key):
    account, factor = alice
    mfa_token, failures = None, 0
    for path, value in _ASSERTION_JUNK:
        if mfa_token is None or failures == 4:
            if mfa_token is not None:
                # A right answer resets the throttle (and spends this login).
                options = request_options(client, mfa_token, factor["id"])
                assert (
                    verify(client, mfa_token, key.get_assertion(options, ORIGIN)).status_code == 200
                )
            mfa_token, failures = login(client, account)["mfa_token"], 0
        with subtests.test(_case(path, value)):
            options = request_options(client, mfa_token, factor["id"])
            assertion = key.get_assertion(options, ORIGIN)
            r = verify(client, mfa_token, _mutate(assertion, path, value))
            if r.status_code == 200:
                assert path in _LENIENT
                mfa_token = None
                continue
            failures += r.status_code == 401
            _sane_refusal(r, _case(path, value))


def test_junk_in_any_field_of_a_registration_is_refused(subtests, client, alice):
    account, _ = alice
    for path, value in _REGISTRATION_JUNK:
        with subtests.test(_case(path, value)):
            factor = create_key(client, account.access)
            credential = SoftAuthenticator().make_credential(factor["publicKey"], ORIGIN)
            r = confirm(client, account.access, factor["id"], _mutate(credential, path, value))
            if r.status_code == 200:
                assert path in _LENIENT
            else:
                _sane_refusal(r, _case(path, value))
                assert status_of(client, factor["id"]) == "pending"
            client.delete(f"/api/factors/{factor['id']}", headers=account.access)
