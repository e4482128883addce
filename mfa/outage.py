"""Which errors mean that the database cannot serve just now, rather than a bug.

A restart or failover of PostgreSQL, a cut network, too many connections, a full disk, or a
SQLite file locked past its busy timeout: requests meanwhile answer 503 with Retry-After, which
clients and load balancers know to try again, and the log says the database was unavailable.
Anything else unexpected stays a 500 (``mfa.app.CatchAll``).
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc as sa_exc

from .db import CannotOpen, WriterBusy
from .errors import MfaError

RETRY_AFTER_S = 1

# SQLite's primary result codes for a database that is busy, locked, unreadable, full or gone;
# the others ("no such table", a constraint) are bugs or bad data, not an outage.
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


class Unavailable(MfaError):
    status, error = 503, "service_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database is unavailable just now; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error under one that SQLAlchemy wrapped (``exc`` itself otherwise)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def describe(exc: BaseException) -> str:
    """What the log says of an outage: the driver's error type and code (a SQLSTATE, or
    SQLite's name for it), which tell an operator why, and never the message, which is free
    text."""
    exc = driver_error(exc)
    code = getattr(exc, "sqlite_errorname", None) or getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (as raised by the driver, or wrapped by SQLAlchemy) says the database
    cannot serve now."""
    if isinstance(exc, sa_exc.TimeoutError | WriterBusy | CannotOpen):
        # Every pooled connection stayed busy, or SQLite's writer lock did, or the directory
        # of its file cannot be made.
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    exc = driver_error(exc)  # a DBAPIError with none under it is no outage: it fails below
    if isinstance(exc, sqlite3.OperationalError):
        return exc.sqlite_errorcode & 0xFF in _SQLITE_UNAVAILABLE
    # psycopg's OperationalError: connection failures and losses, the server shutting down
    # (57P01), too many connections and a full disk (class 53), pool timeouts, and transactions
    # the server rolled back (deadlocks, serialization failures: 40xxx), which a retry redoes.
    return isinstance(exc, psycopg.OperationalError)
