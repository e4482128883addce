"""Vendors' seed files, read into ``Seed`` values: PSKC (RFC 6030) and the OATH CSV layout.

Pure: bytes in, seeds out, no database. Every refusal is a ``SeedFileError`` whose message is
one sentence an operator can act on; a file either reads whole or not at all.

PSKC goes through python-pskc, and its XML through defusedxml first: the document is parsed
with DTDs forbidden before python-pskc sees it, so no entity can be declared, expanded or
fetched whichever XML parser python-pskc picks (it prefers lxml when installed, and only falls
back to defusedxml's parser otherwise).
"""

from __future__ import annotations

import csv
import hmac
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal
from xml.etree.ElementTree import ParseError as XmlParseError

import defusedxml
import defusedxml.ElementTree
import pskc
from pskc.encryption import algorithm_key_lengths
from pskc.exceptions import DecryptionError, KeyDerivationError, PSKCError
from pskc.key import EncryptedValue, Key

from . import ocra
from .factors.ocra import UnservableSuite, servable

TokenType = Literal["hotp", "totp", "ocra"]

# A vendor's file of some ten thousand tokens stays well under this.
MAX_FILE_BYTES = 16 * 1024 * 1024
# PBKDF2 parameters come from the file: bound the work and memory a file can ask for.
MAX_PBKDF2_ITERATIONS = 10_000_000
MAX_DERIVED_KEY_BYTES = 64
# RFC 4226 section 4, R6 (and RFC 6030 section 10.1 for the HOTP profile): at least 128 bits.
MIN_KEY_BYTES = 16
# RFC 6030 section 10.1: an HOTP ResponseFormat Length is 6 to 9; pyotp computes up to 10.
MIN_DIGITS, MAX_DIGITS = 6, 9
MAX_PERIOD = 3600
# Counters live in a signed 64-bit column, with room for the look-ahead window.
MAX_COUNTER = 2**62
SERIAL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_HASHES = {"SHA1": "SHA1", "SHA256": "SHA256", "SHA512": "SHA512"}
_FIELDS = ("secret", "counter", "time_offset", "time_interval", "time_drift")


class SeedFileError(ValueError):
    """The file cannot be imported; the message says why, in one sentence."""


@dataclass(frozen=True)
class Seed:
    """One token's key and parameters, as the file gives them."""

    serial: str
    type: TokenType
    secret: bytes = field(repr=False)
    digits: int
    algorithm: str = "SHA1"
    counter: int = 0
    period: int | None = None
    suite: str | None = None
    pin_hash: bytes | None = field(default=None, repr=False)
    manufacturer: str | None = None
    not_before: int | None = None
    not_after: int | None = None


@dataclass(frozen=True)
class SeedFile:
    seeds: list[Seed]
    notes: list[str] = field(default_factory=list)


def read(
    data: bytes,
    *,
    password: str | None = None,
    key: bytes | None = None,
    form: Literal["pskc", "csv"] | None = None,
) -> SeedFile:
    """Read a PSKC document or an OATH CSV file; without ``form``, a file that starts with
    ``<`` is PSKC."""
    if len(data) > MAX_FILE_BYTES:
        raise SeedFileError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB.")
    if form is None:
        xml = data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")
        form = "pskc" if xml else "csv"
    if form == "pskc":
        return read_pskc(data, password=password, key=key)
    if password is not None or key is not None:
        raise SeedFileError("A CSV seed file is not encrypted: give no password or key.")
    return read_csv(data)


def read_pskc(data: bytes, *, password: str | None = None, key: bytes | None = None) -> SeedFile:
    _refuse_dangerous_xml(data)
    try:
        container = pskc.PSKC(io.BytesIO(data))
    except Exception:  # python-pskc lets ValueError, binascii.Error and others through too
        raise SeedFileError("The file is not a readable PSKC (RFC 6030) document.") from None
    if not container.keys:
        raise SeedFileError("The PSKC document holds no key.")
    _unlock(container, password, key)
    pins = {k.id: k for k in container.keys if _kind(k) == "pin"}
    seeds = [_seed(container, k, pins) for k in container.keys if _kind(k) != "pin"]
    if not seeds:
        raise SeedFileError("The PSKC document holds no HOTP, TOTP or OCRA key.")
    notes = []
    if container.signature.is_signed:
        notes.append("the file's XML signature was not checked")
    return SeedFile(seeds, notes)


