"""The ``mfa`` command, run as operators run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from mfa.db import Database
from mfa.models import AuditEvent, SigningKey, User

from .helpers import PASSWORD


def mfa(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mfa", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_user_add_reads_the_password_from_stdin(env):
    r = mfa(env, "user", "add", "carol", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "carol" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    db = Database(env["MFA_DATABASE_URL"])
    with db.read() as s:
        user = s.scalars(select(User).where(User.username == "carol")).one()
        assert user.is_admin
        assert user.password_hash.startswith("$argon2id$")
        events = [e.event for e in s.scalars(select(AuditEvent))]
    db.dispose()
    assert "user_created" in events


def test_user_add_refuses_a_weak_password_and_a_taken_name(env):
    r = mfa(env, "user", "add", "dave", "--password-stdin", stdin="password\n")
    assert r.returncode == 1
    assert "common" in r.stderr or "characters" in r.stderr
    assert (
        mfa(env, "user", "add", "dave", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    )
    r = mfa(env, "user", "add", "DAVE", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 1
    assert "taken" in r.stderr


def test_user_unlock_of_an_unknown_user_fails_clearly(env):
    r = mfa(env, "user", "unlock", "nobody")
    assert r.returncode == 1
    assert "No such user" in r.stderr


def test_keys_rotate_makes_a_new_current_key(env):
    assert mfa(env, "keys", "rotate").returncode == 0
    r = mfa(env, "keys", "rotate")
    assert r.returncode == 0
    kid = r.stdout.split()[-1]
    db = Database(env["MFA_DATABASE_URL"])
    with db.read() as s:
        keys = s.scalars(select(SigningKey)).all()
    db.dispose()
    assert [k.kid for k in keys if k.retired_at is None] == [kid]
    assert len(keys) == 2


def test_keys_rotate_after_publishes_a_key_that_signs_later(env):
    assert mfa(env, "keys", "rotate").returncode == 0
    r = mfa(env, "keys", "rotate", "--after", "120")
    assert r.returncode == 0, r.stderr
    kid = r.stdout.split()[-1]
    assert "signs from" in r.stdout
    db = Database(env["MFA_DATABASE_URL"])
    with db.read() as s:
        stored = {k.kid: k for k in s.scalars(select(SigningKey)).all()}
    db.dispose()
    staged = stored.pop(kid)
    [old] = stored.values()
    assert staged.retired_at is None
    assert staged.signs_from == old.retired_at == staged.created_at + 120


@pytest.mark.parametrize("after", ["-1", "soon", "86401"])
def test_keys_rotate_after_refuses_a_bad_delay_and_changes_nothing(env, after):
    assert mfa(env, "keys", "rotate").returncode == 0
    r = mfa(env, "keys", "rotate", "--after", after)
    assert r.returncode == 2
    assert "--after" in r.stderr
    assert "Traceback" not in r.stderr
    db = Database(env["MFA_DATABASE_URL"])
    with db.read() as s:
        assert len(s.scalars(select(SigningKey)).all()) == 1
    db.dispose()


def test_a_bad_setting_is_a_clear_error(env):
    r = mfa({**env, "MFA_ENCRYPTION_KEY": "too-short"}, "keys", "rotate")
    assert r.returncode == 2
    assert "MFA_ENCRYPTION_KEY" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_database_that_cannot_be_reached_is_said_plainly_with_status_3(tmp_path):
    # A port nothing listens on, and a password that must not be echoed.
    env = {
        "MFA_DATABASE_URL": "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/mfa",
        "MFA_DATA_DIR": str(tmp_path),
    }
    for args in (("db", "upgrade"), ("user", "list"), ("serve", "--port", "1")):
        r = mfa(env, *args)
        assert r.returncode == 3, (args, r.stderr)
        assert "the database at postgresql+psycopg://postgres:***@127.0.0.1:1/mfa" in r.stderr
        assert "cannot be reached" in r.stderr
        assert "Traceback" not in r.stderr
        assert "s3cret-pw" not in r.stdout + r.stderr


def test_a_sqlite_file_whose_directory_cannot_be_made_is_said_plainly_with_status_3(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/var/mfa.db"
    env = {"MFA_DATABASE_URL": url, "MFA_DATA_DIR": str(tmp_path)}
    for args in (("db", "upgrade"), ("serve", "--port", "1")):
        r = mfa(env, *args)
        assert r.returncode == 3, (args, r.stderr)
        assert f"the database at {url} cannot be reached: its directory cannot be made" in r.stderr
        assert "Traceback" not in r.stderr
