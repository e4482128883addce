"""OCRA (RFC 6287) as a factor: a keypad token answers the question the service asks.

The service asks a fresh random question (section 7.1, one-way challenge-response) and keeps it
with the login transaction; the answer is checked against that question only. What makes an
answer single-use depends on the suite:

- a counter suite (``C``): the server's counter with a look-ahead window, like HOTP, moved past
  the counter used;
- a time suite (``T``): the current time step and one either side, each step once;
- otherwise the question alone: it is answerable once, and a newer one replaces it.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, ClassVar

from .. import ocra
from ..models import FactorState
from .base import Accepted, Challenge, Enrollment, Rejected

if TYPE_CHECKING:
    from ..schemas import OcraEnroll

log = logging.getLogger(__name__)

DEFAULT_SUITE = "OCRA-1:HOTP-SHA1-6:QN08"
# As HOTP (RFC 4226 section 7.4): the expected counter and 10 beyond it.
LOOK_AHEAD = 10
# As TOTP (RFC 6238 section 5.2): one time step of drift either side.
TIME_WINDOW = 1
# RFC 4226 section 5.3 asks for at least 6 digits; fewer would make a guess too likely to pass
# within the throttle's limits. Truncation 0 (the whole HMAC in hex) is not typed on a keypad.
MIN_DIGITS = 6


class UnservableSuite(ValueError):
    """A well-formed suite this service cannot verify; the message says why."""


def servable(text: str) -> ocra.Suite:
    """Parse ``text`` and refuse what a login here cannot answer.

    - ``S``: session information comes from a protocol around the token (section 5.1); a login
      here has none to give, so neither side could compute the same DataInput.
    - ``C`` together with ``T``: one server-side counter cannot track both.
    - truncation 0 or fewer than 6 digits (see ``MIN_DIGITS``).
    """
    suite = ocra.parse_suite(text)
    if suite.session_length is not None:
        raise UnservableSuite("suites with session information (S) are not supported")
    if suite.counter and suite.time_step_seconds is not None:
        raise UnservableSuite(
            "suites with both a counter (C) and a time step (T) are not supported"
        )
    if suite.digits < MIN_DIGITS:
        raise UnservableSuite(f"responses must have {MIN_DIGITS} to 10 digits")
    return suite


def suite_of(factor: FactorState) -> ocra.Suite:
    if factor.suite is None:
        raise ValueError(f"factor {factor.id} has no OCRA suite")
    return ocra.parse_suite(factor.suite)


class Ocra:
    type: ClassVar[str] = "ocra"

    def enroll(self, options: OcraEnroll, *, issuer: str, account: str) -> Enrollment:
        suite = servable(options.suite)
        key = secrets.token_bytes(ocra.key_bytes(suite))
        question = ocra.new_question(suite)
        columns = {
            "suite": suite.text,
            "algorithm": suite.hash_name,
            "digits": suite.digits,
            "period": suite.time_step_seconds,
            "counter": 0,  # counter suites start at 0, used by the confirmation
        }
        reveal = {"secret": key.hex(), "suite": suite.text, "question": question}
        return Enrollment(columns, key, reveal, challenge=question)

    def challenge(self, factor: FactorState, *, now: int) -> Challenge:
        suite = suite_of(factor)
        question = ocra.new_question(suite)
        return Challenge({"question": question, "suite": suite.text}, state=question)

    def verify(
        self,
        factor: FactorState,
        secret: bytes,
        code: str,
        *,
        now: int,
        state: str | None,
        pin_hash: bytes | None = None,
    ) -> Accepted:
        """Check ``code`` as the response to the question ``state``. ``Accepted.counter`` is
        the counter or time step used, or None for a suite with neither."""
        if state is None:
            raise Rejected("no_question")
        suite = suite_of(factor)
        try:
            given = ocra.normalize_response(suite, code)
        except ocra.MalformedResponse:
            raise Rejected("malformed_code") from None
        for candidate in _candidates(suite, factor, now):
            try:
                ocra.check(
                    suite,
                    secret,
                    given,
                    question=state,
                    pin_hash=pin_hash,
                    counter=candidate if suite.counter else None,
                    timestamp=candidate if suite.time_step_seconds is not None else None,
                )
            except ocra.WrongResponse:
                continue
            except ocra.OcraInputError:
                # A stored question or PIN hash that does not fit the suite: our data is wrong,
                # not the user's answer. Refuse, and say so in the log (without the values).
                log.error("OCRA factor %s: stored inputs do not fit its suite", factor.id)
                raise Rejected("factor_misconfigured") from None
            return Accepted(candidate)
        raise Rejected("wrong_code")


def _candidates(suite: ocra.Suite, factor: FactorState, now: int) -> list[int | None]:
    """The counters or time steps to try, oldest first; ``[None]`` for a suite with neither."""
    if suite.counter:
        return list(range(factor.counter, factor.counter + LOOK_AHEAD + 1))
    if suite.time_step_seconds is not None:
        step = ocra.time_step(suite, now)
        # Steps before factor.counter were used already (or lie behind one that was).
        first = max(step - TIME_WINDOW, factor.counter, 0)
        return list(range(first, step + TIME_WINDOW + 1))
    return [None]
