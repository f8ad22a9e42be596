"""``depot python yank``: yank or un-yank a release on a depot through its HTTP API.

Authentication is the push commands' (:class:`depot.core.client.PushAuth`): ``--token`` or
``DEPOT_AUTH_TOKEN`` when given, otherwise a 401 makes it mint a token from the user's SSH keys
once and retry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp
from depot.core.client import PushAuth
from depot.core.errors import DepotError


def yank_url(depot_url: str, project: str, version: str) -> str:
    return (
        depot_url.rstrip("/")
        + f"/python/-/yank/{quote(project, safe='')}/{quote(version, safe='')}"
    )


async def _request(url: str, method: str, reason: str | None, auth: PushAuth) -> dict[str, Any]:
    body = None if reason is None else json.dumps({"reason": reason}).encode()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(2):
            headers = auth.headers()
            if body is not None:
                headers["Content-Type"] = "application/json"
            async with session.request(method, url, data=body, headers=headers) as response:
                text = await response.text()
                if response.status == 401 and not attempt and auth.can_mint():
                    await asyncio.to_thread(auth.mint)
                    continue
                if response.status != 200:
                    lines = text.strip().splitlines()
                    raise DepotError(
                        f"{method} {url}: HTTP {response.status}"
                        + (f": {lines[0]}" if lines else "")
                    )
                try:
                    answer = json.loads(text)
                except ValueError:
                    raise DepotError(f"{method} {url}: the depot's answer is not JSON") from None
                if not isinstance(answer, dict):
                    raise DepotError(f"{method} {url}: the depot's answer is not a JSON object")
                return answer
    raise AssertionError("unreachable")


def yank(
    depot_url: str, project: str, version: str, reason: str | None, undo: bool, token: str | None
) -> str:
    """Yank (or with ``undo`` un-yank) PROJECT VERSION; the one-line summary to print."""
    if not depot_url.startswith(("http://", "https://")):
        raise DepotError(f"{depot_url!r} is not an http(s) URL of a depot")
    if undo and reason is not None:
        raise DepotError("--reason goes with a yank, not with --undo")
    url = yank_url(depot_url, project, version)
    method = "DELETE" if undo else "POST"
    try:
        answer = asyncio.run(_request(url, method, reason, PushAuth(depot_url, token)))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DepotError(f"{method} {url}: {exc or type(exc).__name__}") from None
    return summary(answer, undo)


def summary(answer: dict[str, Any], undo: bool) -> str:
    """``yanked beta-pkg 1.1 (2 files): reason`` and its variants, from the route's answer."""
    release = f"{answer.get('project')} {answer.get('version')}"
    files = len(answer.get("files") or [])
    count = f"{files} file{'s' if files != 1 else ''}"
    if undo:
        if not answer.get("changed"):
            return f"{release} was not yanked ({count})"
        return f"un-yanked {release} ({count})"
    reason = answer.get("reason")
    because = f": {reason}" if reason else " (no reason given)"
    if not answer.get("changed"):
        return f"{release} was already yanked ({count}){because}"
    return f"yanked {release} ({count}){because}"
