"""What TOTP and HOTP share: keys, the RFC 4226 code, the key URI and its QR code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import pyotp
import qrcode
import qrcode.constants
import qrcode.image.svg

from ..models import FactorState
from .base import Rejected, digits_only

ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
# A key as long as the hash's output (RFC 4226 section 4 asks for at least 160 bits; RFC 6238
# Appendix A uses 20, 32 and 64 bytes).
KEY_BYTES = {"SHA1": 20, "SHA256": 32, "SHA512": 64}


def new_key(algorithm: str) -> bytes:
    return secrets.token_bytes(KEY_BYTES[algorithm])


def b32(key: bytes) -> str:
    """Base32 without padding, as authenticator apps expect it."""
    return base64.b32encode(key).decode().rstrip("=")


class _Hotp(pyotp.HOTP):
    """pyotp's HOTP with its key decoded once: pyotp decodes (and checks) the base32 secret
    again for each code it makes, and a check makes up to three."""

    _decoded: bytes | None = None

    def byte_secret(self) -> bytes:
        if self._decoded is None:
            self._decoded = super().byte_secret()  # first called by pyotp's own __init__
        return self._decoded


def generator(key: bytes, algorithm: str, digits: int) -> pyotp.HOTP:
    return _Hotp(b32(key), digits=digits, digest=ALGORITHMS[algorithm])


def otp_params(factor: FactorState) -> tuple[str, int]:
    """The algorithm and number of digits of an OTP factor."""
    if factor.algorithm not in ALGORITHMS or factor.digits is None:
        raise ValueError(f"factor {factor.id} lacks its OTP parameters")
    return factor.algorithm, factor.digits


def find_counter(otp: pyotp.HOTP, code: str, digits: int, candidates: Iterable[int]) -> int:
    """The first counter among ``candidates`` whose code is ``code``; raise ``Rejected``."""
    code = digits_only(code, digits)
    for counter in candidates:
        if counter >= 0 and hmac.compare_digest(otp.generate_otp(counter), code):
            return counter
    raise Rejected("wrong_code")


def key_uri(
    kind: str, *, issuer: str, account: str, key: bytes, algorithm: str, digits: int, **extra: int
) -> str:
    """The ``otpauth://`` URI (Google Authenticator's Key Uri Format), every parameter spelled
    out, because some apps assume defaults that differ from ours."""
    label = f"{quote(issuer, safe='')}:{quote(account, safe='@')}"
    params: dict[str, Any] = {
        "secret": b32(key),
        "issuer": issuer,
        "algorithm": algorithm,
        "digits": digits,
        **extra,
    }
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
    return f"otpauth://{kind}/{label}?{query}"


def qr_codes(data: str) -> dict[str, str]:
    """The QR code of ``data`` as SVG markup and as a base64 PNG."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=6, border=4)
    qr.add_data(data)
    qr.make(fit=True)
    svg = qr.make_image(image_factory=qrcode.image.svg.SvgPathImage).to_string(encoding="unicode")
    png = io.BytesIO()
    qr.make_image().save(png, format="PNG")
    return {"qr_svg": svg, "qr_png": base64.b64encode(png.getvalue()).decode()}
