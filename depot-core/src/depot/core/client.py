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
        """Make a token from the user's SSH keys for this server (after a 401).

        The key is found as ``depot token`` finds it (``DEPOT_KEY``, ssh-agent, ``~/.ssh/id_*``);
        the token names this depot as its audience. Raises :class:`DepotError` with a one-line
        hint when there is no usable key.
        """
        from depot.core.tokens import mint_token

        self._minted = True
        try:
            self.token = mint_token(audience=self.url)
        except DepotError as exc:
            raise DepotError(
                f"{self.url} requires authentication: pass --token, set DEPOT_AUTH_TOKEN, "
                f"or make an SSH key available ({exc})"
            ) from None
