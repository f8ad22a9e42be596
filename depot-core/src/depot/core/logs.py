"""JSON-lines logs on stderr, and one access line per request.

Each line is an object with ``time``, ``level``, ``logger``, ``message`` and whatever fields were
passed through ``extra=``. Nothing here logs headers or query strings, which is where tokens live.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

access_log = logging.getLogger("depot.access")


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(verbose: bool = False) -> None:
    """Send depot's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("depot")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_depot", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        handler._depot = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False


class AccessLogMiddleware:
    """Log method, path, status, bytes sent and duration of every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        # Read now: routing rewrites root_path in place on the way down.
        path = scope["path"]
        status = 500
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not access_log.isEnabledFor(logging.INFO):
                return
            # makeRecord + handle skips Logger.findCaller's stack walk: the access line is
            # written for every request, and the caller is always this line.
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                "request",
                (),
                None,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "bytes": sent,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            access_log.handle(record)
