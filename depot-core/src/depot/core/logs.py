"""JSON-lines logs on stderr, and the access line written for every request.

Each line is an object with ``time``, ``level``, ``logger``, ``message`` and whatever fields were
passed through ``extra=``. Nothing here logs headers or query strings, which is where tokens live.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from json.encoder import encode_basestring_ascii as _json_string
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


class _JSONLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Depot's stderr handler: access lines gathered in this loop turn go out before any other
    record, so lines stay in the order things happened."""

    _depot = True

    def emit(self, record: logging.LogRecord) -> None:
        if _access_lines.pending:
            _access_lines.write()
        super().emit(record)


def configure_logging(verbose: bool = False) -> None:
    """Send depot's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("depot")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_depot", False) for h in root.handlers):
        handler = _JSONLinesHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        root.addHandler(handler)
    root.propagate = False


def configure_server_logging(verbose: bool = False) -> None:
    """:func:`configure_logging`, and every other library's records too, for ``depot serve``.

    Third-party libraries log through their own loggers: hypercorn's "Error in ASGI Framework"
    (``hypercorn.error``), python-multipart's parser warnings, asyncio's "Task exception was never
    retrieved", Python's warnings. Without a handler of their own those reach stderr as plain
    text (logging's last resort), breaking the one-JSON-object-per-line contract; here the root
    logger gets depot's JSON handler. Only for the server depot runs itself: an application that
    embeds depot configures its own root logger.
    """
    configure_logging(verbose)
    root = logging.getLogger()
    if not any(getattr(h, "_depot", False) for h in root.handlers):
        handler = _JSONLinesHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Hypercorn's "Running on ..." and its connection errors: through the root handler.
    logging.getLogger("hypercorn.error").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)


class _Timestamps:
    """``time`` field text, with the seconds part formatted once per second, not per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"


_timestamps = _Timestamps()


def _direct_handler() -> logging.StreamHandler[Any] | None:
    """Depot's own JSON handler when it alone would write the access line, else None."""
    if access_log.handlers or access_log.filters:
        return None
    parent = access_log.parent
    if parent is None or parent.propagate or parent.filters or len(parent.handlers) != 1:
        return None
    handler = parent.handlers[0]
    if not getattr(handler, "_depot", False) or handler.filters:
        return None
    return handler  # type: ignore[return-value]


class _AccessLines:
    """Access lines of the current event-loop turn, written to the stream with one write.

    A write to stderr is a system call (several microseconds on a loaded machine, a sizeable
    part of a hot request); with many requests answered in one turn, their lines go out
    together at the end of the turn (``call_soon``), never later, and before any other record
    of depot's handler (:class:`_JSONLinesHandler`). Outside an event loop a line is written at
    once.
    """

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
        self.scheduled = False
        self.lock = threading.Lock()

    def add(self, handler: logging.StreamHandler, line: str) -> None:  # type: ignore[type-arg]
        with self.lock:
            if self.handler is not handler and self.pending:
                self._write_locked()
            self.handler = handler
            self.pending.append(line)
            if self.scheduled:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write_locked()
                return
            self.scheduled = True
        loop.call_soon(self.write)

    def write(self) -> None:
        with self.lock:
            self._write_locked()

    def _write_locked(self) -> None:
        self.scheduled = False
        if not self.pending or self.handler is None:
            return
        text = "".join(self.pending)
        self.pending = []
        handler = self.handler
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(text)
            handler.flush()


_access_lines = _AccessLines()
atexit.register(_access_lines.write)


def log_access(method: str, path: str, status: int, sent: int, seconds: float, client: str) -> None:
    """Write the access line of one answered request.

    It is written for every request, so when depot's own JSON handler is the only one that would
    see it (the normal case) the line is formatted here in one step, the same JSON the formatter
    writes: going through LogRecord, the formatter and its field loop took about a fifth of a
    narinfo request's server time. The lines of one event-loop turn go out in one write
    (:class:`_AccessLines`). Any other logging set-up (a test's capture, an embedding app's
    handlers) gets an ordinary record.
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    handler = _direct_handler()
    if handler is None:
        extra = {
            "method": method,
            "path": path,
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 2),
            "client": client,
        }
        # makeRecord + handle skips Logger.findCaller's stack walk.
        record = access_log.makeRecord(
            access_log.name, logging.INFO, __file__, 0, "request", (), None, extra=extra
        )
        access_log.handle(record)
        return
    line = (
        f'{{"time": "{_timestamps.format(time.time())}", "level": "info", '
        f'"logger": "depot.access", "message": "request", '
        f'"method": {_json_string(method)}, "path": {_json_string(path)}, "status": {status}, '
        f'"bytes": {sent}, "duration_ms": {seconds * 1000:.2f}, '
        f'"client": {_json_string(client)}}}\n'
    )
    _access_lines.add(handler, line)
