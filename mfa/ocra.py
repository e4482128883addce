"""OCRA, the OATH Challenge-Response Algorithm (RFC 6287), as pure functions.

``parse_suite`` reads an OCRASuite string, ``response`` computes the answer to a challenge and
``check`` compares a given answer with it in constant time. Nothing here touches a database, a
clock or the network: the caller supplies the key, the counter and the time step.

Rejections are exceptions, never ``False``: ``SuiteError`` for a malformed suite,
``OcraInputError`` for inputs that do not fit the suite (a caller's bug) and ``WrongResponse``
(with ``MalformedResponse``) for an answer that does not match.

A suite with truncation 0 answers with the whole HMAC (RFC 6287 section 5.2, item 3), which
this module renders as lower-case hex: 40, 64 or 128 characters for SHA1, SHA256 or SHA512.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Literal

HashName = Literal["SHA1", "SHA256", "SHA512"]
QuestionFormat = Literal["A", "N", "H"]
# One challenge, or two for the mutual and signature-with-server-authentication modes (RFC 6287
# sections 7.2 and 7.3.2), given in the order they enter DataInput.
Question = str | tuple[str, str]

_HASHES: dict[str, HashName] = {"SHA1": "SHA1", "SHA256": "SHA256", "SHA512": "SHA512"}
_HASHLIB_NAMES: dict[HashName, str] = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
# RFC 6287 section 8.2, IC2: keys SHOULD be as long as the CryptoFunction's output.
_DIGEST_SIZES: dict[HashName, int] = {"SHA1": 20, "SHA256": 32, "SHA512": 64}
_FORMATS: dict[str, QuestionFormat] = {"A": "A", "N": "N", "H": "H"}
_QUESTION_ALPHABETS: dict[QuestionFormat, str] = {
    "A": string.ascii_letters + string.digits,
    "N": string.digits,
    "H": string.hexdigits[:16],  # 0-9a-f: one spelling of each nibble
}
# Explicit ASCII classes: str.isdigit() and int() also accept non-ASCII digits.
_QUESTION_PATTERNS: dict[QuestionFormat, re.Pattern[str]] = {
    "A": re.compile(r"[A-Za-z0-9]+"),
    "N": re.compile(r"[0-9]+"),
    "H": re.compile(r"[0-9A-Fa-f]+"),
}
_STEP_UNITS = {"S": 1, "M": 60, "H": 3600}
# Table 3 of RFC 6287 section 6.3, with errata 3729 (verified): hours are 1-48, not 0-48,
# because a zero-length time step has no meaning.
_STEP_LIMITS = {"S": 59, "M": 59, "H": 48}

_SUITE_CHARS = re.compile(r"[!-~]+")
_CRYPTO_RE = re.compile(r"HOTP-([A-Z0-9]+)-([0-9]+)")
_QUESTION_RE = re.compile(r"Q(.)([0-9]*)")
_PIN_RE = re.compile(r"P(.*)")
_SESSION_RE = re.compile(r"S([0-9]{3})")
_TIME_RE = re.compile(r"T([0-9]{1,2})([SMH])")
_RESPONSE_DIGITS = re.compile(r"[0-9]+")
_RESPONSE_HEX = re.compile(r"[0-9a-f]+")

_Q_BYTES = 128  # RFC 6287 section 5.1: Q is always 128 bytes, zero-padded on the right.
_U64 = 1 << 64  # C and T are 8-byte unsigned integers (section 5.1).


class SuiteError(ValueError):
    """The OCRASuite string does not follow RFC 6287 section 6."""


class OcraInputError(ValueError):
    """The inputs do not fit the suite: a missing counter, a question of the wrong format..."""


class WrongResponse(Exception):
    """The given response is not the expected one; ``reason`` is for the audit log."""

    def __init__(self, reason: str = "wrong_response") -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedResponse(WrongResponse):
    """The given response cannot be right: wrong length or characters for the suite."""

    def __init__(self) -> None:
        super().__init__("malformed_response")


@dataclass(frozen=True)
class Suite:
    """A parsed OCRASuite. Build it with ``parse_suite``: ``text`` is hashed into every response,
    so the fields must be the ones ``text`` says."""

    text: str  # the whole suite, exactly as given: it is the first part of DataInput
    hash_name: HashName  # HMAC hash of the CryptoFunction
    digits: int  # 0 (no truncation: the whole HMAC, as hex) or 4-10
    counter: bool  # C
    question_format: QuestionFormat  # Q's F
    question_length: int  # Q's xx, the maximum length of one challenge
    pin_hash_name: HashName | None  # P's hash
    session_length: int | None  # S's length in bytes
    time_step_seconds: int | None  # T's G, in seconds

    @property
    def data_input(self) -> str:
        """The DataInput component of the suite's text, e.g. ``C-QN08-PSHA1``."""
        return self.text.split(":", 2)[2]

    @property
    def response_length(self) -> int:
        """The number of characters of a response."""
        if self.digits == 0:
            return 2 * _DIGEST_SIZES[self.hash_name]
        return self.digits

    def __str__(self) -> str:
        return self.text


