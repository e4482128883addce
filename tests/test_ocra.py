"""OCRA (RFC 6287): the Appendix C vectors, suite parsing, DataInput encoding and checking."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mfa import ocra

from .helpers import VECTORS as VECTOR_DIR

VECTORS_FILE = VECTOR_DIR / "rfc6287_ocra.json"
DATA: dict[str, Any] = json.loads(VECTORS_FILE.read_text())

KEY20 = bytes.fromhex(DATA["keys"]["Standard 20Byte"])
KEY32 = bytes.fromhex(DATA["keys"]["Standard 32Byte"])
KEY64 = bytes.fromhex(DATA["keys"]["Standard 64Byte"])


def _vector_id(group: dict[str, Any], vector: dict[str, Any]) -> str:
    parts = [group["section"]]
    if "computed_by" in group:
        parts.append(group["computed_by"])
    parts += [group["suite"], f"Q={vector['Q']}"]
    if "C" in vector:
        parts.append(f"C={vector['C']}")
    return " ".join(parts)


VECTORS = [
    pytest.param(group, vector, id=_vector_id(group, vector))
    for group in DATA["suites"]
    for vector in group["vectors"]
]


def test_there_are_70_vectors() -> None:
    assert len(VECTORS) == 70
    assert len({p.id for p in VECTORS}) == 70


@pytest.mark.parametrize(("group", "vector"), VECTORS)
def test_appendix_c_vector(group: dict[str, Any], vector: dict[str, Any]) -> None:
    suite = ocra.parse_suite(group["suite"])
    key = bytes.fromhex(group["key_hex"])
    assert key == bytes.fromhex(DATA["keys"][group["key_name"]])
    assert len(key) == ocra.key_bytes(suite)

    inputs: dict[str, Any] = {}
    if "Q_first_half" in vector:
        # Mutual mode: two challenges, concatenated in the order the computing party uses.
        assert vector["Q_first_half"] + vector["Q_second_half"] == vector["Q"]
        inputs["question"] = (vector["Q_first_half"], vector["Q_second_half"])
    else:
        inputs["question"] = vector["Q"]
    if "C" in vector:
        # The reference code takes C as a hex string; C_int is its value.
        assert int(vector["C"], 16) == vector["C_int"]
        inputs["counter"] = vector["C_int"]
    if "T_hex" in vector:
        assert int(vector["T_hex"], 16) == vector["T_int"]
        inputs["timestamp"] = vector["T_int"]
    if "P_sha1_hex" in vector:
        inputs["pin_hash"] = bytes.fromhex(vector["P_sha1_hex"])

    assert ocra.response(suite, key, **inputs) == vector["expected"]
    ocra.check(suite, key, vector["expected"], **inputs)

    if "P_sha1_hex" in vector:
        # The same response from the PIN itself.
        del inputs["pin_hash"]
        assert ocra.response(suite, key, pin=DATA["pin"], **inputs) == vector["expected"]


def test_pin_hash_matches_the_vectors() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:QN08-PSHA1")
    assert ocra.hash_pin(suite, DATA["pin"]) == bytes.fromhex(DATA["pin_sha1_hex"])


def test_t_vectors_are_minutes_of_the_appendix_b_date() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA512-8:QN08-T1M")
    # Mar 25 2008, 12:06:30 GMT (Appendix B), integer-divided into minutes.
    assert ocra.time_step(suite, 1206446790) == 0x132D0B6 == 20107446


# Suite parsing (RFC 6287 section 6)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        # Section 6.4's examples.
        (
            "OCRA-1:HOTP-SHA512-8:C-QN08-PSHA1",
            ("SHA512", 8, True, "N", 8, "SHA1", None, None),
        ),
        ("OCRA-1:HOTP-SHA256-6:QA10-T1M", ("SHA256", 6, False, "A", 10, None, None, 60)),
        ("OCRA-1:HOTP-SHA1-4:QH8-S512", ("SHA1", 4, False, "H", 8, None, 512, None)),
        # Appendix C.
        ("OCRA-1:HOTP-SHA1-6:QN08", ("SHA1", 6, False, "N", 8, None, None, None)),
        ("OCRA-1:HOTP-SHA512-8:QA10-T1M", ("SHA512", 8, False, "A", 10, None, None, 60)),
        # Every part at once, and the limits.
        (
            "OCRA-1:HOTP-SHA256-10:C-QA64-PSHA512-S064-T48H",
            ("SHA256", 10, True, "A", 64, "SHA512", 64, 48 * 3600),
        ),
        ("OCRA-1:HOTP-SHA1-0:QH04-S128-T59S", ("SHA1", 0, False, "H", 4, None, 128, 59)),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA256-T59M", ("SHA1", 6, False, "N", 8, "SHA256", None, 3540)),
    ],
)
def test_parse_valid_suite(text: str, fields: tuple[Any, ...]) -> None:
    suite = ocra.parse_suite(text)
    assert (
        suite.hash_name,
        suite.digits,
        suite.counter,
        suite.question_format,
        suite.question_length,
        suite.pin_hash_name,
        suite.session_length,
        suite.time_step_seconds,
    ) == fields
    assert suite.text == str(suite) == text
    assert suite.data_input == text.split(":")[2]


def test_suite_is_frozen_and_comparable() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    assert suite == ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(AttributeError):
        suite.digits = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printable ASCII"),
        ("OCRA-1:HOTP-SHA1-6", "three ':'-separated parts"),
        ("OCRA-1:HOTP-SHA1-6:QN08:X", "three ':'-separated parts"),
        ("OCRA-2:HOTP-SHA1-6:QN08", "only OCRA-1"),
        ("ocra-1:HOTP-SHA1-6:QN08", "only OCRA-1"),
        ("OCRA-1:TOTP-SHA1-6:QN08", "HOTP-<hash>-<digits>"),
        ("OCRA-1:HOTP-SHA1:QN08", "HOTP-<hash>-<digits>"),
        ("OCRA-1:HOTP-MD5-6:QN08", "unknown hash in crypto function"),
        ("OCRA-1:HOTP-SHA1-3:QN08", "truncation must be 0 or 4-10 digits"),
        ("OCRA-1:HOTP-SHA1-11:QN08", "truncation must be 0 or 4-10 digits"),
        ("OCRA-1:HOTP-SHA1-06:QN08", "truncation must be 0 or 4-10 digits"),
        ("OCRA-1:HOTP-SHA1-00:QN08", "truncation must be 0 or 4-10 digits"),
        pytest.param(
            "OCRA-1:HOTP-SHA1-" + "1" * 5000 + ":QN08",
            "truncation must be 0 or 4-10 digits",
            id="5000-digit-truncation",
        ),
        ("OCRA-1:HOTP-SHA1-6:", "empty component"),
        ("OCRA-1:HOTP-SHA1-6:C--QN08", "empty component"),
        ("OCRA-1:HOTP-SHA1-6:QN08-", "empty component"),
        ("OCRA-1:HOTP-SHA1-6:C", "Q is mandatory"),
        ("OCRA-1:HOTP-SHA1-6:PSHA1", "Q is mandatory"),
        ("OCRA-1:HOTP-SHA1-6:QN08-C", "C must come first"),
        ("OCRA-1:HOTP-SHA1-6:C-C-QN08", "C must come first"),
        ("OCRA-1:HOTP-SHA1-6:QX08", "unknown question format"),
        ("OCRA-1:HOTP-SHA1-6:QN03", "question length must be 04-64"),
        ("OCRA-1:HOTP-SHA1-6:QN65", "question length must be 04-64"),
        ("OCRA-1:HOTP-SHA1-6:QN", "question length must be 04-64"),
        ("OCRA-1:HOTP-SHA1-6:QN008", "question length must be 04-64"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PMD5", "unknown hash in P"),
        ("OCRA-1:HOTP-SHA1-6:QN08-P", "unknown hash in P"),
        ("OCRA-1:HOTP-SHA1-6:QN08-S64", "session length"),
        ("OCRA-1:HOTP-SHA1-6:QN08-S000", "session length"),
        ("OCRA-1:HOTP-SHA1-6:QN08-S513", "session length"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T0H", "T step out of range"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T49H", "T step out of range"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T60M", "T step out of range"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T0S", "T step out of range"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T1D", "T<n>S, T<n>M or T<n>H"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T", "T<n>S, T<n>M or T<n>H"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T1M-PSHA1", "in this order"),
        ("OCRA-1:HOTP-SHA1-6:QN08-S064-PSHA1", "in this order"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1-PSHA1", "twice"),
        ("OCRA-1:HOTP-SHA1-6:QN08-QN08", "unknown DataInput component"),
        ("OCRA-1:HOTP-SHA1-6:QN08-X", "unknown DataInput component"),
        ("OCRA-1:HOTP-SHA1-6:QN08 ", "printable ASCII"),
        ("OCRA-1:HOTP-SHA1-6:QN\uff108", "printable ASCII"),
    ],
)
def test_parse_invalid_suite(text: str, message: str) -> None:
    with pytest.raises(ocra.SuiteError, match=re.escape(message)):
        ocra.parse_suite(text)


def test_suite_error_is_a_value_error() -> None:
    assert issubclass(ocra.SuiteError, ValueError)
    assert issubclass(ocra.OcraInputError, ValueError)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("OCRA-1:HOTP-SHA1-6:QN08", 20),
        ("OCRA-1:HOTP-SHA256-6:QN08", 32),
        ("OCRA-1:HOTP-SHA512-6:QN08", 64),
    ],
)
def test_key_bytes(text: str, size: int) -> None:
    assert ocra.key_bytes(ocra.parse_suite(text)) == size


# DataInput encoding (section 5.1, Appendix A)


def test_numeric_question_is_hex_of_the_integer_padded_right() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    prefix = suite.text.encode() + b"\x00"
    # 22222222 = 0x153158E: seven nibbles, so the last byte ends in a padding nibble.
    message = ocra.data_input(suite, question="22222222")
    assert message == prefix + bytes.fromhex("153158E0") + bytes(124)
    # Leading zeros vanish with the integer conversion.
    assert ocra.data_input(suite, question="00000012") == prefix + b"\xc0" + bytes(127)


def test_alphanumeric_and_hex_questions() -> None:
    qa = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QA08")
    assert ocra.data_input(qa, question="SIG10000")[-128:] == b"SIG10000" + bytes(120)
    qh = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QH08")
    assert ocra.data_input(qh, question="abc")[-128:] == b"\xab\xc0" + bytes(126)


def test_data_input_order_and_widths() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:C-QA08-PSHA1-S064-T1M")
    session = bytes(range(64))
    message = ocra.data_input(
        suite,
        question="A",
        counter=0x0102,
        pin="1234",
        session=session,
        timestamp=0x132D0B6,
    )
    prefix = suite.text.encode() + b"\x00"
    assert message == (
        prefix
        + bytes.fromhex("0000000000000102")
        + b"A"
        + bytes(127)
        + bytes.fromhex(DATA["pin_sha1_hex"])
        + session
        + bytes.fromhex("000000000132D0B6")
    )


# Counter 0 is a value, not absence


def test_counter_zero_gives_the_rfc_vector() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:C-QN08-PSHA1")
    got = ocra.response(suite, KEY32, question="12345678", counter=0, pin="1234")
    assert got == "65347737"


def test_missing_counter_raises() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:C-QN08-PSHA1")
    with pytest.raises(ocra.OcraInputError, match="counter is required"):
        ocra.response(suite, KEY32, question="12345678", pin="1234")


def test_counter_for_a_suite_without_c_raises() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.OcraInputError, match="has no C"):
        ocra.response(suite, KEY20, question="00000000", counter=0)


@pytest.mark.parametrize("counter", [-1, 1 << 64, True])
def test_counter_out_of_range_raises(counter: int) -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA512-8:C-QN08")
    with pytest.raises(ocra.OcraInputError, match="counter must be"):
        ocra.response(suite, KEY64, question="00000000", counter=counter)


def test_largest_counter_is_accepted() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA512-8:C-QN08")
    message = ocra.data_input(suite, question="1", counter=(1 << 64) - 1)
    assert message[len(suite.text) + 1 :][:8] == b"\xff" * 8


def test_timestamp_zero_is_a_value_and_missing_timestamp_raises() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA512-8:QN08-T1M")
    assert len(ocra.response(suite, KEY64, question="0", timestamp=0)) == 8
    with pytest.raises(ocra.OcraInputError, match="timestamp is required"):
        ocra.response(suite, KEY64, question="0")
    plain = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.OcraInputError, match="has no T"):
        ocra.response(plain, KEY20, question="0", timestamp=0)


# Input validation


@pytest.mark.parametrize(
    ("text", "question", "message"),
    [
        ("OCRA-1:HOTP-SHA1-6:QN08", "123456789", "1-8 characters"),
        ("OCRA-1:HOTP-SHA1-6:QN08", "", "1-8 characters"),
        ("OCRA-1:HOTP-SHA1-6:QN08", "1234567a", "decimal digits only"),
        ("OCRA-1:HOTP-SHA1-6:QN08", "\u0661\u0662\u0663", "decimal digits only"),
        ("OCRA-1:HOTP-SHA1-6:QN08", "-1234", "decimal digits only"),
        ("OCRA-1:HOTP-SHA1-6:QA08", "SIG 1000", "letters and digits only"),
        ("OCRA-1:HOTP-SHA1-6:QA08", "é", "letters and digits only"),
        ("OCRA-1:HOTP-SHA1-6:QH08", "abcdefg", "hex digits only"),
        # A mutual question given as one string is too long for QA08: it must be a pair.
        ("OCRA-1:HOTP-SHA256-8:QA08", "CLI22220SRV11110", "pass a mutual question as a pair"),
    ],
)
def test_bad_question_raises(text: str, question: str, message: str) -> None:
    suite = ocra.parse_suite(text)
    with pytest.raises(ocra.OcraInputError, match=re.escape(message)):
        ocra.response(suite, KEY20, question=question)


def test_each_half_of_a_mutual_question_is_checked() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:QA08")
    with pytest.raises(ocra.OcraInputError, match="1-8 characters"):
        ocra.response(suite, KEY32, question=("CLI222200", "SRV1111"))


def test_numeric_mutual_question_concatenates_the_digits() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    # The two challenges are joined as text, then the whole is read as one integer.
    expected = ocra.data_input(suite, question="120034")
    assert ocra.data_input(suite, question=("0012", "0034")) == expected
    assert ocra.data_input(suite, question=("00", "120034")) == expected


def test_pin_inputs() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:QN08-PSHA1")
    pin_hash = bytes.fromhex(DATA["pin_sha1_hex"])
    with pytest.raises(ocra.OcraInputError, match="a pin or pin_hash is required"):
        ocra.response(suite, KEY32, question="0")
    with pytest.raises(ocra.OcraInputError, match="not both"):
        ocra.response(suite, KEY32, question="0", pin="1234", pin_hash=pin_hash)
    with pytest.raises(ocra.OcraInputError, match="20-byte SHA1 digest"):
        ocra.response(suite, KEY32, question="0", pin_hash=pin_hash[:19])
    # An empty PIN is a PIN: it is hashed, not taken as absent.
    assert len(ocra.response(suite, KEY32, question="0", pin="")) == 8
    plain = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:QN08")
    with pytest.raises(ocra.OcraInputError, match="has no P"):
        ocra.response(plain, KEY32, question="0", pin="1234")
    with pytest.raises(ocra.OcraInputError, match="has no P"):
        ocra.hash_pin(plain, "1234")


def test_pin_hash_follows_the_suite_hash() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08-PSHA512")
    assert len(ocra.hash_pin(suite, "1234")) == 64


def test_session_inputs() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08-S064")
    assert len(ocra.response(suite, KEY20, question="1", session=bytes(64))) == 6
    with pytest.raises(ocra.OcraInputError, match="must be 64 bytes"):
        ocra.response(suite, KEY20, question="1", session=bytes(63))
    with pytest.raises(ocra.OcraInputError, match="session information is required"):
        ocra.response(suite, KEY20, question="1")
    plain = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.OcraInputError, match="has no S"):
        ocra.response(plain, KEY20, question="1", session=b"")


def test_empty_key_raises() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.OcraInputError, match="key"):
        ocra.response(suite, b"", question="1")


# Truncation


def test_zero_digits_is_the_whole_hmac_in_hex() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-0:QN08")
    got = ocra.response(suite, KEY32, question="12345678")
    assert re.fullmatch(r"[0-9a-f]{64}", got)
    assert suite.response_length == 64
    ocra.check(suite, KEY32, got.upper(), question="12345678")


def test_ten_digits() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-10:QN08")
    got = ocra.response(suite, KEY20, question="12345678")
    # Ten digits hold the whole 31-bit truncated value, zero-padded.
    assert re.fullmatch(r"[0-9]{10}", got)
    assert int(got) < 2**31


# time_step


@pytest.mark.parametrize(
    ("text", "now", "step"),
    [
        ("OCRA-1:HOTP-SHA1-6:QN08-T1M", 1206446790, 20107446),
        ("OCRA-1:HOTP-SHA1-6:QN08-T30S", 59, 1),
        ("OCRA-1:HOTP-SHA1-6:QN08-T30S", 60, 2),
        ("OCRA-1:HOTP-SHA1-6:QN08-T2H", 7199, 0),
        ("OCRA-1:HOTP-SHA1-6:QN08-T2H", 7200, 1),
        ("OCRA-1:HOTP-SHA1-6:QN08-T1S", 0, 0),
    ],
)
def test_time_step(text: str, now: int, step: int) -> None:
    assert ocra.time_step(ocra.parse_suite(text), now) == step


def test_time_step_needs_t_and_a_valid_time() -> None:
    with pytest.raises(ocra.OcraInputError, match="has no T"):
        ocra.time_step(ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08"), 0)
    with pytest.raises(ocra.OcraInputError, match="non-negative"):
        ocra.time_step(ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08-T1M"), -1)


# new_question


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("OCRA-1:HOTP-SHA1-6:QN08", r"[0-9]{8}"),
        ("OCRA-1:HOTP-SHA1-6:QA10", r"[A-Za-z0-9]{10}"),
        ("OCRA-1:HOTP-SHA1-6:QH64", r"[0-9a-f]{64}"),
        ("OCRA-1:HOTP-SHA1-6:QN64", r"[0-9]{64}"),
    ],
)
def test_new_question_format_and_length(text: str, pattern: str) -> None:
    suite = ocra.parse_suite(text)
    question = ocra.new_question(suite)
    assert re.fullmatch(pattern, question)
    # It is a question the suite accepts.
    assert len(ocra.response(suite, KEY20, question=question)) == 6


def test_new_question_is_random() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QA64")
    assert len({ocra.new_question(suite) for _ in range(5)}) == 5


# check and normalize_response


def test_check_accepts_the_right_response() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    ocra.check(suite, KEY20, "237653", question="00000000")
    ocra.check(suite, KEY20, "237 653", question="00000000")


def test_check_rejects_a_wrong_response() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.WrongResponse) as caught:
        ocra.check(suite, KEY20, "237654", question="00000000")
    assert caught.value.reason == "wrong_response"
    assert not isinstance(caught.value, ocra.MalformedResponse)


@pytest.mark.parametrize(
    "given", ["23765", "2376530", "", "23765a", "\uff12\uff13\uff17\uff16\uff15\uff13", "237653\n"]
)
def test_check_rejects_a_malformed_response(given: str) -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    with pytest.raises(ocra.MalformedResponse) as caught:
        ocra.check(suite, KEY20, given, question="00000000")
    assert caught.value.reason == "malformed_response"
    assert isinstance(caught.value, ocra.WrongResponse)


def test_check_rejects_a_truncated_response_for_a_zero_digit_suite() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA1-0:QN08")
    full = ocra.response(suite, KEY20, question="1")
    assert len(full) == 40
    with pytest.raises(ocra.MalformedResponse):
        ocra.check(suite, KEY20, full[:39], question="1")
    with pytest.raises(ocra.MalformedResponse):
        ocra.check(suite, KEY20, full[:39] + "g", question="1")


def test_normalize_response() -> None:
    six = ocra.parse_suite("OCRA-1:HOTP-SHA1-6:QN08")
    assert ocra.normalize_response(six, " 012 345 ") == "012345"
    hexed = ocra.parse_suite("OCRA-1:HOTP-SHA1-0:QN08")
    assert ocra.normalize_response(hexed, "AB" * 20) == "ab" * 20


def test_check_raises_input_errors_before_looking_at_the_response() -> None:
    suite = ocra.parse_suite("OCRA-1:HOTP-SHA256-8:C-QN08-PSHA1")
    with pytest.raises(ocra.OcraInputError, match="counter is required"):
        ocra.check(suite, KEY32, "x", question="12345678", pin="1234")
