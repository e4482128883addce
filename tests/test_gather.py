"""Reads gathered in the event loop (``mfa.gather``), and /api/me on PostgreSQL, which uses them
(``Database.fetch_gathered``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import cast

import httpx2 as httpx
import psycopg
import pytest
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql

from mfa import schema
from mfa.context import Context
from mfa.db import Database, libpq_url
from mfa.gather import Gather
from mfa.models import User, table_of
from mfa.services import factors
from mfa.services.account import _ME_MANY
from mfa.services.factors import _USERS_FACTORS_MANY

from .conftest import empty, new_pg_database
from .helpers import bearer
from .live import serve
from .test_multi_instance import enroll


class Reads:
    """A ``read_many`` that answers each key with its upper case, and remembers what it was
    asked; each read waits until the test lets it go."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.asked: list[list[str]] = []
        self.go = asyncio.Event()
        self.fail = fail

    async def __call__(self, keys: list[str]) -> Mapping[str, str]:
        self.asked.append(keys)
        await self.go.wait()
        if self.fail.intersection(keys):
            raise RuntimeError(f"no read of {sorted(keys)}")
        return {k: k.upper() for k in keys if k != "nobody"}


async def _started() -> None:
    """Let the calls made so far queue, and a read go out."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_call_alone_reads_its_key_at_once():
    async def main() -> None:
        reads = Reads()
        reads.go.set()
        gather = Gather(reads, missing="none")
        assert await gather.get("a") == "A"
        assert await gather.get("nobody") == "none"
        assert reads.asked == [["a"], ["nobody"]]

    asyncio.run(main())


def test_calls_made_while_a_read_is_out_go_together_in_the_next():
    async def main() -> None:
        reads = Reads()
        gather = Gather(reads, missing="none")
        first = asyncio.ensure_future(gather.get("a"))
        await _started()
        later = [asyncio.ensure_future(gather.get(k)) for k in ("b", "c", "b", "nobody")]
        await _started()
        assert reads.asked == [["a"]]  # the others wait for the read that is out
        reads.go.set()
        assert await first == "A"
        assert await asyncio.gather(*later) == ["B", "C", "B", "none"]
        assert reads.asked == [["a"], ["b", "c", "nobody"]]  # one read, each key once

    asyncio.run(main())


def test_a_failed_read_fails_its_callers_only():
    async def main() -> None:
        reads = Reads(fail=frozenset({"a"}))
        gather = Gather(reads, missing="none")
        first = asyncio.ensure_future(gather.get("a"))
        await _started()
        later = asyncio.ensure_future(gather.get("b"))
        reads.go.set()
        with pytest.raises(RuntimeError, match="no read of"):
            await first
        assert await later == "B"
        assert await gather.get("c") == "C"  # and reads go on

    asyncio.run(main())


def test_a_caller_that_leaves_does_not_disturb_the_others():
    async def main() -> None:
        reads = Reads()
        gather = Gather(reads, missing="none")
        leaving = asyncio.ensure_future(gather.get("a"))
        staying = asyncio.ensure_future(gather.get("a"))
        await _started()
        leaving.cancel()
        reads.go.set()
        assert await staying == "A"
        assert leaving.cancelled()

    asyncio.run(main())


def _with_users(pg_database: str, ids: list[str]) -> Database:
    """The emptied PostgreSQL database with a user for each of ``ids``, named "name-<id>"."""
    empty(pg_database)
    db = Database(pg_database)
    schema.ensure(db, upgrade_if_behind=False)
    with db.write() as session:
        session.execute(
            insert(table_of(User)),
            [
                {
                    "id": i,
                    "username": f"name-{i}",
                    "username_key": f"name-{i}",
                    "password_hash": "unused",
                    "is_admin": False,
                    "created_at": 0,
                }
                for i in ids
            ],
        )
    return db


def test_on_postgresql_concurrent_reads_share_queries_and_each_gets_its_own_rows(pg_database):
    ids = [f"user-{i:02d}" for i in range(40)]
    db = _with_users(pg_database, ids)

    async def main() -> None:
        await db.open_loop_reads()
        try:
            rows = await asyncio.gather(*(db.fetch_gathered(_ME_MANY, i) for i in ids))
            asked = db._loop_reads.get_stats()["requests_num"]
            missing = await db.fetch_gathered(_ME_MANY, "no such user")
        finally:
            await db.close_loop_reads()
        assert [[r.username for r in user_rows] for user_rows in rows] == [
            [f"name-{i}"] for i in ids
        ]
        assert missing == ()
        assert asked == 1  # 40 calls at once: one read for all

    asyncio.run(main())
    db.dispose()


def test_on_postgresql_concurrent_factor_listings_share_one_read(pg_database):
    ids = [f"user-{i:02d}" for i in range(40)]
    db = _with_users(pg_database, ids)
    # Two factors for every even user, none for the odd ones.
    expected = {i: [f"{i}-a", f"{i}-b"] if n % 2 == 0 else [] for n, i in enumerate(ids)}
    with db.write() as session:
        for user_id, factor_ids in expected.items():
            for created, factor_id in enumerate(factor_ids):
                session.execute(
                    text(
                        "INSERT INTO factors (id, user_id, type, label, status, created_at,"
                        " counter) VALUES (:id, :user_id, 'totp', 'app', 'active', :at, 0)"
                    ),
                    {"id": factor_id, "user_id": user_id, "at": created},
                )
    ctx = cast(Context, SimpleNamespace(db=db))

    async def main() -> None:
        await db.open_loop_reads()
        try:
            listed = await asyncio.gather(*(factors.listing(ctx, i) for i in ids))
            asked = db._loop_reads.get_stats()["requests_num"]
        finally:
            await db.close_loop_reads()
        assert [[f["id"] for f in each] for each in listed] == list(expected.values())
        assert asked == 1  # 40 listings at once: one read for all

    asyncio.run(main())
    db.dispose()


@pytest.mark.live
def test_me_answers_each_caller_with_its_own_account_under_concurrent_calls(pg_database, tmp_path):
    empty(pg_database)
    env = {"MFA_DATABASE_URL": pg_database, "MFA_DATA_DIR": str(tmp_path / "var")}
    with serve(env) as base:
        accounts = {}
        for i in range(8):
            factor, tokens = enroll(base, f"user{i}")
            accounts[f"user{i}"] = (factor["id"], tokens["access_token"])

        async def main() -> list[tuple[str, httpx.Response]]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                calls = [(name, token) for name, (_, token) in accounts.items()] * 8

                async def me(name: str, token: str) -> tuple[str, httpx.Response]:
                    return name, await client.get("/api/me", headers=bearer(token))

                return await asyncio.gather(*(me(n, t) for n, t in calls))

        for name, r in asyncio.run(main()):
            assert r.status_code == 200, r.text
            assert r.json()["username"] == name
            assert [f["id"] for f in r.json()["factors"]] == [accounts[name][0]]


@pytest.mark.live
def test_factor_listings_answer_each_caller_with_its_own_under_concurrent_calls(
    pg_database, tmp_path
):
    empty(pg_database)
    env = {"MFA_DATABASE_URL": pg_database, "MFA_DATA_DIR": str(tmp_path / "var")}
    with serve(env) as base:
        accounts = {f"user{i}": enroll(base, f"user{i}") for i in range(8)}
        factor_ids = {name: [factor["id"]] for name, (factor, _) in accounts.items()}
        for name in ("user0", "user3"):  # two rows each: the second factor, still pending
            token = accounts[name][1]["access_token"]
            second = httpx.post(f"{base}/api/factors", json={"type": "totp"}, headers=bearer(token))
            assert second.status_code == 201, second.text
            factor_ids[name].append(second.json()["id"])

        async def main() -> list[tuple[str, httpx.Response]]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:

                async def listing(name: str, token: str) -> tuple[str, httpx.Response]:
                    return name, await client.get("/api/factors", headers=bearer(token))

                calls = [(n, tokens["access_token"]) for n, (_, tokens) in accounts.items()] * 8
                return await asyncio.gather(*(listing(n, t) for n, t in calls))

        for name, r in asyncio.run(main()):
            assert r.status_code == 200, r.text
            assert [f["id"] for f in r.json()] == factor_ids[name]


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """A database of this test's own: its tables have no statistics yet."""
    with new_pg_database() as url:
        db = Database(url)
        schema.ensure(db, upgrade_if_behind=False)
        db.dispose()
        yield libpq_url(url)


