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
