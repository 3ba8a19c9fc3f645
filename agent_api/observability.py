"""Structured logs and per-request context: one JSON line per request, with its request id.

The request id comes from ``X-Request-ID`` when the caller sends a sane one, else it is made up;
it is returned in the same header and attached to every log line written while the request is
handled. Message contents are never logged.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

from asgi_correlation_id import CorrelationIdFilter, correlation_id
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_api.metrics import ERRORS, HTTP_DURATION, HTTP_REQUESTS
from agent_api.telemetry import log_ids

access_log = logging.getLogger("agent_api.access")

# What the handling of the current request learned (team, session, tokens, error type) for its log line.
request_details: ContextVar[dict[str, Any] | None] = ContextVar("request_details", default=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def valid_request_id(value: str) -> bool:
    return bool(_REQUEST_ID.match(value))


def note(**details: Any) -> None:
    """Add details to the current request's log line (no-op outside a request)."""
    current = request_details.get()
    if current is not None:
        current.update(details)


def count_error(error_type: str) -> None:
    ERRORS.labels(error_type).inc()
    note(error=error_type)


class AccessLog:
    """Pure ASGI middleware: HTTP metrics and one structured log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        details: dict[str, Any] = {}
        token = request_details.set(details)
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "unmatched"
            )
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_DURATION.labels(scope["method"], template).observe(elapsed)
            if template not in ("/health", "/metrics"):
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 1),
                        **details,
                    },
                )
            request_details.reset(token)


class TraceIds(logging.Filter):
    """Adds the current trace and span ids to a log line written inside a traced span."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_ids().items():
            setattr(record, name, value)
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Log to stderr, as JSON lines (``fmt="json"``) or as text, with the request id on each line
    (and, when tracing is on, the trace and span ids)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationIdFilter(name="request_id", uuid_length=None, default_value="-"))
    handler.addFilter(TraceIds())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{correlation_id}",
                style="{",
                rename_fields={
                    "asctime": "time",
                    "levelname": "level",
                    "name": "logger",
                    "correlation_id": "request_id",
                },
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # agent_api.access writes the request lines
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("saq").setLevel(logging.WARNING)  # a line per job and state change: the runs log their own


__all__ = ["AccessLog", "configure_logging", "correlation_id", "count_error", "note", "valid_request_id"]
