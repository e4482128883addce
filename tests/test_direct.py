"""``mfa.direct``: Core statements run on the driver's cursor, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import bindparam, event, func, insert, select, text, update
from sqlalchemy.pool import PoolProxiedConnection

from mfa import direct
from mfa.db import Database, dialect_name, libpq_url
from mfa.direct import prepared
from mfa.models import Factor, Throttle, table_of
from mfa.services import throttle

from .drivers import DRIVERS
from .helpers import login, signup

_T = table_of(Throttle)
_ADD = prepared(insert(_T))
_COUNT = prepared(select(func.count()).select_from(_T))
_STATE = prepared(select(_T.c.key, _T.c.failures, _T.c.locked).where(_T.c.key == bindparam("k")))
_BUMP = prepared(update(_T).where(_T.c.key == bindparam("k")).values(failures=_T.c.failures + 1))


def _add(writer: direct.Direct, key: str, failures: int = 0) -> None:
    writer.execute(_ADD, {"key": key, "failures": failures, "blocked_until": 0, "locked": False})


def test_a_direct_transaction_commits_what_its_statements_wrote(db):
    with db.direct() as writer:
        _add(writer, "a", 3)
        assert writer.execute(_BUMP, {"k": "a"}).rowcount == 1
    with db.read() as session:
        assert session.execute(select(_T.c.failures).where(_T.c.key == "a")).scalar_one() == 4


def _add_then_fail(
    db: Database, key: str, *, conn: PoolProxiedConnection | None = None, autocommit: bool = False
) -> None:
    with db.direct(conn, autocommit=autocommit) as writer:
        _add(writer, key)
        raise RuntimeError("midway")


def test_a_direct_transaction_that_raises_leaves_nothing_behind(db):
    with pytest.raises(RuntimeError, match="midway"):
        _add_then_fail(db, "a")
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(_T)).scalar_one() == 0


def test_in_autocommit_each_statement_commits_on_its_own(db):
    with pytest.raises(RuntimeError, match="midway"):
        _add_then_fail(db, "a", autocommit=True)
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(_T)).scalar_one() == 1


def test_a_connection_used_in_autocommit_goes_back_to_transactions(db):
    with db.driver_connection() as conn:
        with db.direct(conn, autocommit=True) as writer:
            _add(writer, "a")
        with pytest.raises(RuntimeError, match="midway"):
            _add_then_fail(db, "b", conn=conn)
    with db.read() as session:
        assert session.execute(select(_T.c.key)).scalars().all() == ["a"]


def test_rows_come_back_named_after_their_columns(db):
    with db.direct() as writer:
        _add(writer, "a", 2)
        row = writer.execute(_STATE, {"k": "a"}).one()
        assert (row.key, row.failures, bool(row.locked)) == ("a", 2, False)
        assert writer.execute(_STATE, {"k": "none"}).first() is None
        assert writer.execute(_COUNT).scalar_one() == 1
        assert [r.key for r in writer.execute(_STATE, {"k": "a"})] == ["a"]


def test_the_values_a_statement_carries_itself_are_sent_with_it(db):
    # The claim's INSERT carries failures=1 and locked=false as its own values, and its
    # conflict clause a comparison with false: neither is a parameter here.
    with db.direct() as writer:
        assert dialect_name(writer) == db.engine.dialect.name
        assert throttle.claim(writer, throttle.MFA, "someone", now=100) == 1
        assert throttle.claim(writer, throttle.MFA, "someone", now=100) == 2
        throttle.succeeded(writer, throttle.MFA, "someone")
        row = writer.execute(_STATE, {"k": throttle.key(throttle.MFA, "someone")}).one()
        assert row.failures == 0


def test_a_missing_parameter_is_refused_before_anything_runs(db):
    with pytest.raises(KeyError, match="k"), db.direct() as writer:
        writer.execute(_BUMP, {})


def test_only_statements_declared_prepared_are_kept_compiled(db):
    one_off = select(_T.c.key).where(_T.c.failures > bindparam("n"))
    with db.direct() as writer:
        _add(writer, "a", 5)
        assert writer.execute(one_off, {"n": 1}).scalar() == "a"
        assert writer.execute(_STATE, {"k": "a"}).first() is not None
    kept = {statement_id for statement_id, _, _ in direct._COMPILED}
    assert id(_STATE) in kept
    assert id(one_off) not in kept


def test_a_column_left_out_gets_its_constant_default(db):
    # failures, blocked_until and locked have the model's defaults (0, 0, false); an INSERT
    # that leaves them out must store those, as SQLAlchemy's own execution would.
    with db.direct() as writer:
        writer.execute(_ADD, {"key": "a"})
        row = writer.execute(_STATE, {"k": "a"}).one()
        assert (row.failures, bool(row.locked)) == (0, False)


def test_a_column_with_a_computed_default_must_be_given(db):
    insert_factor = insert(table_of(Factor))
    with pytest.raises(ValueError, match="id"), db.direct() as writer:
        writer.execute(insert_factor, {"user_id": "u", "type": "totp"})


def _keys(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.execute(select(_T.c.key).order_by(_T.c.key)).scalars())


def test_a_batch_sends_its_writes_when_it_ends(db):
    with db.direct() as writer:
        _add(writer, "old", 1)
    with db.batch() as batch:
        _add(batch, "a")
        _add(batch, "b")
        batch.execute(_BUMP, {"k": "old"})
        assert _keys(db) == ["old"]  # nothing is sent before the end
    assert _keys(db) == ["a", "b", "old"]
    with db.read() as session:
        assert session.execute(select(_T.c.failures).where(_T.c.key == "old")).scalar_one() == 2


def _batch(db: Database, *writes: tuple[Any, dict[str, Any]], then_raise: bool = False) -> None:
    with db.batch() as batch:
        for statement, params in writes:
            batch.execute(statement, params)
        if then_raise:
            raise RuntimeError("midway")


def _row(key: str) -> tuple[Any, dict[str, Any]]:
    return _ADD, {"key": key, "failures": 0, "blocked_until": 0, "locked": False}


def test_a_batch_that_raises_sends_nothing(db):
    with pytest.raises(RuntimeError, match="midway"):
        _batch(db, _row("a"), then_raise=True)
    assert _keys(db) == []


def test_a_batch_the_database_refuses_in_part_writes_nothing(db):
    # The second insert breaks the primary key: on PostgreSQL the one statement fails as a
    # whole, on SQLite the transaction rolls back. (The driver's own errors: ``mfa.direct``.)
    with db.direct() as writer:
        _add(writer, "taken")
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        _batch(db, _row("a"), _row("taken"), _row("b"))
    assert _keys(db) == ["taken"]


def test_a_batch_holds_no_statement_that_returns_rows(db):
    with pytest.raises(ValueError, match="no rows"):
        _batch(db, _row("a"), (_STATE, {"k": "a"}))
    assert _keys(db) == []


def test_on_postgresql_a_batch_is_one_transaction(db):
    if db.is_sqlite:
        pytest.skip("xmin, the transaction that wrote a row, is PostgreSQL's")

    def writers() -> list[str]:
        with db.read() as session:
            return list(session.execute(text("SELECT xmin::text FROM throttles")).scalars())

    with db.batch() as batch:  # in autocommit: no BEGIN and COMMIT around it
        for key in "abc":
            _add(batch, key)
    assert len(set(writers())) == 1
    # Without the batch each statement of an autocommit block commits on its own: the check
    # above would tell them apart.
    with db.direct(autocommit=True) as writer:
        for key in "def":
            _add(writer, key)
    assert len(set(writers())) == 4


def _failures(db: Database, key: str) -> int:
    with db.read() as session:
        return int(session.execute(select(_T.c.failures).where(_T.c.key == key)).scalar_one())


_REFUSED = (sqlite3.IntegrityError, psycopg.IntegrityError)


def _refused_midway(db: Database, conn: PoolProxiedConnection) -> None:
    with db.direct(conn) as writer:
        _add(writer, "a")
        _add(writer, "taken")


def test_a_transaction_a_statement_of_which_is_refused_leaves_nothing_behind(db):
    with db.direct() as writer:
        _add(writer, "taken")
    with db.driver_connection() as conn:
        with pytest.raises(_REFUSED):
            _refused_midway(db, conn)
        # The connection goes on in transactions: what fails in the next one is undone too.
        with pytest.raises(RuntimeError, match="midway"):
            _add_then_fail(db, "b", conn=conn)
    assert _keys(db) == ["taken"]


def _refused_at_the_end(db: Database) -> None:
    with db.direct() as writer:
        _add(writer, "a")
        assert writer.execute(_BUMP, {"k": "taken"}).rowcount == 1
        with writer.batch() as batch:
            _add(batch, "b")
            _add(batch, "taken")


def test_a_transaction_whose_last_writes_are_refused_leaves_nothing_behind(db):
    # The batch is sent last, as one statement on PostgreSQL: its refusal must undo what the
    # transaction wrote before it, the bump of a row included.
    with db.direct() as writer:
        _add(writer, "taken")
    with pytest.raises(_REFUSED):
        _refused_at_the_end(db)
    assert _keys(db) == ["taken"]
    assert _failures(db, "taken") == 0


def test_a_batch_is_written_before_the_statement_after_it(db):
    with db.direct() as writer:
        with writer.batch() as batch:
            _add(batch, "a")
            _add(batch, "b")
        assert writer.execute(_BUMP, {"k": "b"}).rowcount == 1
    assert _keys(db) == ["a", "b"]
    assert _failures(db, "b") == 1


def _round_trips(conn: PoolProxiedConnection, tmp_path: Path, block: Callable[[], None]) -> int:
    """How many round trips to PostgreSQL ``block`` makes on ``conn``: the answers that end
    one (ReadyForQuery) in libpq's trace of the connection."""
    trace = tmp_path / "trace.txt"
    with trace.open("w") as out:
        _trace(conn.driver_connection, out.fileno())
        try:
            block()
        finally:
            conn.driver_connection.pgconn.untrace()  # type: ignore[union-attr]
    return _ends_of_trips(trace)


