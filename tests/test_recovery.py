"""Recovery codes: ten single-use codes, easy to type, stored as keyed hashes, one factor."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import func, select

from mfa.factors import recovery as codes
from mfa.models import AuditEvent, Factor, RecoveryCode
from mfa.secretbox import SecretBox

from .drivers import RecoveryDriver
from .helpers import Account, bearer, enroll_first_totp, login, signup, totp_login

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


def with_codes(client, clock) -> tuple[Account, dict, dict]:
    account = signup(client)
    totp = enroll_first_totp(client, account, clock)
    recovery = RecoveryDriver().generate(client, account)
    return account, totp, recovery


def use(client, account, factor_id: str, code: str):
    mfa_token = login(client, account)["mfa_token"]
    return client.post(
        "/api/login/verify", json={"mfa_token": mfa_token, "factor_id": factor_id, "code": code}
    )


def stored(client, factor_id: str) -> list[RecoveryCode]:
    with client.app.state.ctx.db.read() as s:
        return list(s.scalars(select(RecoveryCode).where(RecoveryCode.factor_id == factor_id)))


def test_a_set_is_ten_distinct_readable_codes_of_sixty_bits(client, clock):
    _, _, recovery = with_codes(client, clock)
    assert recovery["type"] == "recovery"
    assert recovery["status"] == "active"
    assert recovery["remaining"] == 10
    assert len(recovery["codes"]) == 10
    assert len(set(recovery["codes"])) == 10
    assert all(CODE.fullmatch(c) for c in recovery["codes"]), recovery["codes"]
    assert codes.BITS >= 50
    assert not set("ILOU") & set("".join(recovery["codes"]))


def test_the_set_is_one_factor_with_a_remaining_count_when_listed_and_at_login(client, clock):
    account, totp, recovery = with_codes(client, clock)
    listed = {f["type"]: f for f in client.get("/api/factors", headers=account.access).json()}
    assert sorted(listed) == ["recovery", "totp"]
    assert (listed["totp"]["id"], listed["recovery"]["id"]) == (totp["id"], recovery["id"])
    assert listed["recovery"]["remaining"] == 10
    assert "codes" not in listed["recovery"]
    start = login(client, account)
    assert start["enroll_required"] is False
    assert {
        "id": recovery["id"],
        "type": "recovery",
        "label": "Recovery codes",
        "remaining": 10,
    } in (start["factors"])


def test_a_code_logs_in_once(client, clock):
    account, _, recovery = with_codes(client, clock)
    code = recovery["codes"][3]
    r = use(client, account, recovery["id"], code)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["amr"] == ["pwd", "otp", "mfa"]
    assert body["recovery_codes_remaining"] == 9
    assert "warnings" not in body
    again = use(client, account, recovery["id"], code)
    assert again.status_code == 401
    assert again.json()["error"] == "verification_failed"
    (listed,) = [
        f
        for f in client.get("/api/factors", headers=account.access).json()
        if f["id"] == recovery["id"]
    ]
    assert listed["remaining"] == 9
    assert listed["last_used_at"] == int(clock())


def test_typing_ignores_case_spaces_dashes_and_reads_look_alikes_as_crockford_does(client, clock):
    account, _, recovery = with_codes(client, clock)
    code = recovery["codes"][0]
    typed = " " + code.lower().replace("-", "  ").replace("0", "o").replace("1", "l") + " "
    r = use(client, account, recovery["id"], typed)
    assert r.status_code == 200, r.text
    # The same code, typed as printed, is spent.
    assert use(client, account, recovery["id"], code).status_code == 401


def test_regeneration_replaces_the_whole_set(client, clock):
    account, _, first = with_codes(client, clock)
    second = RecoveryDriver().generate(client, account)
    assert second["id"] != first["id"]
    assert not set(first["codes"]) & set(second["codes"])
    listed = client.get("/api/factors", headers=account.access).json()
    assert [f["id"] for f in listed if f["type"] == "recovery"] == [second["id"]]
    # No code of the first set answers, for either set's id.
    assert use(client, account, first["id"], first["codes"][0]).status_code == 401
    assert use(client, account, second["id"], first["codes"][1]).status_code == 401
    assert stored(client, first["id"]) == []
    assert use(client, account, second["id"], second["codes"][0]).status_code == 200


def test_few_remaining_codes_are_announced_and_the_last_one_disables_the_set(client, clock):
    account, _, recovery = with_codes(client, clock)
    seen = []
    for code in recovery["codes"]:
        r = use(client, account, recovery["id"], code)
        assert r.status_code == 200, r.text
        seen.append((r.json()["recovery_codes_remaining"], r.json().get("warnings", [])))
    assert [n for n, _ in seen] == list(range(9, -1, -1))
    assert all(w == [] for n, w in seen if n > 3)
    assert all(w == ["recovery_codes_low"] for n, w in seen if n <= 3)
    (listed,) = [
        f
        for f in client.get("/api/factors", headers=account.access).json()
        if f["id"] == recovery["id"]
    ]
    assert (listed["status"], listed["remaining"]) == ("disabled", 0)
    assert recovery["id"] not in [f["id"] for f in login(client, account)["factors"]]
    with client.app.state.ctx.db.read() as s:
        disabled = s.scalars(select(AuditEvent).where(AuditEvent.event == "factor_disabled")).one()
    assert '"reason":"exhausted"' in disabled.detail


def test_codes_need_another_factor_and_stand_in_for_it_when_it_is_gone(client, clock):
    account, totp, recovery = with_codes(client, clock)
    assert client.delete(f"/api/factors/{totp['id']}", headers=account.access).status_code == 204

    # Only the codes are left: they still guard the account. The password alone enrolls nothing.
    start = login(client, account)
    assert start["enroll_required"] is False
    assert [f["type"] for f in start["factors"]] == ["recovery"]
    r = client.post("/api/factors", json={"type": "totp"}, headers=bearer(start["mfa_token"]))
    assert r.status_code == 401

    r = use(client, account, recovery["id"], recovery["codes"][0])
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == ["no_other_factor"]
    account.tokens = r.json()

    # No new set without another factor first.
    r = client.post("/api/recovery-codes", headers=account.access)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert use(client, account, recovery["id"], recovery["codes"][1]).status_code == 200


def test_regeneration_needs_a_recent_second_factor(client, clock, settings):
    account, totp, recovery = with_codes(client, clock)
    clock.advance(settings.step_up_max_age + 1)
    r = client.post("/api/recovery-codes", headers=account.access)
    assert r.status_code == 401
    assert r.json()["error"] == "step_up_required"
    # Nothing changed: the first set still answers.
    assert use(client, account, recovery["id"], recovery["codes"][0]).status_code == 200
    totp_login(client, account, totp, clock)
    assert client.post("/api/recovery-codes", headers=account.access).status_code == 201


def test_removing_the_set_removes_its_codes(client, clock):
    account, _, recovery = with_codes(client, clock)
    r = client.delete(f"/api/factors/{recovery['id']}", headers=account.access)
    assert r.status_code == 204
    assert stored(client, recovery["id"]) == []
    assert "recovery" not in [f["type"] for f in login(client, account)["factors"]]
    assert use(client, account, recovery["id"], recovery["codes"][0]).status_code == 401


def test_the_set_can_be_renamed(client, clock):
    account, _, recovery = with_codes(client, clock)
    r = client.patch(
        f"/api/factors/{recovery['id']}", json={"label": "in the safe"}, headers=account.access
    )
    assert r.status_code == 200
    assert (r.json()["label"], r.json()["remaining"]) == ("in the safe", 10)


def test_codes_are_stored_only_as_hashes_under_the_service_key(client, clock):
    _, _, recovery = with_codes(client, clock)
    rows = stored(client, recovery["id"])
    assert len(rows) == 10
    ctx = client.app.state.ctx
    raw = [codes.normalize(c) for c in recovery["codes"]]
    keyed = {ctx.box.digest(f"{recovery['id']}:{c}".encode(), purpose="recovery") for c in raw}
    assert {r.code_hash for r in rows} == keyed
    # Not a plain hash anyone could recompute, and not the same under another key.
    assert not {r.code_hash for r in rows} & {hashlib.sha256(c.encode()).digest() for c in raw}
    other = SecretBox(b"\x01" * 32)
    assert not keyed & {
        other.digest(f"{recovery['id']}:{c}".encode(), purpose="recovery") for c in raw
    }
    with ctx.db.read() as s:
        dump = repr([r.model_dump() for r in s.scalars(select(RecoveryCode))])
        dump += repr([f.model_dump() for f in s.scalars(select(Factor))])
    for code in recovery["codes"]:
        assert code not in dump
        assert codes.normalize(code) not in dump


def test_a_wrong_code_is_a_failure_like_any_other(client, clock):
    account, _, recovery = with_codes(client, clock)
    r = use(client, account, recovery["id"], "not a code at all")
    assert r.status_code == 401
    with client.app.state.ctx.db.read() as s:
        failed = s.scalars(select(AuditEvent).where(AuditEvent.event == "factor_failed")).one()
        remaining = s.execute(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.used_at.is_(None))
        ).scalar()
    assert '"factor_type":"recovery"' in failed.detail
    assert '"reason":"malformed_code"' in failed.detail
    assert remaining == 10


def test_a_set_is_made_only_by_its_own_endpoint_and_needs_no_challenge(client, clock):
    account, _, recovery = with_codes(client, clock)
    r = client.post("/api/factors", json={"type": "recovery"}, headers=account.access)
    assert r.status_code == 400
    r = client.post(
        f"/api/factors/{recovery['id']}/confirm", json={"code": "0000"}, headers=account.access
    )
    assert r.status_code == 400
    mfa_token = login(client, account)["mfa_token"]
    r = client.post(
        "/api/login/challenge", json={"mfa_token": mfa_token, "factor_id": recovery["id"]}
    )
    assert r.json() == {"type": "recovery"}
