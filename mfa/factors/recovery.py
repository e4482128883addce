"""Recovery codes: single-use codes printed or saved once, for when every device is lost.

A code is 12 characters of Crockford's base32 (https://www.crockford.com/base32.html): digits
and capital letters without I, L, O and U, so that no two characters look alike. That is 60
random bits per code, shown in groups of four (``7KQ2-M9XD-4HRT``). Typing is forgiving the way
Crockford's decoding is: case, spaces and dashes do not matter, and I/L read as 1, O as 0.
"""

from __future__ import annotations

import secrets

from .base import Rejected

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 12
GROUP = 4
BITS = LENGTH * 5  # log2(32) bits per character
COUNT = 10

# Crockford's decoding of the characters the alphabet leaves out because they look like others.
_LOOK_ALIKES = str.maketrans({"I": "1", "L": "1", "O": "0"})
_ALLOWED = frozenset(ALPHABET)


def new_codes(count: int = COUNT) -> list[str]:
    """``count`` distinct codes, formatted for reading (groups of four)."""
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        if raw not in codes:
            codes.append(raw)
    return [display(c) for c in codes]


def display(raw: str) -> str:
    return "-".join(raw[i : i + GROUP] for i in range(0, len(raw), GROUP))


def normalize(code: str) -> str:
    """The canonical form of a typed code; raise ``Rejected`` if it cannot be a code at all."""
    raw = "".join(code.split()).replace("-", "").upper().translate(_LOOK_ALIKES)
    if len(raw) != LENGTH or not _ALLOWED.issuperset(raw):
        raise Rejected("malformed_code")
    return raw
