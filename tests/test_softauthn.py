"""The software authenticator, checked against python-fido2 (the only place fido2 checks it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fido2 import cbor
from fido2.attestation import AttestationType, InvalidSignature, PackedAttestation
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    RegistrationResponse,
)

from .softauthn import (
    Flag,
    InvalidStateError,
    NotAllowedError,
    NotSupportedError,
    SecurityError,
    SoftAuthenticator,
    b64url_decode,
    b64url_encode,
    cbor_encode,
    new_private_key,
    with_flipped_flags,
)

RP = {"id": "example.com", "name": "Example"}
ORIGIN = "https://example.com"
USER = {"id": b"user-1", "name": "alice", "displayName": "Alice"}


def options_json(options: Any) -> dict[str, Any]:
    """What the relying party sends to the browser."""
    return json.loads(json.dumps(dict(options)))


def register(
    server: Fido2Server, authenticator: SoftAuthenticator, **begin: Any
) -> tuple[AuthenticatorData, dict[str, Any]]:
    options, state = server.register_begin(USER, **begin)
    response = authenticator.make_credential(options_json(options), ORIGIN)
    return server.register_complete(state, response), response


def authenticate(
    server: Fido2Server,
    authenticator: SoftAuthenticator,
    credential: AttestedCredentialData,
    **tamper: Any,
) -> tuple[AttestedCredentialData, dict[str, Any]]:
    options, state = server.authenticate_begin([credential])
    response = authenticator.get_assertion(options_json(options), ORIGIN, **tamper)
    return server.authenticate_complete(state, [credential], response), response


def assertion_auth_data(response: dict[str, Any]) -> AuthenticatorData:
    return AuthenticatorData(b64url_decode(response["response"]["authenticatorData"]))


@pytest.fixture
def server() -> Fido2Server:
    return Fido2Server(RP)


# CBOR


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # RFC 8949, Appendix A
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (100, "1864"),
        (1000, "1903e8"),
        (1000000, "1a000f4240"),
        (1000000000000, "1b000000e8d4a51000"),
        (-1, "20"),
        (-10, "29"),
        (-100, "3863"),
        (-1000, "3903e7"),
        (False, "f4"),
        (True, "f5"),
        (None, "f6"),
        ("", "60"),
        ("IETF", "6449455446"),
        ("\u00fc", "62c3bc"),
        (b"", "40"),
        (b"\x01\x02\x03\x04", "4401020304"),
        ([], "80"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
        ({}, "a0"),
        ({1: 2, 3: 4}, "a201020304"),
        ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    ],
)
def test_cbor_encoding_matches_rfc8949_examples(value: Any, expected: str) -> None:
    assert cbor_encode(value).hex() == expected


def test_cbor_map_keys_are_in_deterministic_order() -> None:
    encoded = cbor_encode({"authData": b"", "fmt": "none", -3: 0, "attStmt": {}, 1: 0, -1: 0})
    assert list(cbor.decode(encoded)) == [1, -1, -3, "fmt", "attStmt", "authData"]


def test_b64url_has_no_padding_and_rejects_standard_alphabet() -> None:
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"
    for bad in ("+/8", "-_8 ", "a"):
        with pytest.raises(TypeError):
            b64url_decode(bad)


# Registration


def test_registration_with_none_attestation_is_accepted_by_fido2(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    auth_data, response = register(server, authenticator)

    held = authenticator.credentials[0]
    assert auth_data.credential_data is not None
    assert auth_data.credential_data.credential_id == held.credential_id
    assert 16 <= len(held.credential_id) <= 32
    assert cbor.encode(auth_data.credential_data.public_key) == held.cose_public_key
    assert auth_data.counter == 0
    attestation = AttestationObject(b64url_decode(response["response"]["attestationObject"]))
    assert (attestation.fmt, attestation.att_stmt) == ("none", {})


def test_registration_with_packed_self_attestation_verifies(server: Fido2Server) -> None:
    results = []

    def verify(attestation: AttestationObject, client_data_hash: bytes) -> None:
        results.append(
            PackedAttestation().verify(
                attestation.att_stmt, attestation.auth_data, client_data_hash
            )
        )

    server = Fido2Server(RP, attestation="direct", verify_attestation=verify)
    _, response = register(server, SoftAuthenticator(attestation="packed"))

    attestation = AttestationObject(b64url_decode(response["response"]["attestationObject"]))
    assert attestation.fmt == "packed"
    assert attestation.att_stmt["alg"] == -7
    assert [r.attestation_type for r in results] == [AttestationType.SELF]


def test_packed_attestation_signed_with_another_key_fails_verification() -> None:
    options, _ = Fido2Server(RP).register_begin(USER)
    response = SoftAuthenticator(attestation="packed").make_credential(
        options_json(options), ORIGIN, sign_with=new_private_key()
    )
    parsed = RegistrationResponse.from_dict(response).response
    attestation, client_data_hash = parsed.attestation_object, parsed.client_data.hash
    with pytest.raises(InvalidSignature):
        PackedAttestation().verify(attestation.att_stmt, attestation.auth_data, client_data_hash)


def test_registration_json_has_the_browser_shape(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    _, response = register(server, authenticator)
    held = authenticator.credentials[0]

    assert list(response) == [
        "id",
        "rawId",
        "type",
        "authenticatorAttachment",
        "clientExtensionResults",
        "response",
    ]
    assert response["id"] == response["rawId"] == b64url_encode(held.credential_id)
    assert (response["type"], response["authenticatorAttachment"]) == (
        "public-key",
        "cross-platform",
    )
    assert response["clientExtensionResults"] == {}
    body = response["response"]
    assert body["transports"] == ["usb"]
    assert body["publicKeyAlgorithm"] == -7
    public_key = serialization.load_der_public_key(b64url_decode(body["publicKey"]))
    assert public_key == held.public_key
    attestation = AttestationObject(b64url_decode(body["attestationObject"]))
    assert bytes(attestation.auth_data) == b64url_decode(body["authenticatorData"])
    assert not any("=" in v for v in body.values() if isinstance(v, str))


def test_client_data_json_is_compact_like_a_browser(server: Fido2Server) -> None:
    options, _ = server.register_begin(USER, challenge=b"c" * 16)
    response = SoftAuthenticator().make_credential(options_json(options), ORIGIN)
    assert b64url_decode(response["response"]["clientDataJSON"]) == (
        b'{"type":"webauthn.create","challenge":"Y2NjY2NjY2NjY2NjY2NjYw",'
        b'"origin":"https://example.com","crossOrigin":false}'
    )


def test_excluded_credential_makes_registration_raise(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    with pytest.raises(InvalidStateError):
        register(server, authenticator, credentials=[auth_data.credential_data])
    assert len(authenticator.credentials) == 1


def test_excluded_credential_of_another_authenticator_does_not_matter(server: Fido2Server) -> None:
    auth_data, _ = register(server, SoftAuthenticator())
    assert auth_data.credential_data is not None
    register(server, SoftAuthenticator(), credentials=[auth_data.credential_data])


def test_registration_without_es256_offered_raises(server: Fido2Server) -> None:
    options = options_json(server.register_begin(USER)[0])
    options["publicKey"]["pubKeyCredParams"] = [{"type": "public-key", "alg": -257}]
    with pytest.raises(NotSupportedError):
        SoftAuthenticator().make_credential(options, ORIGIN)


def test_registration_requires_the_user_members_a_browser_requires(server: Fido2Server) -> None:
    options = options_json(server.register_begin({"id": b"u", "name": "alice"})[0])
    with pytest.raises(TypeError, match="displayName"):
        SoftAuthenticator().make_credential(options, ORIGIN)


def test_rp_id_defaults_to_the_origin_host(server: Fido2Server) -> None:
    options, state = server.register_begin(USER)
    body = options_json(options)
    del body["publicKey"]["rp"]["id"]
    auth_data = server.register_complete(state, SoftAuthenticator().make_credential(body, ORIGIN))
    assert auth_data.rp_id_hash == server.rp.id_hash


@pytest.mark.parametrize("origin", ["https://example.org", "http://example.com"])
def test_origin_that_may_not_use_the_rp_id_raises(server: Fido2Server, origin: str) -> None:
    options = options_json(server.register_begin(USER)[0])
    with pytest.raises(SecurityError):
        SoftAuthenticator().make_credential(options, origin)


def test_aaguid_is_anonymised_unless_attestation_is_requested() -> None:
    aaguid = bytes(range(16))
    _, quiet = register(Fido2Server(RP), SoftAuthenticator(aaguid=aaguid, attestation="packed"))
    _, loud = register(
        Fido2Server(RP, attestation="direct"), SoftAuthenticator(aaguid=aaguid, attestation="none")
    )
    quiet_object = AttestationObject(b64url_decode(quiet["response"]["attestationObject"]))
    loud_object = AttestationObject(b64url_decode(loud["response"]["attestationObject"]))
    assert quiet_object.fmt == "none"
    assert quiet_object.auth_data.credential_data is not None
    assert quiet_object.auth_data.credential_data.aaguid == bytes(16)
    assert loud_object.auth_data.credential_data is not None
    assert loud_object.auth_data.credential_data.aaguid == aaguid


# Authentication


def test_assertion_is_accepted_by_fido2(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    credential, response = authenticate(server, authenticator, auth_data.credential_data)
    assert credential == auth_data.credential_data
    assert list(response["response"]) == [
        "clientDataJSON",
        "authenticatorData",
        "signature",
        "userHandle",
    ]
    assert response["response"]["userHandle"] is None


def test_discoverable_credential_is_found_without_allow_list_and_returns_user_handle(
    server: Fido2Server,
) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator, resident_key_requirement="required")
    assert auth_data.credential_data is not None
    options, state = server.authenticate_begin()
    response = authenticator.get_assertion(options_json(options), ORIGIN)
    server.authenticate_complete(state, [auth_data.credential_data], response)
    assert b64url_decode(response["response"]["userHandle"]) == USER["id"]


def test_no_matching_credential_raises_not_allowed(server: Fido2Server) -> None:
    auth_data, _ = register(server, SoftAuthenticator())
    assert auth_data.credential_data is not None
    options, _ = server.authenticate_begin([auth_data.credential_data])
    with pytest.raises(NotAllowedError):
        SoftAuthenticator().get_assertion(options_json(options), ORIGIN)


@pytest.mark.parametrize(("step", "expected"), [(1, [1, 2, 3]), (0, [0, 0, 0]), (7, [7, 14, 21])])
def test_counter_goes_up_by_counter_step(
    server: Fido2Server, step: int, expected: list[int]
) -> None:
    authenticator = SoftAuthenticator(counter_step=step)
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    counters = [
        assertion_auth_data(authenticate(server, authenticator, auth_data.credential_data)[1])
        for _ in range(3)
    ]
    assert [c.counter for c in counters] == expected


def test_counter_can_be_set_backwards(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    credential_id = auth_data.credential_data.credential_id
    authenticator.set_sign_count(credential_id, 10)
    _, response = authenticate(server, authenticator, auth_data.credential_data)
    assert assertion_auth_data(response).counter == 11
    authenticator.set_sign_count(credential_id, 2)
    _, response = authenticate(server, authenticator, auth_data.credential_data)
    assert assertion_auth_data(response).counter == 3


def test_clone_shares_the_credential_but_not_the_counter(server: Fido2Server) -> None:
    original = SoftAuthenticator()
    auth_data, _ = register(server, original)
    assert auth_data.credential_data is not None
    twin = original.clone()
    for _ in range(3):
        authenticate(server, original, auth_data.credential_data)
    _, response = authenticate(server, twin, auth_data.credential_data)
    assert assertion_auth_data(response).counter == 1
    assert original.credentials[0].sign_count == 3


# Flags


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"user_verification": True},
        {"user_presence": False},
        {"backup_eligible": True},
        {"backup_eligible": True, "backed_up": True},
    ],
)
def test_flags_come_out_as_configured(settings: dict[str, bool]) -> None:
    server = Fido2Server(RP)
    authenticator = SoftAuthenticator(**settings)
    options, _ = server.register_begin(USER)
    registration = authenticator.make_credential(options_json(options), ORIGIN)
    options, _ = server.authenticate_begin()
    assertion = authenticator.get_assertion(
        options_json(options), ORIGIN, credential_id=authenticator.credentials[0].credential_id
    )

    registered = RegistrationResponse.from_dict(registration).response.attestation_object
    asserted = assertion_auth_data(assertion)
    for auth_data in (registered.auth_data, asserted):
        assert auth_data.is_user_present() == settings.get("user_presence", True)
        assert auth_data.is_user_verified() == settings.get("user_verification", False)
        assert auth_data.is_backup_eligible() == settings.get("backup_eligible", False)
        assert auth_data.is_backed_up() == settings.get("backed_up", False)
        assert not auth_data.has_extension_data()
    assert registered.auth_data.is_attested()
    assert not asserted.is_attested()


def test_missing_user_presence_is_refused_by_fido2(server: Fido2Server) -> None:
    with pytest.raises(ValueError, match="User Present"):
        register(server, SoftAuthenticator(user_presence=False))


def test_missing_user_verification_is_refused_when_required(server: Fido2Server) -> None:
    with pytest.raises(ValueError, match="User verification required"):
        register(server, SoftAuthenticator(), user_verification="required")
    register(server, SoftAuthenticator(user_verification=True), user_verification="required")


# Tampering


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ({"origin_override": "https://evil.example"}, "Invalid origin"),
        ({"rp_id_for_hash": "evil.example"}, "Wrong RP ID hash"),
        ({"client_data_type": "webauthn.create"}, "Incorrect type"),
        ({"challenge_override": b64url_encode(b"x" * 32)}, "Wrong challenge"),
        ({"sign_with": new_private_key()}, "Invalid signature"),
        ({"flags_xor": Flag.UP}, "User Present"),
    ],
)
def test_tampered_assertion_is_refused_by_fido2(
    server: Fido2Server, tamper: dict[str, Any], error: str
) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    with pytest.raises(ValueError, match=error):
        authenticate(server, authenticator, auth_data.credential_data, **tamper)


def test_flags_flipped_after_signing_break_the_signature(server: Fido2Server) -> None:
    authenticator = SoftAuthenticator()
    auth_data, _ = register(server, authenticator)
    assert auth_data.credential_data is not None
    options, state = server.authenticate_begin([auth_data.credential_data])
    response = authenticator.get_assertion(options_json(options), ORIGIN)
    with pytest.raises(ValueError, match="Invalid signature"):
        server.authenticate_complete(
            state, [auth_data.credential_data], with_flipped_flags(response, Flag.UV)
        )


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ({"origin_override": "https://evil.example"}, "Invalid origin"),
        ({"rp_id_for_hash": "evil.example"}, "Wrong RP ID hash"),
        ({"client_data_type": "webauthn.get"}, "Incorrect type"),
        ({"challenge_override": b64url_encode(b"x" * 32)}, "Wrong challenge"),
    ],
)
def test_tampered_registration_is_refused_by_fido2(
    server: Fido2Server, tamper: dict[str, Any], error: str
) -> None:
    options, state = server.register_begin(USER)
    response = SoftAuthenticator().make_credential(options_json(options), ORIGIN, **tamper)
    with pytest.raises(ValueError, match=error):
        server.register_complete(state, response)


def test_cross_origin_is_reported_in_client_data(server: Fido2Server) -> None:
    options, _ = server.register_begin(USER)
    response = SoftAuthenticator().make_credential(options_json(options), ORIGIN, cross_origin=True)
    client_data = json.loads(b64url_decode(response["response"]["clientDataJSON"]))
    assert client_data["crossOrigin"] is True