def parse_suite(text: str) -> Suite:
    """Parse ``<Algorithm>:<CryptoFunction>:<DataInput>`` (RFC 6287 section 6); raise
    ``SuiteError`` saying what is wrong."""
    # The suite's bytes go into DataInput as they are (section 5.1), so it must be ASCII, and
    # it is case-sensitive: "ocra-1:..." would be a different suite to a peer that accepts it.
    if not isinstance(text, str) or not _SUITE_CHARS.fullmatch(text):
        raise SuiteError("suite must be printable ASCII text without spaces")
    parts = text.split(":")
    if len(parts) != 3:
        raise SuiteError(
            "suite must have three ':'-separated parts: <Algorithm>:<CryptoFunction>:<DataInput>"
        )
    algorithm, crypto, data_input = parts
    # Section 6.1: this document specifies version 1 only.
    if algorithm != "OCRA-1":
        raise SuiteError(f"unsupported algorithm {algorithm!r}: only OCRA-1 is defined")
    hash_name, digits = _parse_crypto_function(crypto)
    fields = _parse_data_input(data_input)
    return Suite(
        text=text,
        hash_name=hash_name,
        digits=digits,
        counter=fields.counter,
        question_format=fields.question_format,
        question_length=fields.question_length,
        pin_hash_name=fields.pin_hash_name,
        session_length=fields.session_length,
        time_step_seconds=fields.time_step_seconds,
    )


def _parse_crypto_function(crypto: str) -> tuple[HashName, int]:
    """Section 5.2, Table 1: HOTP-SHA1|SHA256|SHA512-t, t = 0 or 4-10."""
    match = _CRYPTO_RE.fullmatch(crypto)
    if match is None:
        raise SuiteError(f"crypto function {crypto!r} must be HOTP-<hash>-<digits>")
    hash_name = _HASHES.get(match[1])
    if hash_name is None:
        raise SuiteError(f"unknown hash in crypto function: {match[1]!r} (SHA1, SHA256, SHA512)")
    # No leading zero: the reference code reads t with Integer.decode, which takes "06" as octal.
    # At most two digits before int(): a longer run is wrong anyway, and int() of thousands of
    # digits raises a plain ValueError (CPython's conversion limit), not a SuiteError.
    t = match[2]
    if not (t == "0" or (t[0] != "0" and len(t) <= 2 and 4 <= int(t) <= 10)):
        raise SuiteError(f"truncation must be 0 or 4-10 digits, not {t!r}")
    return hash_name, int(t)


@dataclass(frozen=True)
class _DataInputFields:
    counter: bool
    question_format: QuestionFormat
    question_length: int
    pin_hash_name: HashName | None
    session_length: int | None
    time_step_seconds: int | None


