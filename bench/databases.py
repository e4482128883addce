"""The databases a run measures: a fresh SQLite file, and a fresh PostgreSQL database when one
answers on 127.0.0.1:5432 (dropped at the end, whatever happens)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from . import settings


def postgres_reachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(settings.PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    path = workdir / "sqlite" / "mfa.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    yield f"sqlite:///{path}"


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"mfa_bench_{secrets.token_hex(6)}"
    with psycopg.connect(settings.PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(settings.PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(settings.PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_to_disk(url: str) -> None:
    """Write what the preparation left in memory to the disk, before any load is measured.

    Otherwise the kernel writes it back 30 s after it was made (``vm.dirty_expire_centisecs``),
    which falls in the middle of the runs: a burst of about 100 MB in half a second, during
    which every commit's flush waited for the disk (PostgreSQL logged COMMITs of 30 to 45 ms at
    that moment; paced verify runs that met such a burst had a p99 of 30 to 80 ms, against 7 to
    18 ms for those that did not). On PostgreSQL a checkpoint first: it writes the preparation's
    pages from PostgreSQL's own buffers, which would otherwise go out with a later checkpoint or
    the background writer, also mid-run."""
    if make_url(url).get_backend_name() == "postgresql":
        with psycopg.connect(settings.PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    os.sync()


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        with sqlite_database(workdir) as url:
            yield url
    elif kind == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        raise ValueError(f"unknown database {kind!r}")
