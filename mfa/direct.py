"""Core statements run on the database driver's own cursor, for the hottest paths: the login's
writes, and the reads of /api/me and the factor list.

On the login's verify call, SQLAlchemy's per-statement work (events, compiled-cache lookup,
parameter processing, result objects) cost about ten times what SQLite spends on one of its
single-row statements, and more than all the rest of the call together: with it, 2 workers
verified about 380 TOTP codes/s on SQLite; with the same statements run here, about 1,000.

So a ``Direct`` transaction takes a connection from the engine's pool and runs each statement
on the driver's cursor, compiled for the engine's dialect once per statement and set of
parameter names; ``AsyncDirect`` does the same on an asyncio connection of psycopg's (the
event loop's reads on PostgreSQL, ``Database.fetch``). The statements stay SQLAlchemy Core,
written once for both databases against the models' tables; only their execution is ours.
What this gives up, and why that is safe for the statements it runs: no type processing of
parameters or results (they are strings, integers, bytes and booleans, which sqlite3 and
psycopg pass through as they are; SQLite returns a boolean column as 0 or 1), no ORM objects,
no events.
"""

from __future__ import annotations

import functools
import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.schema import ScalarElementColumnDefault

# Compiled forms of the statements declared with ``prepared``: (statement id, dialect name,
# parameter names) -> compiled. Only those: a statement built per call compiles per call, as
# a cache keyed by an object's id must keep that object alive, and so would grow forever.
_PREPARED: dict[int, Executable] = {}
_COMPILED: dict[tuple[int, str, tuple[str, ...]], _Compiled] = {}
# The named-tuple type of each statement's rows, by its SQL, made at its first row.
_ROWS: dict[str, Callable[..., Any]] = {}


S = TypeVar("S", bound=Executable)


def prepared(statement: S) -> S:
    """Declare a statement built once (a module constant) that ``Direct`` may compile once."""
    _PREPARED[id(statement)] = statement
    return statement


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # For a positional paramstyle (SQLite's "?"), the parameter names in order; None for a
    # named one (psycopg's "%(name)s").
    order: tuple[str, ...] | None
    defaults: Mapping[str, Any]  # values the statement carries itself (literals, constants)
    required: frozenset[str]
    returns_rows: bool  # a select, or a write with RETURNING


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)
    binds = compiled.binds.values()
    if any(b.expanding for b in binds):
        raise ValueError("Direct runs no statement with an expanding IN parameter")
    defaults = dict(compiled.params)
    # Columns left out of an INSERT (or an UPDATE's SET) whose default SQLAlchemy would work out
    # in Python before running it: a constant goes along as a value; a function is refused, as
    # its value would have to be made at each run (pass it as a parameter instead).
    prefetched = [(c, c.default) for c in compiled.insert_prefetch]
    prefetched += [(c, c.onupdate) for c in compiled.update_prefetch]
    for column, default in prefetched:
        if not isinstance(default, ScalarElementColumnDefault):
            raise ValueError(f"give {column.key} as a parameter: its default is computed")
        defaults[column.key] = default.arg
    order = compiled.positiontup
    return _Compiled(
        sql=compiled.string,
        order=tuple(order) if order is not None else None,
        defaults=defaults,
        required=frozenset(b.key for b in binds if b.required),
        returns_rows=not (compiled.isinsert or compiled.isupdate or compiled.isdelete)
        or bool(compiled.effective_returning),
    )


