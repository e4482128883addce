"""Seed files (RFC 6030 PSKC and OATH CSV) read into seeds, or refused with a clear error."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from mfa import ocra, seedfile
from mfa.seedfile import SeedFileError

from .helpers import VECTORS

PSKC_DIR = VECTORS / "pskc"
EXPECTED = json.loads((PSKC_DIR / "pskc_expected.json").read_text())["files"]
FIGURE6_KEY = bytes.fromhex("12345678901234567890123456789012")
RFC4226_SECRET = bytes.fromhex("3132333435363738393031323334353637383930")


def figure(n: int) -> bytes:
    (path,) = PSKC_DIR.glob(f"figure{n}_*.pskcxml")
    return path.read_bytes()


def expected_secrets(n: int) -> list[bytes]:
    (name,) = [k for k in EXPECTED if k.startswith(f"figure{n}_")]
    return [bytes.fromhex(h) for h in EXPECTED[name]["secrets_hex"] if h is not None]


@pytest.mark.parametrize(
    ("n", "unlock", "serials", "digits"),
    [
        (3, {}, ["987654321"], 8),
        (5, {}, ["987654321"], 8),
        (6, {"key": FIGURE6_KEY}, ["987654321"], 8),
        (7, {"password": "qwerty"}, ["987654321"], 8),
        (9, {}, ["0755225266"], 6),
        (10, {}, ["654321", "123456", "9999999", "9999999"], 8),
    ],
)
def test_rfc6030_figures_that_import(n, unlock, serials, digits):
    result = seedfile.read(figure(n), **unlock)
    assert [s.serial for s in result.seeds] == serials
    for seed in result.seeds:
        assert seed.type == "hotp"
        assert seed.digits == digits
        assert seed.counter == 0
        assert seed.algorithm == "SHA1"
    # Figure 5's second key is the device PIN (checked on the device): not a token here.
    assert [s.secret for s in result.seeds] == expected_secrets(n)[: len(serials)]
    assert all(s.secret == RFC4226_SECRET for s in result.seeds)


def test_figure2_is_refused_for_its_32_bit_secret():
    assert expected_secrets(2) == [b"1234"]
    with pytest.raises(SeedFileError, match="shorter than 128 bits"):
        seedfile.read(figure(2))


def test_figure4_is_refused_for_carrying_no_secret():
    with pytest.raises(SeedFileError, match="no secret"):
        seedfile.read(figure(4))


def test_figure8_is_refused_because_its_rsa_key_is_not_ours():
    for unlock in ({}, {"key": FIGURE6_KEY}, {"password": "qwerty"}):
        with pytest.raises(SeedFileError, match="RSA key"):
            seedfile.read(figure(8), **unlock)


def test_figure9_imports_with_a_note_that_its_signature_is_unchecked():
    assert seedfile.read(figure(9)).notes == ["the file's XML signature was not checked"]


def test_figure10_keeps_each_keys_validity_period():
    seeds = seedfile.read(figure(10)).seeds
    assert (seeds[0].not_before, seeds[0].not_after) == (1146441600, 1149033600)  # May 2006
    assert (seeds[2].not_before, seeds[2].not_after) == (1141171200, 1143763200)  # March
    assert (seeds[3].not_before, seeds[3].not_after) == (1143849600, 1146355200)  # April


@pytest.mark.parametrize("n", [6, 7])
def test_an_encrypted_file_without_its_password_or_key_is_refused(n):
    with pytest.raises(SeedFileError, match="encrypted: give its password or its pre-shared key"):
        seedfile.read(figure(n))


def test_a_wrong_password_is_refused():
    with pytest.raises(SeedFileError, match="wrong password or pre-shared key"):
        seedfile.read(figure(7), password="qwertz")


def test_a_wrong_pre_shared_key_is_refused():
    with pytest.raises(SeedFileError, match="wrong password or pre-shared key"):
        seedfile.read(figure(6), key=bytes(16))


def test_a_pre_shared_key_of_the_wrong_size_is_refused():
    with pytest.raises(SeedFileError, match="24 bytes; the file's encryption takes 16"):
        seedfile.read(figure(6), key=bytes(24))


def test_a_password_for_a_pre_shared_key_file_is_refused():
    with pytest.raises(SeedFileError, match="not protected by a password"):
        seedfile.read(figure(6), password="qwerty")


def test_a_password_for_a_plain_file_is_refused():
    with pytest.raises(SeedFileError, match="not encrypted"):
        seedfile.read(figure(3), password="qwerty")


def test_figure7_is_also_opened_by_its_derived_key():
    derived = bytes.fromhex("651e63cd57008476af1ff6422cd02e41")  # RFC 6030 section 6.2
    assert seedfile.read(figure(7), key=derived).seeds[0].secret == RFC4226_SECRET


def _replace_text(data: bytes, element: str, new: str) -> bytes:
    pattern = re.compile(rb"(<(?:pskc:)?" + element.encode() + rb">)\s*[^<]*?\s*(</)")
    changed, n = pattern.subn(lambda m: m[1] + new.encode() + m[2], data, count=1)
    assert n == 1
    return changed


def test_a_value_mac_that_does_not_match_is_refused():
    data = _replace_text(figure(6), "ValueMAC", base64.b64encode(bytes(20)).decode())
    with pytest.raises(SeedFileError, match="MAC check failed"):
        seedfile.read(data, key=FIGURE6_KEY)


def test_an_altered_ciphertext_fails_the_mac_check():
    data = figure(7)
    marker = b"oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f"
    assert marker in data
    raw = bytearray(base64.b64decode(marker))
    raw[20] ^= 1  # a bit of the first ciphertext block: the padding still decodes
    data = data.replace(marker, base64.b64encode(bytes(raw)))
    with pytest.raises(SeedFileError, match="MAC check failed"):
        seedfile.read(data, password="qwerty")


def test_a_cbc_secret_without_a_mac_is_refused():
    data = re.sub(rb"<ValueMAC>[^<]*</ValueMAC>", b"", figure(6))
    with pytest.raises(SeedFileError, match="without a MAC"):
        seedfile.read(data, key=FIGURE6_KEY)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
 <KeyPackage><Key Id="1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
 <Issuer>&lol9;</Issuer></Key></KeyPackage></KeyContainer>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE KeyContainer [<!ENTITY serial SYSTEM "file:///etc/hostname">]>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
 <KeyPackage><DeviceInfo><SerialNo>&serial;</SerialNo></DeviceInfo>
 <Key Id="1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><Data><Secret>
 <PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data></Key>
 </KeyPackage></KeyContainer>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE KeyContainer SYSTEM "http://127.0.0.1:9/pskc.dtd">
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD])
def test_xml_with_a_dtd_or_entities_is_refused_before_parsing(data):
    started = time.monotonic()
    with pytest.raises(SeedFileError, match="DTD or entities"):
        seedfile.read(data)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "data",
    [
        b"<KeyContainer",
        b"<notpskc/>",
        b"<KeyContainer Version='1.0'/>",
        b"<a>\xff</a>",
        b'<?xml version="1.0" encoding="UTX-8"?><a/>',
    ],
)
def test_a_broken_or_foreign_xml_document_is_refused(data):
    with pytest.raises(SeedFileError):
        seedfile.read(data)


def test_pbkdf2_work_is_bounded():
    data = figure(7).replace(b"<IterationCount>1000<", b"<IterationCount>999999999<")
    started = time.monotonic()
    with pytest.raises(SeedFileError, match="more PBKDF2 work"):
        seedfile.read(data, password="qwerty")
    assert time.monotonic() - started < 1


def _pskc_key(
    algorithm: str, *, serial: str = "OC-1", params: str = "", policy: str = "", data: str = ""
) -> bytes:
    secret = base64.b64encode(bytes(range(32))).decode()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo><Manufacturer>Acme</Manufacturer><SerialNo>{serial}</SerialNo></DeviceInfo>
    <Key Id="k1" Algorithm="{algorithm}">
      <AlgorithmParameters>{params}</AlgorithmParameters>
      <Data><Secret><PlainValue>{secret}</PlainValue></Secret>{data}</Data>
      <Policy>{policy}</Policy>
    </Key>
  </KeyPackage>
  <KeyPackage>
    <DeviceInfo><Manufacturer>Acme</Manufacturer><SerialNo>{serial}</SerialNo></DeviceInfo>
    <Key Id="pin1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:pin">
      <Data><Secret><PlainValue>{base64.b64encode(b"9876").decode()}</PlainValue></Secret></Data>
    </Key>
  </KeyPackage>
</KeyContainer>""".encode()


