"""``depot npm push``: upload saved packages into a depot through its push API.

For each saved version: HEAD the version document (there: skip), HEAD the tarball (missing: PUT
it, streamed from disk), then PUT the version document, which the server checks against the
tarball it holds. Re-running after an interruption skips whatever already arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from depot.core.client import PushAuth
from depot.core.errors import DepotError
from depot.npm.layout import Layout, SavedVersion
from depot.npm.names import escape_name, tarball_filename
from depot.npm.progress import Progress

CHUNK = 1024 * 1024


@dataclass
class PushReport:
    pushed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bytes: int = 0


def registry_url(depot_url: str) -> str:
    """The npm registry of a depot: ``http://host:8080`` -> ``http://host:8080/npm``."""
    url = depot_url.rstrip("/")
    return url if url.endswith("/npm") else url + "/npm"


class Pusher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        auth: PushAuth,
        progress: Progress,
        jobs: int,
    ) -> None:
        self.session = session
        self.registry = registry
        self.auth = auth
        self.progress = progress
        self.limit = asyncio.Semaphore(jobs)
        self.mint_lock = asyncio.Lock()
        self.report = PushReport()

    async def request(
        self, method: str, url: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, str]:
        """Send a request; on 401 make a token once and retry. ``body`` may be a callable."""
        for attempt in (0, 1):
            sent_token = self.auth.token
            data = body() if callable(body) else body
            try:
                async with self.session.request(
                    method,
                    url,
                    data=data,
                    headers={**kwargs.pop("headers", {}), **self.auth.headers()},
                    **kwargs,
                ) as response:
                    text = await response.text() if method != "HEAD" else ""
                    status = response.status
            except aiohttp.ClientError as exc:
                raise DepotError(f"cannot reach {self.registry}: {exc}") from exc
            if status == 401 and attempt == 0:
                async with self.mint_lock:
                    if self.auth.token == sent_token:
                        if not self.auth.can_mint():
                            raise DepotError(f"{self.registry} refused the token (401)")
                        await asyncio.to_thread(self.auth.mint)
                continue
            return status, text
        raise DepotError(f"{self.registry} requires authentication (401)")

    async def push(self, saved: SavedVersion) -> None:
        label = f"{saved.name}@{saved.version}"
        base = f"{self.registry}/{escape_name(saved.name)}"
        version_url = f"{base}/{saved.version}"
        tarball_url = (
            f"{self.registry}/{saved.name}/-/{tarball_filename(saved.name, saved.version)}"
        )
        async with self.limit:
            status, _ = await self.request("HEAD", version_url)
            if status == 200:
                self.report.skipped.append(label)
                self.progress.advance(skipped=True)
                return
            size = saved.tarball.stat().st_size
            status, _ = await self.request("HEAD", tarball_url)
            if status != 200:
                status, text = await self.request(
                    "PUT",
                    tarball_url,
                    body=lambda: _file_chunks(saved.tarball),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                )
                if status not in (200, 201, 409):
                    return self._failed(label, status, text)
            document = json.loads(saved.document.read_text())
            status, text = await self.request(
                "PUT",
                version_url,
                body=json.dumps(document).encode(),
                headers={"Content-Type": "application/json"},
            )
            if status not in (200, 201):
                return self._failed(label, status, text)
        self.report.pushed.append(label)
        self.report.bytes += size
        self.progress.advance(size)

    async def push_dist_tags(self, name: str, path: Path) -> None:
        """Set the saved dist-tags that point at versions the depot has and differ there."""
        try:
            wanted = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        url = f"{self.registry}/-/package/{escape_name(name)}/dist-tags"
        async with self.limit:
            status, text = await self.request("GET", url)
            current = json.loads(text) if status == 200 else {}
            for tag, version in sorted(wanted.items()):
                if current.get(tag) != version and isinstance(version, str):
                    # 404: that version was not saved; the tag is left as the depot has it.
                    status, text = await self.request(
                        "PUT",
                        f"{url}/{tag}",
                        body=json.dumps(version).encode(),
                        headers={"Content-Type": "application/json"},
                    )
                    if status not in (200, 201, 404):
                        self.progress.line(f"warning: {name} dist-tag {tag}: {status} {text[:200]}")

    def _failed(self, label: str, status: int, text: str) -> None:
        try:
            reason = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            reason = text
        message = f"{label}: {status} {str(reason).strip()[:200]}"
        self.report.failed.append(message)
        self.progress.advance(failed=True)
        self.progress.line(f"error: {message}")


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def push(depot_url: str, directory: Path, token: str | None, jobs: int = 8) -> PushReport:
    registry = registry_url(depot_url)
    saved = list(Layout(directory).saved())
    progress = Progress("pushing")
    progress.add_total(len(saved))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        pusher = Pusher(session, registry, PushAuth(depot_url, token), progress, jobs)
        try:
            await asyncio.gather(*(pusher.push(s) for s in saved))
            layout = Layout(directory)
            names = sorted({s.name for s in saved})
            await asyncio.gather(*(pusher.push_dist_tags(n, layout.dist_tags(n)) for n in names))
        finally:
            progress.close()
    return pusher.report
