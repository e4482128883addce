"""The operator's commands for users, the audit log and pruning, run as operators run them."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, insert, select

from mfa.db import Database
from mfa.models import AuditEvent, LoginTransaction, RefreshToken, new_id

from .helpers import enroll_first_totp, login, signup
from .test_cli import mfa

DAY = 24 * 3600


def test_user_list_shows_users_their_state_and_factors(client, clock, env):
    alice = signup(client, "alice")
    enroll_first_totp(client, alice, clock)
    signup(client, "bob")
    r = mfa(env, "user", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "ADMIN", "STATE", "FACTORS"]
    assert lines[1].split() == ["alice", "ok", "totp"]
    assert lines[2].split() == ["bob", "ok", "-"]


def test_user_reset_factors_makes_the_next_login_enroll(client, clock, env):
    alice = signup(client, "alice")
    enroll_first_totp(client, alice, clock)
    assert login(client, alice)["enroll_required"] is False
    r = mfa(env, "user", "reset-factors", "alice")
    assert r.returncode == 0, r.stderr
    assert "1 factor(s) removed" in r.stdout
    assert login(client, alice)["enroll_required"] is True
    refreshed = client.post(
        "/api/token/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    assert refreshed.json()["error"] == "invalid_grant"
    with client.app.state.ctx.db.read() as s:
        reset = s.scalars(select(AuditEvent).where(AuditEvent.event == "factors_reset")).one()
    assert json.loads(reset.detail)["actor"].startswith("cli")
    assert reset.user_agent == "mfa-cli"


def test_user_commands_name_an_unknown_user(env):
    for command in ("reset-factors", "unlock"):
        r = mfa(env, "user", command, "nobody")
        assert r.returncode == 1
        assert "No such user" in r.stderr


def test_audit_export_prints_json_lines_oldest_first_filtered(client, clock, env):
    alice = signup(client, "alice")
    clock.advance(10)
    login(client, alice)
    signup(client, "bob")
    r = mfa(env, "audit", "export", "--username", "alice")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["event"] for row in rows] == ["signup", "login_started"]
    assert all(row["username"] == "alice" for row in rows)
    assert {"time", "event", "username", "ip", "user_agent", "detail"} <= set(rows[0])

    everything = mfa(env, "audit", "export").stdout.splitlines()
    assert len(everything) == 3
    since = str(rows[1]["time"])
    later = mfa(env, "audit", "export", "--since", since, "--event", "login_started")
    assert [json.loads(line)["event"] for line in later.stdout.splitlines()] == ["login_started"]
    assert mfa(env, "audit", "export", "--until", "1970-01-02").stdout == ""
    bad = mfa(env, "audit", "export", "--since", "last tuesday")
    assert bad.returncode == 2
    assert "RFC 3339" in bad.stderr


def add_audit_event(db: Database, when: int) -> None:
    with db.write() as s:
        s.execute(insert(AuditEvent).values(time=when, event="signup", username="x", detail="{}"))


def count_rows(db: Database, model) -> int:
    with db.read() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_audit_prune_keeps_the_retention_period(db, env):
    now = int(time.time())
    for age_days in (400, 366, 364, 1):
        add_audit_event(db, now - age_days * DAY)
    r = mfa(env, "audit", "prune")
    assert r.returncode == 0, r.stderr
    assert "deleted 2" in r.stdout
    assert count_rows(db, AuditEvent) == 2
    assert mfa(env, "audit", "prune", "--days", "7").stdout.startswith("deleted 1 ")
    r = mfa({**env, "MFA_AUDIT_RETENTION_DAYS": "0"}, "audit", "prune")
    assert "nothing pruned" in r.stdout
    assert count_rows(db, AuditEvent) == 1


def test_db_prune_deletes_dead_rows_and_keeps_what_reuse_detection_needs(client, db, env):
    now = int(time.time())
    alice = signup(client, "alice")
    add_audit_event(db, now - 400 * DAY)
    with db.write() as s:
        for expires in (now - 2 * DAY, now - 2 * DAY, now + 300):
            s.execute(
                insert(LoginTransaction).values(
                    id=new_id(),
                    token_hash=new_id().encode()[:32],
                    user_id=alice.id,
                    created_at=expires - 300,
                    expires_at=expires,
                    failures=0,
                )
            )

        def link(family: str, expires: int, *, spent: bool = False, revoked: int | None = None):
            s.execute(
                insert(RefreshToken).values(
                    id=new_id(),
                    token_hash=new_id().encode()[:32],
                    family_id=family,
                    user_id=alice.id,
                    auth_time=now - 30 * DAY,
                    amr="pwd otp mfa",
                    created_at=now - 30 * DAY,
                    expires_at=expires,
                    spent_at=now - 20 * DAY if spent else None,
                    revoked_at=revoked,
                )
            )

        # Expired long ago: gone. Revoked long ago: gone. Live: kept, its spent link too.
        link("expired", now - 3 * DAY, spent=True)
        link("expired", now - 2 * DAY)
        link("revoked", now + 5 * DAY, spent=True, revoked=now - 2 * DAY)
        link("revoked", now + 6 * DAY, revoked=now - 2 * DAY)
        link("live", now - 5 * DAY, spent=True)
        link("live", now + 5 * DAY)
        link("just-revoked", now + 5 * DAY, revoked=now - 60)
    r = mfa(env, "db", "prune")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["audit_events=1", "login_transactions=2", "refresh_tokens=4"]
    with db.read() as s:
        families = sorted(s.scalars(select(RefreshToken.family_id)))
    assert families == ["just-revoked", "live", "live"]
    assert count_rows(db, LoginTransaction) == 1