OCRA_URI = "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1"


def test_an_ocra_key_with_its_suite_and_counter():
    data = _pskc_key(
        OCRA_URI,
        params="<Suite>OCRA-1:HOTP-SHA256-8:C-QN08</Suite>",
        data="<Counter><PlainValue>42</PlainValue></Counter>",
        policy="<KeyUsage>CR</KeyUsage>",
    )
    (seed,) = seedfile.read(data).seeds
    assert (seed.serial, seed.type, seed.suite) == ("OC-1", "ocra", "OCRA-1:HOTP-SHA256-8:C-QN08")
    assert (seed.digits, seed.algorithm, seed.counter) == (8, "SHA256", 42)
    assert seed.manufacturer == "Acme"


def test_an_ocra_pin_suite_takes_the_algorithmic_pin_key_as_a_hash():
    data = _pskc_key(
        OCRA_URI,
        params="<Suite>OCRA-1:HOTP-SHA1-6:QN08-PSHA1</Suite>",
        policy='<PINPolicy PINKeyId="pin1" PINUsageMode="Algorithmic"/>',
    )
    (seed,) = seedfile.read(data).seeds
    assert seed.pin_hash == ocra.hash_pin(ocra.parse_suite(seed.suite), "9876")


@pytest.mark.parametrize(
    ("params", "policy", "words"),
    [
        ("<Suite>OCRA-1:HOTP-SHA1-6:QN08-PSHA1</Suite>", "", "takes a PIN the file does not give"),
        ("<Suite>OCRA-1:HOTP-SHA1-6:QN08-S064</Suite>", "", "session information"),
        ("<Suite>OCRA-1:HOTP-SHA1-6:QX08</Suite>", "", "not valid"),
        ("", "", "needs its suite"),
        ("<Suite>OCRA-1:HOTP-SHA1-6:QN08</Suite>", "<KeyUsage>OTP</KeyUsage>", "CR use"),
    ],
)
def test_ocra_keys_that_cannot_be_served_are_refused(params, policy, words):
    with pytest.raises(SeedFileError, match=words):
        seedfile.read(_pskc_key(OCRA_URI, params=params, policy=policy))