def _refuse_dangerous_xml(data: bytes) -> None:
    try:
        defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException:
        raise SeedFileError(
            "The file declares a DTD or entities, which a PSKC document never needs; refused."
        ) from None
    except (XmlParseError, LookupError, ValueError):  # LookupError: an unknown encoding
        raise SeedFileError("The file is not well-formed XML.") from None


def _unlock(container: pskc.PSKC, password: str | None, key: bytes | None) -> None:
    encryption = container.encryption
    if password is not None and key is not None:
        raise SeedFileError("Give the file's password or its pre-shared key, not both.")
    values = [
        value
        for k in container.keys
        for name in _FIELDS
        if isinstance(value := vars(k).get("_" + name), EncryptedValue)
    ]
    if any(_asymmetric(v.algorithm or encryption.algorithm) for v in values):
        raise SeedFileError(
            "The secrets are encrypted to an RSA key (RFC 6030 section 6.3) whose private key "
            "this service does not hold."
        )
    if not values:
        if password is not None or key is not None:
            raise SeedFileError("The file is not encrypted: give no password or key.")
        return
    if password is not None:
        derivation = encryption.derivation
        if derivation.algorithm is None:
            raise SeedFileError(
                "The file is not protected by a password (PBKDF2); give its pre-shared key."
            )
        if (derivation.pbkdf2_iterations or 0) > MAX_PBKDF2_ITERATIONS or (
            derivation.pbkdf2_key_length or 0
        ) > MAX_DERIVED_KEY_BYTES:
            raise SeedFileError("The file asks for more PBKDF2 work than this service allows.")
        try:
            encryption.derive_key(password)
        except KeyDerivationError:
            raise SeedFileError(
                "The file's key derivation is not supported (PBKDF2 with HMAC-SHA1, -SHA256 or "
                "-SHA512 is)."
            ) from None
    elif key is not None:
        encryption.key = key


def _asymmetric(algorithm: str | None) -> bool:
    """RSA-1_5 or RSA-OAEP key transport (RFC 6030 section 6.3)."""
    return bool(algorithm) and "#rsa" in str(algorithm).lower()


def _kind(key: Key) -> str | None:
    """The algorithm profile of a key: hotp, totp, ocra, pin, or None for any other."""
    if not key.algorithm:
        return None
    tail = re.split(r"[:#/]", key.algorithm)[-1].lower()
    return {"hotp": "hotp", "totp": "totp", "ocra": "ocra", "ocra-1": "ocra", "pin": "pin"}.get(
        tail
    )


def _seed(container: pskc.PSKC, key: Key, pins: dict[str | None, Key]) -> Seed:
    serial = _serial(key.serial or key.id)
    where = f"Serial {serial}"
    kind = _kind(key)
    if kind not in ("hotp", "totp", "ocra"):
        raise SeedFileError(f"{where}: the key's algorithm is not HOTP, TOTP or OCRA.")
    secret = _open(container, key, "secret", where)
    if not isinstance(secret, bytes) or not secret:
        raise SeedFileError(
            f"{where}: the file carries no secret for this key (a key derived from a master key "
            "the file only names, RFC 6030 section 4.4, cannot be imported)."
        )
    if len(secret) < MIN_KEY_BYTES:
        raise SeedFileError(
            f"{where}: the secret is shorter than 128 bits (RFC 4226 section 4 requires at "
            "least that)."
        )
    for name in _FIELDS[1:]:
        _open(container, key, name, where)  # every MAC of the key is checked
    _check_policy(key, kind, where)
    not_before, not_after = _validity(key, where)
    manufacturer = str(key.manufacturer)[:64] if key.manufacturer else None
    base = Seed(
        serial=serial,
        type="hotp",
        secret=secret,
        digits=6,
        manufacturer=manufacturer,
        not_before=not_before,
        not_after=not_after,
    )
    counter = _counter(_open(container, key, "counter", where), where)
    if kind == "ocra":
        suite, pin_hash = _ocra_suite(container, key, pins, where)
        return replace(
            base,
            type="ocra",
            digits=suite.digits,
            algorithm=suite.hash_name,
            counter=counter if suite.counter else 0,
            period=suite.time_step_seconds,
            suite=suite.text,
            pin_hash=pin_hash,
        )
    if key.policy.pin_usage == "Algorithmic":
        raise SeedFileError(f"{where}: an HOTP or TOTP PIN cannot be algorithmic (RFC 6030 10.1).")
    digits = _digits(key, where)
    algorithm = _hash(key.algorithm_suite, where)
    if kind == "hotp":
        return replace(base, digits=digits, algorithm=algorithm, counter=counter)
    interval = _open(container, key, "time_interval", where)
    period = interval if isinstance(interval, int) and interval else 30
    if not 1 <= period <= MAX_PERIOD:
        raise SeedFileError(f"{where}: the time step must be 1 to {MAX_PERIOD} seconds.")
    return replace(base, type="totp", digits=digits, algorithm=algorithm, period=period)


