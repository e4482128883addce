"""The data a run needs, written straight into the database before the server starts.

Rows are made with the service's own tables, secret box and token helpers, in bulk inserts:
users with an active TOTP factor whose key the bench keeps, a login transaction (``mfa_token``)
for each user a verification is meant for, access tokens for ``/api/me``, and users with a
known password. All bench users share one argon2id hash: hashing 60,000 passwords would take
longer than the whole bench, and a login verifies one hash whichever it is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert

from mfa.config import Settings
from mfa.context import Context
from mfa.models import Factor, LoginTransaction, User, new_id, table_of
from mfa.opaque import new_token
from mfa.passwords import HASHER
from mfa.services import tokens
from mfa.services.handlers import secret_context

from . import databases, settings, webauthn
from .server import mfa_binary

TOTP_DIGITS = 6
TOTP_PERIOD = 30
# Long enough for every run of the bench; the service reads the expiry from the row.
TRANSACTION_TTL_S = 3600
AMR = ["pwd", "otp", "mfa"]


@dataclass(frozen=True)
class TotpLogin:
    """A user half-way through a login: the password is done, a TOTP code is due."""

    factor_id: str
    key: bytes
    mfa_token: str


@dataclass(frozen=True)
class Dataset:
    verify: list[TotpLogin]
    access_tokens: list[str]
    usernames: list[str]
    password: str
    webauthn: list[str]  # verify bodies, one assertion each
    webauthn_missing: str | None  # why there are none
    webauthn_since: float | None  # time.time() as the first of their ceremonies began


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 section 5.3, written out here so the bench does not check the service's codes
    with the service's own code."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def totp_step(now: float) -> int:
    """RFC 6238 section 4.2 with T0 = 0 and X = 30."""
    return int(now) // TOTP_PERIOD


def ensure_schema(env: Mapping[str, str], ctx: Context) -> str:
    """Build the schema the way an operator would: ``mfa db upgrade`` where the service has
    migrations, else the tables from the models. Returns which of the two it did."""
    proc = subprocess.run(  # noqa: S603  (our own venv's mfa, fixed arguments)
        [mfa_binary(), "db", "upgrade"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mfa db upgrade failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return "mfa db upgrade"


def prepare(env: Mapping[str, str], verify_users: int, webauthn_users: int) -> tuple[Dataset, str]:
    """Fill the database of ``env`` and leave it on the disk (``databases.flush_to_disk``);
    return what the load needs and how the schema was made."""
    prepared = _fill(env, verify_users, webauthn_users)
    databases.flush_to_disk(env["MFA_DATABASE_URL"])
    return prepared


def _fill(env: Mapping[str, str], verify_users: int, webauthn_users: int) -> tuple[Dataset, str]:
    ctx = Context.create(Settings.from_env(env))
    try:
        schema = ensure_schema(env, ctx)
        now = ctx.now()
        password = "bench " + secrets.token_urlsafe(18)
        password_hash = HASHER.hash(password)
        verify = _users(ctx, "verify", verify_users, password_hash, now, logins=True)
        me_users = _users(ctx, "me", settings.ME_USERS, password_hash, now, logins=False)
        pw_users = _users(ctx, "login", settings.PASSWORD_USERS, password_hash, now, logins=False)
        access_tokens = _access_tokens(ctx, [u.user_id for u in me_users], now)
        webauthn_missing = webauthn.missing()
        webauthn_bodies: list[str] = []
        webauthn_since = None
        if webauthn_missing is None:
            key_users = _users(
                ctx, "key", webauthn_users, password_hash, now, logins=False, totp=False
            )
            webauthn_bodies, webauthn_since = webauthn.prepare(
                ctx, [u.user_id for u in key_users], now, TRANSACTION_TTL_S
            )
        return (
            Dataset(
                verify=[u.login for u in verify if u.login is not None],
                access_tokens=access_tokens,
                usernames=[u.username for u in pw_users],
                password=password,
                webauthn=webauthn_bodies,
                webauthn_missing=webauthn_missing,
                webauthn_since=webauthn_since,
            ),
            schema,
        )
    finally:
        ctx.db.dispose()


@dataclass(frozen=True)
class _Made:
    user_id: str
    username: str
    login: TotpLogin | None


def _users(
    ctx: Context,
    kind: str,
    count: int,
    password_hash: str,
    now: int,
    *,
    logins: bool,
    totp: bool = True,
) -> list[_Made]:
    made: list[_Made] = []
    for start in range(0, count, settings.INSERT_BATCH):
        batch = range(start, min(count, start + settings.INSERT_BATCH))
        users: list[dict[str, Any]] = []
        factors: list[dict[str, Any]] = []
        transactions: list[dict[str, Any]] = []
        for i in batch:
            user_id, factor_id, key = new_id(), new_id(), os.urandom(20)
            username = f"bench-{kind}-{i:06d}"
            users.append(
                {
                    "id": user_id,
                    "username": username,
                    "username_key": username,
                    "password_hash": password_hash,
                    "is_admin": False,
                    "created_at": now,
                }
            )
            if totp:
                factors.append(
                    {
                        "id": factor_id,
                        "user_id": user_id,
                        "type": "totp",
                        "label": "Authenticator app",
                        "status": "active",
                        "created_at": now,
                        "confirmed_at": now,
                        "secret": ctx.box.seal(key, context=secret_context(factor_id)),
                        "algorithm": "SHA1",
                        "digits": TOTP_DIGITS,
                        "period": TOTP_PERIOD,
                        "counter": 0,
                    }
                )
            login = None
            if logins and totp:
                token, token_hash = new_token()
                transactions.append(
                    {
                        "id": new_id(),
                        "token_hash": token_hash,
                        "user_id": user_id,
                        "created_at": now,
                        "expires_at": now + TRANSACTION_TTL_S,
                        "failures": 0,
                    }
                )
                login = TotpLogin(factor_id=factor_id, key=key, mfa_token=token)
            made.append(_Made(user_id, username, login))
        with ctx.db.write() as session:
            for table, rows in (
                (table_of(User), users),
                (table_of(Factor), factors),
                (table_of(LoginTransaction), transactions),
            ):
                _bulk(session, table, rows)
    return made


def _bulk(session: Any, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(table), list(rows))


def _access_tokens(ctx: Context, user_ids: list[str], now: int) -> list[str]:
    """Access tokens minted by the service's own ``tokens.issue``, as a verify call would."""
    signer = ctx.keys.signer()  # makes the first signing key, which the server then uses
    with ctx.db.write() as session:
        issued = [
            tokens.issue(session, ctx, user_id=uid, amr=AMR, auth_time=now, now=now)
            for uid in user_ids
        ]
    return [str(i.signed(signer)["access_token"]) for i in issued]


def verify_bodies(logins: Sequence[TotpLogin], now: float) -> Iterator[str]:
    """One ``POST /api/login/verify`` body per login, with the code of the current time step:
    with one step of drift allowed either side, it is good for at least 30 more seconds."""
    step = totp_step(now)
    for login in logins:
        yield (
            f'{{"mfa_token":"{login.mfa_token}","factor_id":"{login.factor_id}",'
            f'"code":"{hotp(login.key, step)}"}}'
        )


def login_bodies(usernames: Sequence[str], password: str) -> Iterator[str]:
    for name in usernames:
        yield f'{{"username":"{name}","password":"{password}"}}'
