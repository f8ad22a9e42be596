"""``depot npm save``: resolve specs (or a lock file) against a registry and keep the tarballs.

Packuments are fetched abbreviated, once per name; tarballs stream to a temporary file while
hashed, are checked against the version's ``dist.integrity`` (else ``dist.shasum``) and renamed
into place; then the version document is written. Everything already saved is skipped, so an
interrupted save resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from depot.core.errors import DepotError
from depot.npm.integrity import IntegrityError, verify
from depot.npm.layout import Layout, write_json_atomically
from depot.npm.lockfile import LockedPackage
from depot.npm.names import is_version, require_name, require_version
from depot.npm.packument import ABBREVIATED_MEDIA_TYPE
from depot.npm.progress import Progress
from depot.npm.specs import Spec, dependency_specs, pick_version

DEFAULT_REGISTRY = "https://registry.npmjs.org"
CHUNK = 1024 * 1024


class PackageMissing(Exception):
    """The registry answered 404 for a package (or its tarball)."""


@dataclass
class SaveReport:
    saved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bytes: int = 0


class Saver:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        layout: Layout,
        progress: Progress,
        peers: bool = True,
        jobs: int = 16,
    ) -> None:
        self.session = session
        self.registry = registry.rstrip("/")
        self.layout = layout
        self.progress = progress
        self.peers = peers
        self.limit = asyncio.Semaphore(jobs)
        self.packuments: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.visited: set[tuple[str, str]] = set()
        self.tagged: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.report = SaveReport()

    # -- fetching -----------------------------------------------------------------------------

    def packument(self, name: str) -> asyncio.Task[dict[str, Any]]:
        if name not in self.packuments:
            self.packuments[name] = asyncio.ensure_future(self._fetch_packument(name))
        return self.packuments[name]

    async def _fetch_packument(self, name: str) -> dict[str, Any]:
        url = f"{self.registry}/{quote(name, safe='@')}"
        headers = {"Accept": f"{ABBREVIATED_MEDIA_TYPE}; q=1.0, application/json; q=0.8"}
        async with self.limit:
            try:
                async with self.session.get(url, headers=headers) as response:
                    if response.status == 404:
                        raise PackageMissing(f"{name}: not found at {self.registry}")
                    if response.status >= 400:
                        raise DepotError(
                            f"{name}: {self.registry} answered {response.status} {response.reason}"
                        )
                    document = await response.json(content_type=None)
            except aiohttp.ClientError as exc:
                raise DepotError(f"cannot reach {self.registry} (fetching {name}): {exc}") from exc
            except TimeoutError as exc:
                raise DepotError(f"{self.registry} timed out (fetching {name})") from exc
        if not isinstance(document, dict) or not isinstance(document.get("versions"), dict):
            raise DepotError(f"{name}: {self.registry} sent no packument")
        return document

    async def _download(self, name: str, version: str, manifest: dict[str, Any]) -> int:
        """Fetch, verify and place one tarball; returns its size."""
        dist = manifest.get("dist") or {}
        url = dist.get("tarball")
        if not isinstance(url, str):
            raise DepotError(f"{name}@{version}: the registry gives no tarball URL")
        target = self.layout.tarball(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        digests = {"sha1": hashlib.sha1(), "sha512": hashlib.sha512()}  # noqa: S324 - npm's shasum
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            async with self.limit:
                with os.fdopen(fd, "wb") as out:
                    try:
                        async with self.session.get(url) as response:
                            if response.status == 404:
                                raise PackageMissing(f"{name}@{version}: tarball {url} not found")
                            if response.status >= 400:
                                raise DepotError(
                                    f"{name}@{version}: {url} answered {response.status}"
                                )
                            async for chunk in response.content.iter_chunked(CHUNK):
                                out.write(chunk)
                                size += len(chunk)
                                for h in digests.values():
                                    h.update(chunk)
                    except aiohttp.ClientError as exc:
                        raise DepotError(
                            f"cannot download {name}@{version} from {url}: {exc}"
                        ) from exc
                    out.flush()
                    os.fsync(out.fileno())
            try:
                verify(
                    {k: h.digest() for k, h in digests.items()},
                    dist.get("integrity"),
                    dist.get("shasum"),
                )
            except IntegrityError as exc:
                raise DepotError(f"{name}@{version}: {exc}") from exc
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    # -- resolving ----------------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            for other in self.tasks:
                other.cancel()

    async def wait(self) -> None:
        while self.tasks:
            pending = list(self.tasks)
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                self.tasks.discard(task)
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]

    def fail(self, message: str) -> None:
        self.report.failed.append(message)
        self.progress.line(f"error: {message}")

    async def visit(self, spec: Spec, wanted_by: str | None, optional: bool = False) -> None:
        """Resolve ``spec``, save the version and walk its dependencies."""
        try:
            packument = await self.packument(spec.name)
        except PackageMissing as exc:
            if optional:
                self.progress.line(f"warning: optional {exc}")
            else:
                self.fail(f"{exc}" + (f" (required by {wanted_by})" if wanted_by else ""))
            return
        self.record_dist_tags(spec.name, packument)
        version = pick_version(packument, spec)
        if version is None:
            message = f"no version of {spec.name} matches {spec.value!r}" + (
                f" (required by {wanted_by})" if wanted_by else ""
            )
            if optional:
                self.progress.line(f"warning: {message}")
            else:
                self.fail(message)
            return
        await self.save(spec.name, version, packument["versions"][version])

    def record_dist_tags(self, name: str, packument: dict[str, Any]) -> None:
        """Keep the registry's tags so that push can set them too (``latest`` included)."""
        if name in self.tagged:
            return
        self.tagged.add(name)
        tags = packument.get("dist-tags")
        if isinstance(tags, dict) and tags:
            write_json_atomically(self.layout.dist_tags(name), tags)

    async def save(
        self, name: str, version: str, manifest: dict[str, Any], walk: bool = True
    ) -> None:
        if (name, version) in self.visited:
            return
        self.visited.add((name, version))
        if walk:
            for dep, optional in dependency_specs(manifest, self.peers):
                self.spawn(self.visit(dep, f"{name}@{version}", optional))
        label = f"{name}@{version}"
        self.progress.add_total()
        try:
            require_name(name)
            require_version(version)
        except ValueError as exc:
            self.progress.advance(failed=True)
            self.fail(f"{label}: {exc}")
            return
        if self.layout.is_saved(name, version):
            self.report.skipped.append(label)
            self.progress.advance(skipped=True)
            return
        try:
            size = await self._download(name, version, manifest)
        except PackageMissing as exc:
            self.progress.advance(failed=True)
            self.fail(str(exc))
            return
        except DepotError as exc:
            if "cannot reach" in str(exc) or "cannot download" in str(exc):
                raise
            self.progress.advance(failed=True)
            self.fail(str(exc))
            return
        write_json_atomically(self.layout.document(name, version), manifest)
        self.report.saved.append(label)
        self.report.bytes += size
        self.progress.advance(size)

    async def save_locked(self, package: LockedPackage) -> None:
        """A lock file pins the whole tree: save exactly this version, no walking."""
        try:
            packument = await self.packument(package.name)
        except PackageMissing as exc:
            self.fail(str(exc))
            return
        self.record_dist_tags(package.name, packument)
        manifest = packument["versions"].get(package.version)
        if manifest is None:
            self.fail(f"{package.name}@{package.version}: not at {self.registry}")
            return
        if package.integrity and (manifest.get("dist") or {}).get("integrity") not in (
            None,
            package.integrity,
        ):
            # The lock's hash is what npm ci will check: hold the registry's tarball to it too.
            manifest = {**manifest, "dist": {**manifest["dist"], "integrity": package.integrity}}
        await self.save(package.name, package.version, manifest, walk=False)


async def save(
    specs: Iterable[Spec],
    locked: Iterable[LockedPackage],
    registry: str,
    directory: Path,
    peers: bool = True,
    jobs: int = 16,
) -> SaveReport:
    """Save ``specs`` with their dependency trees and ``locked`` packages as pinned."""
    progress = Progress("saving")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    connector = aiohttp.TCPConnector(limit=jobs)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, trust_env=True
    ) as session:
        saver = Saver(session, registry, Layout(directory), progress, peers, jobs)
        for spec in specs:
            saver.spawn(saver.visit(spec, None))
        for package in locked:
            if is_version(package.version):
                saver.spawn(saver.save_locked(package))
        try:
            await saver.wait()
        finally:
            progress.close()
            for task in saver.packuments.values():
                if task.done() and not task.cancelled():
                    task.exception()  # silence "exception never retrieved"
                else:
                    task.cancel()
    return saver.report
