"""The authentication contract, and the open default.

The core asks the ``depot_authenticator`` hook for one :class:`Authenticator` at start-up and runs
every request past it. An authenticator answers with an :class:`AuthDecision`; the core turns a
refusal into 401 (with ``WWW-Authenticate``) or 403 before any route sees the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from depot.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from depot.core.settings import Settings
    from starlette.requests import HTTPConnection

#: Methods that change what a depot holds; everything else is a read.
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})


@dataclass(frozen=True)
class AuthDecision:
    """``status`` 0 lets the request through; 401 or 403 refuses it with ``reason``."""

    status: int = 0
    reason: str = ""
    identity: str | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 0


ALLOW = AuthDecision()


class Authenticator(Protocol):
    """Decides whether a request may go on."""

    async def authorize(self, request: HTTPConnection, write: bool) -> AuthDecision:
        """Judge one request; ``write`` is true for PUT, POST, DELETE and PATCH."""

    async def close(self) -> None:
        """Stop watching files, release resources."""


class OpenAuthenticator:
    """No auth file: every request is allowed, as with the original depot.

    ``allows_everything`` tells the core it may skip asking (and building a request for it);
    an authenticator without that attribute, or with it false, judges every request.
    """

    allows_everything = True

    async def authorize(self, request: HTTPConnection, write: bool) -> AuthDecision:
        return ALLOW

    async def close(self) -> None:
        return None


@hookimpl(trylast=True)
def depot_authenticator(settings: Settings) -> Authenticator | None:
    if settings.auth_file is None:
        return OpenAuthenticator()
    return None
