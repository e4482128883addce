"""Retention settings and the server's own pruning."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from mfa.app import create_app
from mfa.config import ConfigError, Settings
from mfa.models import AuditEvent

from .test_cli_admin import DAY, add_audit_event, count_rows


def test_retention_settings_default_allow_zero_and_refuse_nonsense(env):
    assert Settings.from_env(env).audit_retention_days == 365
    assert Settings.from_env(env).prune_interval == 3600
    assert Settings.from_env({**env, "MFA_AUDIT_RETENTION_DAYS": "0"}).audit_retention_days == 0
    for name in ("MFA_AUDIT_RETENTION_DAYS", "MFA_PRUNE_INTERVAL"):
        for bad in ("-1", "soon"):
            with pytest.raises(ConfigError, match=name):
                Settings.from_env({**env, name: bad})


def test_the_server_prunes_by_itself(db, env, clock):
    add_audit_event(db, int(clock()) - 400 * DAY)
    add_audit_event(db, int(clock()) - DAY)
    settings = replace(Settings.from_env(env), prune_interval=1)
    with TestClient(create_app(settings, clock=clock)):
        deadline = time.monotonic() + 10
        while count_rows(db, AuditEvent) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert count_rows(db, AuditEvent) == 1