def _parse_data_input(data_input: str) -> _DataInputFields:
    """Section 6.3: ``[C] | QFxx | [PH | Snnn | TG]``, hyphen-separated, in this order."""
    components = data_input.split("-")
    if any(c == "" for c in components):
        raise SuiteError(f"empty component in DataInput {data_input!r}")
    counter = components[0] == "C"
    if counter:
        components = components[1:]
    if "C" in components:
        raise SuiteError("C must come first in DataInput")
    if not components or not components[0].startswith("Q"):
        raise SuiteError("Q is mandatory and must come first in DataInput, or right after C")
    question_format, question_length = _parse_question(components[0])
    pin_hash_name: HashName | None = None
    session_length: int | None = None
    time_step_seconds: int | None = None
    # P, S and T follow Q at most once each, in the order they enter DataInput (section 5.1).
    order = "PST"
    last = -1
    for component in components[1:]:
        rank = order.find(component[0])
        if rank < 0:
            raise SuiteError(f"unknown DataInput component {component!r}")
        if rank == last:
            raise SuiteError(f"{component[0]} appears twice in DataInput")
        if rank < last:
            raise SuiteError("P, S and T must appear in this order, after Q")
        last = rank
        if component[0] == "P":
            pin_hash_name = _parse_pin(component)
        elif component[0] == "S":
            session_length = _parse_session(component)
        else:
            time_step_seconds = _parse_time_step(component)
    return _DataInputFields(
        counter=counter,
        question_format=question_format,
        question_length=question_length,
        pin_hash_name=pin_hash_name,
        session_length=session_length,
        time_step_seconds=time_step_seconds,
    )


def _parse_question(component: str) -> tuple[QuestionFormat, int]:
    """Section 6.3, Table 2: QFxx, F in A, N, H and xx (the maximum length) 04-64."""
    match = _QUESTION_RE.fullmatch(component)
    if match is None:
        raise SuiteError(f"question {component!r} must be Q<format><length>, e.g. QN08")
    question_format = _FORMATS.get(match[1])
    if question_format is None:
        raise SuiteError(f"unknown question format {match[1]!r} in Q (A, N or H)")
    # One digit is accepted because section 6.4's own example is "QH8".
    length = match[2]
    if not 1 <= len(length) <= 2 or not 4 <= int(length) <= 64:
        raise SuiteError(f"question length must be 04-64, not {length!r}")
    return question_format, int(length)


def _parse_pin(component: str) -> HashName:
    """Section 6.3: PH, H in SHA1, SHA256, SHA512."""
    match = _PIN_RE.fullmatch(component)
    name = _HASHES.get(match[1]) if match is not None else None
    if name is None:
        raise SuiteError(f"unknown hash in P: {component[1:]!r} (SHA1, SHA256 or SHA512)")
    return name


def _parse_session(component: str) -> int:
    """Section 6.3: Snnn, nnn the length of S in bytes. The RFC lets the parties agree on any
    length (064, 128, 256 and 512 are the "typical values") and caps S at 512 bytes (5.1)."""
    match = _SESSION_RE.fullmatch(component)
    if match is None or not 1 <= int(match[1]) <= 512:
        raise SuiteError(f"session length in {component!r} must be three digits, 001-512")
    return int(match[1])


def _parse_time_step(component: str) -> int:
    """Section 6.3, Table 3 with errata 3729: T[1-59]S, T[1-59]M or T[1-48]H."""
    match = _TIME_RE.fullmatch(component)
    if match is None:
        raise SuiteError(f"time step {component!r} must be T<n>S, T<n>M or T<n>H")
    count, unit = int(match[1]), match[2]
    if not 1 <= count <= _STEP_LIMITS[unit]:
        raise SuiteError(
            f"T step out of range: {component!r} (1-59 S, 1-59 M or 1-48 H, RFC 6287 errata 3729)"
        )
    return count * _STEP_UNITS[unit]


def key_bytes(suite: Suite) -> int:
    """The key length for the suite's hash: 20, 32 or 64 bytes (section 8.2, IC2)."""
    return _DIGEST_SIZES[suite.hash_name]


def hash_pin(suite: Suite, pin: str) -> bytes:
    """P for the suite: the digest of the UTF-8 PIN with the suite's P hash (section 5.1).
    Store this instead of the PIN and pass it to ``response`` as ``pin_hash``."""
    if suite.pin_hash_name is None:
        raise OcraInputError(f"suite {suite.text} has no P: it takes no PIN")
    return hashlib.new(_HASHLIB_NAMES[suite.pin_hash_name], pin.encode("utf-8")).digest()


def time_step(suite: Suite, now: int) -> int:
    """T for a Unix time: the number of whole time steps since the epoch (section 5.1),
    e.g. ``now // 60`` for T1M."""
    if suite.time_step_seconds is None:
        raise OcraInputError(f"suite {suite.text} has no T")
    if isinstance(now, bool) or not isinstance(now, int) or now < 0:
        raise OcraInputError("now must be a non-negative Unix time in seconds")
    return now // suite.time_step_seconds


