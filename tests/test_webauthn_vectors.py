"""The WebAuthn Level 3 test vectors (section 16: RP ID example.org, origin https://example.org),
each through our registration and authentication verification with its own challenge."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from fido2.webauthn import AttestationObject

from mfa.factors.base import Rejected
from mfa.factors.webauthn import (
    Ceremony,
    RelyingParty,
    StoredCredential,
    VerifiedAssertion,
    b64url,
    counter_regressed,
)

from .helpers import VECTORS

NOW = 1_700_000_000
RP_ID = "example.org"
ORIGIN = "https://example.org"

_ALL = {
    v["anchor"].removeprefix("sctn-test-vectors-"): v
    for v in json.loads((VECTORS / "webauthn" / "webauthn_l3_test_vectors.json").read_text())[
        "vectors"
    ]
    if "registration" in v
}

# Registered and then used: no attestation, self attestation, and attestation statements with
# a certificate (packed, apple, fido-u2f), for each algorithm we offer (ES256, EdDSA, RS256).
ACCEPTED = [
    "none-es256",
    "packed-self-es256",
    "none-es256-long-credential-id",
    "packed-es256",
    "packed-rs256",
    "packed-eddsa",
    "apple-es256",
    "fido-u2f-es256",
]
NOT_OFFERED = ["packed-es384", "packed-es512", "packed-ed448"]  # not in pubKeyCredParams
CROSS_ORIGIN = ["none-es256-crossOrigin", "none-es256-topOrigin"]
# We ask for no attestation (browsers then send "none"), but a statement that is sent must
# verify. fido2 2.2.1 has no android-key verifier, and refuses the TPM vector's certInfo: its
# TPMS_CLOCK_INFO.safe byte is 0x33, and a TPMI_YES_NO is 0 or 1 (TPM 2.0 part 2, 5.5).
UNVERIFIABLE_ATTESTATION = ["android-key-es256", "tpm-es256"]


def test_the_vector_lists_cover_every_vector():
    listed = ACCEPTED + NOT_OFFERED + CROSS_ORIGIN + UNVERIFIABLE_ATTESTATION
    assert sorted(listed) == sorted(_ALL)


@pytest.fixture(scope="module")
def rp() -> RelyingParty:
    return RelyingParty(RP_ID, "Example", (ORIGIN,))


def h2b(value: str) -> str:
    return b64url(bytes.fromhex(value))


def registration_json(vector: dict[str, Any]) -> dict[str, Any]:
    """The vector's registration as ``PublicKeyCredential.toJSON()`` would give it."""
    reg = vector["registration"]
    credential_id = h2b(reg["credential_id"])
    return {
        "id": credential_id,
        "rawId": credential_id,
        "type": "public-key",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": h2b(reg["clientDataJSON"]),
            "attestationObject": h2b(reg["attestationObject"]),
            "transports": ["usb"],
        },
    }


def assertion_json(vector: dict[str, Any]) -> dict[str, Any]:
    auth = vector["authentication"]
    credential_id = h2b(vector["registration"]["credential_id"])
    return {
        "id": credential_id,
        "rawId": credential_id,
        "type": "public-key",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": h2b(auth["clientDataJSON"]),
            "authenticatorData": h2b(auth["authenticatorData"]),
            "signature": h2b(auth["signature"]),
            "userHandle": None,
        },
    }


def registration_ceremony(vector: dict[str, Any], uv: str = "preferred") -> Ceremony:
    return Ceremony(h2b(vector["registration"]["challenge"]), uv, NOW + 300)


def assertion_ceremony(vector: dict[str, Any], uv: str = "preferred") -> Ceremony:
    allow = (h2b(vector["registration"]["credential_id"]),)
    return Ceremony(h2b(vector["authentication"]["challenge"]), uv, NOW + 300, allow)


def stored(vector: dict[str, Any]) -> StoredCredential:
    """The credential as registered, read straight from the attestation object (also for the
    vectors whose registration we refuse)."""
    auth_data = AttestationObject(bytes.fromhex(vector["registration"]["attestationObject"]))
    data = auth_data.auth_data
    assert data.credential_data is not None
    return StoredCredential(
        credential_id=data.credential_data.credential_id,
        public_key=bytes(data.credential_data),
        backup_eligible=data.is_backup_eligible(),
        user_handle=b"\x01" * 64,
    )