def _serial(value: object) -> str:
    serial = str(value).strip() if value is not None else ""
    if not serial:
        raise SeedFileError("A key has neither a serial number nor an id.")
    if not SERIAL_PATTERN.fullmatch(serial):
        raise SeedFileError(
            "A serial number is not 1-64 letters, digits and . _ : + - (starting with a letter "
            "or digit)."
        )
    return serial


def _open(container: pskc.PSKC, key: Key, name: str, where: str) -> object:
    """A field of ``key``, decrypted if it is encrypted, after checking its MAC."""
    raw = vars(key).get("_" + name)
    if isinstance(raw, EncryptedValue):
        algorithm = raw.algorithm or container.encryption.algorithm or ""
        if container.encryption.key is None:
            raise SeedFileError(
                "The file's secrets are encrypted: give its password or its pre-shared key."
            )
        _check_mac(container, raw, algorithm, where)
    try:
        return getattr(key, name)
    except DecryptionError as e:
        raise SeedFileError(_decryption_failure(container, str(e), where)) from None
    except (ValueError, TypeError):
        raise SeedFileError(f"{where}: the key's {name} cannot be read.") from None


def _check_mac(container: pskc.PSKC, value: EncryptedValue, algorithm: str, where: str) -> None:
    """RFC 6030 section 6.1.1: a value encrypted without integrity (CBC) carries a MAC over
    the encrypted value (IV and ciphertext); it must match, compared in constant time."""
    if value.mac_value is None:
        if algorithm.endswith("-cbc"):
            raise SeedFileError(
                f"{where}: the secret is encrypted in CBC mode without a MAC (RFC 6030 section "
                "6.1.1 requires one)."
            )
        return
    try:
        expected = container.mac.generate_mac(value.cipher_value)
    except DecryptionError as e:
        raise SeedFileError(_decryption_failure(container, str(e), where)) from None
    if not hmac.compare_digest(expected, value.mac_value):
        raise SeedFileError(
            "The MAC check failed: wrong password or pre-shared key, or the file was altered."
        )


def _decryption_failure(container: pskc.PSKC, reason: str, where: str) -> str:
    if reason == "Invalid key length":
        try:
            sizes = algorithm_key_lengths(container.encryption.algorithm)
        except PSKCError:
            sizes = []
        given = len(container.encryption.key or b"")
        want = " or ".join(str(s) for s in sizes) or "another length"
        return f"The key is {given} bytes; the file's encryption takes {want}."
    if reason == "Invalid padding":
        return "The secrets do not decrypt: wrong password or pre-shared key."
    if reason == "MAC value does not match":
        return "The MAC check failed: wrong password or pre-shared key, or the file was altered."
    if reason.startswith("Unsupported MAC algorithm"):
        return "The file's MAC algorithm is missing or not supported."
    if reason.startswith("Unsupported algorithm") or reason == "No algorithm specified":
        return f"{where}: the file's encryption algorithm is not supported."
    if reason == "No key available":
        return "The file's secrets are encrypted: give its password or its pre-shared key."
    return f"{where}: the secret cannot be decrypted."


