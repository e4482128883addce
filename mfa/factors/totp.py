"""TOTP (RFC 6238): the code of the current time step, one step either side, each step once."""

from __future__ import annotations

from typing import ClassVar

from ..models import FactorState
from ..schemas import TotpEnroll
from .base import Accepted, Challenge, Enrollment
from .otp import b32, find_counter, generator, key_uri, new_key, otp_params, qr_codes

# RFC 6238 section 5.2: accept one step of clock drift either side.
WINDOW = 1


def time_step(now: int, period: int) -> int:
    """RFC 6238 section 4.2: T = floor((now - T0) / X) with T0 = 0."""
    return now // period


class Totp:
    type: ClassVar[str] = "totp"

    def enroll(self, options: TotpEnroll, *, issuer: str, account: str) -> Enrollment:
        key = new_key(options.algorithm)
        uri = key_uri(
            "totp",
            issuer=issuer,
            account=account,
            key=key,
            algorithm=options.algorithm,
            digits=options.digits,
            period=options.period,
        )
        columns = {
            "algorithm": options.algorithm,
            "digits": options.digits,
            "period": options.period,
        }
        return Enrollment(columns, key, {"secret": b32(key), "otpauth_uri": uri, **qr_codes(uri)})

    def challenge(self, factor: FactorState, *, now: int) -> Challenge:
        return Challenge()

    def verify(
        self, factor: FactorState, secret: bytes, code: str, *, now: int, state: str | None
    ) -> Accepted:
        algorithm, digits = otp_params(factor)
        period = factor.period or 30
        step = time_step(now, period)
        # Steps before factor.counter were used already (or lie behind one that was).
        candidates = range(max(step - WINDOW, factor.counter), step + WINDOW + 1)
        otp = generator(secret, algorithm, digits)
        return Accepted(find_counter(otp, code, digits, candidates))
