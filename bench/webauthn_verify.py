"""What verifying one security-key assertion costs, without and with ``mfa.fido2_hints``.

Run with the project's interpreter: ``.venv/bin/python bench/webauthn_verify.py [--runs N]
[--json]``.
Assertions come from the software authenticator of the tests (``tests/softauthn.py``, ES256),
each for its own challenge. Prints the median time of ``Fido2Server.authenticate_complete``
and of the service's whole check (``RelyingParty.verify_assertion``, which calls it), first with
fido2 as it ships, then with the type-hint cache the service installs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fido2.webauthn import AttestedCredentialData  # noqa: E402

from mfa import fido2_hints  # noqa: E402
from mfa.factors.webauthn import (  # noqa: E402
    Ceremony,
    KeyDescriptor,
    RelyingParty,
    StoredCredential,
)
from tests.softauthn import SoftAuthenticator  # noqa: E402

RP_ID = "example.com"
ORIGIN = "https://example.com"
NOW = 1_700_000_000


def _prepare(runs: int) -> tuple[RelyingParty, StoredCredential, list[tuple[Ceremony, Any]]]:
    rp = RelyingParty(RP_ID, "Example", (ORIGIN,))
    authenticator = SoftAuthenticator()
    options, ceremony = rp.registration_options(
        user_handle=b"\x01" * 64,
        username="alice",
        exclude=[],
        user_verification="preferred",
        resident_key="discouraged",
        now=NOW,
    )
    new = rp.verify_registration(ceremony, authenticator.make_credential(options, ORIGIN))
    key = StoredCredential(new.credential_id, new.public_key, new.backup_eligible, b"\x01" * 64)
    answers = []
    for _ in range(runs):
        options, ceremony = rp.authentication_options(
            allow=[KeyDescriptor(new.credential_id)], user_verification="preferred", now=NOW
        )
        answers.append((ceremony, authenticator.get_assertion(options, ORIGIN)))
    return rp, key, answers


def _median_us(
    call: Callable[[Ceremony, Any], object], answers: list[tuple[Ceremony, Any]]
) -> float:
    for ceremony, answer in answers[:200]:  # warm up
        call(ceremony, answer)
    times = []
    for ceremony, answer in answers:
        start = time.perf_counter_ns()
        call(ceremony, answer)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="assertions to verify (3000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    rp, key, answers = _prepare(max(args.runs, 1))
    registered = [AttestedCredentialData(key.public_key)]

    def fido2_only(ceremony: Ceremony, answer: Any) -> object:
        return rp.server.authenticate_complete(ceremony.fido2_state(), registered, answer)

    def whole_check(ceremony: Ceremony, answer: Any) -> object:
        return rp.verify_assertion(ceremony, answer, key)

    results: dict[str, tuple[float, float]] = {}
    for name, call in (
        ("Fido2Server.authenticate_complete", fido2_only),
        ("RelyingParty.verify_assertion", whole_check),
    ):
        fido2_hints.uninstall()
        before = _median_us(call, answers)
        fido2_hints.install()
        after = _median_us(call, answers)
        results[name] = (before, after)

    if args.json:
        figures = {name: {"before_us": b, "after_us": a} for name, (b, a) in results.items()}
        print(json.dumps({"runs": len(answers), **figures}))
        return
    print(
        f"webauthn assertion verification: fido2 {fido2_hints.FIDO2_VERSION}, "
        f"Python {platform.python_version()}, median of {len(answers)} ES256 assertions"
    )
    for name, (before, after) in results.items():
        print(
            f"  {name:<34} {before:7.1f} µs without the type-hint cache, "
            f"{after:7.1f} µs with it ({(after - before) / before:+.0%})"
        )


if __name__ == "__main__":
    main()
