"""A factor's view comes from one row (``factors.VIEW_COLUMNS``): its key's details and its
unused recovery codes are joined in, so /api/me, the factor list and a login's start show the
same thing whatever the factors, in one query, and on SQLite that query searches indexes."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.dialects import sqlite

from mfa import schema
from mfa.db import Database
from mfa.services import account as account_service
from mfa.services import factors
from mfa.services import login as login_service

from .drivers import RecoveryDriver
from .helpers import enroll_first_totp, login, signup
from .softauthn import SoftAuthenticator
from .test_webauthn import add_key


def test_me_the_factor_list_and_a_login_show_each_factor_the_same_way(client, clock):
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    clock.advance(1)  # listed oldest first
    key = add_key(client, account, SoftAuthenticator(), "usb key")
    clock.advance(1)
    recovery = RecoveryDriver().generate(client, account)

    me = client.get("/api/me", headers=account.access).json()["factors"]
    listed = client.get("/api/factors", headers=account.access).json()
    assert me == listed
    assert [f["id"] for f in me] == [totp["id"], key["id"], recovery["id"]]
    shown = {f["type"]: f for f in me}
    assert (shown["totp"]["digits"], shown["totp"]["period"]) == (6, 30)
    assert "remaining" not in shown["totp"]
    assert "aaguid" not in shown["totp"]
    assert shown["webauthn"]["transports"] == ["usb"]
    assert shown["webauthn"]["user_verified"] is False
    assert shown["recovery"]["remaining"] == 10

    at_login = login(client, account)["factors"]
    assert at_login == [
        {"id": totp["id"], "type": "totp", "label": totp["label"]},
        {"id": key["id"], "type": "webauthn", "label": "usb key"},
        {"id": recovery["id"], "type": "recovery", "label": recovery["label"], "remaining": 10},
    ]


@pytest.mark.parametrize(
    "statement",
    [
        account_service._ME,
        factors._ACTIVE,
        factors._USERS_FACTORS,
        factors._VIEW_ONE,
        login_service._CREDENTIALS,
    ],
    ids=["me", "active", "listing", "one", "login"],
)
def test_the_views_of_one_users_factors_search_indexes_on_sqlite(tmp_path, statement):
    # A join nested in another made SQLite scan every factor of every user on /api/me.
    db = Database(f"sqlite:///{tmp_path / 'mfa.db'}")
    schema.ensure(db, upgrade_if_behind=False)
    db.dispose()
    sql = str(statement.compile(dialect=sqlite.dialect()))
    with sqlite3.connect(tmp_path / "mfa.db") as conn:
        plan = [
            row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?"))
        ]
    assert plan, sql
    assert not [step for step in plan if step.startswith("SCAN")], plan
