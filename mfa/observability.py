"""Metrics (Prometheus) and structured logs (JSON lines with a request id).

Neither ever holds a secret: metrics carry route templates, statuses and factor types; logs
carry what the code logs plus the request id, and the access log carries method, route, status
and duration, never a query string or a body.

With several workers, ``mfa serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before they start, and ``/metrics`` adds up what every worker wrote there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

HTTP_REQUESTS = Counter(
    "mfa_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "mfa_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOGINS = Counter("mfa_logins_total", "Password logins by outcome", ["outcome"])
SECOND_FACTORS = Counter(
    "mfa_second_factor_total",
    "Second-factor answers by factor type and outcome",
    ["type", "outcome"],
)
THROTTLES = Counter("mfa_throttled_total", "Attempts refused by throttling, by stage", ["stage"])
LOCKS = Counter("mfa_locked_total", "Users whose second factors were locked")


def count_event(event: str, detail: dict[str, Any]) -> None:
    """Feed the counters from the audit trail, so metrics and audit never disagree."""
    if event == "login_started":
        LOGINS.labels("success").inc()
    elif event == "password_failed":
        LOGINS.labels("failure").inc()
    elif event == "factor_succeeded":
        SECOND_FACTORS.labels(str(detail.get("factor_type")), "success").inc()
    elif event == "factor_failed":
        SECOND_FACTORS.labels(str(detail.get("factor_type")), "failure").inc()
    elif event == "throttled":
        stage = str(detail.get("stage", "unknown"))
        THROTTLES.labels(stage).inc()
        if stage == "password":
            LOGINS.labels("throttled").inc()
        else:
            SECOND_FACTORS.labels("any", "throttled").inc()
    elif event == "locked":
        LOCKS.inc()


async def metrics_endpoint(request: Request) -> Response:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")


class Observe:
    """Give each request an id (a sane ``X-Request-ID`` from a proxy, or a new one), echo it,
    count and time the request by its route template, and write one access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.access = logging.getLogger("mfa.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or secrets.token_hex(8)
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            # The route the router matched (it leaves it in the scope): one pass over the
            # routes per request, not two.
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_LATENCY.labels(route, method).observe(elapsed)
            if self.access.isEnabledFor(logging.INFO):
                self.access.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


def stamp_request_ids() -> None:
    """Make every log record carry the id of the request it was written in, whatever
    handler formats it later."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "stamps_request_id", False):
        return

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    stamped.stamps_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(stamped)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        for key in ("status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's message can quote input.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"))


JsonFormatter.converter = time.gmtime


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and uvicorn: JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "mfa": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
