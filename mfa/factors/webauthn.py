"""FIDO2/WebAuthn security keys: the relying party's two ceremonies, on python-fido2.

``Fido2Server`` checks what WebAuthn Level 3 sections 7.1 (registration) and 7.2 (authentication)
ask of the client data, the RP id hash, the UP flag, UV when required, and the signature. This
module adds what it leaves to the caller: the exact origin (fido2's default also takes subdomains
and http://localhost), cross-origin use, the credential's type, that an assertion's credential was
in ``allowCredentials`` and belongs to the user, the algorithm against ``pubKeyCredParams``, the
attestation statement, the backup flags, and the signature counter rule (section 6.1.1); the
counter's storage and the single use are the handler's (``mfa.services.webauthn``).

Pure: no database, no Starlette. Every refusal is ``Rejected`` with a reason for the audit log;
no input, however malformed, escapes as another exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fido2.attestation.base import Attestation, UnsupportedType
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from pydantic import ValidationError

from .. import fido2_hints
from ..schemas import AssertionCredential, RegistrationCredential
from .base import Rejected

fido2_hints.install()

# COSE algorithms offered in pubKeyCredParams, in order of preference (RFC 9053, RFC 8812):
# ES256, EdDSA (Ed25519), RS256 (still the only one of some Windows Hello keys).
ALGORITHMS: tuple[int, ...] = (-7, -8, -257)
# How long a ceremony may take, from options to answer; also the `timeout` hint sent to the
# browser (section 5.4: 300000 ms is the recommended default when UV is not discouraged).
CEREMONY_SECONDS = 300
MAX_CREDENTIAL_ID_BYTES = 1023  # section 5.1.3
USER_HANDLE_BYTES = 64  # section 14.6.1: 64 random bytes
PUBLIC_KEY = "public-key"
_TRANSPORT = re.compile(r"[a-z0-9-]{1,32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def new_user_handle() -> bytes:
    """A user handle: random, so it carries nothing personal and links no two services."""
    return os.urandom(USER_HANDLE_BYTES)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """Strict base64url without padding, as WebAuthn's JSON uses it (section 5.1)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Rejected("malformed_credential")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Rejected("malformed_credential") from None


def clean_transports(values: Sequence[Any] | None) -> tuple[str, ...]:
    """The transports worth storing: short tokens like ``usb`` or ``hybrid``. Unknown ones are
    kept (section 5.8.4 asks clients to ignore what they do not know), junk is dropped."""
    seen: list[str] = []
    for value in values or ():
        if isinstance(value, str) and _TRANSPORT.fullmatch(value) and value not in seen:
            seen.append(value)
    return tuple(seen[:8])


@dataclass(frozen=True)
class KeyDescriptor:
    """A registered credential as ``excludeCredentials`` and ``allowCredentials`` name it."""

    credential_id: bytes
    transports: tuple[str, ...] = ()

    def fido2(self) -> PublicKeyCredentialDescriptor:
        return PublicKeyCredentialDescriptor(
            type=PublicKeyCredentialType.PUBLIC_KEY,
            id=self.credential_id,
            transports=list(self.transports) or None,  # type: ignore[arg-type]
        )


_CEREMONY_FIELDS = ("challenge", "user_verification", "expires_at")