def new_question(suite: Suite) -> str:
    """A random challenge of the suite's format and maximum length: decimal digits (N),
    ASCII letters and digits (A) or lower-case hex digits (H)."""
    alphabet = _QUESTION_ALPHABETS[suite.question_format]
    return "".join(secrets.choice(alphabet) for _ in range(suite.question_length))


def data_input(
    suite: Suite,
    *,
    question: Question,
    counter: int | None = None,
    pin: str | None = None,
    pin_hash: bytes | None = None,
    session: bytes | None = None,
    timestamp: int | None = None,
) -> bytes:
    """The message the HMAC signs: OCRASuite | 00 | C | Q | P | S | T (section 5.1), each part
    present exactly when the suite names it. See ``response`` for the arguments."""
    message = bytearray(suite.text.encode("ascii"))
    message.append(0)
    # Absence is None, never falsiness: counter 0, timestamp 0 and b"" are values.
    if suite.counter:
        if counter is None:
            raise OcraInputError(f"suite {suite.text} has C: a counter is required")
        message += _u64("counter", counter)
    elif counter is not None:
        raise OcraInputError(f"suite {suite.text} has no C: do not pass a counter")
    message += _question_bytes(suite, question)
    message += _pin_bytes(suite, pin, pin_hash)
    if suite.session_length is not None:
        if session is None:
            raise OcraInputError(f"suite {suite.text} has S: session information is required")
        # The reference code left-pads a shorter S with zero bytes; taking only the exact length
        # keeps two different sessions from giving the same S.
        if not isinstance(session, bytes) or len(session) != suite.session_length:
            raise OcraInputError(f"session information must be {suite.session_length} bytes")
        message += session
    elif session is not None:
        raise OcraInputError(f"suite {suite.text} has no S: do not pass session information")
    if suite.time_step_seconds is not None:
        if timestamp is None:
            raise OcraInputError(f"suite {suite.text} has T: a timestamp is required")
        message += _u64("timestamp", timestamp)
    elif timestamp is not None:
        raise OcraInputError(f"suite {suite.text} has no T: do not pass a timestamp")
    return bytes(message)