def rejection(fn: Any, *args: Any) -> str:
    with pytest.raises(Rejected) as e:
        fn(*args)
    return e.value.reason


@pytest.mark.parametrize("name", ACCEPTED)
def test_vector_registration_verifies(rp, name):
    vector = _ALL[name]
    check = vector["rp_check"]
    new = rp.verify_registration(registration_ceremony(vector), registration_json(vector))
    assert new.credential_id == bytes.fromhex(vector["registration"]["credential_id"])
    assert len(new.credential_id) == check["credentialId_len"]
    assert new.algorithm == check["cose_alg"]
    assert new.attestation_format == check["fmt"]
    assert new.aaguid.replace("-", "") == vector["registration"]["aaguid"]
    assert new.sign_count == check["signCount_reg"]
    flags = check["reg_flags"]
    assert (new.user_verified, new.backup_eligible, new.backed_up) == (
        flags["UV"],
        flags["BE"],
        flags["BS"],
    )
    assert new.transports == ("usb",)


@pytest.mark.parametrize("name", ACCEPTED)
def test_vector_assertion_verifies_against_the_registered_key(rp, name):
    vector = _ALL[name]
    check = vector["rp_check"]
    new = rp.verify_registration(registration_ceremony(vector), registration_json(vector))
    key = StoredCredential(new.credential_id, new.public_key, new.backup_eligible, b"\x01" * 64)
    result = rp.verify_assertion(assertion_ceremony(vector), assertion_json(vector), key)
    flags = check["auth_flags"]
    assert result == VerifiedAssertion(
        sign_count=check["signCount_auth"], user_verified=flags["UV"], backed_up=flags["BS"]
    )
    # Both counts are 0: an authenticator without a counter, which is not a clone signal.
    assert not counter_regressed(new.sign_count, result.sign_count)


@pytest.mark.parametrize("name", NOT_OFFERED)
def test_vector_registration_with_an_algorithm_we_did_not_offer_is_refused(rp, name):
    vector = _ALL[name]
    reason = rejection(
        rp.verify_registration, registration_ceremony(vector), registration_json(vector)
    )
    assert reason == "algorithm_not_offered"


@pytest.mark.parametrize("name", CROSS_ORIGIN)
def test_vector_ceremonies_in_a_cross_origin_iframe_are_refused(rp, name):
    vector = _ALL[name]
    reason = rejection(
        rp.verify_registration, registration_ceremony(vector), registration_json(vector)
    )
    assert reason == "cross_origin"
    reason = rejection(
        rp.verify_assertion, assertion_ceremony(vector), assertion_json(vector), stored(vector)
    )
    assert reason == "cross_origin"


@pytest.mark.parametrize("name", UNVERIFIABLE_ATTESTATION)
def test_vector_attestation_that_does_not_verify_here_is_refused(rp, name):
    vector = _ALL[name]
    reason = rejection(
        rp.verify_registration, registration_ceremony(vector), registration_json(vector)
    )
    assert reason in ("unsupported_attestation", "invalid_attestation")


@pytest.mark.parametrize("name", UNVERIFIABLE_ATTESTATION)
def test_vector_assertions_of_those_keys_still_verify(rp, name):
    # Attestation is about the registration; an assertion only needs the key.
    vector = _ALL[name]
    rp.verify_assertion(assertion_ceremony(vector), assertion_json(vector), stored(vector))


def _edit(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(data))
    *parents, last = path.split(".")
    target = copy
    for p in parents:
        target = target[p]
    target[last] = value
    return copy