@pytest.mark.parametrize("statement", [_ME_MANY, _USERS_FACTORS_MANY], ids=["me", "factors"])
def test_on_postgresql_the_gathered_read_searches_indexes_before_any_statistics(
    fresh_pg_database, statement
):
    # Prepared statements get a generic plan after five runs. For users.id = ANY($1) alone,
    # before the first ANALYZE of a bulk-loaded table, that plan read every factor (a hash
    # join): 12 ms a read instead of 0.2.
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    sql = compiled.string.replace("%(keys)s", "$1")
    for name, value in compiled.params.items():
        if name != "keys":
            sql = sql.replace(f"%({name})s", f"'{value}'" if isinstance(value, str) else str(value))
    with psycopg.connect(fresh_pg_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, username, username_key, password_hash, is_admin, created_at)"
            " SELECT 'u' || i, 'n' || i, 'n' || i, 'x', false, 0 FROM generate_series(1, 20000) i"
        )
        conn.execute(
            "INSERT INTO factors (id, user_id, type, label, status, created_at, counter)"
            " SELECT 'f' || i, 'u' || i, 'totp', 'app', 'active', 0, 0"
            " FROM generate_series(1, 20000) i"
        )
        conn.execute(f"PREPARE me_many(varchar[]) AS {sql}")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plan = [row[0] for row in conn.execute("EXPLAIN EXECUTE me_many(ARRAY['u1', 'u2'])")]
    assert not [
        step for step in plan if "Seq Scan on factors" in step or "Seq Scan on users" in step
    ], plan
