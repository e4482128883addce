"""Small helpers the tests share: a clock to move, the API's common journeys, and writes."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy import text

from mfa import ocra
from mfa.db import Database

VECTORS = Path(__file__).resolve().parent / "vectors"
PASSWORD = "correct horse battery staple"


class Clock:
    """The app's clock: starts at the real time (so that outside libraries checking ``exp``
    agree) on the last period boundary, and moves only when the test says so."""

    def __init__(self) -> None:
        now = int(time.time())
        self.now = float(now - now % 60)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    """A user signed up through the API, with what the test learned along the way."""

    username: str
    password: str = PASSWORD
    id: str = ""
    factors: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)

    @property
    def access(self) -> dict[str, str]:
        return bearer(self.tokens["access_token"])


def signup(client: Any, username: str = "alice", password: str = PASSWORD) -> Account:
    r = client.post("/api/users", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    return Account(username=username, password=password, id=r.json()["id"])


def login(client: Any, account: Account) -> dict[str, Any]:
    r = client.post("/api/login", json={"username": account.username, "password": account.password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def totp_code(
    secret: str,
    now: float,
    *,
    digits: int = 6,
    period: int = 30,
    algorithm: str = "SHA1",
    steps: int = 0,
) -> str:
    """The code an authenticator app shows at ``now`` (``steps`` periods later)."""
    totp = pyotp.TOTP(secret, digits=digits, interval=period, digest=DIGESTS[algorithm])
    return totp.at(int(now) + steps * period)


def hotp_code(secret: str, counter: int, *, digits: int = 6, algorithm: str = "SHA1") -> str:
    return pyotp.HOTP(secret, digits=digits, digest=DIGESTS[algorithm]).at(counter)


def ocra_response(
    factor: dict[str, Any],
    question: str,
    *,
    counter: int | None = None,
    timestamp: int | None = None,
    pin: str | None = None,
) -> str:
    """What a keypad token holding ``factor``'s key shows for ``question`` (RFC 6287)."""
    suite = ocra.parse_suite(factor["suite"])
    return ocra.response(
        suite,
        bytes.fromhex(factor["secret"]),
        question=question,
        counter=counter,
        timestamp=timestamp,
        pin=pin,
    )


def enroll_first_totp(client: Any, account: Account, clock: Any, **options: Any) -> dict[str, Any]:
    """Sign-up's first login: enroll a TOTP factor with the mfa_token and confirm it; keep the
    tokens that confirmation returns."""
    start = login(client, account)
    assert start["enroll_required"] is True
    factor = client.post(
        "/api/factors",
        json={"type": "totp", "label": "phone", **options},
        headers=bearer(start["mfa_token"]),
    )
    assert factor.status_code == 201, factor.text
    f = factor.json()
    code = totp_code(
        f["secret"], clock(), digits=f["digits"], period=f["period"], algorithm=f["algorithm"]
    )
    r = client.post(
        f"/api/factors/{f['id']}/confirm", json={"code": code}, headers=bearer(start["mfa_token"])
    )
    assert r.status_code == 200, r.text
    account.tokens = r.json()
    account.factors[f["id"]] = f
    return f


def totp_login(client: Any, account: Account, factor: dict[str, Any], clock: Any) -> dict[str, Any]:
    """A fresh login with a TOTP factor on the next time step (never used before); the tokens
    are kept on the account."""
    account.tokens = another_totp_login(client, account, factor, clock)
    return account.tokens


def another_totp_login(
    client: Any, account: Account, factor: dict[str, Any], clock: Any
) -> dict[str, Any]:
    """``totp_login`` from another device: its tokens (a refresh-token family of its own) are
    returned, and the account keeps the ones it had."""
    clock.advance(30)
    start = login(client, account)
    r = client.post(
        "/api/login/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": factor["id"],
            "code": totp_code(factor["secret"], clock()),
        },
    )
    assert r.status_code == 200, r.text
    tokens: dict[str, Any] = r.json()
    return tokens


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def write_rows(db: Database, count: int) -> None:
    """``count`` write transactions of one small row each (throttle rows of no one)."""
    for _ in range(count):
        with db.write() as session:
            session.execute(
                text(
                    "INSERT INTO throttles (key, failures, blocked_until, locked)"
                    " VALUES (:k, 1, 0, false)"
                ),
                {"k": f"test:{uuid.uuid4()}"},
            )
