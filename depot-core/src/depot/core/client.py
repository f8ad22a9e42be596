"""What depot's own client commands (``depot npm push``, ``depot python push``) share: auth.

A push uses ``--token`` or ``DEPOT_AUTH_TOKEN`` when given. When neither is given and the server
answers 401, :meth:`PushAuth.mint` makes a token from the user's SSH keys (see
:mod:`depot.core.tokens`) and the request is retried once.
"""

from __future__ import annotations

import os

from depot.core.errors import DepotError


class PushAuth:
    """The Authorization header a push sends to one depot."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token or os.environ.get("DEPOT_AUTH_TOKEN") or None
        self._minted = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def can_mint(self) -> bool:
        """True when a 401 is worth one retry with a token made from SSH keys."""
        return not self._minted

    def mint(self) -> None:
        """Make a token from the user's SSH keys for this server (after a 401)."""
        self._minted = True
        try:
            from depot.core.tokens import mint_token
        except ImportError as exc:  # the SSH-key module is not there yet
            raise DepotError(
                f"{self.url} requires authentication: pass --token or set DEPOT_AUTH_TOKEN"
            ) from exc
        self.token = mint_token(audience=self.url)
