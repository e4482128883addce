"""Reads in the event loop (``Database.fetch``, /api/me) and token checks there
(``KeyStore.cached``), on SQLite and PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from mfa.db import LOOP_READS_NAME, libpq_url
from mfa.models import User

from .helpers import bearer, enroll_first_totp, signup


def _close_loop_reads_from_the_server(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        closed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (LOOP_READS_NAME,),
        ).fetchone()
    assert closed is not None
    return int(closed[0])


def test_me_answers_after_the_server_closed_the_loops_connections(client, clock, database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite reads its file: no connection to lose")
    account = signup(client)
    enroll_first_totp(client, account, clock)
    assert client.get("/api/me", headers=account.access).status_code == 200
    assert _close_loop_reads_from_the_server(database_url) >= 1
    # The read finds its connection closed by the server and takes a new one: no 500.
    r = client.get("/api/me", headers=account.access)
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "alice"


def test_a_token_is_checked_in_the_loop_only_against_keys_cached_and_fresh(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    keys = client.app.state.ctx.keys
    kid = keys.signer().kid
    assert keys.cached(kid) is not None
    assert keys.cached("a kid never published") is None
    keys.invalidate()
    # Without a fresh cache the check goes to a worker thread, which reads the keys again.
    assert keys.cached(kid) is None
    assert client.get("/api/me", headers=account.access).status_code == 200
    assert keys.cached(kid) is not None


def test_a_token_for_a_user_deleted_since_speaks_for_nobody(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    with client.app.state.ctx.db.write() as session:
        session.delete(session.get(User, account.id))
    r = client.get("/api/me", headers=bearer(account.tokens["access_token"]))
    assert r.status_code == 401
