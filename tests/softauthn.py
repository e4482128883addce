"""A software FIDO2 authenticator plus the browser around it, for tests.

It deliberately does not use python-fido2, so that it checks our relying party (which is built on
fido2) independently: only the standard library and `cryptography` are used, and the little CBOR
that an authenticator emits is written by hand.

`SoftAuthenticator.make_credential` and `SoftAuthenticator.get_assertion` take the options JSON a
relying party sends to the browser (what `PublicKeyCredential.parseCreationOptionsFromJSON` and
`parseRequestOptionsFromJSON` take) and return exactly what `PublicKeyCredential.toJSON()` returns
(WebAuthn Level 3, section 5.1). On the way they do what a browser and a CTAP2 authenticator would
do: required members, rp id against origin, excluded credentials, algorithm choice, and the
"none" attestation anonymisation. Keyword arguments let a test tamper with the result.

Byte layouts (WebAuthn section 6.1):
  authenticatorData = rpIdHash(32) | flags(1) | signCount(4, big-endian) [| attestedCredentialData]
  attestedCredentialData = aaguid(16) | credentialIdLength(2) | credentialId | COSE_Key
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

JsonDict: TypeAlias = dict[str, Any]
CborValue: TypeAlias = (
    "bool | int | bytes | str | Sequence[CborValue] | Mapping[CborValue, CborValue] | None"
)
AttestationFormat: TypeAlias = Literal["none", "packed"]

ES256 = -7  # COSE algorithm: ECDSA with SHA-256 on P-256 (RFC 9053, section 2.1)
PUBLIC_KEY = "public-key"


class Flag(IntFlag):
    """The flags byte of authenticator data (WebAuthn section 6.1)."""

    UP = 0x01  # user present
    UV = 0x04  # user verified
    BE = 0x08  # backup eligible
    BS = 0x10  # backed up
    AT = 0x40  # attested credential data included
    ED = 0x80  # extension data included


# Errors, named after the DOMException a browser would reject the promise with.


class SoftAuthnError(Exception):
    """Base of the errors the browser would reject `create()` / `get()` with."""


class InvalidStateError(SoftAuthnError):
    """The authenticator already holds a credential listed in excludeCredentials."""


class NotAllowedError(SoftAuthnError):
    """No usable credential (the browser shows the same error for user cancellation)."""


class NotSupportedError(SoftAuthnError):
    """None of the offered pubKeyCredParams is supported (we only do ES256)."""


class SecurityError(SoftAuthnError):
    """The rp id is not a registrable suffix of the origin's host, or the origin is insecure."""


