"""RFC 4226 Appendix D and RFC 6238 Appendix B, through our own verification code."""

from __future__ import annotations

import base64
import json

import pytest

from mfa.factors.base import Rejected
from mfa.factors.hotp import Hotp
from mfa.factors.otp import key_uri
from mfa.factors.totp import Totp
from mfa.models import Factor

from .helpers import VECTORS

HOTP = json.loads((VECTORS / "rfc4226_hotp.json").read_text())
TOTP = json.loads((VECTORS / "rfc6238_totp.json").read_text())


def factor(**columns: object) -> Factor:
    return Factor(
        id="f", user_id="u", type="x", label="x", status="active", created_at=0, **columns
    )


@pytest.mark.parametrize("vector", HOTP["vectors"], ids=lambda v: f"counter-{v['counter']}")
def test_rfc4226_appendix_d(vector):
    key = bytes.fromhex(HOTP["secret_hex"])
    f = factor(algorithm="SHA1", digits=6, counter=vector["counter"])
    assert Hotp().verify(f, key, vector["hotp"], now=0, state=None).counter == vector["counter"]


@pytest.mark.parametrize("vector", TOTP["vectors"], ids=lambda v: f"{v['mode']}-{v['time']}")
def test_rfc6238_appendix_b(vector):
    key = bytes.fromhex(TOTP["seeds"][vector["mode"]])
    f = factor(algorithm=vector["mode"], digits=8, period=30, counter=0)
    accepted = Totp().verify(f, key, vector["totp"], now=vector["time"], state=None)
    assert accepted.counter == int(vector["T_hex"], 16)


def test_rfc6238_sha256_row_does_not_verify_with_the_20_byte_secret():
    # The vectors' note: the table's SHA256 rows need the 32-byte seed.
    row = next(v for v in TOTP["vectors"] if v["mode"] == "SHA256")
    f = factor(algorithm="SHA256", digits=8, period=30, counter=0)
    with pytest.raises(Rejected):
        Totp().verify(
            f, bytes.fromhex(TOTP["seeds"]["SHA1"]), row["totp"], now=row["time"], state=None
        )


def test_hotp_looks_ahead_ten_counters_and_no_further():
    key = bytes.fromhex(HOTP["secret_hex"])
    codes = {v["counter"]: v["hotp"] for v in HOTP["vectors"]}
    f = factor(algorithm="SHA1", digits=6, counter=0)
    assert Hotp().verify(f, key, codes[9], now=0, state=None).counter == 9
    behind = factor(algorithm="SHA1", digits=6, counter=5)
    with pytest.raises(Rejected):
        Hotp().verify(behind, key, codes[4], now=0, state=None)


def test_hotp_resync_finds_two_consecutive_codes():
    key = bytes.fromhex(HOTP["secret_hex"])
    codes = {v["counter"]: v["hotp"] for v in HOTP["vectors"]}
    f = factor(algorithm="SHA1", digits=6, counter=0)
    assert Hotp().resync(f, key, codes[7], codes[8]).counter == 8
    with pytest.raises(Rejected):
        Hotp().resync(f, key, codes[7], codes[9])


@pytest.mark.parametrize(
    "now", [59 - 30, 59, 59 + 30], ids=["clock-behind", "on-time", "clock-ahead"]
)
def test_totp_accepts_one_step_either_side(now):
    key = bytes.fromhex(TOTP["seeds"]["SHA1"])
    code_at_step_1 = TOTP["vectors"][0]["totp"]
    f = factor(algorithm="SHA1", digits=8, period=30, counter=0)
    assert Totp().verify(f, key, code_at_step_1, now=now, state=None).counter == 1


def test_totp_refuses_two_steps_away():
    key = bytes.fromhex(TOTP["seeds"]["SHA1"])
    f = factor(algorithm="SHA1", digits=8, period=30, counter=0)
    with pytest.raises(Rejected):
        Totp().verify(f, key, TOTP["vectors"][0]["totp"], now=59 + 60, state=None)


def test_totp_refuses_a_step_at_or_before_the_last_one_used():
    key = bytes.fromhex(TOTP["seeds"]["SHA1"])
    f = factor(algorithm="SHA1", digits=8, period=30, counter=2)  # step 1 was used
    with pytest.raises(Rejected):
        Totp().verify(f, key, TOTP["vectors"][0]["totp"], now=59, state=None)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦"])
def test_malformed_codes_are_rejected_before_any_comparison(code):
    key = bytes.fromhex(HOTP["secret_hex"])
    with pytest.raises(Rejected, match="malformed"):
        Hotp().verify(factor(algorithm="SHA1", digits=6, counter=0), key, code, now=0, state=None)


def test_key_uri_matches_the_key_uri_format_examples():
    examples = json.loads((VECTORS / "otpauth_uri_examples.json").read_text())["examples"]
    acme = next(e for e in examples if e["issuer_param"] == "ACME Co")
    key = base64.b32decode(acme["secret_b32"])
    uri = key_uri(
        "totp",
        issuer="ACME Co",
        account=acme["account"],
        key=key,
        algorithm="SHA1",
        digits=6,
        period=30,
    )
    assert uri == acme["uri"]
