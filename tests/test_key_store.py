"""Signing keys shared by instances: made one at a time, and a rotation elsewhere seen by the
first token that needs it, on SQLite and PostgreSQL. Each "instance" is a ``KeyStore`` on a
``Database`` (and pool) of its own, as separate processes have."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select
from sqlmodel import col

from mfa.config import Settings
from mfa.context import CLI
from mfa.db import Database
from mfa.models import SigningKey
from mfa.secretbox import SecretBox
from mfa.services import keys
from mfa.services.keys import KeyStore

from .helpers import Clock

T = TypeVar("T")
INSTANCES = 8


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(secrets.token_bytes(32))


@pytest.fixture
def instances(db: Database, settings: Settings, box: SecretBox) -> Iterator[list[KeyStore]]:
    """Key stores on one empty database, each with its own connections."""
    dbs = [Database(db.url) for _ in range(INSTANCES)]
    yield [KeyStore(d, box, settings=settings, clock=time.time) for d in dbs]
    for d in dbs:
        d.dispose()


def _at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Each call in a thread of its own, released together."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _counting_reads(store: KeyStore) -> list[str]:
    """The statements about signing keys that ``store`` runs from now on."""
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "signing_keys" in statement:
            reads.append(statement)

    event.listen(store._db.engine, "before_cursor_execute", count)
    return reads


def _stored(db: Database) -> list[SigningKey]:
    with db.read() as s:
        return list(s.scalars(select(SigningKey).order_by(col(SigningKey.created_at))).all())


def test_instances_starting_at_once_on_an_empty_database_make_one_key(db, instances):
    published = _at_once([store.jwks for store in instances])
    stored = _stored(db)
    assert len(stored) == 1
    assert all(jwks == {"keys": [published[0]["keys"][0]]} for jwks in published)
    assert published[0]["keys"][0]["kid"] == stored[0].kid
    assert {str(store.signer().kid) for store in instances} == {stored[0].kid}


def test_rotations_at_once_take_turns_and_leave_one_current_key(db, instances, box):
    instances[0].jwks()  # the first key
    now = int(time.time())
    kids = _at_once(
        [lambda store=store: keys.rotate_now(store._db, box, now, CLI) for store in instances]
    )
    stored = _stored(db)
    assert len(stored) == 1 + INSTANCES
    assert {k.kid for k in stored} >= set(kids)
    assert len([k for k in stored if k.retired_at is None]) == 1


def test_a_rotation_just_after_a_load_is_seen_by_the_first_token_with_its_kid(db, instances, box):
    here, elsewhere = instances[0], instances[1]
    old = str(here.signer().kid)
    new = keys.rotate_now(elsewhere._db, box, int(time.time()), CLI)  # well within a second
    assert here.knows(new)
    assert str(here.signer().kid) == new
    assert here.knows(old)  # still published: its tokens are alive


def test_made_up_kids_read_the_keys_once_and_then_not_again_within_a_second(db, instances):
    store = instances[0]
    store.jwks()
    reads = _counting_reads(store)
    answers = _at_once([lambda: store.knows(secrets.token_urlsafe(12))] * INSTANCES)
    answers += [store.knows(secrets.token_urlsafe(12)) for _ in range(50)]
    assert not any(answers)
    assert len(reads) == 1


def test_an_unknown_kid_on_an_expired_cache_reads_the_keys_once(db, settings, box):
    # The cache expires at once: looking up the kid reloads, and that reload is the one the
    # unknown kid would have made.
    store = KeyStore(db, box, settings=replace(settings, key_cache_seconds=0), clock=time.time)
    store.jwks()
    reads = _counting_reads(store)
    assert not store.knows(secrets.token_urlsafe(12))
    assert len(reads) == 1


# Rotations that publish their key first (``rotate(after=...)``, ``mfa keys rotate --after``).


@pytest.fixture
def clocked(
    db: Database, settings: Settings, box: SecretBox, clock: Clock
) -> Iterator[list[KeyStore]]:
    """Two key stores on one database, each with its own connections, on the test's clock."""
    dbs = [Database(db.url) for _ in range(2)]
    yield [KeyStore(d, box, settings=settings, clock=clock) for d in dbs]
    for d in dbs:
        d.dispose()


def _kids(store: KeyStore) -> set[str]:
    return {key["kid"] for key in store.jwks()["keys"]}


def test_a_staged_key_is_published_at_once_and_signs_from_its_moment_without_a_reload(
    db, clocked, box, clock
):
    here, elsewhere = clocked
    old = str(here.signer().kid)
    new = keys.rotate_now(elsewhere._db, box, int(clock()), CLI, after=120)
    assert here.knows(new)  # a JWKS fetched now has it: verifiers know it before it signs
    assert _kids(here) == _kids(elsewhere) == {old, new}
    reads = [_counting_reads(store) for store in clocked]
    clock.advance(119)
    assert {str(store.signer().kid) for store in clocked} == {old}
    clock.advance(1)
    # Both switch at the same second, by the clock, from what they had loaded.
    assert {str(store.signer().kid) for store in clocked} == {new}
    assert reads == [[], []]


def test_a_key_retired_by_a_staged_rotation_stays_published_for_the_tokens_it_signed(
    db, settings, box, clock
):
    store = KeyStore(db, box, settings=replace(settings, key_cache_seconds=0), clock=clock)
    old = str(store.signer().kid)
    new = keys.rotate_now(db, box, int(clock()), CLI, after=120)
    [retired] = [k for k in _stored(db) if k.kid == old]
    assert retired.retired_at == int(clock()) + 120
    # Its last token, signed a second before the switch, lives for the access-token lifetime.
    clock.advance(120 + settings.access_token_ttl + keys._SKEW_SECONDS - 1)
    assert _kids(store) == {old, new}
    clock.advance(1)
    assert _kids(store) == {new}
    assert str(store.signer().kid) == new


def test_a_rotation_during_a_staged_one_retires_the_staged_key_before_it_signs(
    db, settings, box, clock
):
    store = KeyStore(db, box, settings=replace(settings, key_cache_seconds=0), clock=clock)
    first = str(store.signer().kid)
    staged = keys.rotate_now(db, box, int(clock()), CLI, after=120)
    clock.advance(10)
    now = keys.rotate_now(db, box, int(clock()), CLI)  # a leak: rotate at once
    assert str(store.signer().kid) == now
    assert _kids(store) == {first, staged, now}  # published, though the staged never signs
    clock.advance(200)
    assert str(store.signer().kid) == now
    assert len([k for k in _stored(db) if k.retired_at is None]) == 1


def test_an_immediate_rotation_signs_at_once_on_an_instance_whose_clock_runs_behind(
    db, settings, box, clock
):
    # The rotating host's clock is 30 s ahead: the old key's retirement lies in this
    # instance's future, but the new key signs here at once all the same.
    store = KeyStore(db, box, settings=replace(settings, key_cache_seconds=0), clock=clock)
    old = str(store.signer().kid)
    new = keys.rotate_now(db, box, int(clock()) + 30, CLI)
    assert str(store.signer().kid) == new
    assert _kids(store) == {old, new}


def test_a_staged_rotation_refuses_a_start_in_the_past(db, box, clock):
    with pytest.raises(ValueError, match="past"):
        keys.rotate_now(db, box, int(clock()), CLI, after=-1)
    assert _stored(db) == []