def _trace(driver_connection: Any, fileno: int) -> None:
    pgconn = driver_connection.pgconn
    pgconn.trace(fileno)
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)


def _ends_of_trips(trace: Path) -> int:
    return sum("ReadyForQuery" in line for line in trace.read_text().splitlines())


def test_on_postgresql_a_transaction_begins_and_commits_with_its_statements(db, tmp_path):
    if db.is_sqlite:
        pytest.skip("round trips are PostgreSQL's")

    def transaction() -> None:
        with db.direct(conn) as writer:
            _add(writer, "a")  # with BEGIN
            writer.execute(_BUMP, {"k": "a"})
            with writer.batch() as batch:  # waits for the COMMIT
                _add(batch, "b")
                _add(batch, "c")

    def nothing() -> None:
        with db.direct(conn):
            pass

    with db.driver_connection() as conn:
        assert _round_trips(conn, tmp_path, transaction) == 3  # BEGIN and COMMIT: 5
        assert _round_trips(conn, tmp_path, nothing) == 0
        assert conn.driver_connection.autocommit is False  # type: ignore[union-attr]
    assert _keys(db) == ["a", "b", "c"]
    assert _failures(db, "a") == 1


def test_on_postgresql_the_first_statement_runs_in_the_transaction(db):
    if db.is_sqlite:
        pytest.skip("row locks are PostgreSQL's")
    with db.direct() as writer:
        _add(writer, "a")
    lock = "SELECT key FROM throttles WHERE key = 'a' FOR UPDATE"
    url = libpq_url(db.url)
    with db.direct() as writer, psycopg.connect(url, autocommit=True) as other:
        writer.execute(text(lock))  # goes with the BEGIN: the lock stays until the commit
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute(lock + " NOWAIT")
    with psycopg.connect(url, autocommit=True) as other:
        assert other.execute(lock + " NOWAIT").fetchall() == [("a",)]


