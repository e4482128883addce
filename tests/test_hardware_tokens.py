"""Hardware tokens over HTTP: an admin imports a vendor's seed file, assigns a token, and its
user logs in with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mfa import ocra
from mfa.models import AuditEvent, Factor, HardwareToken, User

from .helpers import VECTORS, Account, enroll_first_totp, login, signup

PSKC_DIR = VECTORS / "pskc"
RFC4226 = json.loads((VECTORS / "rfc4226_hotp.json").read_text())
SECRET = bytes.fromhex(RFC4226["secret_hex"])
SEED_HEX = RFC4226["secret_hex"]


def rfc4226_code(counter: int, digits: int) -> str:
    """The RFC 4226 Appendix D value for ``counter``, in ``digits`` digits."""
    return str(RFC4226["vectors"][counter]["truncated_dec"] % 10**digits).zfill(digits)


def figure(n: int) -> str:
    (path,) = PSKC_DIR.glob(f"figure{n}_*.pskcxml")
    return path.read_text()


@pytest.fixture
def admin(client, clock) -> Account:
    account = signup(client, "root")
    enroll_first_totp(client, account, clock)
    with client.app.state.ctx.db.write() as s:
        s.execute(update(User).where(User.id == account.id).values(is_admin=True))
    return account


def import_(client: Any, admin: Account, **body: Any) -> Any:
    return client.post("/api/admin/tokens/import", json=body, headers=admin.access)


def assign(client: Any, admin: Account, serial: str, username: str) -> Any:
    return client.post(
        f"/api/admin/tokens/{serial}/assign", json={"username": username}, headers=admin.access
    )


def unassign(client: Any, admin: Account, serial: str) -> Any:
    return client.post(f"/api/admin/tokens/{serial}/unassign", headers=admin.access)


def verify(client: Any, account: Account, factor_id: str, code: str) -> Any:
    start = login(client, account)
    return client.post(
        "/api/login/verify",
        json={"mfa_token": start["mfa_token"], "factor_id": factor_id, "code": code},
    )


def events(client: Any, name: str) -> list[AuditEvent]:
    with client.app.state.ctx.db.read() as s:
        return [e for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id)) if e.event == name]


def token_count(client: Any) -> int:
    with client.app.state.ctx.db.read() as s:
        return s.execute(select(func.count()).select_from(HardwareToken)).scalar_one()


@pytest.mark.parametrize(
    ("n", "unlock"),
    [(6, {"key_hex": "12345678901234567890123456789012"}), (7, {"password": "qwerty"})],
)
def test_an_encrypted_seed_file_imported_assigned_and_used_to_log_in(client, admin, n, unlock):
    r = import_(client, admin, pskc=figure(n), **unlock)
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == [{"serial": "987654321", "type": "hotp", "digits": 8}]
    assert r.json()["skipped"] == []

    bob = signup(client, "bob")
    r = assign(client, admin, "987654321", "bob")
    assert r.status_code == 200, r.text
    factor = r.json()["factor"]
    assert (factor["type"], factor["status"], factor["serial"]) == ("hotp", "active", "987654321")

    start = login(client, bob)
    assert start["enroll_required"] is False
    assert start["factors"] == [
        {"id": factor["id"], "type": "hotp", "label": factor["label"], "serial": "987654321"}
    ]
    # The RFC 4226 codes of the token's secret, 8 digits as the file says: each once.
    for counter in range(10):
        code = rfc4226_code(counter, 8)
        r = verify(client, bob, factor["id"], code)
        assert r.status_code == 200, (counter, r.text)
        assert r.json()["amr"] == ["pwd", "otp", "mfa"]
        assert verify(client, bob, factor["id"], code).status_code == 401


def test_the_hardware_factor_shows_its_serial_and_no_secret(client, admin):
    import_(client, admin, pskc=figure(3))
    bob = signup(client, "bob")
    factor_id = assign(client, admin, "987654321", "bob").json()["factor"]["id"]
    r = verify(client, bob, factor_id, rfc4226_code(0, 8))
    bob.tokens = r.json()
    (listed,) = client.get("/api/factors", headers=bob.access).json()
    assert listed["serial"] == "987654321"
    assert "secret" not in listed
    inventory = client.get("/api/admin/tokens", headers=admin.access).json()
    assert inventory == [
        {
            "serial": "987654321",
            "type": "hotp",
            "digits": 8,
            "algorithm": "SHA1",
            "username": "bob",
            "factor_id": factor_id,
            "imported_at": inventory[0]["imported_at"],
            "assigned_at": inventory[0]["assigned_at"],
            "not_before": None,
            "not_after": None,
            "manufacturer": "Manufacturer",
        }
    ]
    assert SEED_HEX not in json.dumps(inventory)


def test_the_secret_is_sealed_to_the_token_row_and_again_to_the_factor_row(client, admin):
    import_(client, admin, pskc=figure(3))
    signup(client, "bob")
    factor_id = assign(client, admin, "987654321", "bob").json()["factor"]["id"]
    box = client.app.state.ctx.box
    with client.app.state.ctx.db.read() as s:
        token = s.scalars(select(HardwareToken)).one()
        factor = s.get(Factor, factor_id)
    for sealed in (token.secret, factor.secret):
        assert SECRET not in sealed
        assert SEED_HEX.encode() not in sealed
    assert box.open(token.secret, context=f"hardware_token:{token.id}:secret") == SECRET
    assert box.open(factor.secret, context=f"factor:{factor_id}:secret") == SECRET


def test_unassigning_takes_the_factor_away_and_keeps_the_counter(client, admin):
    import_(client, admin, pskc=figure(9))  # 6 digits
    bob = signup(client, "bob")
    factor_id = assign(client, admin, "0755225266", "bob").json()["factor"]["id"]
    for counter in (0, 1, 2):
        assert verify(client, bob, factor_id, rfc4226_code(counter, 6)).status_code == 200

    r = unassign(client, admin, "0755225266")
    assert r.status_code == 200, r.text
    assert r.json()["username"] is None
    assert login(client, bob)["enroll_required"] is True
    assert unassign(client, admin, "0755225266").status_code == 409

    carol = signup(client, "carol")
    factor_id = assign(client, admin, "0755225266", "carol").json()["factor"]["id"]
    # Codes bob used are spent for carol too; the next one is good.
    assert verify(client, carol, factor_id, rfc4226_code(2, 6)).status_code == 401
    assert verify(client, carol, factor_id, rfc4226_code(3, 6)).status_code == 200


def test_a_user_removing_the_factor_returns_the_token_to_stock(client, admin, clock):
    import_(client, admin, pskc=figure(9))
    bob = signup(client, "bob")
    factor_id = assign(client, admin, "0755225266", "bob").json()["factor"]["id"]
    r = verify(client, bob, factor_id, rfc4226_code(0, 6))
    bob.tokens = r.json()
    r = client.delete(f"/api/factors/{factor_id}", headers=bob.access)
    assert r.status_code == 204, r.text
    (token,) = client.get("/api/admin/tokens", headers=admin.access).json()
    assert token["username"] is None
    with client.app.state.ctx.db.read() as s:
        assert s.scalars(select(HardwareToken)).one().counter == 1
    (event,) = events(client, "token_unassigned")
    assert event.username == "bob"
    assert '"reason":"factor_removed"' in event.detail


def test_serials_already_present_are_skipped_and_named(client, admin):
    assert import_(client, admin, pskc=figure(3)).status_code == 200
    r = import_(client, admin, pskc=figure(7), password="qwerty")
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == []
    assert r.json()["skipped"] == [{"serial": "987654321", "reason": "already present"}]


def test_a_serial_given_twice_in_one_file_is_taken_once(client, admin):
    r = import_(client, admin, pskc=figure(10))
    assert [t["serial"] for t in r.json()["imported"]] == ["654321", "123456", "9999999"]
    assert [t["serial"] for t in r.json()["skipped"]] == ["9999999"]
    assert token_count(client) == 3


def test_a_token_whose_key_expired_is_not_assigned(client, admin):
    import_(client, admin, pskc=figure(10))  # valid in 2006 only
    signup(client, "bob")
    r = assign(client, admin, "654321", "bob")
    assert r.status_code == 409
    assert "expired" in r.json()["message"]


def test_a_token_stops_verifying_when_its_key_expires(client, admin, clock):
    expiry = datetime.fromtimestamp(clock() + 86400, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pskc = figure(3).replace(
        "</Data>", f"</Data><Policy><ExpiryDate>{expiry}</ExpiryDate></Policy>"
    )
    assert import_(client, admin, pskc=pskc).status_code == 200
    bob = signup(client, "bob")
    factor_id = assign(client, admin, "987654321", "bob").json()["factor"]["id"]
    assert verify(client, bob, factor_id, rfc4226_code(0, 8)).status_code == 200
    clock.advance(2 * 86400)
    assert verify(client, bob, factor_id, rfc4226_code(1, 8)).status_code == 401
    (failed,) = events(client, "factor_failed")
    assert '"reason":"token_expired"' in failed.detail


@pytest.mark.parametrize(
    ("n", "unlock", "words"),
    [
        (2, {}, "shorter than 128 bits"),
        (4, {}, "no secret"),
        (8, {}, "RSA key"),
        (6, {}, "encrypted: give its password or its pre-shared key"),
        (6, {"key_hex": "00" * 16}, "wrong password or pre-shared key"),
        (7, {"password": "wrong"}, "wrong password or pre-shared key"),
    ],
)
def test_a_file_that_cannot_be_imported_is_a_clear_error_and_imports_nothing(
    client, admin, n, unlock, words
):
    r = import_(client, admin, pskc=figure(n), **unlock)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert words in r.json()["message"]
    assert "\n" not in r.json()["message"]
    assert token_count(client) == 0
    assert events(client, "token_imported") == []


def test_a_csv_file_imports_all_or_nothing(client, admin):
    bad = f"TOK-1, {SEED_HEX}, hotp, 6\nTOK-2, 3132, hotp, 6\n"
    r = import_(client, admin, csv=bad)
    assert r.status_code == 400
    assert "Line 2" in r.json()["message"]
    assert token_count(client) == 0
    good = f"TOK-1, {SEED_HEX}, hotp, 6\nTOK-2, {SEED_HEX}, totp, 6, 30\n"
    r = import_(client, admin, csv=good)
    assert r.status_code == 200, r.text
    assert [(t["serial"], t["type"]) for t in r.json()["imported"]] == [
        ("TOK-1", "hotp"),
        ("TOK-2", "totp"),
    ]


def test_a_dry_run_imports_nothing(client, admin):
    r = import_(client, admin, pskc=figure(3), dry_run=True)
    assert r.status_code == 200
    assert r.json()["dry_run"] is True
    assert [t["serial"] for t in r.json()["imported"]] == ["987654321"]
    assert token_count(client) == 0


def test_audit_events_name_the_serial_and_the_acting_admin_and_no_secret(client, admin):
    import_(client, admin, pskc=figure(7), password="qwerty")
    signup(client, "bob")
    assign(client, admin, "987654321", "bob")
    unassign(client, admin, "987654321")
    for name, username in (
        ("token_imported", None),
        ("token_assigned", "bob"),
        ("token_unassigned", "bob"),
    ):
        (event,) = events(client, name)
        detail = json.loads(event.detail)
        assert detail["serial"] == "987654321"
        assert detail["actor"] == "root"
        assert event.username == username
        for needle in (SEED_HEX, "qwerty", "12345678901234567890"):
            assert needle not in event.detail


def test_the_admin_endpoints_refuse_everyone_else(client, admin, clock):
    user = signup(client, "mallory")
    enroll_first_totp(client, user, clock)
    calls = [
        ("GET", "/api/admin/tokens", None),
        ("POST", "/api/admin/tokens/import", {"pskc": figure(3)}),
        ("POST", "/api/admin/tokens/987654321/assign", {"username": "mallory"}),
        ("POST", "/api/admin/tokens/987654321/unassign", None),
    ]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=user.access)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "forbidden"
        r = client.request(method, path, json=body)
        assert r.status_code == 401, path
    assert token_count(client) == 0


@pytest.mark.parametrize(
    ("serial", "username", "status"),
    [("000000", "bob", 404), ("987654321", "nobody", 404), ("bad%20serial", "bob", 404)],
)
def test_assigning_an_unknown_token_or_user_is_not_found(client, admin, serial, username, status):
    import_(client, admin, pskc=figure(3))
    signup(client, "bob")
    r = assign(client, admin, serial, username)
    assert r.status_code == status
    assert r.json()["error"] == "not_found"


def test_a_token_is_assigned_once(client, admin):
    import_(client, admin, pskc=figure(3))
    signup(client, "bob")
    signup(client, "carol")
    assert assign(client, admin, "987654321", "bob").status_code == 200
    r = assign(client, admin, "987654321", "carol")
    assert r.status_code == 409
    with client.app.state.ctx.db.read() as s:
        assert s.execute(select(func.count()).select_from(Factor)).scalar_one() == 2  # root, bob


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"pskc": "<x/>", "csv": "a,b"},
        {"pskc": 5},
        {"pskc": "<x/>", "key_hex": "zz"},
        {"pskc": "<x/>", "key_hex": "00" * 15},
        {"pskc": "<x/>", "password": ""},
    ],
)
def test_malformed_import_requests_are_refused(client, admin, body):
    r = import_(client, admin, **body)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_an_assigned_ocra_token_answers_questions(client, admin):
    r = import_(
        client,
        admin,
        csv=f"OC-7, {SEED_HEX}, ocra, 6, OCRA-1:HOTP-SHA1-6:C-QN08\n",
    )
    assert r.status_code == 200, r.text
    bob = signup(client, "bob")
    factor = assign(client, admin, "OC-7", "bob").json()["factor"]
    assert factor["suite"] == "OCRA-1:HOTP-SHA1-6:C-QN08"
    suite = ocra.parse_suite(factor["suite"])
    start = login(client, bob)
    question = client.post(
        "/api/login/challenge", json={"mfa_token": start["mfa_token"], "factor_id": factor["id"]}
    ).json()["question"]
    code = ocra.response(suite, SECRET, question=question, counter=0)
    r = client.post(
        "/api/login/verify",
        json={"mfa_token": start["mfa_token"], "factor_id": factor["id"], "code": code},
    )
    assert r.status_code == 200, r.text


def test_the_openapi_document_lists_the_token_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/admin/tokens"]) == {"get"}
    assert "requestBody" in paths["/api/admin/tokens/import"]["post"]
    for action in ("assign", "unassign"):
        op = paths[f"/api/admin/tokens/{{serial}}/{action}"]["post"]
        assert [p["name"] for p in op["parameters"]] == ["serial"]
