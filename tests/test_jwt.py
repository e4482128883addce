"""The access tokens we sign (``mfa.jwt.sign``) as other services' libraries read them."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from joserfc import jwt as josejwt

from mfa import jwt

CLAIMS = {
    "iss": "https://mfa.example",
    "sub": "0190abcd-1234-7abc-8def-0123456789ab",
    "aud": "mfa",
    "iat": 1_700_000_000,
    "exp": 1_700_000_600,
    "jti": "a-jti",
    "auth_time": 1_700_000_000,
    "amr": ["pwd", "otp", "mfa"],
    "sid": "0190abcd-1234-7abc-8def-0123456789ac",
}


def test_a_signed_token_verifies_with_joserfc_and_pyjwt_with_its_header_and_claims():
    key = jwt.generate_key()
    token = jwt.sign(key, CLAIMS)
    decoded = josejwt.decode(token, jwt.keyset([jwt.public_jwk(key)]), algorithms=["ES256"])
    assert decoded.header == {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    assert decoded.claims == CLAIMS
    public = pyjwt.PyJWK(jwt.public_jwk(key)).key
    assert _pyjwt_decode(token, public) == CLAIMS


def test_every_signature_is_r_and_s_at_full_length_whatever_their_leading_zeros():
    # JWS wants R and S as 32 bytes each (RFC 7518 section 3.4); about one signature in 128
    # has an R or S below 2**248, which a shorter encoding would break. 1,000 signatures
    # include such a one with a probability of 1 - 1e-3 or so; each must verify.
    key = jwt.generate_key()
    public = pyjwt.PyJWK(jwt.public_jwk(key)).key
    for n in range(1_000):
        token = jwt.sign(key, {**CLAIMS, "jti": str(n)})
        signature = pyjwt.utils.base64url_decode(token.rsplit(".", 1)[1])
        assert len(signature) == 64
        assert _pyjwt_decode(token, public)["jti"] == str(n)


def test_the_service_accepts_what_it_signs_and_refuses_it_for_another_key():
    key, other = jwt.generate_key(), jwt.generate_key()
    token = jwt.sign(key, CLAIMS)
    now = CLAIMS["iat"] + 1
    mine = jwt.keyset([jwt.public_jwk(key)])
    assert jwt.verify(token, mine, issuer=CLAIMS["iss"], audience="mfa", now=now) == CLAIMS
    # The other key under the same kid: the signature, not the kid, decides.
    impostor = jwt.keyset([{**jwt.public_jwk(other), "kid": key.kid}])
    with pytest.raises(jwt.InvalidToken):
        jwt.verify(token, impostor, issuer=CLAIMS["iss"], audience="mfa", now=now)


def _pyjwt_decode(token: str, public: object) -> dict[str, object]:
    # The claims' times are fixed in the past: only the signature and audience are checked.
    return pyjwt.decode(
        token, public, algorithms=["ES256"], audience="mfa", options={"verify_exp": False}
    )
