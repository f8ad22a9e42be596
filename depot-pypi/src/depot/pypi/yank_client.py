"""``depot python yank``: yank or un-yank a release on a depot through its HTTP API.

The request is :func:`depot.core.client.call_api`'s, with the push commands' authentication:
``--token`` or ``DEPOT_AUTH_TOKEN`` when given, otherwise a 401 makes it mint a token from the
user's SSH keys once and retry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from depot.core.client import call_api
from depot.core.errors import DepotError


def yank_url(depot_url: str, project: str, version: str) -> str:
    return (
        depot_url.rstrip("/")
        + f"/python/-/yank/{quote(project, safe='')}/{quote(version, safe='')}"
    )


def yank(
    depot_url: str, project: str, version: str, reason: str | None, undo: bool, token: str | None
) -> str:
    """Yank (or with ``undo`` un-yank) PROJECT VERSION; the one-line summary to print."""
    if not depot_url.startswith(("http://", "https://")):
        raise DepotError(f"{depot_url!r} is not an http(s) URL of a depot")
    if undo and reason is not None:
        raise DepotError("--reason goes with a yank, not with --undo")
    body = None if reason is None else {"reason": reason}
    answer = call_api(
        "DELETE" if undo else "POST", yank_url(depot_url, project, version), token, body
    )
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
