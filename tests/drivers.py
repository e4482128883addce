"""One driver per factor type, so that one contract test runs against every type.

A driver enrolls its type through the API and answers for it the way its device would: an
authenticator app, a hardware token, a security key, a sheet of recovery codes.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from .helpers import (
    Account,
    Clock,
    bearer,
    enroll_first_totp,
    hotp_code,
    login,
    ocra_response,
    totp_code,
)
from .softauthn import SoftAuthenticator, b64url_decode, b64url_encode, new_private_key

ORIGIN = "http://localhost:8000"  # the tests' app serves here; MFA_ORIGIN's default


class Driver:
    type: ClassVar[str]

    def enroll_first(self, client: Any, account: Account, clock: Clock) -> dict[str, Any]:
        """Enroll and confirm this type as the account's first factor, through the login that
        requires enrollment; keep the tokens on the account."""
        start = login(client, account)
        assert start["enroll_required"] is True
        factor = self.create(client, bearer(start["mfa_token"]))
        r = client.post(
            f"/api/factors/{factor['id']}/confirm",
            json=self.confirmation(factor, clock),
            headers=bearer(start["mfa_token"]),
        )
        assert r.status_code == 200, r.text
        account.tokens = r.json()
        account.factors[factor["id"]] = factor
        return factor

    def enroll_pending(self, client: Any, account: Account) -> dict[str, Any]:
        return self.create(client, account.access)

    def create(self, client: Any, headers: dict[str, str]) -> dict[str, Any]:
        r = client.post("/api/factors", json=self.options(), headers=headers)
        assert r.status_code == 201, r.text
        factor: dict[str, Any] = r.json()
        assert factor["status"] == "pending"
        return factor

    def options(self) -> dict[str, Any]:
        return {"type": self.type, "label": f"my {self.type}"}

    def confirmation(self, factor: dict[str, Any], clock: Clock) -> dict[str, Any]:
        raise NotImplementedError

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        """A verify body with a right answer never used before."""
        raise NotImplementedError

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        raise NotImplementedError


def _unlike(*codes: str, digits: int = 6) -> str:
    """A well-formed code equal to none of ``codes``."""
    for pattern in ("123456", "654321", "000000"):
        candidate = (pattern * 2)[:digits]
        if candidate not in codes:
            return candidate
    raise AssertionError("unreachable")


class TotpDriver(Driver):
    type = "totp"

    def __init__(self) -> None:
        self.used_step = -1

    def confirmation(self, factor: dict[str, Any], clock: Clock) -> dict[str, Any]:
        self.used_step = int(clock()) // 30
        return {"code": totp_code(factor["secret"], clock())}

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        # The current step is used: the server still takes the next one (clock drift), and
        # after that the app shows a new code only when the period turns.
        step = int(clock()) // 30
        if step + 1 <= self.used_step:
            clock.advance((self.used_step - step) * 30)
            step = int(clock()) // 30
        offset = 0 if step > self.used_step else 1
        self.used_step = step + offset
        code = totp_code(factor["secret"], clock(), steps=offset)
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        window = [totp_code(factor["secret"], clock(), steps=s) for s in (-1, 0, 1)]
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": _unlike(*window)}


class HotpDriver(Driver):
    type = "hotp"

    def __init__(self) -> None:
        self.counter = 0

    def confirmation(self, factor: dict[str, Any], clock: Clock) -> dict[str, Any]:
        self.counter = 1
        return {"code": hotp_code(factor["secret"], 0)}

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        code = hotp_code(factor["secret"], self.counter)
        self.counter += 1
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        window = [hotp_code(factor["secret"], c) for c in range(self.counter, self.counter + 11)]
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": _unlike(*window)}


class WebauthnDriver(Driver):
    """A security key (the software authenticator and the browser in front of it)."""

    type = "webauthn"

    def __init__(self) -> None:
        self.authenticator = SoftAuthenticator()
        self.credential_ids: dict[str, bytes] = {}

    def confirmation(self, factor: dict[str, Any], clock: Clock) -> dict[str, Any]:
        credential = self.authenticator.make_credential(factor["publicKey"], ORIGIN)
        self.credential_ids[factor["id"]] = b64url_decode(credential["rawId"])
        return {"credential": credential}

    def _credential_id(self, factor: dict[str, Any]) -> bytes:
        """The factor's credential; for a factor never confirmed, one made from its creation
        options on another authenticator (this one is excluded by them) and kept there."""
        if factor["id"] not in self.credential_ids:
            other = SoftAuthenticator()
            credential = other.make_credential(factor["publicKey"], ORIGIN)
            self.authenticator.add_credential(other.credentials[0])
            self.credential_ids[factor["id"]] = b64url_decode(credential["rawId"])
        return self.credential_ids[factor["id"]]

    def _request_options(self, client: Any, mfa_token: str, factor: dict[str, Any]) -> Any:
        r = client.post(
            "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor["id"]}
        )
        if r.status_code == 200:
            return r.json()["publicKey"]
        # No challenge to be had (a dead login, a factor that is not active): the key answers
        # one the server never asked.
        return {"challenge": b64url_encode(os.urandom(32)), "rpId": "localhost"}

    def _answer(
        self, client: Any, mfa_token: str, factor: dict[str, Any], **tamper: Any
    ) -> dict[str, Any]:
        credential_id = self._credential_id(factor)
        options = self._request_options(client, mfa_token, factor)
        credential = self.authenticator.get_assertion(
            options, ORIGIN, credential_id=credential_id, **tamper
        )
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "credential": credential}

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        return self._answer(client, mfa_token, factor)

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        # The right credential id over the current challenge, signed by a key that is not it.
        return self._answer(client, mfa_token, factor, sign_with=new_private_key())


class OcraDriver(Driver):
    """A keypad token with the default suite (a question, no counter, no time): it answers
    whatever question ``/api/login/challenge`` asks."""

    type = "ocra"

    def confirmation(self, factor: dict[str, Any], clock: Clock) -> dict[str, Any]:
        return {"code": ocra_response(factor, factor["question"])}

    def question(self, client: Any, mfa_token: str, factor: dict[str, Any]) -> str:
        r = client.post(
            "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": factor["id"]}
        )
        if r.status_code == 200:
            question: str = r.json()["question"]
            return question
        # A login that is over, or a factor it may not use (a pending one): the token can still
        # answer the question it was enrolled with, which this login never asked.
        assert r.status_code in (401, 404), r.text
        return str(factor["question"])

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        code = ocra_response(factor, self.question(client, mfa_token, factor))
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        right = ocra_response(factor, self.question(client, mfa_token, factor))
        code = _unlike(right, digits=len(right))
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}


class RecoveryDriver(Driver):
    """A sheet of recovery codes. A set is made only for a user who has another factor (a TOTP
    app here) and is never pending; its nearest kin, a set since replaced by a new one, is what
    ``enroll_pending`` gives, and it must verify nothing either."""

    type = "recovery"

    def __init__(self) -> None:
        self.used: set[str] = set()

    def enroll_first(self, client: Any, account: Account, clock: Clock) -> dict[str, Any]:
        enroll_first_totp(client, account, clock)
        return self.generate(client, account)

    def generate(self, client: Any, account: Account) -> dict[str, Any]:
        r = client.post("/api/recovery-codes", headers=account.access)
        assert r.status_code == 201, r.text
        factor: dict[str, Any] = r.json()
        account.factors[factor["id"]] = factor
        return factor

    def enroll_pending(self, client: Any, account: Account) -> dict[str, Any]:
        (old,) = [f for f in account.factors.values() if f["type"] == "recovery"]
        self.generate(client, account)
        del account.factors[old["id"]]
        return old

    def right(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        code = next(c for c in factor["codes"] if c not in self.used)
        self.used.add(code)
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}

    def wrong(
        self, client: Any, mfa_token: str, factor: dict[str, Any], clock: Clock
    ) -> dict[str, Any]:
        code = next(c for c in ("0000-0000-0000", "ZZZZ-ZZZZ-ZZZZ") if c not in factor["codes"])
        return {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}


DRIVERS: dict[str, type[Driver]] = {
    "totp": TotpDriver,
    "hotp": HotpDriver,
    "ocra": OcraDriver,
    "recovery": RecoveryDriver,
    "webauthn": WebauthnDriver,
}