@dataclass(frozen=True)
class Ceremony:
    """What the server keeps between the options and the answer: the challenge, the UV policy
    it was asked under, when it stops being answerable, and (for a login) the credential ids
    that ``allowCredentials`` listed."""

    challenge: str  # base64url
    user_verification: str
    expires_at: int
    allow: tuple[str, ...] | None = None

    def dumps(self) -> str:
        data: dict[str, Any] = {
            "type": "webauthn",
            "challenge": self.challenge,
            "user_verification": self.user_verification,
            "expires_at": self.expires_at,
        }
        if self.allow is not None:
            data["allow"] = list(self.allow)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None, now: int) -> Ceremony:
        """The open ceremony kept in ``text``; refused when there is none or it expired."""
        if not text:
            raise Rejected("no_challenge")
        try:
            data = json.loads(text)
        except ValueError:
            raise Rejected("no_challenge") from None
        if not isinstance(data, dict) or data.get("type") != "webauthn":
            raise Rejected("no_challenge")  # another factor's question
        challenge, uv, expires_at = (data.get(k) for k in _CEREMONY_FIELDS)
        if not (isinstance(challenge, str) and isinstance(uv, str) and isinstance(expires_at, int)):
            raise Rejected("no_challenge")
        if expires_at <= now:
            raise Rejected("challenge_expired")
        allow = data.get("allow")
        return cls(
            challenge=challenge,
            user_verification=uv,
            expires_at=expires_at,
            allow=tuple(str(a) for a in allow) if isinstance(allow, list) else None,
        )

    def fido2_state(self) -> dict[str, Any]:
        return {"challenge": self.challenge, "user_verification": self.user_verification}


@dataclass(frozen=True)
class NewCredential:
    """A verified registration, as the credential table stores it."""

    credential_id: bytes
    public_key: bytes  # AttestedCredentialData
    algorithm: int
    aaguid: str
    sign_count: int
    transports: tuple[str, ...]
    backup_eligible: bool
    backed_up: bool
    user_verified: bool
    attestation_format: str


@dataclass(frozen=True)
class StoredCredential:
    """What an assertion is checked against."""

    credential_id: bytes
    public_key: bytes  # AttestedCredentialData
    backup_eligible: bool
    user_handle: bytes


@dataclass(frozen=True)
class VerifiedAssertion:
    """A verified assertion: the counter and flags the caller still has to act on."""

    sign_count: int
    user_verified: bool
    backed_up: bool


def counter_regressed(stored: int, new: int) -> bool:
    """Section 6.1.1 and 7.2 step 22: when either count is non-zero, the new one must be greater;
    otherwise the authenticator may have been cloned."""
    return (stored != 0 or new != 0) and new <= stored


def parse_registration(credential: Mapping[str, Any]) -> RegistrationCredential:
    try:
        return RegistrationCredential.model_validate(credential)
    except ValidationError:
        raise Rejected("malformed_credential") from None


def parse_assertion(credential: Mapping[str, Any]) -> AssertionCredential:
    try:
        return AssertionCredential.model_validate(credential)
    except ValidationError:
        raise Rejected("malformed_credential") from None


