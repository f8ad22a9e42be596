"""``depot python push``: upload what ``depot python save`` kept into a depot, concurrently.

Each file is first asked for with HEAD (its ETag is the sha256 the depot stored); only missing
files are PUT, with their sha256 in ``X-Depot-Sha256`` so the depot verifies what arrived. Running
the command again after an interruption uploads only what is still missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import click
from depot.core.client import PushAuth
from depot.core.errors import DepotError
from depot.pypi import local
from depot.pypi.names import DistributionFile

PUSH_JOBS = 8


@dataclass
class Outcome:
    pushed: int = 0
    present: int = 0
    failed: int = 0
    bytes: int = 0


class _Unauthorized(Exception):
    """The depot answered 401: mint a token (once) and retry."""


class Pusher:
    """Pushes files to one depot, sharing its auth between concurrent uploads."""

    def __init__(self, session: aiohttp.ClientSession, depot_url: str, auth: PushAuth) -> None:
        self.session = session
        self.files_url = depot_url.rstrip("/") + "/python/files/"
        self.auth = auth
        self._mint_lock = asyncio.Lock()

    async def push(self, dist: DistributionFile, path: Path) -> bool:
        """Upload one file unless the depot has it; True if it was uploaded."""
        sha256 = await asyncio.to_thread(local.sha256_of, path)
        url = self.files_url + f"{quote(dist.project)}/{quote(dist.filename)}"
        for attempt in range(2):
            token_used = self.auth.token
            try:
                return await self._push_once(url, dist, path, sha256)
            except _Unauthorized:
                if attempt:
                    raise DepotError(
                        f"{dist.filename}: the depot refused the credentials (401)"
                    ) from None
                await self._mint(token_used)
        raise AssertionError("unreachable")

    async def _push_once(self, url: str, dist: DistributionFile, path: Path, sha256: str) -> bool:
        async with self.session.head(url, headers=self.auth.headers()) as response:
            if response.status == 401:
                raise _Unauthorized
            if response.status == 200:
                stored = response.headers.get("ETag", "").strip('"')
                if stored and stored != sha256:
                    raise DepotError(
                        f"{dist.filename}: the depot holds different content (sha256 {stored})"
                    )
                return False
            if response.status != 404:
                raise DepotError(f"HEAD {url}: HTTP {response.status}")
        headers = {
            **self.auth.headers(),
            "X-Depot-Sha256": sha256,
            "Content-Type": "application/octet-stream",
        }
        with open(path, "rb") as body:
            async with self.session.put(url, data=body, headers=headers) as response:
                if response.status == 401:
                    raise _Unauthorized
                if response.status not in (200, 201):
                    reason = (await response.text()).strip().splitlines()
                    raise DepotError(
                        f"{dist.filename}: HTTP {response.status}"
                        + (f": {reason[0]}" if reason else "")
                    )
                return response.status == 201

    async def _mint(self, token_used: str | None) -> None:
        async with self._mint_lock:
            if self.auth.token != token_used:
                return  # another upload already minted a fresh token
            if not self.auth.can_mint():
                raise DepotError(f"{self.files_url}: the depot refused the credentials (401)")
            await asyncio.to_thread(self.auth.mint)


async def push_all(
    files: Sequence[tuple[DistributionFile, Path]], depot_url: str, auth: PushAuth, jobs: int
) -> Outcome:
    outcome = Outcome()
    progress = local.Progress(len(files), click.echo)
    semaphore = asyncio.Semaphore(jobs)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        pusher = Pusher(session, depot_url, auth)

        async def one(dist: DistributionFile, path: Path) -> None:
            async with semaphore:
                try:
                    uploaded = await pusher.push(dist, path)
                except (TimeoutError, DepotError, aiohttp.ClientError, OSError) as exc:
                    outcome.failed += 1
                    message = str(exc) or type(exc).__name__
                    progress.step(f"FAILED {dist.filename}: {message}")
                    return
                if uploaded:
                    outcome.pushed += 1
                    outcome.bytes += path.stat().st_size
                    progress.add_bytes(path.stat().st_size)
                    progress.step(f"pushed {dist.filename}")
                else:
                    outcome.present += 1
                    progress.step(f"already there {dist.filename}")

        await asyncio.gather(*(one(dist, path) for dist, path in files))
        progress.finish()
    return outcome


def push(depot_url: str, root: Path, token: str | None, jobs: int) -> None:
    if not depot_url.startswith(("http://", "https://")):
        raise DepotError(f"{depot_url!r} is not an http(s) URL of a depot")
    files = list(local.saved_files(root))
    if not files:
        raise DepotError(f"nothing to push: no distributions under {root / local.SUBDIR}")
    outcome = asyncio.run(push_all(files, depot_url, PushAuth(depot_url, token), jobs))
    click.echo(
        f"{len(files)} file(s): {outcome.pushed} pushed ({local.human_size(outcome.bytes)}), "
        f"{outcome.present} already there, {outcome.failed} failed",
        err=True,
    )
    if outcome.failed:
        raise DepotError(f"{outcome.failed} file(s) failed to push; run the command again to retry")
