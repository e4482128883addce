"""HOTP (RFC 4226): a counter that moves only forward, with a look-ahead window."""

from __future__ import annotations

import hmac
from typing import ClassVar

from ..models import FactorState
from ..schemas import HotpEnroll
from .base import Accepted, Challenge, Enrollment, Rejected, digits_only
from .otp import b32, find_counter, generator, key_uri, new_key, otp_params, qr_codes

# RFC 4226 section 7.4: the look-ahead window s; the expected counter and 10 beyond it.
LOOK_AHEAD = 10
# How far a resync (two consecutive codes) may search.
RESYNC_WINDOW = 100


class Hotp:
    type: ClassVar[str] = "hotp"

    def enroll(self, options: HotpEnroll, *, issuer: str, account: str) -> Enrollment:
        key = new_key(options.algorithm)
        uri = key_uri(
            "hotp",
            issuer=issuer,
            account=account,
            key=key,
            algorithm=options.algorithm,
            digits=options.digits,
            counter=0,
        )
        columns = {"algorithm": options.algorithm, "digits": options.digits, "counter": 0}
        return Enrollment(columns, key, {"secret": b32(key), "otpauth_uri": uri, **qr_codes(uri)})

    def challenge(self, factor: FactorState, *, now: int) -> Challenge:
        return Challenge()

    def verify(
        self, factor: FactorState, secret: bytes, code: str, *, now: int, state: str | None
    ) -> Accepted:
        algorithm, digits = otp_params(factor)
        otp = generator(secret, algorithm, digits)
        candidates = range(factor.counter, factor.counter + LOOK_AHEAD + 1)
        return Accepted(find_counter(otp, code, digits, candidates))

    def resync(self, factor: FactorState, secret: bytes, code1: str, code2: str) -> Accepted:
        """Find two consecutive codes within the resync window; the counter is the second's."""
        algorithm, digits = otp_params(factor)
        code1, code2 = digits_only(code1, digits), digits_only(code2, digits)
        otp = generator(secret, algorithm, digits)
        for counter in range(factor.counter, factor.counter + RESYNC_WINDOW):
            if hmac.compare_digest(otp.generate_otp(counter), code1) and hmac.compare_digest(
                otp.generate_otp(counter + 1), code2
            ):
                return Accepted(counter + 1)
        raise Rejected("resync_failed")
