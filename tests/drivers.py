"""One driver per factor type, so that one contract test runs against every type.

A driver enrolls its type through the API and answers for it the way its device would: an
authenticator app, a hardware token, a security key, a sheet of recovery codes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .helpers import Account, Clock, bearer, enroll_first_totp, hotp_code, login, totp_code


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
    "recovery": RecoveryDriver,
}