def test_on_postgresql_a_connection_goes_back_out_of_autocommit_after_a_failure(db):
    if db.is_sqlite:
        pytest.skip("autocommit is psycopg's")
    with db.direct() as writer:
        _add(writer, "taken")
    with db.driver_connection() as conn:
        with pytest.raises(_REFUSED):
            _refused_midway(db, conn)
        assert conn.driver_connection.autocommit is False  # type: ignore[union-attr]


def test_a_connection_goes_on_after_refused_pipelines(db):
    # psycopg prepares a statement on the server from its fifth run on a connection; a refusal
    # in a pipeline skips what follows it there, and the connection must still know which of
    # its statements exist. Every third transaction here is refused in its closing batch.
    with db.direct() as writer:
        _add(writer, "taken")
    done = 0
    with db.driver_connection() as conn:
        for n in range(15):
            try:
                with db.direct(conn) as writer:
                    writer.execute(_BUMP, {"k": "taken"})
                    with writer.batch() as batch:
                        _add(batch, f"a{n:02}")
                        _add(batch, "taken" if n % 3 == 2 else f"b{n:02}")
                done += 1
            except _REFUSED:
                pass
    assert done == 10
    assert _failures(db, "taken") == done
    assert len(_keys(db)) == 1 + 2 * done


def test_statements_together_keep_their_parameters_apart():
    sql = direct._together(
        ("UPDATE t SET a = %(a)s WHERE b LIKE 'x%%'", "INSERT INTO u (a) VALUES (%(a)s)")
    )
    assert sql == (
        "WITH s0 AS (UPDATE t SET a = %(s0_a)s WHERE b LIKE 'x%%') "
        "INSERT INTO u (a) VALUES (%(s1_a)s)"
    )


def test_on_postgresql_a_totp_verify_makes_three_round_trips(client, clock, tmp_path):
    # BEGIN, the user's throttle row and the read that locks it with the login's row; the
    # code's claim; the spend, the other writes and the COMMIT. Every connection the service
    # takes from its pool meanwhile is traced: a trip on any of them counts.
    ctx = client.app.state.ctx
    if ctx.db.is_sqlite:
        pytest.skip("round trips are PostgreSQL's")
    driver = DRIVERS["totp"]()
    account = signup(client)
    factor = driver.enroll_first(client, account, clock)
    body = driver.right(client, login(client, account)["mfa_token"], factor, clock)
    trace = tmp_path / "trace.txt"
    with trace.open("w") as out:

        def traced(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            _trace(dbapi_conn, out.fileno())

        def untraced(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.pgconn.untrace()

        event.listen(ctx.db.engine, "checkout", traced)
        event.listen(ctx.db.engine, "checkin", untraced)
        try:
            r = client.post("/api/login/verify", json=body)
        finally:
            event.remove(ctx.db.engine, "checkout", traced)
            event.remove(ctx.db.engine, "checkin", untraced)
    assert r.status_code == 200, r.text
    assert _ends_of_trips(trace) == 3
