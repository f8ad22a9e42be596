"""What depot's own client commands (``depot npm push``, ``depot python push``) share: auth.

A push uses ``--token`` or ``DEPOT_AUTH_TOKEN`` when given. When neither is given and the server
answers 401, :meth:`PushAuth.mint` makes a token from the user's SSH keys (see
:mod:`depot.core.tokens`) and the request is retried once.
"""

from __future__ import annotations

import contextlib
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


def call_api(method: str, url: str, token: str | None = None, body: object = None) -> dict:
    """One request to a depot's JSON API (deletions, ...) with the push commands' auth.

    ``body`` is sent as JSON when given. The answer must be 200 with a JSON object; anything else
    raises :class:`DepotError` with the status and the server's one-line reason.
    """
    import asyncio
    import json

    import aiohttp

    auth = PushAuth(url.split("?", 1)[0], token)  # the token's audience: no query string
    data = None if body is None else json.dumps(body).encode()

    async def send() -> dict:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(2):
                headers = auth.headers()
                if data is not None:
                    headers["Content-Type"] = "application/json"
                async with session.request(method, url, data=data, headers=headers) as response:
                    text = await response.text()
                    if response.status == 401 and not attempt and auth.can_mint():
                        await asyncio.to_thread(auth.mint)
                        continue
                    if response.status != 200:
                        lines = text.strip().splitlines()
                        reason = lines[0] if lines else ""
                        with contextlib.suppress(ValueError, AttributeError):
                            reason = json.loads(text).get("error") or reason
                        raise DepotError(
                            f"{method} {url}: HTTP {response.status}"
                            + (f": {reason}" if reason else "")
                        )
                    try:
                        answer = json.loads(text)
                    except ValueError:
                        raise DepotError(f"{method} {url}: the answer is not JSON") from None
                    if not isinstance(answer, dict):
                        raise DepotError(f"{method} {url}: the answer is not a JSON object")
                    return answer
        raise AssertionError("unreachable")

    if not url.startswith(("http://", "https://")):
        raise DepotError(f"{url!r} is not an http(s) URL")
    try:
        return asyncio.run(send())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DepotError(f"{method} {url}: {exc or type(exc).__name__}") from None
