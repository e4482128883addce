"""Metrics and structured logs: the counters the contract names, and no secret anywhere."""

from __future__ import annotations

import json
import logging

from mfa.observability import JsonFormatter

from .drivers import TotpDriver
from .helpers import PASSWORD, enroll_first_totp, login, signup


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_logins_second_factors_and_throttles(client, clock):
    before = client.get("/metrics").text
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    driver = TotpDriver()
    driver.used_step = int(clock()) // 30
    client.post("/api/login", json={"username": "alice", "password": "wrong password!"})
    mfa_token = login(client, account)["mfa_token"]
    for _ in range(5):
        client.post("/api/login/verify", json=driver.wrong(client, mfa_token, factor, clock))
    client.post(
        "/api/login/verify",
        json=driver.right(client, login(client, account)["mfa_token"], factor, clock),
    )
    after = client.get("/metrics").text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("mfa_http_requests_total", route="/api/login", method="POST", status="200") == 3
    assert (
        grew("mfa_http_requests_total", route="/api/login/verify", method="POST", status="401") == 5
    )
    assert (
        grew("mfa_http_request_duration_seconds_count", route="/api/login/verify", method="POST")
        == 6
    )
    assert grew("mfa_logins_total", outcome="success") == 3
    assert grew("mfa_logins_total", outcome="failure") == 1
    assert grew("mfa_second_factor_total", type="totp", outcome="failure") == 5
    assert grew("mfa_throttled_total", stage="second_factor") == 1
    # Unknown paths are counted under one label, so a scanner cannot blow up the series.
    client.get("/no/such/path/123")
    assert 'route="unmatched"' in client.get("/metrics").text


def test_each_response_carries_a_request_id(client):
    r = client.get("/healthz")
    assert len(r.headers["x-request-id"]) == 16
    r = client.get("/healthz", headers={"X-Request-ID": "from-the-proxy-42"})
    assert r.headers["x-request-id"] == "from-the-proxy-42"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


def test_logs_are_json_lines_with_the_request_id_and_no_secret(client, clock, caplog):
    caplog.set_level(logging.INFO)
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    login(client, account)
    client.post("/api/login", json={"username": "alice", "password": "a wrong password"})
    lines = [JsonFormatter().format(r) for r in caplog.records]
    access = [json.loads(line) for line in lines if '"logger":"mfa.access"' in line]
    assert access
    assert all(len(entry["request_id"]) == 16 for entry in access)
    for line in lines:
        entry = json.loads(line)
        assert entry["level"] in ("debug", "info", "warning", "error")
    text = "\n".join(lines)
    for secret in (PASSWORD, "a wrong password", factor["secret"], account.tokens["refresh_token"]):
        assert secret not in text
    text_metrics = client.get("/metrics").text
    assert PASSWORD not in text_metrics
    assert factor["secret"] not in text_metrics
