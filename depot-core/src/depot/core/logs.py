"""JSON-lines logs on stderr, and the access line written for every request.

Each line is an object with ``time``, ``level``, ``logger``, ``message`` and whatever fields were
passed through ``extra=``. Nothing here logs headers or query strings, which is where tokens live.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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


def log_access(method: str, path: str, status: int, sent: int, seconds: float, client: str) -> None:
    """Write the access line of one answered request."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    # makeRecord + handle skips Logger.findCaller's stack walk: the access line is written for
    # every request, and the caller is always this function.
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "request",
        (),
        None,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 2),
            "client": client,
        },
    )
    access_log.handle(record)
