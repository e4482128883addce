"""The cache of fido2's type hints (``mfa.fido2_hints``) changes nothing but the time taken."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import typing
from collections.abc import Iterator
from typing import Any

import fido2.utils
import pytest
from fido2.server import Fido2Server
from fido2.webauthn import AuthenticationResponse, RegistrationResponse

import mfa.factors.webauthn  # noqa: F401  (installs the cache, as the service does)
from mfa import fido2_hints
from mfa.factors.base import Rejected
from mfa.factors.webauthn import RelyingParty, StoredCredential

from .softauthn import SoftAuthenticator, new_private_key
from .test_webauthn_vectors import (
    _ALL,
    ACCEPTED,
    ORIGIN,
    RP_ID,
    assertion_ceremony,
    assertion_json,
    registration_ceremony,
    registration_json,
)

SOFT_ORIGIN = "https://example.com"


@pytest.fixture
def without_cache() -> Iterator[None]:
    fido2_hints.uninstall()
    try:
        yield
    finally:
        fido2_hints.install()


def test_the_service_runs_with_the_cache_installed():
    assert fido2_hints.installed()
    assert fido2.utils.get_type_hints is not typing.get_type_hints


def test_each_class_is_resolved_once_and_to_what_typing_resolves():
    fido2_hints.uninstall()
    fido2_hints.install()
    _run_softauthn_ceremonies()
    assert RegistrationResponse in fido2_hints._hints
    assert AuthenticationResponse in fido2_hints._hints
    for cls, hints in fido2_hints._hints.items():
        assert hints == typing.get_type_hints(cls)


def test_uninstall_puts_fido2_back(without_cache):
    assert not fido2_hints.installed()
    assert fido2.utils.get_type_hints is typing.get_type_hints


def _verify_vectors() -> list[Any]:
    rp = RelyingParty(RP_ID, "Example", (ORIGIN,))
    results: list[Any] = []
    for name in sorted(_ALL):
        vector = _ALL[name]
        for step in ("registration", "assertion"):
            try:
                if step == "registration":
                    results.append(
                        rp.verify_registration(
                            registration_ceremony(vector), registration_json(vector)
                        )
                    )
                elif name in ACCEPTED:
                    new = rp.verify_registration(
                        registration_ceremony(vector), registration_json(vector)
                    )
                    key = StoredCredential(
                        new.credential_id, new.public_key, new.backup_eligible, b"u"
                    )
                    results.append(
                        rp.verify_assertion(assertion_ceremony(vector), assertion_json(vector), key)
                    )
            except Rejected as e:
                results.append(("rejected", name, step, e.reason))
    return results


def _run_softauthn_ceremonies() -> list[Any]:
    """fido2's own server, fed by the software authenticator: right and wrong answers."""
    server = Fido2Server({"id": "example.com", "name": "Example"})
    authenticator = SoftAuthenticator(attestation="packed")
    options, state = server.register_begin({"id": b"user", "name": "a", "displayName": "a"})
    registration = authenticator.make_credential(json.loads(json.dumps(dict(options))), SOFT_ORIGIN)
    credential = server.register_complete(state, registration).credential_data
    assert credential is not None
    results: list[Any] = [bytes(credential)]
    for tamper in ({}, {"sign_with": new_private_key()}, {"origin_override": "https://evil.com"}):
        options, state = server.authenticate_begin([credential])
        assertion = authenticator.get_assertion(
            json.loads(json.dumps(dict(options))), SOFT_ORIGIN, **tamper
        )
        try:
            results.append(bytes(server.authenticate_complete(state, [credential], assertion)))
        except ValueError as e:
            results.append(str(e))
        results.append(dict(AuthenticationResponse.from_dict(assertion)))
    return results


def test_vectors_verify_alike_with_and_without_the_cache(without_cache):
    uncached = _verify_vectors()
    fido2_hints.install()
    cached = _verify_vectors()
    assert cached == uncached
    assert sum(1 for r in cached if not isinstance(r, tuple)) == 2 * len(ACCEPTED)


def test_fido2_parses_and_verifies_alike_with_and_without_the_cache(without_cache):
    # The same assertions and registrations, replayed through a fresh authenticator each time,
    # cannot be compared byte for byte (new keys); compare what each outcome is instead.
    def outcome(results: list[Any]) -> list[Any]:
        return [type(r).__name__ if isinstance(r, bytes | dict) else r for r in results]

    uncached = outcome(_run_softauthn_ceremonies())
    fido2_hints.install()
    assert outcome(_run_softauthn_ceremonies()) == uncached
    assert uncached[1] == "bytes"  # the untampered assertion verified
    assert uncached[3] == "Invalid signature."
    assert uncached[5] == "Invalid origin in CollectedClientData."


def test_another_fido2_version_fails_at_import(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.3.0")
    assert fido2_hints.__file__ is not None
    spec = importlib.util.spec_from_file_location("fido2_hints_again", fido2_hints.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(RuntimeError, match=r"2\.2\.1"):
        spec.loader.exec_module(module)
    assert fido2_hints.installed()