# base64url, as WebAuthn's JSON uses it: no padding.

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url, padded or not; raise TypeError (as the browser does) on anything else."""
    if not isinstance(text, str):
        raise TypeError(f"expected a base64url string, got {type(text).__name__}")
    unpadded = text.rstrip("=")
    if not _B64URL.fullmatch(unpadded):
        raise TypeError(f"not base64url: {text!r}")
    try:
        return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except binascii.Error as exc:  # a length of 4n+1
        raise TypeError(f"not base64url: {text!r}") from exc


# CBOR (RFC 8949): just the types an authenticator emits, with deterministic map key order.


def _cbor_head(major: int, argument: int) -> bytes:
    """The initial byte plus argument, in the shortest form (RFC 8949, section 3 and 4.2.1)."""
    if argument < 24:
        return bytes([major << 5 | argument])
    for additional, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | additional]) + argument.to_bytes(size, "big")
    raise ValueError(f"integer too large for CBOR: {argument}")


def cbor_encode(value: CborValue) -> bytes:
    """Encode ints, bytes, text, arrays, maps, booleans and null.

    Map keys are sorted by the bytewise order of their encodings (RFC 8949, section 4.2.1), which
    for the keys WebAuthn uses is also CTAP2's canonical order.
    """
    if value is False:
        return b"\xf4"
    if value is True:
        return b"\xf5"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, bytes | bytearray):
        return _cbor_head(2, len(value)) + bytes(value)
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        return _cbor_head(3, len(encoded)) + encoded
    if isinstance(value, Mapping):
        items = sorted((cbor_encode(k), cbor_encode(v)) for k, v in value.items())
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate CBOR map key")
        return _cbor_head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(value, Sequence):
        return _cbor_head(4, len(value)) + b"".join(cbor_encode(v) for v in value)
    raise TypeError(f"cannot CBOR-encode {type(value).__name__}")


# Keys and signatures.


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def es256_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256, DER-encoded as WebAuthn signatures are (section 6.5.6)."""
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def cose_ec2_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """COSE_Key for ES256: kty EC2 (1: 2), alg (3: -7), crv P-256 (-1: 1), x (-2), y (-3)."""
    numbers = key.public_numbers()
    return cbor_encode(
        {
            1: 2,
            3: ES256,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def flip_flags(authenticator_data: bytes, mask: int) -> bytes:
    """Return authenticator data with the flags byte XORed with `mask`."""
    return (
        authenticator_data[:32] + bytes([authenticator_data[32] ^ mask]) + authenticator_data[33:]
    )


def with_flipped_flags(assertion: JsonDict, mask: int) -> JsonDict:
    """A copy of a `get_assertion` result whose flags were flipped after signing.

    The signature no longer covers the authenticator data, so a relying party must refuse it.
    (To flip flags *before* signing, pass `flags_xor=` to the authenticator instead.)
    """
    response = dict(assertion["response"])
    response["authenticatorData"] = b64url_encode(
        flip_flags(b64url_decode(response["authenticatorData"]), mask)
    )
    return {**assertion, "response": response}


def client_data_json(
    type_: str, challenge: str, origin: str, *, cross_origin: bool = False
) -> bytes:
    """clientDataJSON as a browser serialises it (WebAuthn section 5.8.1.1): compact, in order."""
    data = {"type": type_, "challenge": challenge, "origin": origin, "crossOrigin": cross_origin}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# What the browser does before it talks to an authenticator.


def _unwrap(options: Mapping[str, Any]) -> JsonDict:
    """The options as the browser sees them: JSON round-tripped, `{"publicKey": ...}` unwrapped.

    The round trip makes sure the relying party's options really are JSON (no bytes, no objects).
    """
    data = json.loads(json.dumps(options))
    inner = data.get("publicKey")
    result: JsonDict = inner if isinstance(inner, dict) else data
    return result


def _require(mapping: Mapping[str, Any], *keys: str, where: str) -> None:
    """WebAuthn IDL `required` members: the browser throws TypeError when one is missing."""
    for key in keys:
        if mapping.get(key) is None:
            raise TypeError(f"{where}.{key} is required")


def _effective_rp_id(rp_id: str | None, origin: str) -> str:
    """The rp id a browser would use, after its checks (WebAuthn section 5.1.3, steps 7-8)."""
    parts = urlsplit(origin)
    host = parts.hostname or ""
    localhost = host == "localhost" or host.endswith(".localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and localhost):
        raise SecurityError(f"{origin} is not a secure context")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise SecurityError(f"{origin} has an IP address, not a domain")
    if rp_id is None:
        return host
    if host != rp_id and not host.endswith("." + rp_id):
        raise SecurityError(f"rp id {rp_id!r} is not a registrable suffix of {host!r}")
    return rp_id


def _descriptor_ids(descriptors: Sequence[Mapping[str, Any]] | None, where: str) -> list[bytes]:
    ids = []
    for descriptor in descriptors or ():
        _require(descriptor, "type", "id", where=where)
        if descriptor["type"] == PUBLIC_KEY:
            ids.append(b64url_decode(descriptor["id"]))
    return ids


@dataclass(frozen=True)
class SoftCredential:
    """One credential held by a `SoftAuthenticator`."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    discoverable: bool = False
    sign_count: int = 0

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @property
    def cose_public_key(self) -> bytes:
        return cose_ec2_public_key(self.public_key)

    @property
    def public_key_der(self) -> bytes:
        """SubjectPublicKeyInfo DER, as in the registration JSON's `publicKey`."""
        return spki_der(self.public_key)


@dataclass(kw_only=True)
class SoftAuthenticator:
    """A CTAP2-like ES256 authenticator, with the browser in front of it.

    Options (plain attributes, a test may change them between calls):
      aaguid: the 16-byte AAGUID put in attested credential data.
      attestation: "none" (fmt "none", empty attStmt) or "packed" (self attestation: signed with
        the credential key, no x5c).
      user_verification: set the UV flag.
      user_presence: set the UP flag (False to test that the relying party requires it).
      backup_eligible / backed_up: set the BE / BS flags.
      counter_step: how much each assertion adds to the credential's signature counter; 0 keeps
        it at 0 as many passkey providers do.
      transports / attachment: reported in the registration JSON.
    """

    aaguid: bytes = bytes(16)
    attestation: AttestationFormat = "none"
    user_verification: bool = False
    user_presence: bool = True
    backup_eligible: bool = False
    backed_up: bool = False
    counter_step: int = 1
    transports: tuple[str, ...] = ("usb",)
    attachment: str = "cross-platform"
    _credentials: dict[bytes, SoftCredential] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.aaguid) != 16:
            raise ValueError("an AAGUID is 16 bytes")

    # The credential store.

    @property
    def credentials(self) -> tuple[SoftCredential, ...]:
        return tuple(self._credentials.values())

    def credential(self, credential_id: bytes) -> SoftCredential:
        return self._credentials[credential_id]

    def add_credential(self, credential: SoftCredential) -> None:
        self._credentials[credential.credential_id] = credential

    def remove_credential(self, credential_id: bytes) -> None:
        del self._credentials[credential_id]

    def set_sign_count(self, credential_id: bytes, sign_count: int) -> None:
        """Set a credential's counter, e.g. lower it to imitate a cloned or reset authenticator."""
        self._credentials[credential_id] = dataclasses.replace(
            self._credentials[credential_id], sign_count=sign_count
        )

    def clone(self, **changes: Any) -> SoftAuthenticator:
        """A second authenticator holding the same credentials (same ids and keys, counters copied
        but independent from now on), like a cloned security key. `changes` override options."""
        return dataclasses.replace(self, _credentials=dict(self._credentials), **changes)

    # The ceremonies.

    def _flags(self, *, attested: bool, flags_xor: int) -> int:
        flags = Flag(0)
        if self.user_presence:
            flags |= Flag.UP
        if self.user_verification:
            flags |= Flag.UV
        if self.backup_eligible:
            flags |= Flag.BE
        if self.backed_up:
            flags |= Flag.BS
        if attested:
            flags |= Flag.AT
        return int(flags) ^ flags_xor

    def make_credential(
        self,
        options: Mapping[str, Any],
        origin: str,
        *,
        origin_override: str | None = None,
        rp_id_for_hash: str | None = None,
        client_data_type: str = "webauthn.create",
        challenge_override: str | None = None,
        cross_origin: bool = False,
        sign_with: ec.EllipticCurvePrivateKey | None = None,
        flags_xor: int = 0,
    ) -> JsonDict:
        """`navigator.credentials.create()` followed by `credential.toJSON()`.

        `options` is the creation options JSON (optionally wrapped in `{"publicKey": ...}`).
        Raises TypeError for malformed options, SecurityError for an rp id the origin may not
        use, InvalidStateError if a credential of ours is excluded, NotSupportedError without -7.

        Tampering: `origin_override`, `client_data_type`, `challenge_override` (a base64url
        string) and `cross_origin` change clientDataJSON; `rp_id_for_hash` changes the rpIdHash;
        `sign_with` signs a packed attestation with another key; `flags_xor` flips flags before
        signing.
        """
        opts = _unwrap(options)
        _require(opts, "rp", "user", "challenge", "pubKeyCredParams", where="publicKey")
        _require(opts["rp"], "name", where="publicKey.rp")
        _require(opts["user"], "id", "name", "displayName", where="publicKey.user")
        user_handle = b64url_decode(opts["user"]["id"])
        if not 1 <= len(user_handle) <= 64:
            raise TypeError("publicKey.user.id must be 1 to 64 bytes")
        b64url_decode(opts["challenge"])
        rp_id = _effective_rp_id(opts["rp"].get("id"), origin)

        params = opts["pubKeyCredParams"]
        for param in params:
            _require(param, "type", "alg", where="publicKey.pubKeyCredParams[]")
        if params and not any(p["type"] == PUBLIC_KEY and p["alg"] == ES256 for p in params):
            raise NotSupportedError("ES256 (-7) is not among pubKeyCredParams")

        for excluded in _descriptor_ids(opts.get("excludeCredentials"), "excludeCredentials[]"):
            held = self._credentials.get(excluded)
            if held is not None and held.rp_id == rp_id:
                raise InvalidStateError("the authenticator already holds an excluded credential")

        selection = opts.get("authenticatorSelection") or {}
        discoverable = selection.get("residentKey") in ("required", "preferred") or bool(
            selection.get("requireResidentKey")
        )
        credential = SoftCredential(
            credential_id=os.urandom(16 + secrets.randbelow(17)),  # 16 to 32 bytes
            private_key=new_private_key(),
            rp_id=rp_id,
            user_handle=user_handle,
            discoverable=discoverable,
        )

        client_data = client_data_json(
            client_data_type,
            challenge_override if challenge_override is not None else opts["challenge"],
            origin_override if origin_override is not None else origin,
            cross_origin=cross_origin,
        )
        # The browser anonymises attestation unless the relying party asked for it, except for
        # self attestation, which identifies nothing (WebAuthn section 5.1.3, step 22.1).
        aaguid, fmt = self.aaguid, self.attestation
        if opts.get("attestation", "none") not in ("indirect", "direct", "enterprise") and not (
            fmt == "packed" and aaguid == bytes(16)
        ):
            aaguid, fmt = bytes(16), "none"
        cose_key = credential.cose_public_key
        auth_data = (
            sha256((rp_id_for_hash or rp_id).encode("utf-8"))
            + struct.pack(">BI", self._flags(attested=True, flags_xor=flags_xor), 0)
            + aaguid
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + cose_key
        )
        att_stmt: dict[CborValue, CborValue] = {}
        if fmt == "packed":
            signer = sign_with or credential.private_key
            att_stmt = {"alg": ES256, "sig": es256_sign(signer, auth_data + sha256(client_data))}
        attestation_object = cbor_encode({"fmt": fmt, "attStmt": att_stmt, "authData": auth_data})

        self.add_credential(credential)
        credential_id = b64url_encode(credential.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": PUBLIC_KEY,
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "attestationObject": b64url_encode(attestation_object),
                "transports": list(self.transports),
                "authenticatorData": b64url_encode(auth_data),
                "publicKey": b64url_encode(credential.public_key_der),
                "publicKeyAlgorithm": ES256,
            },
        }

    def get_assertion(
        self,
        options: Mapping[str, Any],
        origin: str,
        *,
        credential_id: bytes | None = None,
        origin_override: str | None = None,
        rp_id_for_hash: str | None = None,
        client_data_type: str = "webauthn.get",
        challenge_override: str | None = None,
        cross_origin: bool = False,
        sign_with: ec.EllipticCurvePrivateKey | None = None,
        flags_xor: int = 0,
    ) -> JsonDict:
        """`navigator.credentials.get()` followed by `credential.toJSON()`.

        Uses `credential_id` if given (even if the relying party did not list it), else the
        first of the allowCredentials we hold for the rp id, else (empty list) our first
        discoverable credential for the rp id; NotAllowedError if there is none. The counter
        goes up by `counter_step` first. userHandle is returned for discoverable credentials
        only, as CTAP2 authenticators do (they do not store it otherwise).

        Tampering keywords as for `make_credential`; `sign_with` signs the assertion.
        """
        opts = _unwrap(options)
        _require(opts, "challenge", where="publicKey")
        b64url_decode(opts["challenge"])
        rp_id = _effective_rp_id(opts.get("rpId"), origin)
        allowed = _descriptor_ids(opts.get("allowCredentials"), "allowCredentials[]")

        if credential_id is not None:
            if credential_id not in self._credentials:
                raise NotAllowedError("no such credential")
            credential = self._credentials[credential_id]
        else:
            credential = self._pick(rp_id, allowed)

        sign_count = credential.sign_count + self.counter_step
        self.set_sign_count(credential.credential_id, sign_count)

        client_data = client_data_json(
            client_data_type,
            challenge_override if challenge_override is not None else opts["challenge"],
            origin_override if origin_override is not None else origin,
            cross_origin=cross_origin,
        )
        auth_data = sha256((rp_id_for_hash or rp_id).encode("utf-8")) + struct.pack(
            ">BI", self._flags(attested=False, flags_xor=flags_xor), sign_count
        )
        signature = es256_sign(sign_with or credential.private_key, auth_data + sha256(client_data))

        encoded_id = b64url_encode(credential.credential_id)
        return {
            "id": encoded_id,
            "rawId": encoded_id,
            "type": PUBLIC_KEY,
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "authenticatorData": b64url_encode(auth_data),
                "signature": b64url_encode(signature),
                "userHandle": (
                    b64url_encode(credential.user_handle) if credential.discoverable else None
                ),
            },
        }

    def _pick(self, rp_id: str, allowed: list[bytes]) -> SoftCredential:
        if allowed:
            for credential_id in allowed:
                held = self._credentials.get(credential_id)
                if held is not None and held.rp_id == rp_id:
                    return held
        else:
            for held in self._credentials.values():
                if held.discoverable and held.rp_id == rp_id:
                    return held
        raise NotAllowedError(f"no credential for {rp_id!r} on this authenticator")
