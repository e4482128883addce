"""Password hashing and policy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import anyio
import argon2
import pytest
from starlette.testclient import TestClient

from mfa import passwords
from mfa.app import create_app
from mfa.context import Context
from mfa.models import User

from .helpers import login, signup


def test_hashes_are_argon2id_with_at_least_the_owasp_minimum():
    params = argon2.extract_parameters(passwords.hash_password("a fine password"))
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19 * 1024
    assert params.time_cost >= 2
    assert params.parallelism == 1


def test_verify_accepts_the_password_and_refuses_others():
    stored = passwords.hash_password("a fine password")
    assert passwords.verify_password(stored, "a fine password") is False  # no rehash needed
    with pytest.raises(passwords.WrongPassword):
        passwords.verify_password(stored, "another password")
    with pytest.raises(passwords.WrongPassword):
        passwords.verify_password("not a hash", "a fine password")


@pytest.mark.parametrize("password", ["1234567", "password", "PASSWORD1", "iloveyou", "x" * 1025])
def test_the_policy_refuses_short_long_and_common_passwords(password):
    with pytest.raises(passwords.WeakPassword):
        passwords.check_policy(password)


@pytest.mark.parametrize(
    "password", ["correct horse battery staple", "ñandú-ñandú", "12345678x!Q", "a" * 1024]
)
def test_the_policy_has_no_composition_rules(password):
    passwords.check_policy(password)


def test_weak_passwords_get_weak_password_at_sign_up(client):
    r = client.post("/api/users", json={"username": "bob", "password": "qwertyuiop"})
    assert r.status_code == 400
    assert r.json()["error"] == "weak_password"


def test_a_taken_username_gets_409_whatever_its_case(client):
    signup(client, "alice")
    r = client.post("/api/users", json={"username": "ALICE", "password": "another fine password"})
    assert r.status_code == 409
    assert r.json()["error"] == "username_taken"


def test_sign_up_can_be_closed(settings, clock):
    app = create_app(replace(settings, open_signup=False), clock=clock)
    with TestClient(app) as c:
        r = c.post("/api/users", json={"username": "bob", "password": "a fine password"})
    assert r.status_code == 403
    assert r.json()["error"] == "signup_disabled"


def test_a_hash_with_old_parameters_is_replaced_at_the_next_login(client, monkeypatch):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    account = signup(client)
    db = client.app.state.ctx.db
    with db.write() as s:
        user = s.get(User, account.id)
        user.password_hash = weak.hash(account.password)
    login(client, account)
    with db.read() as s:
        upgraded = s.get(User, account.id).password_hash
    params = argon2.extract_parameters(upgraded)
    assert (params.memory_cost, params.time_cost) == (19 * 1024, 2)
    login(client, account)  # and the new hash still verifies


def test_only_postgresql_logins_take_a_login_thread_around_their_hash(client):
    """On SQLite a login's claim and writes run in the event loop and only the hash goes to a
    thread: each trip between threads woke a core from its hash into cold caches. On
    PostgreSQL, whose statements wait on the network, the login runs in a thread of its own."""
    account = signup(client)
    login(client, account)
    r = client.post("/api/login", json={"username": account.username, "password": "wrong one!"})
    assert r.status_code == 401
    ctx = client.app.state.ctx
    assert (ctx._hash_work is None) == ctx.db.is_sqlite


def test_unknown_users_cost_a_real_verification(monkeypatch, client):
    calls = []

    class Counting(argon2.PasswordHasher):
        def verify(self, hash_, password):
            calls.append(hash_)
            return super().verify(hash_, password)

    monkeypatch.setattr(
        passwords, "HASHER", Counting(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    )
    r = client.post("/api/login", json={"username": "nobody", "password": "whatever it is"})
    assert r.status_code == 401
    assert len(calls) == 1
    assert argon2.extract_parameters(calls[0]).memory_cost == 19 * 1024


@pytest.fixture
def own_context(settings) -> Iterator[Callable[..., Context]]:
    """Service contexts of the test's own, with ``settings`` changed as asked; their threads
    are let go and their databases closed after the test."""
    made: list[Context] = []

    def make(**changes: object) -> Context:
        made.append(Context.create(replace(settings, **changes)))
        return made[-1]

    yield make
    for ctx in made:
        ctx.close()
        ctx.db.dispose()


def test_at_most_hash_concurrency_hashes_run_at_once_while_others_do_their_database_work(
    own_context,
):
    """A login hands only its hash to a hashing thread: twice as many logins are under way, so
    one can do its database work while another hashes, and the cores never see more hashes
    than ``hash_concurrency``."""
    ctx = own_context(hash_concurrency=2)
    lock = threading.Lock()
    now = {"threads": 0, "hashes": 0}
    most = {"threads": 0, "hashes": 0}

    def enter(what: str) -> None:
        with lock:
            now[what] += 1
            most[what] = max(most[what], now[what])

    def leave(what: str) -> None:
        with lock:
            now[what] -= 1

    def verify() -> bool:
        enter("hashes")
        try:
            return passwords.verify_password(STORED, "a fine password")
        finally:
            leave("hashes")

    def attempt() -> None:
        enter("threads")
        time.sleep(0.02)  # the claim
        ctx.hash(verify)
        time.sleep(0.02)  # the writes after
        leave("threads")

    async def many() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(ctx.run_hashing, attempt)

    anyio.run(many)
    assert most == {"threads": 4, "hashes": 2}


def test_one_thread_hashes_one_password_after_another_whichever_login_asks(own_context):
    """With one hash at a time, every hash runs on the same thread, so argon2id finds the
    memory of the one before still cached (``Context.hash``), though the logins run on two
    threads (PostgreSQL's) or in the event loop (SQLite's, ``Context.run_hash``)."""
    ctx = own_context(hash_concurrency=1)
    asked_from: set[int] = set()
    hashed_on: set[int] = set()

    def verify() -> bool:
        hashed_on.add(threading.get_ident())
        return passwords.verify_password(STORED, "a fine password")

    def attempt() -> bool:
        asked_from.add(threading.get_ident())
        time.sleep(0.01)  # the claim: the other login's thread takes the next one meanwhile
        return ctx.hash(verify)

    async def many() -> list[bool]:
        results: list[bool] = []

        async def one() -> None:
            results.append(await ctx.run_hashing(attempt))

        async def in_the_loop() -> None:
            asked_from.add(threading.get_ident())
            results.append(await ctx.run_hash(verify))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
                tg.start_soon(in_the_loop)
        return results

    results = anyio.run(many)
    assert results == [False] * 16  # verified, and no rehash needed
    assert len(asked_from) == 3  # two login threads and the event loop
    assert len(hashed_on) == 1
    assert not asked_from & hashed_on


def test_a_wrong_password_raises_from_the_hashing_thread_in_the_login_thread(own_context):
    ctx = own_context()

    def attempt() -> None:
        ctx.hash(passwords.verify_password, STORED, "not the password")

    with pytest.raises(passwords.WrongPassword):
        anyio.run(ctx.run_hashing, attempt)


STORED = passwords.hash_password("a fine password")
