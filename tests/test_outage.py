"""When PostgreSQL restarts or goes away: pooled connections it closed are replaced without a
failed request, and while it is gone requests answer 503 with Retry-After, not 500, until it is
back. And which errors count as the database being unavailable."""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from mfa.db import WriterBusy
from mfa.outage import describe, is_outage

from .conftest import PG_ADMIN_URL, new_pg_database
from .helpers import PASSWORD, bearer, totp_code
from .live import serve
from .test_multi_instance import enroll, password_login, post


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A server with 2 workers on a database of its own; its base URL and database name."""
    with new_pg_database() as url:
        env = {
            "MFA_DATABASE_URL": url,
            "MFA_DATA_DIR": str(tmp_path / "data"),
            "MFA_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        log = tmp_path / "server.log"
        name = make_url(url).database
        assert name is not None
        try:
            with serve(env, workers=2, log=log) as base:
                yield base, name
        finally:
            _allow_connections(name, True)
        assert "unhandled" not in log.read_text(), log.read_text()[-3000:]


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  (names from new_pg_database)


def _terminate_connections(database: str) -> None:
    """What a restart of the server does to every connection of the service."""
    _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )


def _allow_connections(database: str, allowed: bool) -> None:
    _admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')


@contextmanager
def _outage(database: str) -> Iterator[None]:
    """The database refuses connections and has dropped those it had, until the block ends."""
    _allow_connections(database, False)
    _terminate_connections(database)
    try:
        yield
    finally:
        _allow_connections(database, True)


def _enrolled_with_pools_filled(base: str) -> tuple[dict, dict]:
    """Alice, with a TOTP factor and tokens; and requests enough, and at once, that each
    worker's pools hold several connections."""
    factor, tokens = enroll(base, "alice")
    access = tokens["access_token"]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.get(base + "/api/me", headers=bearer(access)).status_code,
                range(64),
            )
        )
    assert set(statuses) == {200}
    return factor, tokens


def _full_login(base: str, factor: dict) -> dict:
    mfa_token = password_login(base, "alice")["mfa_token"]
    code = totp_code(factor["secret"], time.time(), steps=1)
    body = {"mfa_token": mfa_token, "factor_id": factor["id"], "code": code}
    r = post(base, "/api/login/verify", body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.live
def test_connections_the_server_closed_are_replaced_without_a_failed_request(instance):
    base, database = instance
    factor, tokens = _enrolled_with_pools_filled(base)
    access = tokens["access_token"]
    _terminate_connections(database)

    # Every kind of request, each on connections the server has just closed; then many at once.
    assert httpx.get(base + "/api/me", headers=bearer(access)).status_code == 200
    assert httpx.get(base + "/api/factors", headers=bearer(access)).status_code == 200
    assert _full_login(base, factor)["access_token"]
    r = post(base, "/api/token/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    _terminate_connections(database)
    with ThreadPoolExecutor(16) as pool:
        me = pool.map(
            lambda _: httpx.get(base + "/api/me", headers=bearer(access)).status_code, range(32)
        )
        logins = pool.map(
            lambda _: post(base, "/api/login", {"username": "alice", "password": PASSWORD}),
            range(8),
        )
        assert set(me) == {200}
        assert {r.status_code for r in logins} == {200}


@pytest.mark.live
def test_while_the_database_is_away_requests_answer_503_and_recover_after(instance, tmp_path):
    base, database = instance
    factor, tokens = _enrolled_with_pools_filled(base)
    access = tokens["access_token"]

    with _outage(database):
        for r in (
            post(base, "/api/login", {"username": "alice", "password": PASSWORD}),
            httpx.get(base + "/api/me", headers=bearer(access), timeout=30),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "service_unavailable"
            assert int(r.headers["Retry-After"]) >= 1
        assert httpx.get(base + "/readyz").status_code == 503
        assert httpx.get(base + "/healthz").status_code == 200  # the process itself is fine
    assert "database unavailable (OperationalError" in (tmp_path / "server.log").read_text()

    # Back without a restart: every request as before.
    assert httpx.get(base + "/readyz").status_code == 200
    assert httpx.get(base + "/api/me", headers=bearer(access)).status_code == 200
    assert _full_login(base, factor)["access_token"]


def _sqlite_error(tmp_path: Path, sql: str) -> sqlite3.OperationalError:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute(sql)
        return raised.value
    finally:
        other.close()
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_sqlite_database_is_an_outage_and_a_missing_table_is_not(tmp_path):
    locked = _sqlite_error(tmp_path, "BEGIN IMMEDIATE")  # "database is locked"
    assert is_outage(locked)
    assert describe(locked) == "OperationalError SQLITE_BUSY"
    assert not is_outage(_sqlite_error(tmp_path, "SELECT * FROM missing"))
    assert is_outage(WriterBusy("timed out waiting for the database's write lock"))


def test_an_unreachable_postgresql_is_an_outage_and_a_bad_statement_is_not():
    unreachable = make_url(PG_ADMIN_URL).set(port=1)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(unreachable.render_as_string(hide_password=False), connect_timeout=5)
    assert is_outage(refused.value)

    engine = create_engine(unreachable.set(drivername="postgresql+psycopg"))
    with pytest.raises(sa_exc.OperationalError) as wrapped:
        engine.connect()
    assert is_outage(wrapped.value)
    assert describe(wrapped.value) == "OperationalError"  # no SQLSTATE: no server answered

    with psycopg.connect(PG_ADMIN_URL) as conn:
        with pytest.raises(psycopg.ProgrammingError) as bad:
            conn.execute("SELEC 1")
        assert not is_outage(bad.value)
    live = create_engine(make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg"))
    with live.connect() as conn, pytest.raises(sa_exc.DBAPIError) as bad_wrapped:
        conn.execute(text("SELECT 1 / 0"))
    assert not is_outage(bad_wrapped.value)
    live.dispose()
