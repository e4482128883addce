"""Access tokens: ES256 JWTs (RFC 9068 profile), checked with joserfc.

Pure: keys come in as arguments; ``mfa.services.keys`` stores and caches them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import secrets
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

ALG = "ES256"
TYP = "at+jwt"  # RFC 9068 section 2.1
_ALGORITHMS = [ALG]  # pinned: "none", HS256 and the rest are refused before any key is used
_ECDSA = ec.ECDSA(hashes.SHA256())
_P256_BYTES = 32


class InvalidToken(Exception):
    """The token is malformed, unsigned by our keys, expired or meant for someone else."""


def generate_key() -> ECKey:
    kid = secrets.token_urlsafe(12)
    return ECKey.generate_key(
        "P-256", parameters={"kid": kid, "alg": ALG, "use": "sig"}, private=True
    )


def private_pem(key: ECKey) -> bytes:
    return key.as_pem(private=True)


def load_private(pem: bytes, kid: str) -> ECKey:
    return ECKey.import_key(pem, parameters={"kid": kid, "alg": ALG, "use": "sig"})


def public_jwk(key: ECKey) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def keyset(jwks: Iterable[dict[str, Any]]) -> KeySet:
    return KeySet([ECKey.import_key(dict(k)) for k in jwks])


def sign(key: ECKey, claims: dict[str, Any]) -> str:
    """The compact JWS (RFC 7515 section 7.1) of ``claims`` under ``key``.

    Made here with ``cryptography`` rather than joserfc's ``jwt.encode``, which spent more
    on checking the header we build ourselves than on the signature (55 µs a token against
    36 µs here, of which the signature is 27), and every login signs one. joserfc checks
    every token we accept (``verify``); the tests check ours with joserfc and PyJWT.
    """
    private = key.private_key
    if private is None or key.kid is None:
        raise ValueError("signing needs a private key with a kid")
    signing_input = _header(key.kid) + b"." + _segment(claims)
    r, s = decode_dss_signature(private.sign(signing_input, _ECDSA))
    # JWS takes R and S as two fixed-length big-endian numbers, not the DER that OpenSSL makes
    # (RFC 7518 section 3.4).
    signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return (signing_input + b"." + _b64(signature)).decode("ascii")


@functools.lru_cache(maxsize=16)
def _header(kid: str) -> bytes:
    return _segment({"alg": ALG, "kid": kid, "typ": TYP})


def _segment(value: dict[str, Any]) -> bytes:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def peek_kid(token: str) -> str:
    """The ``kid`` of a token's header, before any check: only to pick (or reload) keys."""
    try:
        head = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        kid = header["kid"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidToken("header") from None
    if not isinstance(kid, str):
        raise InvalidToken("kid")
    return kid


def verify(token: str, keys: KeySet, *, issuer: str, audience: str, now: int) -> dict[str, Any]:
    """Check signature, header and claims; return the claims or raise ``InvalidToken``."""
    try:
        decoded = jwt.decode(token, keys, algorithms=_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError, IndexError) as e:
        raise InvalidToken(type(e).__name__) from None
    header, claims = decoded.header, decoded.claims
    if header.get("typ") != TYP:
        raise InvalidToken("typ")
    registry = jwt.JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        auth_time={"essential": True},
        amr={"essential": True},
    )
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError) as e:
        raise InvalidToken(type(e).__name__) from None
    if not isinstance(claims.get("auth_time"), int) or not isinstance(claims.get("amr"), list):
        raise InvalidToken("claims")
    return dict(claims)
