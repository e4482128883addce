"""Health, readiness and the OpenAPI document."""

from __future__ import annotations

import gc

from starlette.testclient import TestClient

from mfa.app import create_app
from mfa.config import Settings
from mfa.db import Database


def test_healthz_answers_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_answers_when_the_database_does(client):
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_does_not_answer(settings, clock):
    app = create_app(settings, clock=clock)
    with TestClient(app) as c:
        # The database goes away under the running app: close what its startup opened first.
        c.portal.call(app.state.ctx.db.close_loop_reads)
        app.state.ctx.db.dispose()
        app.state.ctx.db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"] == "not_ready"


def test_the_openapi_document_lists_the_contract(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/login", "/api/login/verify", "/api/factors", "/.well-known/jwks.json"):
        assert path in doc["paths"]
    # Every call but /healthz may meet a database that is away (mfa.outage): each says so.
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            assert ("503" in operation["responses"]) == (path != "/healthz"), path


def test_an_rp_id_that_does_not_cover_the_origin_is_named_at_start(env, clock, caplog):
    settings = Settings.from_env(
        {**env, "MFA_ORIGIN": "https://login.example.com", "MFA_RP_ID": "example.org"}
    )
    assert settings.origins_outside_rp_id() == ["https://login.example.com"]
    create_app(settings, clock=clock)
    assert any("MFA_RP_ID" in r.getMessage() for r in caplog.records)
    fine = Settings.from_env(
        {**env, "MFA_ORIGIN": "https://login.example.com", "MFA_RP_ID": "example.com"}
    )
    assert fine.origins_outside_rp_id() == []


def test_the_server_hides_what_it_made_at_startup_from_the_garbage_collector(settings):
    """Full collections that walk every module and engine object stalled requests for 15 to
    75 ms; the server (``app_from_env``) freezes them once started, tests' apps do not."""
    gc.unfreeze()
    try:
        with TestClient(create_app(settings)) as c:
            assert c.get("/healthz").status_code == 200
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(settings, freeze_after_startup=True)) as c:
            assert c.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