class RelyingParty:
    """One relying party: its RP id, name and the exact origins its pages are served from."""

    def __init__(self, rp_id: str, rp_name: str, origins: tuple[str, ...]) -> None:
        self.rp_id = rp_id
        self.origins = frozenset(origins)
        self.server = Fido2Server(
            PublicKeyCredentialRpEntity(id=rp_id, name=rp_name),
            attestation="none",  # type: ignore[arg-type]
            verify_origin=self._origin_ok,
        )
        self.server.timeout = CEREMONY_SECONDS * 1000  # type: ignore[assignment]
        self.server.allowed_algorithms = [
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
            for alg in ALGORITHMS
        ]

    def _origin_ok(self, origin: str) -> bool:
        # Section 7.1 step 9 / 7.2 step 13: the origin is one the RP expects, exactly.
        return isinstance(origin, str) and origin in self.origins

    def registration_options(
        self,
        *,
        user_handle: bytes,
        username: str,
        exclude: Sequence[KeyDescriptor],
        user_verification: str,
        resident_key: str,
        now: int,
    ) -> tuple[dict[str, Any], Ceremony]:
        """``publicKey`` for ``navigator.credentials.create()`` (the JSON that
        ``PublicKeyCredential.parseCreationOptionsFromJSON`` takes) and the ceremony to keep."""
        options, state = self.server.register_begin(
            {"id": user_handle, "name": username, "displayName": username},  # type: ignore[arg-type]
            credentials=[k.fido2() for k in exclude],
            resident_key_requirement=ResidentKeyRequirement(resident_key),
            user_verification=UserVerificationRequirement(user_verification),
        )
        return _json(options.public_key), _ceremony(state, user_verification, now, allow=None)

    def authentication_options(
        self, *, allow: Sequence[KeyDescriptor], user_verification: str, now: int
    ) -> tuple[dict[str, Any], Ceremony]:
        """``publicKey`` for ``navigator.credentials.get()`` (what
        ``PublicKeyCredential.parseRequestOptionsFromJSON`` takes) and the ceremony to keep."""
        options, state = self.server.authenticate_begin(
            [k.fido2() for k in allow],
            user_verification=UserVerificationRequirement(user_verification),
        )
        ids = tuple(b64url(k.credential_id) for k in allow)
        return _json(options.public_key), _ceremony(state, user_verification, now, allow=ids)

    def verify_registration(
        self, ceremony: Ceremony, credential: Mapping[str, Any]
    ) -> NewCredential:
        """Section 7.1, for a ``create()`` credential serialized by ``toJSON()``."""
        parsed = parse_registration(credential)
        _check_credential_type(parsed.type)
        client_data = _client_data(parsed.response.clientDataJSON)
        try:
            attestation = AttestationObject(from_b64url(parsed.response.attestationObject))
            auth_data = self.server.register_complete(ceremony.fido2_state(), _fido2_json(parsed))
        except Exception:  # fido2 raises ValueError, KeyError, TypeError, even AssertionError
            raise Rejected("invalid_registration") from None
        data = auth_data.credential_data
        if data is None:
            raise Rejected("no_credential_data")
        if len(data.credential_id) > MAX_CREDENTIAL_ID_BYTES:
            raise Rejected("credential_id_too_long")
        if not hmac.compare_digest(data.credential_id, from_b64url(parsed.rawId)):
            raise Rejected("credential_id_mismatch")
        # Section 7.1 step 18: the key's algorithm is one of those offered.
        if data.public_key.ALGORITHM not in ALGORITHMS:
            raise Rejected("algorithm_not_offered")
        _check_backup_flags(auth_data)
        fmt = _verify_attestation(attestation, hashlib.sha256(client_data).digest())
        return NewCredential(
            credential_id=data.credential_id,
            public_key=bytes(data),
            algorithm=data.public_key.ALGORITHM,
            aaguid=str(data.aaguid),
            sign_count=auth_data.counter,
            transports=clean_transports(parsed.response.transports),
            backup_eligible=auth_data.is_backup_eligible(),
            backed_up=auth_data.is_backed_up(),
            user_verified=auth_data.is_user_verified(),
            attestation_format=fmt,
        )

    def verify_assertion(
        self, ceremony: Ceremony, credential: Mapping[str, Any], stored: StoredCredential
    ) -> VerifiedAssertion:
        """Section 7.2, for a ``get()`` credential serialized by ``toJSON()``, against the
        credential the caller found for its id. The counter is left to the caller."""
        parsed = parse_assertion(credential)
        _check_credential_type(parsed.type)
        raw_id = from_b64url(parsed.rawId)
        # Step 5: the credential is one of those allowCredentials listed.
        if ceremony.allow is None or parsed.rawId not in ceremony.allow:
            raise Rejected("credential_not_allowed")
        # Step 6: it is this user's credential, and a user handle, if any, is this user's.
        if not hmac.compare_digest(raw_id, stored.credential_id):
            raise Rejected("credential_mismatch")
        if parsed.response.userHandle is not None and not hmac.compare_digest(
            from_b64url(parsed.response.userHandle), stored.user_handle
        ):
            raise Rejected("user_handle_mismatch")
        _client_data(parsed.response.clientDataJSON)
        try:
            registered = AttestedCredentialData(stored.public_key)
            self.server.authenticate_complete(
                ceremony.fido2_state(), [registered], _fido2_json(parsed)
            )
        except Exception:  # a wrong signature, challenge, origin, RP id hash or flag
            raise Rejected("invalid_assertion") from None
        auth_data = AuthenticatorData(from_b64url(parsed.response.authenticatorData))
        _check_backup_flags(auth_data)
        # Step 19 (with the credential record's backupEligible): BE never changes.
        if auth_data.is_backup_eligible() != stored.backup_eligible:
            raise Rejected("backup_eligibility_changed")
        return VerifiedAssertion(
            sign_count=auth_data.counter,
            user_verified=auth_data.is_user_verified(),
            backed_up=auth_data.is_backed_up(),
        )