def _check_policy(key: Key, kind: str, where: str) -> None:
    """RFC 6030 section 5: what the recipient must enforce, or else refuse the key."""
    policy = key.policy
    if policy.unknown_policy_elements:
        # "...the recipient MUST assume that key usage is not permitted."
        raise SeedFileError(f"{where}: the key's policy has rules this service does not know.")
    if policy.number_of_transactions is not None:
        raise SeedFileError(f"{where}: a limited number of transactions is not supported.")
    usage = "CR" if kind == "ocra" else "OTP"
    if policy.key_usage and usage not in policy.key_usage:
        raise SeedFileError(f"{where}: the key's policy does not permit {usage} use.")
    if policy.pin_usage in ("Prepend", "Append"):
        raise SeedFileError(
            f"{where}: a PIN sent along with the code (PINUsageMode {policy.pin_usage}) is not "
            "supported."
        )


def _validity(key: Key, where: str) -> tuple[int | None, int | None]:
    """The key's validity period (RFC 6030 section 5), narrowed by the device's own."""
    starts = [d for d in (key.policy.start_date, key.start_date) if d is not None]
    ends = [d for d in (key.policy.expiry_date, key.expiry_date) if d is not None]
    not_before = max((_unix(d) for d in starts), default=None)
    not_after = min((_unix(d) for d in ends), default=None)
    if not_before is not None and not_after is not None and not_after < not_before:
        raise SeedFileError(f"{where}: the key expires before it becomes valid.")
    return not_before, not_after


def _unix(value: datetime) -> int:
    # An xs:dateTime without a zone is read as UTC, never as this host's local time.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _counter(value: object, where: str) -> int:
    if value is None:
        return 0  # RFC 6030 10.1 asks HOTP files for a Counter; some omit it (Figure 7)
    if not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
        raise SeedFileError(f"{where}: the counter is out of range.")
    return value


def _digits(key: Key, where: str) -> int:
    encoding = (key.response_encoding or "DECIMAL").upper()
    if encoding != "DECIMAL":
        raise SeedFileError(f"{where}: only DECIMAL responses are supported.")
    if key.response_check:
        raise SeedFileError(f"{where}: responses with a check digit are not supported.")
    digits = key.response_length or 6
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise SeedFileError(f"{where}: codes must have {MIN_DIGITS} to {MAX_DIGITS} digits.")
    return digits


def _hash(suite: str | None, where: str) -> str:
    """HOTP and TOTP keys name their hash (if any) in AlgorithmParameters/Suite."""
    if not suite:
        return "SHA1"
    name = suite.upper().removeprefix("HMAC-").replace("-", "")
    if name not in _HASHES:
        raise SeedFileError(f"{where}: the hash must be SHA1, SHA256 or SHA512.")
    return _HASHES[name]


def _ocra_suite(
    container: pskc.PSKC, key: Key, pins: dict[str | None, Key], where: str
) -> tuple[ocra.Suite, bytes | None]:
    if not key.algorithm_suite:
        raise SeedFileError(f"{where}: an OCRA key needs its suite (AlgorithmParameters/Suite).")
    try:
        suite = servable(key.algorithm_suite.strip())
    except UnservableSuite as e:
        raise SeedFileError(f"{where}: {e}.") from None
    except ocra.SuiteError:
        raise SeedFileError(f"{where}: the OCRA suite is not valid (RFC 6287 section 6).") from None
    if key.response_length is not None and key.response_length != suite.digits:
        raise SeedFileError(f"{where}: the response length differs from the suite's.")
    if suite.pin_hash_name is None:
        if key.policy.pin_usage == "Algorithmic":
            raise SeedFileError(f"{where}: an algorithmic PIN needs a suite with P.")
        return suite, None
    # A P suite hashes the PIN into every response: the server needs it, from the PIN key the
    # policy names (RFC 6030 section 5, PINKeyId, with PINUsageMode Algorithmic).
    pin_key = pins.get(key.policy.pin_key_id) if key.policy.pin_usage == "Algorithmic" else None
    if pin_key is None:
        raise SeedFileError(f"{where}: the OCRA suite takes a PIN the file does not give.")
    pin = _open(container, pin_key, "secret", where)
    if not isinstance(pin, bytes) or not pin:
        raise SeedFileError(f"{where}: the PIN key has no value.")
    try:
        return suite, ocra.hash_pin(suite, pin.decode("utf-8"))
    except UnicodeDecodeError:
        raise SeedFileError(f"{where}: the PIN is not text.") from None


