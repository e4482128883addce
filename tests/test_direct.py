"""``mfa.direct``: Core statements run on the driver's cursor, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.pool import PoolProxiedConnection

from mfa import direct
from mfa.db import Database, dialect_name
from mfa.direct import prepared
from mfa.models import Factor, Throttle, table_of
from mfa.services import throttle

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