@lru_cache(maxsize=8)
def relying_party(rp_id: str, rp_name: str, origins: tuple[str, ...]) -> RelyingParty:
    """The (stateless, thread-safe) relying party of these settings, built once."""
    return RelyingParty(rp_id, rp_name, origins)


def _json(options: Any) -> dict[str, Any]:
    # bytes become unpadded base64url and absent members are left out (fido2's Mapping view).
    data: dict[str, Any] = json.loads(json.dumps(dict(options)))
    return data


def _ceremony(
    state: Mapping[str, Any], user_verification: str, now: int, allow: tuple[str, ...] | None
) -> Ceremony:
    return Ceremony(
        challenge=str(state["challenge"]),
        user_verification=user_verification,
        expires_at=now + CEREMONY_SECONDS,
        allow=allow,
    )


def _fido2_json(parsed: RegistrationCredential | AssertionCredential) -> dict[str, Any]:
    """Only what fido2 checks, from the validated shape."""
    response: dict[str, Any] = {"clientDataJSON": parsed.response.clientDataJSON}
    if isinstance(parsed, RegistrationCredential):
        response["attestationObject"] = parsed.response.attestationObject
    else:
        response["authenticatorData"] = parsed.response.authenticatorData
        response["signature"] = parsed.response.signature
    return {"id": parsed.id, "rawId": parsed.rawId, "type": parsed.type, "response": response}


def _check_credential_type(value: str) -> None:
    # fido2 turns an unknown type into None and goes on; the only credential type is this one.
    if value != PUBLIC_KEY:
        raise Rejected("wrong_credential_type")


def _client_data(encoded: str) -> bytes:
    """The client data JSON, refused when it was collected in a cross-origin iframe: no page of
    ours embeds the ceremony in one (section 7.1 steps 10-11, 7.2 steps 14-15; fido2 reads
    neither ``crossOrigin`` nor ``topOrigin``)."""
    raw = from_b64url(encoded)
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON
        raise Rejected("malformed_client_data") from None
    if not isinstance(data, dict):
        raise Rejected("malformed_client_data")
    if data.get("crossOrigin", False) is not False or "topOrigin" in data:
        raise Rejected("cross_origin")
    return raw


def _check_backup_flags(auth_data: AuthenticatorData) -> None:
    # Section 6.1.3: a credential that is not backup eligible cannot be backed up.
    if auth_data.is_backed_up() and not auth_data.is_backup_eligible():
        raise Rejected("backed_up_without_eligibility")


def _verify_attestation(attestation: AttestationObject, client_data_hash: bytes) -> str:
    """Section 7.1 step 21: the attestation statement verifies by its format's procedure.

    We ask for no attestation and so trust none (no certificate chain is checked), but a
    statement that is there must be a correct one; a format we cannot check is refused."""
    fmt = attestation.fmt
    if not isinstance(fmt, str) or len(fmt) > 32:
        raise Rejected("unsupported_attestation")
    try:
        Attestation.for_type(fmt)().verify(
            attestation.att_stmt, attestation.auth_data, client_data_hash
        )
    except UnsupportedType:
        raise Rejected("unsupported_attestation") from None
    except Exception:
        raise Rejected("invalid_attestation") from None
    return fmt