def read_csv(data: bytes) -> SeedFile:
    """The common OATH CSV layout: ``serial, seed hex, type, digits, period`` per line.

    ``type`` is hotp (the default), totp or ocra; ``digits`` defaults to 6; the fifth field is
    the time step of a TOTP token (default 30) or the suite of an OCRA token. Blank lines,
    lines starting with ``#`` and a first line naming the columns are skipped.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SeedFileError("The CSV file is not UTF-8 text.") from None
    seeds = []
    for number, row in _rows(text):
        seeds.append(_csv_seed(number, row))
    if not seeds:
        raise SeedFileError("The CSV file holds no token.")
    return SeedFile(seeds)


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    lines = text.splitlines()
    for number, row in enumerate(csv.reader(lines), start=1):
        fields = [f.strip() for f in row]
        while fields and not fields[-1]:
            fields.pop()
        if not fields or fields[0].startswith("#"):
            continue
        if number == 1 and fields[0].lower() == "serial":
            continue
        yield number, fields


def _csv_seed(number: int, fields: list[str]) -> Seed:
    where = f"Line {number}"
    if len(fields) < 2 or len(fields) > 5:
        raise SeedFileError(f"{where}: expected serial, seed hex, type, digits, period.")
    serial = _serial(fields[0])
    try:
        secret = bytes.fromhex(fields[1])
    except ValueError:
        raise SeedFileError(f"{where}: the seed is not hex.") from None
    if len(secret) < MIN_KEY_BYTES:
        raise SeedFileError(f"{where}: the seed is shorter than 128 bits (RFC 4226 section 4).")
    kind = fields[2].lower() if len(fields) > 2 and fields[2] else "hotp"
    digits_text = fields[3] if len(fields) > 3 else ""
    fifth = fields[4] if len(fields) > 4 else ""
    if kind == "ocra":
        try:
            suite = servable(fifth)
        except UnservableSuite as e:
            raise SeedFileError(f"{where}: {e}.") from None
        except ocra.SuiteError:
            raise SeedFileError(f"{where}: the fifth field must be a valid OCRA suite.") from None
        if suite.pin_hash_name is not None:
            raise SeedFileError(f"{where}: OCRA suites with a PIN (P) cannot come from CSV.")
        if digits_text and digits_text != str(suite.digits):
            raise SeedFileError(f"{where}: the digits differ from the suite's.")
        return Seed(
            serial=serial,
            type="ocra",
            secret=secret,
            digits=suite.digits,
            algorithm=suite.hash_name,
            period=suite.time_step_seconds,
            suite=suite.text,
        )
    if kind not in ("hotp", "totp"):
        raise SeedFileError(f"{where}: the type must be hotp, totp or ocra.")
    digits = _int(digits_text or "6", where, "digits")
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise SeedFileError(f"{where}: codes must have {MIN_DIGITS} to {MAX_DIGITS} digits.")
    if kind == "hotp":
        return Seed(serial=serial, type="hotp", secret=secret, digits=digits)
    period = _int(fifth or "30", where, "period")
    if not 1 <= period <= MAX_PERIOD:
        raise SeedFileError(f"{where}: the time step must be 1 to {MAX_PERIOD} seconds.")
    return Seed(serial=serial, type="totp", secret=secret, digits=digits, period=period)


def _int(text: str, where: str, name: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise SeedFileError(f"{where}: the {name} must be a number.")
    return int(text)
