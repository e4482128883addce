"""What the admin tests share: an admin account, and a user locked out by 100 failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from mfa.models import User

from .drivers import TotpDriver
from .helpers import Account, Clock, enroll_first_totp, login, signup, totp_login


def make_admin(client: Any, clock: Clock, username: str = "root") -> Account:
    """A user with the admin role (given as ``mfa user add --admin`` would) and a TOTP factor,
    logged in."""
    account = signup(client, username)
    with client.app.state.ctx.db.write() as s:
        s.execute(update(User).where(User.id == account.id).values(is_admin=True))
    enroll_first_totp(client, account, clock)
    return account


def lock_out(client: Any, account: Account, factor: dict[str, Any], clock: Clock) -> TotpDriver:
    """Fail the second factor 100 times in a row (waiting out each back-off): the user is
    locked. Returns a driver that knows which time steps are used."""
    driver = TotpDriver()
    driver.used_step = int(clock()) // 30
    failures = 0
    while failures < 100:
        mfa_token = login(client, account)["mfa_token"]
        for _ in range(5):
            r = client.post(
                "/api/login/verify", json=driver.wrong(client, mfa_token, factor, clock)
            )
            if r.status_code == 429:
                clock.advance(int(r.headers["Retry-After"]))
                break
            assert r.status_code == 401, r.text
            failures += 1
            if failures == 100:
                break
    clock.advance(901)
    right = driver.right(client, login(client, account)["mfa_token"], factor, clock)
    r = client.post("/api/login/verify", json=right)
    assert r.status_code == 423, r.text
    return driver


def log_in_again(client: Any, clock: Clock, account: Account) -> Account:
    """A new login with the account's only (TOTP) factor, on a time step not used before."""
    (factor,) = account.factors.values()
    totp_login(client, account, factor, clock)
    return account
