"""``--npm-upstream``: packuments and tarballs of names with nothing published here, from upstream.

Reads top to bottom per request, after the local registry found nothing under the name (a name
with anything published or pushed here is served from depot only: dependency confusion):

- packument: held and fresh (``--upstream-max-age``, or ``--offline``) -> served; held and due ->
  conditional revalidation (304 keeps it, 200 replaces it); upstream failing -> the held copy,
  stale, with a log line and a metric; not held -> fetched (one request however many clients
  ask), validated, stored as a blob with a row, served with every tarball link rewritten to
  depot;
- tarball: held -> served; else the version's ``dist`` from the held packument (refetched once
  if the version is newer than the held copy) -> the tarball streamed to the client while it is
  stored (:meth:`depot.core.upstream.UpstreamClient.fetch_blob`), verified against the
  packument's ``integrity``/``shasum`` before its last byte is sent and before it is committed
  (the client does not wait for the commit); anything else is a 502 naming the upstream and
  nothing is kept.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from depot.core import EcosystemContext
from depot.core.blobs import BlobUpload
from depot.core.changes import TopicFeed
from depot.core.errors import ConfigError, HTTPError, NotFound
from depot.core.held import HeldDocument
from depot.core.http import blob_response
from depot.core.upstream import Abandoned, BlobFlight, Unverified, UpstreamError, Verify
from depot.npm import store
from depot.npm.integrity import ALGORITHMS, IntegrityError, sri, verify
from depot.npm.names import InvalidName, escape_name, tarball_filename, version_from_filename
from depot.npm.packument import ABBREVIATED_FIELDS, encode, etag
from depot.npm.registry import PackumentCache, Rendered
from depot.npm.retention import tarball_item
from starlette.requests import Request
from starlette.responses import Response

#: ``held()`` without a row read by the caller.
_UNREAD: Any = object()

#: Cached tarball keys remembered per process.
CACHED_KEYS = 100_000


#: The largest upstream packument accepted (the biggest on the public registry are tens of MiB).
MAX_PACKUMENT = 128 * 1024 * 1024


class NpmUpstream:
    """The pull-through side of the npm registry for one ``--npm-upstream``."""

    def __init__(self, ctx: EcosystemContext, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--npm-upstream {url!r} is not an http(s) URL")
        self.ctx = ctx
        ctx.upstream  # noqa: B018 - the client made (and aiohttp imported) at start-up
        self.url = url.rstrip("/") + "/"
        self.label = self.url
        self.rendered = PackumentCache()
        # (name, file) -> (change generation of name, blob key) of cached tarballs
        self.cached_keys: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()

    # -- packuments ------------------------------------------------------------------------

    async def packument(self, request: Request, name: str, abbreviated: bool) -> Rendered:
        """The upstream's packument of ``name`` as held or fetched, links pointing at depot."""
        held = await self.held(name)
        return await self._render(request, name, held, abbreviated)

    async def held(
        self, name: str, *, want_version: str | None = None, held: Any = _UNREAD
    ) -> HeldDocument:
        """The held packument, fetched or revalidated as freshness requires
        (:meth:`depot.core.held.HeldDocuments.current`); at once, however fresh, when it lacks
        ``want_version`` (``held``: the row as the caller just read it, saving a query)."""
        documents = self.ctx.held_documents
        if held is _UNREAD:
            held = await documents.get(name)
        return await documents.current(
            name, self.label, lambda held: self._fetch(name, held), held=held, read=False,
            now=held is not None and await self._lacks(held, want_version),
        )  # fmt: skip

    async def _lacks(self, held: HeldDocument, version: str | None) -> bool:
        """Whether the held packument lacks ``version`` (newer than the held copy)."""
        if version is None:
            return False
        return version not in (await self.ctx.held_documents.read(held)).get("versions", {})

    async def _fetch(self, name: str, held: HeldDocument | None) -> HeldDocument:
        """Ask upstream (conditionally when a copy is held); store and return the current row."""
        documents = self.ctx.held_documents
        fetched = await self.ctx.upstream.fetch_document(
            self.label,
            self.url + escape_name(name),
            etag=held.etag if held is not None else None,
            last_modified=held.last_modified if held is not None else None,
            accept="application/json",
            limit=MAX_PACKUMENT,
        )
        if fetched.status == 304 and held is not None:
            return await documents.confirm(held)
        if fetched.status != 200:
            raise NotFound(f"package {name} not found here nor at upstream {self.label}")
        document = _parse_packument(self.label, name, fetched.body)
        held = await documents.store(
            name, self.label, fetched.body, etag=fetched.etag,
            last_modified=fetched.last_modified, replaces=held, document=document,
        )  # fmt: skip
        self._prefetch_tagged(name, document)
        return held

    def _prefetch_tagged(self, name: str, document: dict[str, Any]) -> None:
        """Fetch the tarballs of the versions the dist-tags name in the background: an install
        asks for those next (the first request for each then joins the fetch in flight)."""
        tags = document.get("dist-tags")
        versions = document["versions"]
        for version in set(tags.values()) if isinstance(tags, dict) else ():
            manifest = versions.get(version) if isinstance(version, str) else None
            try:
                dist = _dist(self.label, name, version, manifest)
                filename = tarball_filename(name, version)
            except (HTTPError, InvalidName):
                continue

            async def wanted(filename: str = filename) -> bool:
                return await store.cached_tarball(self.ctx.db, name, filename) is None

            check, finish = self._tarball_storing(name, filename, version, dist.source, dist, None)
            self.ctx.upstream.prefetch(
                key=("tarball", name, filename, dist.source),
                upstream=self.label,
                url=dist.source,
                open_upload=self._open_tarball_upload,
                verify=check,
                finish=finish,
                wanted=wanted,
            )

    async def _render(
        self, request: Request, name: str, held: HeldDocument, abbreviated: bool
    ) -> Rendered:
        base = self.ctx.external_url(request)
        cache_key = (name, base, abbreviated)
        cached = self.rendered.get(cache_key, held.blob_key)
        if cached is not None:
            return cached
        document = await self.ctx.held_documents.read(held)
        link = self.ctx.external_url(request, f"/{name}/-/")
        body = encode(served_packument(document, name, lambda v: link + tarball_filename(name, v),
                                       abbreviated))  # fmt: skip
        rendered = Rendered(held.blob_key, body, etag(body), "")  # type: ignore[arg-type]
        self.rendered.put(cache_key, rendered)
        return rendered

    # -- tarballs --------------------------------------------------------------------------

    async def tarball(self, request: Request, name: str, filename: str) -> Response:
        """The cached tarball, or the upstream's streamed through verification into the store."""
        client = self.ctx.upstream
        key = await self._cached_key(name, filename)
        response = None if key is None else await self._held_tarball(request, name, filename, key)
        if response is not None:
            return response
        try:
            version = version_from_filename(name, filename)
        except InvalidName:
            raise NotFound(f"{name}: tarball {filename} not found") from None
        held = await self.ctx.held_documents.get(name)
        ahead = learning = None
        if held is None or await self._lacks(held, version):
            # The integrity to verify against is in the packument, which must come from
            # upstream first: fetch the tarball at the same time, from where registries serve
            # it. It is verified against the packument before any of it is stored or its last
            # byte sent; if the packument names another URL it is dropped unstored.
            learning = asyncio.ensure_future(self._learn_dist(name, version, held))
            learning.add_done_callback(_retrieved)
            ahead = self._start_tarball(
                name, filename, version, self.url + f"{name}/-/{filename}", learning, request
            )
        try:
            if learning is None:
                dist = await self._learn_dist(name, version, held)
            else:
                dist = await asyncio.shield(learning)
        except BaseException:
            if ahead is not None:
                ahead.release()
            raise
        if ahead is not None and ahead.url == dist.source:
            return await client.respond(ahead, request)
        if ahead is not None:
            ahead.release()
        # A fetch of this tarball (the packument's prefetch) may have ended while the above
        # awaited: it remembers its key before its flight ends, so this check and the start
        # below, in one turn of the loop, never fetch the tarball twice.
        key = self._remembered_key(name, filename)
        response = None if key is None else await self._held_tarball(request, name, filename, key)
        if response is not None:
            return response
        flight = self._start_tarball(name, filename, version, dist.source, dist, request)
        assert flight is not None
        return await client.respond(flight, request)

    async def _held_tarball(
        self, request: Request, name: str, filename: str, key: str
    ) -> Response | None:
        """The cached tarball's response; None (and its row forgotten) if its blob is gone."""
        try:
            response = await blob_response(
                self.ctx.blobs, key, request,
                on_start=lambda size: self.ctx.artifact_served(key, size, request),
                memory=True,  # upstream/tarballs/<sha512>.tgz: content-addressed
            )  # fmt: skip
        except NotFound:
            self.cached_keys.pop((name, filename), None)
            await store.forget_cached_tarball(self.ctx.db, name, filename)
            return None
        self.ctx.upstream.hit(self.label)
        self.ctx.record_use(tarball_item(name, filename))
        return response

    def _remembered_key(self, name: str, filename: str) -> str | None:
        remembered = self.cached_keys.get((name, filename))
        if remembered is not None and remembered[0] == self.ctx.changes.generation(name):
            return remembered[1]
        return None

    async def _cached_key(self, name: str, filename: str) -> str | None:
        """The blob key of a cached tarball, remembered until the next change to ``name`` (an
        eviction, a publish), so a warm install makes no query per tarball.

        A fetch adds rows and announces only ``TopicFeed.ECOSYSTEM``: an added row cannot make a
        remembered key wrong (a miss is not remembered), and the fetch itself remembers the key
        it stored, under the generation read before its row was written.
        """
        generation = self.ctx.changes.generation(name)
        remembered = self._remembered_key(name, filename)
        if remembered is not None:
            return remembered
        row = await store.cached_tarball(self.ctx.db, name, filename)
        key = None if row is None else str(row["blob_key"])
        if key is not None:  # a miss is about to be fetched: not worth remembering
            self._remember_key(name, filename, generation, key)
        return key

    def _remember_key(self, name: str, filename: str, generation: int, key: str) -> None:
        self.cached_keys[(name, filename)] = (generation, key)
        if len(self.cached_keys) > CACHED_KEYS:
            self.cached_keys.popitem(last=False)

    async def _learn_dist(self, name: str, version: str, held: HeldDocument | None) -> Dist:
        """The version's ``dist`` from the packument, fetched or revalidated as needed."""
        held = await self.held(name, want_version=version, held=held)
        document = await self.ctx.held_documents.read(held)
        return _dist(self.label, name, version, document["versions"].get(version))

    def _start_tarball(
        self,
        name: str,
        filename: str,
        version: str,
        source: str,
        dist: Dist | asyncio.Future[Dist],
        request: Request | None,
    ) -> BlobFlight | None:
        """The flight fetching ``source`` into the store, held for the caller; None when
        fetching ahead (``dist`` still being learnt) is refused by a remembered failure."""
        check, finish = self._tarball_storing(name, filename, version, source, dist, request)
        try:
            return self.ctx.upstream.start_blob(
                key=("tarball", name, filename, source),
                upstream=self.label,
                url=source,
                open_upload=self._open_tarball_upload,
                verify=check,
                finish=finish,
            )
        except HTTPError:
            if not isinstance(dist, Dist):
                return None
            raise

    def _open_tarball_upload(self) -> AbstractAsyncContextManager[BlobUpload]:
        # Committed as upstream/tarballs/<sha512>.tgz: content-addressed, so kept in memory.
        return self.ctx.blobs.upload(
            f"incoming/{uuid.uuid4().hex}", hashes=ALGORITHMS, remember=True
        )

    def _tarball_storing(
        self,
        name: str,
        filename: str,
        version: str,
        source: str,
        dist: Dist | asyncio.Future[Dist],
        request: Request | None,
    ) -> tuple[Verify, Callable[[BlobUpload], Awaitable[None]]]:
        """How fetched bytes are checked, then kept: ``check`` verifies them against the
        packument's integrity (waiting for the packument when ``dist`` is still being learnt),
        and clients get the last byte once it passed; ``finish`` then commits the blob and its
        rows (nobody waits for the store's and the database's writes)."""

        async def check(upload: BlobUpload) -> None:
            if isinstance(dist, Dist):
                known = dist
            else:
                try:
                    known = await asyncio.shield(dist)  # the packument fetched meanwhile
                except HTTPError as exc:
                    raise Abandoned(f"no packument to verify against: {exc.reason}") from exc
                if known.source != source:
                    raise Abandoned(f"the packument names {known.source}")
            try:
                verify({a: upload.digest(a) for a in ALGORITHMS}, known.integrity, known.shasum)
            except IntegrityError as exc:
                raise Unverified(f"{filename}: {exc}") from exc

        async def finish(upload: BlobUpload) -> None:
            sha512 = upload.digest("sha512")
            key = f"upstream/tarballs/{sha512.hex()}.tgz"
            row = store.tarball_row(
                self.ctx.db, name, filename, self.label, source, key, upload.size,
                sri("sha512", sha512),
            )  # fmt: skip
            # Committed just before its row, the blob is younger than any grace period.
            generation = self.ctx.changes.generation(name)  # before the row: see _cached_key
            await self.ctx.group_commit(
                [row],
                cached=[(tarball_item(name, filename), upload.size)],
                notify=[TopicFeed.ECOSYSTEM],  # the page marks the version cached
                blob=(upload, key),  # committed first, in the same hand-over
            )
            self._remember_key(name, filename, generation, key)
            self.ctx.artifact_stored(key, upload.size, request)

        return check, finish


