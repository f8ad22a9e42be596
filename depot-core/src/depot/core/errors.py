"""Errors that carry a one-line reason for a person to read."""

from __future__ import annotations


class DepotError(Exception):
    """A failure the user can act on; the CLI prints its message as one line, without traceback."""


class ConfigError(DepotError):
    """Bad configuration: an unknown storage type, an unwritable store, a malformed URL."""


class HTTPError(Exception):
    """A request that cannot be answered; rendered as ``status`` with a one-line ``reason``.

    Raised anywhere below a route handler. Ecosystems whose clients expect another error format
    (npm reads ``{"error": ...}``) register their own renderer with :func:`depot.core.http`.
    """

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason.replace("\n", " ").strip()
        self.headers = headers or {}


class BadRequest(HTTPError):
    """400: the request is malformed or fails verification."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


class NotFound(HTTPError):
    """404: nothing is stored under this name."""

    def __init__(self, reason: str = "not found") -> None:
        super().__init__(404, reason)


class Conflict(HTTPError):
    """409: the request would replace something published, which never changes."""

    def __init__(self, reason: str) -> None:
        super().__init__(409, reason)


class ServiceUnavailable(HTTPError):
    """503: a backing service (database, object store) is unreachable; try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, reason, {"Retry-After": "5"})