def test_a_totp_key_with_its_time_step_and_hash():
    data = _pskc_key(
        "urn:ietf:params:xml:ns:keyprov:pskc#totp",
        params='<Suite>HMAC-SHA256</Suite><ResponseFormat Length="8" Encoding="DECIMAL"/>',
        data="<TimeInterval><PlainValue>60</PlainValue></TimeInterval>",
    )
    (seed,) = seedfile.read(data).seeds
    assert (seed.type, seed.digits, seed.period, seed.algorithm) == ("totp", 8, 60, "SHA256")


@pytest.mark.parametrize(
    ("params", "policy", "words"),
    [
        ("", "<KeyUsage>CR</KeyUsage>", "does not permit OTP use"),
        ("", "<NumberOfTransactions>10</NumberOfTransactions>", "number of transactions"),
        ("", '<PINPolicy PINKeyId="pin1" PINUsageMode="Prepend"/>', "not supported"),
        ("", '<PINPolicy PINKeyId="pin1" PINUsageMode="Algorithmic"/>', "cannot be algorithmic"),
        ("", "<Unheard>1</Unheard>", "rules this service does not know"),
        ('<ResponseFormat Length="4" Encoding="DECIMAL"/>', "", "6 to 9 digits"),
        ('<ResponseFormat Length="6" Encoding="HEXADECIMAL"/>', "", "DECIMAL"),
        ("<Suite>HMAC-MD5</Suite>", "", "SHA1, SHA256 or SHA512"),
        (
            "",
            "<StartDate>2030-01-01T00:00:00Z</StartDate><ExpiryDate>2029-01-01T00:00:00Z</ExpiryDate>",
            "expires before",
        ),
    ],
)
def test_hotp_keys_whose_policy_we_cannot_keep_are_refused(params, policy, words):
    data = _pskc_key("urn:ietf:params:xml:ns:keyprov:pskc:hotp", params=params, policy=policy)
    with pytest.raises(SeedFileError, match=words):
        seedfile.read(data)