@dataclass(frozen=True)
class Dist:
    """Where a version's tarball is upstream, and what it must hash to."""

    source: str
    integrity: str | None
    shasum: str | None


def _dist(upstream: str, name: str, version: str, manifest: Any) -> Dist:
    """The ``dist`` of a version from an upstream packument: 404 when there is no such version,
    502 when it names no tarball or nothing to verify it against."""
    if not isinstance(manifest, dict):
        raise NotFound(f"{name}@{version} not found here nor at upstream {upstream}")
    dist = manifest.get("dist") if isinstance(manifest.get("dist"), dict) else {}
    source = dist.get("tarball")
    integrity = dist.get("integrity") if isinstance(dist.get("integrity"), str) else None
    shasum = dist.get("shasum") if isinstance(dist.get("shasum"), str) else None
    if not isinstance(source, str) or not source.startswith(("http://", "https://")):
        raise UpstreamError(upstream, f"{name}@{version} has no tarball URL")
    if not integrity and not shasum:
        raise UpstreamError(upstream, f"{name}@{version} has no integrity to verify")
    return Dist(source, integrity, shasum)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # seen by whoever awaits it; never "never retrieved" if nobody does


def _parse_packument(upstream: str, name: str, body: bytes) -> dict[str, Any]:
    """The upstream's packument, refused (502) unless it is a JSON object describing ``name``."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpstreamError(upstream, f"the packument of {name} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("name") != name:
        raise UpstreamError(upstream, f"the packument of {name} does not describe {name}")
    if not isinstance(document.get("versions"), dict):
        raise UpstreamError(upstream, f"the packument of {name} has no versions")
    return document


def served_packument(
    document: dict[str, Any],
    name: str,
    tarball_url: Callable[[str], str],
    abbreviated: bool,
) -> dict[str, Any]:
    """An upstream packument as depot serves it: every ``dist.tarball`` pointing at depot, and in
    the abbreviated form only the fields installation needs (as the local registry does)."""
    versions: dict[str, Any] = {}
    for version, manifest in document["versions"].items():
        if not isinstance(manifest, dict):
            continue
        manifest = dict(manifest)
        dist = dict(manifest.get("dist") or {})
        dist["tarball"] = tarball_url(version)
        manifest["dist"] = dist
        if abbreviated:
            manifest = {k: manifest[k] for k in ABBREVIATED_FIELDS if k in manifest}
        versions[version] = manifest
    if abbreviated:
        time_field = document.get("time") if isinstance(document.get("time"), dict) else {}
        served = {"name": name, "dist-tags": document.get("dist-tags") or {}, "versions": versions}
        served["modified"] = document.get("modified") or time_field.get("modified", "")
        return served
    served = {k: v for k, v in document.items() if k not in ("_attachments",)}
    served["versions"] = versions
    return served