@pytest.mark.parametrize(
    ("what", "change", "reason"),
    [
        ("another challenge", "challenge", "invalid_registration"),
        ("another origin", "origin", "invalid_registration"),
        ("another RP id", "rp", "invalid_registration"),
        ("UV required", "uv", "invalid_registration"),
        ("a create() answered with get() client data", "type", "invalid_registration"),
    ],
)
def test_vector_registration_is_refused_when_anything_differs(rp, what, change, reason):
    vector = _ALL["packed-self-es256"] if change != "uv" else _ALL["none-es256"]  # UV=0
    ceremony = registration_ceremony(vector)
    credential = registration_json(vector)
    party = rp
    if change == "challenge":
        ceremony = replace(ceremony, challenge=b64url(b"\x00" * 32))
    elif change == "origin":
        party = RelyingParty(RP_ID, "Example", ("https://example.com",))
    elif change == "rp":
        party = RelyingParty("example.com", "Example", (ORIGIN,))
    elif change == "uv":
        ceremony = replace(ceremony, user_verification="required")
    elif change == "type":
        credential = _edit(
            credential,
            "response.clientDataJSON",
            assertion_json(vector)["response"]["clientDataJSON"],
        )
    assert rejection(party.verify_registration, ceremony, credential) == reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("challenge", "invalid_assertion"),
        ("origin", "invalid_assertion"),
        ("rp", "invalid_assertion"),
        ("uv", "invalid_assertion"),
        ("signature", "invalid_assertion"),
        ("not allowed", "credential_not_allowed"),
        ("other key", "credential_mismatch"),
        ("user handle", "user_handle_mismatch"),
        ("type", "wrong_credential_type"),
        ("backup eligibility", "backup_eligibility_changed"),
    ],
)
def test_vector_assertion_is_refused_when_anything_differs(rp, change, reason):
    vector = _ALL["packed-es256"]  # UV=1, BE=1 at authentication
    ceremony = assertion_ceremony(vector)
    credential = assertion_json(vector)
    key = stored(vector)
    party = rp
    if change == "challenge":
        ceremony = replace(ceremony, challenge=b64url(b"\x00" * 32))
    elif change == "origin":
        party = RelyingParty(RP_ID, "Example", ("https://example.com",))
    elif change == "rp":
        party = RelyingParty("example.com", "Example", (ORIGIN,))
    elif change == "uv":
        vector = _ALL["packed-self-es256"]  # UV=0 at authentication
        ceremony = replace(assertion_ceremony(vector), user_verification="required")
        credential = assertion_json(vector)
        key = stored(vector)
    elif change == "signature":
        signature = bytearray(bytes.fromhex(vector["authentication"]["signature"]))
        signature[-1] ^= 1
        credential = _edit(credential, "response.signature", b64url(bytes(signature)))
    elif change == "not allowed":
        ceremony = replace(ceremony, allow=(b64url(b"another"),))
    elif change == "other key":
        key = stored(_ALL["none-es256"])
        ceremony = replace(ceremony, allow=(credential["rawId"],))
    elif change == "user handle":
        credential = _edit(credential, "response.userHandle", b64url(b"\x02" * 64))
    elif change == "type":
        credential = _edit(credential, "type", "password")
    elif change == "backup eligibility":
        key = replace(key, backup_eligible=False)
    assert rejection(party.verify_assertion, ceremony, credential, key) == reason


def test_an_expired_ceremony_is_refused():
    ceremony = registration_ceremony(_ALL["none-es256"])
    assert Ceremony.loads(ceremony.dumps(), NOW + 299) == ceremony
    assert rejection(Ceremony.loads, ceremony.dumps(), NOW + 300) == "challenge_expired"


@pytest.mark.parametrize(
    "kept",
    [None, "", "{", "[]", '{"type": "ocra"}', "question 123", '{"type": "webauthn"}'],
)
def test_no_ceremony_or_another_factors_question_is_refused(kept):
    assert rejection(Ceremony.loads, kept, NOW) == "no_challenge"


@pytest.mark.parametrize(
    ("stored_count", "new_count", "regressed"),
    [(0, 0, False), (0, 1, False), (5, 6, False), (5, 5, True), (5, 4, True), (5, 0, True)],
)
def test_the_signature_counter_rule_of_section_6_1_1(stored_count, new_count, regressed):
    assert counter_regressed(stored_count, new_count) is regressed