def test_a_serial_that_is_not_a_plain_name_is_refused():
    data = _pskc_key("urn:ietf:params:xml:ns:keyprov:pskc:hotp", serial="a/b")
    with pytest.raises(SeedFileError, match="serial number is not"):
        seedfile.read(data)


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(SeedFileError, match="not HOTP, TOTP or OCRA"):
        seedfile.read(_pskc_key("urn:example:unknown"))


SEED = "3132333435363738393031323334353637383930"


def test_the_oath_csv_layout():
    text = f"""serial, seed, type, digits, period
# a comment
TOK-1, {SEED}, hotp, 6
TOK-2, {SEED.upper()}, totp, 8, 60

TOK-3, {SEED}
TOK-4, {SEED}, ocra, , OCRA-1:HOTP-SHA1-6:C-QN08
""".encode()
    seeds = seedfile.read(text).seeds
    got = [(s.serial, s.type, s.digits, s.period, s.suite) for s in seeds]
    assert got == [
        ("TOK-1", "hotp", 6, None, None),
        ("TOK-2", "totp", 8, 60, None),
        ("TOK-3", "hotp", 6, None, None),
        ("TOK-4", "ocra", 6, None, "OCRA-1:HOTP-SHA1-6:C-QN08"),
    ]
    assert all(s.secret == RFC4226_SECRET for s in seeds)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("TOK-1, nothex", "Line 1: the seed is not hex"),
        ("TOK-1, 31323334", "Line 1: the seed is shorter than 128 bits"),
        (f"TOK-1, {SEED}, motp", "Line 1: the type must be"),
        (f"TOK-1, {SEED}, totp, 5", "Line 1: codes must have 6 to 9 digits"),
        (f"TOK-1, {SEED}, totp, 6, x", "Line 1: the period must be a number"),
        (
            f"TOK-1, {SEED}, ocra, 6, OCRA-1:HOTP-SHA1-6:QN08-PSHA1",
            "Line 1: OCRA suites with a PIN",
        ),
        (f"TOK-1, {SEED}, ocra, 8, OCRA-1:HOTP-SHA1-6:QN08", "Line 1: the digits differ"),
        (f"TOK 1, {SEED}", "serial number is not"),
        ("TOK-1", "Line 1: expected serial, seed hex"),
    ],
)
def test_csv_errors_name_the_line(line, words):
    with pytest.raises(SeedFileError, match=re.escape(words)):
        seedfile.read(line.encode())


def test_a_csv_file_takes_no_password():
    with pytest.raises(SeedFileError, match="not encrypted"):
        seedfile.read(f"TOK-1, {SEED}".encode(), password="x")


def test_a_seed_never_shows_its_secret_in_its_repr():
    (seed,) = seedfile.read(f"TOK-1, {SEED}".encode()).seeds
    assert SEED not in repr(seed)
    assert "12345678901234567890" not in repr(seed)