def _u64(name: str, value: int) -> bytes:
    """C and T: 8-byte unsigned big-endian integers (section 5.1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
        raise OcraInputError(f"{name} must be an integer from 0 to 2**64 - 1")
    return value.to_bytes(8, "big")


def _question_bytes(suite: Suite, question: Question) -> bytes:
    """Q: 128 bytes, padded on the right, encoded per format as Appendix A's reference code and
    the Appendix C vectors do."""
    if isinstance(question, tuple):
        # Mutual modes concatenate two challenges (sections 5.1, 7.2, 7.3.2); each one is held
        # to the suite's limits, so Q still fits its 128 bytes (2 x 64).
        if len(question) != 2:
            raise OcraInputError("a mutual question is a pair of two challenges")
        text = "".join(_check_challenge(suite, q) for q in question)
    else:
        text = _check_challenge(suite, question)
    if suite.question_format == "N":
        # The decimal challenge as an integer, in hex with no leading zero nibble added, then
        # right-padded with '0' nibbles: "22222222" is 0x153158E, so Q starts 15 31 58 E0.
        nibbles = format(int(text), "X")
    elif suite.question_format == "H":
        nibbles = text
    else:
        return text.encode("ascii").ljust(_Q_BYTES, b"\x00")
    return bytes.fromhex(nibbles.ljust(2 * _Q_BYTES, "0"))


def _check_challenge(suite: Suite, challenge: str) -> str:
    """One challenge: 1 to xx characters of format F (section 6.3, Table 2)."""
    if not isinstance(challenge, str):
        raise OcraInputError("the question must be a string")
    if not 1 <= len(challenge) <= suite.question_length:
        raise OcraInputError(
            f"the question must be 1-{suite.question_length} characters for Q"
            f"{suite.question_format}{suite.question_length}, not {len(challenge)}"
            + (" (pass a mutual question as a pair)" if challenge else "")
        )
    if not challenge.isascii() or not _QUESTION_PATTERNS[suite.question_format].fullmatch(
        challenge
    ):
        kind = {"A": "letters and digits", "N": "decimal digits", "H": "hex digits"}
        raise OcraInputError(f"the question must be {kind[suite.question_format]} only")
    return challenge


def _pin_bytes(suite: Suite, pin: str | None, pin_hash: bytes | None) -> bytes:
    """P: the digest of the PIN (section 5.1), from the PIN or from its stored digest."""
    if suite.pin_hash_name is None:
        if pin is not None or pin_hash is not None:
            raise OcraInputError(f"suite {suite.text} has no P: do not pass a PIN")
        return b""
    if pin is not None and pin_hash is not None:
        raise OcraInputError("pass either pin or pin_hash, not both")
    if pin is not None:
        if not isinstance(pin, str):
            raise OcraInputError("pin must be a string")
        return hash_pin(suite, pin)
    if pin_hash is None:
        raise OcraInputError(f"suite {suite.text} has P: a pin or pin_hash is required")
    size = _DIGEST_SIZES[suite.pin_hash_name]
    if not isinstance(pin_hash, bytes) or len(pin_hash) != size:
        raise OcraInputError(f"pin_hash must be the {size}-byte {suite.pin_hash_name} digest")
    return pin_hash


def response(
    suite: Suite,
    key: bytes,
    *,
    question: Question,
    counter: int | None = None,
    pin: str | None = None,
    pin_hash: bytes | None = None,
    session: bytes | None = None,
    timestamp: int | None = None,
) -> str:
    """The OCRA response (RFC 6287 section 5): HMAC(key, DataInput), truncated as HOTP does.

    ``question`` is one challenge, or a pair for mutual modes in DataInput order (a server's
    response is over (client, server), a client's over (server, client): sections 7.2, 7.3.2).
    ``counter`` is C; ``pin`` (hashed here) or ``pin_hash`` (its digest) gives P; ``session`` is
    S, exactly the suite's length; ``timestamp`` is T, a count of time steps (see
    ``time_step``), not a Unix time. Pass exactly the inputs the suite names.

    Returns ``digits`` decimal digits, or for truncation 0 the whole HMAC in lower-case hex.
    """
    if not isinstance(key, bytes) or not key:
        raise OcraInputError("key must be non-empty bytes")
    message = data_input(
        suite,
        question=question,
        counter=counter,
        pin=pin,
        pin_hash=pin_hash,
        session=session,
        timestamp=timestamp,
    )
    mac = hmac.new(key, message, _HASHLIB_NAMES[suite.hash_name]).digest()
    if suite.digits == 0:
        return mac.hex()
    # RFC 4226 section 5.3 dynamic truncation. The reference code's table of powers stops at
    # 10**8, so it cannot produce 9 or 10 digits (nor the 0 case); the RFC allows them.
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**suite.digits).zfill(suite.digits)


def normalize_response(suite: Suite, given: str) -> str:
    """A typed response in the form ``response`` returns it, or ``MalformedResponse`` if it
    cannot be one: spaces are dropped and hex is lower-cased, then length and characters must
    fit the suite."""
    if not isinstance(given, str):
        raise MalformedResponse
    candidate = given.replace(" ", "")
    pattern = _RESPONSE_DIGITS
    if suite.digits == 0:
        candidate = candidate.lower()
        pattern = _RESPONSE_HEX
    if (
        not candidate.isascii()
        or len(candidate) != suite.response_length
        or not pattern.fullmatch(candidate)
    ):
        raise MalformedResponse
    return candidate


def check(
    suite: Suite,
    key: bytes,
    given_response: str,
    *,
    question: Question,
    counter: int | None = None,
    pin: str | None = None,
    pin_hash: bytes | None = None,
    session: bytes | None = None,
    timestamp: int | None = None,
) -> None:
    """Return if ``given_response`` is the response for these inputs (see ``response``);
    raise ``MalformedResponse`` if it cannot be one and ``WrongResponse`` if it is another."""
    # The expected value first: inputs that do not fit the suite are the caller's bug and
    # must surface as OcraInputError whatever was typed.
    expected = response(
        suite,
        key,
        question=question,
        counter=counter,
        pin=pin,
        pin_hash=pin_hash,
        session=session,
        timestamp=timestamp,
    )
    given = normalize_response(suite, given_response)
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii")):
        raise WrongResponse
