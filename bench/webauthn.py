"""Security-key logins for the bench: users with a registered key, each with a login
transaction whose stored ceremony matches one assertion made beforehand.

Registration and the login challenge go through the service's own functions (``factors.enroll``
and ``confirm``, ``login.challenge``), answered by the software authenticator of the tests
(``tests/softauthn.py``), so the stored state is exactly what a browser's login would leave.
That costs a few milliseconds per user, so fewer users are prepared than for TOTP; a run that
uses them all says so and its rate is a lower bound. A ceremony lives 300 s (WebAuthn section
5.4, the timeout the service uses), so the logins are opened after all the keys are registered,
and the security-key run is the first after the warm-up.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from mfa import schemas
from mfa.context import CLI, Context
from mfa.services import factors, login, transactions
from mfa.services.handlers import HANDLERS
from mfa.services.tokens import Principal

TYPE = "webauthn"
PREPARE_THREADS = 4


def missing() -> str | None:
    """Why this build cannot run the scenario, or None if it can."""
    if TYPE not in HANDLERS:
        return "no `webauthn` factor type in this build"
    try:
        from tests import softauthn  # noqa: F401, PLC0415  (only the bench and the tests use it)
    except ImportError:
        return "tests/softauthn.py is not importable from here (run from the repository root)"
    return None


def prepare(ctx: Context, user_ids: list[str], now: int, ttl: int) -> tuple[list[str], float]:
    """Register a key for each user and open a login answered by one assertion; return the
    ``POST /api/login/verify`` bodies (``{mfa_token, credential}``, as the API takes them), and
    the time (``time.time()``) as the first of their ceremonies began.

    All the keys are registered first and the logins opened after: a registration has no
    deadline, a ceremony has (300 s), and on SQLite the two took 270 s for 12,000 users on a
    2-core machine (2026-11-28), about half each. A few threads at once, as the server's own
    worker threads would call the same functions: most of the time per user is waiting for
    commits."""
    request = TypeAdapter(schemas.EnrollRequest).validate_python({"type": TYPE})
    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        keys = list(pool.map(lambda user_id: _register(ctx, request, user_id, now), user_ids))
        since = time.time()
        bodies = list(pool.map(lambda key: _login(ctx, key, now, ttl), keys))
    return bodies, since


@dataclass(frozen=True)
class _Key:
    user_id: str
    factor_id: str
    authenticator: Any  # tests.softauthn.SoftAuthenticator, which holds the private key


def _register(ctx: Context, request: Any, user_id: str, now: int) -> _Key:
    from tests.softauthn import SoftAuthenticator  # noqa: PLC0415

    authenticator = SoftAuthenticator()
    enroller = factors.Enroller(
        principal=Principal(
            user_id=user_id,
            auth_time=now,
            amr=("pwd", "otp", "mfa"),
            family_id=None,
            claims={},
        )
    )
    enrollment: dict[str, Any] = factors.enroll(ctx, enroller, request, CLI)
    created = authenticator.make_credential(enrollment["publicKey"], ctx.settings.origin)
    factors.confirm(ctx, enroller, enrollment["id"], created, CLI)
    return _Key(user_id, enrollment["id"], authenticator)


def _login(ctx: Context, key: _Key, now: int, ttl: int) -> str:
    with ctx.db.write() as session:
        mfa_token = transactions.create(session, key.user_id, now, ttl)
    options = login.challenge(ctx, mfa_token, key.factor_id)
    assertion = key.authenticator.get_assertion(options["publicKey"], ctx.settings.origin)
    return json.dumps({"mfa_token": mfa_token, "credential": assertion})