class Result:
    """What ``Direct.execute`` returns: the few ``Result`` methods our statements use, with
    rows as named tuples. The rows are fetched at once (every statement here reads a few)."""

    def __init__(self, make: Callable[..., Any], rows: Sequence[Sequence[Any]], rowcount: int):
        self._make_row = make
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._make(self._rows[0]) if self._rows else None

    def one(self) -> Any:
        found = self.first()
        if found is None:
            raise LookupError("the statement returned no row")
        return found

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def all(self) -> list[Any]:
        return [self._make(r) for r in self._rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def _make(self, values: Sequence[Any]) -> Any:
        return self._make_row(*values)


def _result(sql: str, cursor: Any, rows: Sequence[Sequence[Any]]) -> Result:
    make = _ROWS.get(sql)
    if make is None:
        if not rows:
            return Result(tuple, rows, cursor.rowcount)  # no row to make
        # Named after the columns the driver describes (psycopg builds its description anew
        # at each look, so once per statement); duplicates get positional names.
        names = [d[0] for d in cursor.description]
        make = _ROWS[sql] = namedtuple("Row", names, rename=True)
    return Result(make, rows, cursor.rowcount)


def _bound(
    statement: Executable, dialect: Dialect, params: Mapping[str, Any] | None
) -> tuple[_Compiled, Sequence[Any] | Mapping[str, Any]]:
    """The SQL of ``statement`` for ``dialect``, and its parameters as the driver takes them."""
    params = params or {}
    keys = tuple(params)
    cache_key = (id(statement), dialect.name, keys)
    compiled = _COMPILED.get(cache_key)
    if compiled is None:
        compiled = _compile(statement, dialect, keys)
        if _PREPARED.get(id(statement)) is statement:
            _COMPILED[cache_key] = compiled
    missing = compiled.required.difference(params)
    if missing:
        raise KeyError(f"missing parameters: {', '.join(sorted(missing))}")
    values = {**compiled.defaults, **params}
    if compiled.order is not None:
        return compiled, [values[name] for name in compiled.order]
    return compiled, values


class Direct:
    """One write transaction on a pooled driver connection (``Database.direct``), or one read
    outside any (``Database.fetch`` on SQLite)."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Result:
        compiled, values = _bound(statement, self.dialect, params)
        cursor = self._cursor
        cursor.execute(compiled.sql, values)
        return _result(compiled.sql, cursor, cursor.fetchall() if compiled.returns_rows else ())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A transaction nested in this one: what the block wrote is undone, alone, if it
        raises."""
        self._command("SAVEPOINT direct")
        try:
            yield
        except BaseException:
            self._command("ROLLBACK TO direct")
            self._command("RELEASE direct")
            raise
        self._command("RELEASE direct")

    def _command(self, sql: str) -> None:
        self._cursor.execute(sql)

    def _send_batched(self, sql: str, values: Any) -> None:
        """Send one statement of a batch (``Direct.batch``), as the batch ends."""
        self._cursor.execute(sql, values)

    @contextmanager
    def batch(self) -> Iterator[Direct]:
        """Writes whose results nobody reads, held until the block ends and then sent together:
        on PostgreSQL as one statement, the others its data-modifying CTEs, so that they cost
        one round trip; on SQLite one after another, as there is no trip to save. If the block
        raises, none is sent."""
        batch = _Batch(self)
        yield batch
        batch.send()


class _Batch(Direct):
    """``Direct.batch``'s writer: ``execute`` queues, ``send`` hands the queue to the
    transaction's ``_send_batched``."""

    def __init__(self, transaction: Direct) -> None:
        super().__init__(transaction._cursor, transaction.dialect)
        self._queued: list[tuple[_Compiled, Sequence[Any] | Mapping[str, Any]]] = []
        self._send = transaction._send_batched

    def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Result:
        compiled, values = _bound(statement, self.dialect, params)
        if compiled.returns_rows:
            raise ValueError("a batch holds only writes that return no rows")
        self._queued.append((compiled, values))
        # Nothing has run yet: no rows, and a row count nobody may read.
        return Result(tuple, (), -1)

    def send(self) -> None:
        queued, self._queued = self._queued, []
        # Named parameters (psycopg's): the statements can go as one. Positional (SQLite's):
        # one by one, in the transaction around the batch.
        named = [values for _, values in queued if isinstance(values, Mapping)]
        if len(queued) > 1 and len(named) == len(queued):
            sql = _together(tuple(compiled.sql for compiled, _ in queued))
            prefixed = {f"s{i}_{k}": v for i, values in enumerate(named) for k, v in values.items()}
            self._send(sql, prefixed)
            return
        for compiled, values in queued:
            self._send(compiled.sql, values)


class PipelinedTransaction(Direct):
    """``Direct``'s write transaction on psycopg, with two round trips fewer: its ``BEGIN``
    goes with its first statement, and a batch (``Direct.batch``) waits to go with the
    statement after it or with the ``COMMIT``, together in psycopg's pipeline mode. Its
    connection is in autocommit (``Database.direct``), so psycopg sends no ``BEGIN`` of its own.

    A batch's writes go in order, before the statement they wait for, so that statement sees
    them; if the database refuses them, that statement or the commit raises, and the whole
    transaction is rolled back, as it was when the batch went alone. A verify made seven round
    trips (``BEGIN``, four statements, the batch, ``COMMIT``) and with this made five (three
    since: its spend goes in the batch, ``transactions.spend_locked``, and the throttle's row
    is read with its login, ``throttle.admit_read``). At half the peak rate on PostgreSQL
    (three alternated pairs of runs) the five trips' median wrk p50 was 4.8 ms against 5.1 for
    the seven, their p99 13.5 ms against 17.6, and PostgreSQL spent 8% less CPU on them. Each
    round trip costs a wake-up of both sides, which a loaded 2-core machine pays for dearly;
    the pipeline's own Python costs about what the trips it saves cost the client."""

    def __init__(self, cursor: Any, dialect: Dialect, connection: Any) -> None:
        super().__init__(cursor, dialect)
        self._connection = connection
        self._begun = False
        self._waiting: list[tuple[str, Any]] = []  # batches to go with the next trip

    def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Result:
        compiled, values = _bound(statement, self.dialect, params)
        self._trip(compiled.sql, values)
        cursor = self._cursor
        return _result(compiled.sql, cursor, cursor.fetchall() if compiled.returns_rows else ())

    def commit(self) -> None:
        """Commit, with the batches still waiting; send nothing if nothing was written."""
        if self._begun or self._waiting:
            self._trip("COMMIT", None)

    def _command(self, sql: str) -> None:
        self._trip(sql, None)

    def _send_batched(self, sql: str, values: Any) -> None:
        self._waiting.append((sql, values))

    def _trip(self, sql: str, values: Any) -> None:
        """Send ``sql`` with whatever waits to go before it, in one round trip; its results
        (the last statement's) are then on the cursor."""
        statements = self._waiting
        self._waiting = []
        if not self._begun:
            statements.insert(0, ("BEGIN", None))
            self._begun = True
        cursor = self._cursor
        if not statements:
            cursor.execute(sql, values)
            return
        with self._connection.pipeline():
            for before, before_values in statements:
                cursor.execute(before, before_values)
            cursor.execute(sql, values)


# psycopg's placeholders, and its escaped percent sign, which is no placeholder.
_PLACEHOLDER = re.compile(r"%%|%\(([^)]+)\)s")


@functools.lru_cache(maxsize=64)
def _together(sqls: tuple[str, ...]) -> str:
    """Statements with named placeholders as one: the last one's, with each of the others a
    CTE before it, their parameters prefixed by their place ("s0_", "s1_", ...).

    PostgreSQL runs every data-modifying CTE to completion, on one snapshot, whether or not
    anything reads it; so this holds only for writes that touch no row another one touches,
    and none of which needs to see another's effect. In autocommit the whole is one
    transaction."""

    def prefixed(i: int, sql: str) -> str:
        return _PLACEHOLDER.sub(lambda m: m[0] if m[1] is None else f"%(s{i}_{m[1]})s", sql)

    *first, last = (prefixed(i, sql) for i, sql in enumerate(sqls))
    ctes = ", ".join(f"s{i} AS ({sql})" for i, sql in enumerate(first))
    return f"WITH {ctes} {last}"


class AsyncDirect:
    """``Direct`` on an asyncio driver cursor (psycopg's): a read in the event loop
    (``Database.fetch``)."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Result:
        compiled, values = _bound(statement, self.dialect, params)
        cursor = self._cursor
        await cursor.execute(compiled.sql, values)
        rows = await cursor.fetchall() if compiled.returns_rows else ()
        return _result(compiled.sql, cursor, rows)
