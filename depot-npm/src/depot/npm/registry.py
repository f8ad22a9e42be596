"""What the registry's handlers share: rendered packuments and tarball locations, cached.

Every write announces the package through the core's change notification
(``ctx.changes.notify(name)``, :mod:`depot.core.changes`), so a cached packument or tarball
location is reused only while the package's generation is the one it was made under: at once
after a write in this process, within the core's stated bound after one in another process or
replica. A hot request costs no database query. Tarball blob keys are unique per upload and
never reused, so a remembered key can only be stale by pointing at a deleted blob: then the row
is read again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from depot.core import EcosystemContext
from depot.core.changes import Recorded
from depot.core.errors import NotFound
from depot.core.http import blob_response
from depot.npm import store
from depot.npm.packument import VersionRecord, build_packument, encode, etag, revision
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from depot.npm.pullthrough import NpmUpstream

#: Total bytes of rendered packuments kept in memory per process.
CACHE_BYTES = 64 * 1024 * 1024
#: Tarball locations remembered per process.
TARBALL_KEYS = 100_000


@dataclass
class Rendered:
    generation: int | str  # the change generation, or a cached upstream packument's blob key
    body: bytes
    etag: str
    rev: str
    #: Header lists of its answers, built once (depot.core.http.document_response).
    raw_headers: dict[Any, list[tuple[bytes, bytes]]] = field(default_factory=dict, repr=False)


class PackumentCache:
    """Rendered packuments per (name, external base URL, abbreviated), with their generation."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self.entries: OrderedDict[tuple[str, str, bool], Rendered] = OrderedDict()

    def get(self, key: tuple[str, str, bool], generation: int | str) -> Rendered | None:
        entry = self.entries.get(key)
        if entry is None or entry.generation != generation:
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, bool], entry: Rendered) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old.body)
        self.entries[key] = entry
        self.size += len(entry.body)
        while self.size > self.limit and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped.body)

    def forget(self, name: str) -> None:
        for key in [k for k in self.entries if k[0] == name]:
            self.size -= len(self.entries.pop(key).body)


class Registry:
    """The npm ecosystem's context plus its per-process caches."""

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.packuments = PackumentCache()
        self.manifests = store.ParsedManifests()
        # (name, file) -> (generation, blob key, or None: no such tarball published here)
        self.tarball_keys: OrderedDict[tuple[str, str], tuple[int, str | None]] = OrderedDict()
        self.published_names: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        upstream = ctx.settings.extra.get("npm_upstream")
        self.upstream: NpmUpstream | None = None
        if upstream:
            from depot.npm.pullthrough import NpmUpstream

            self.upstream = NpmUpstream(ctx, upstream)

    async def changed(self, name: str, recorded: Recorded | None = None) -> None:
        """Announce a committed change to ``name`` to every process's caches (``recorded``: the
        change-log row the write added itself, ``ctx.changes.record``)."""
        await self.ctx.changes.notify(name, recorded=recorded)

    def tarball_url(self, request: Request, name: str) -> Callable[[VersionRecord], str]:
        """Tarball URLs as the client reached this server (Host, mount prefix, --base-url)."""
        base = self.ctx.external_url(request, f"/{name}/-/")
        return lambda record: base + record.filename

    async def render(
        self, request: Request, name: str, abbreviated: bool, fresh: bool = False
    ) -> Rendered:
        """The packument of ``name`` as bytes with its ETag and ``_rev``; 404 if none.

        ``fresh`` skips the cache: a write checks the client's ``_rev`` against the database,
        not against what another process's change may not have reached here yet.
        """
        generation = self.ctx.changes.generation(name)  # before reading: see depot.core.changes
        base = self.ctx.external_url(request)
        if not fresh:
            cached = self.packuments.get((name, base, abbreviated), generation)
            if cached is not None:
                return cached
        loaded = await store.load_package(self.ctx.db, name, self.manifests)
        if loaded is None or not loaded[2]:
            raise NotFound(f"package {name} not found")
        serial, package, versions = loaded
        # Only the form asked for: the other is rendered when it is asked for (after a publish,
        # npm asks for the abbreviated one, ``npm view`` and the pages for the full one).
        document = build_packument(
            package, versions, self.tarball_url(request, name), abbreviated=abbreviated
        )
        rev = revision(serial, encode({"modified": package.modified, "n": serial}))
        if not abbreviated:
            document["_rev"] = rev
        body = encode(document)
        rendered = Rendered(generation, body, etag(body), rev)
        self.packuments.put((name, base, abbreviated), rendered)
        return rendered

    async def current_rev(self, request: Request, name: str) -> str:
        return (await self.render(request, name, False, fresh=True)).rev

    async def versions(self, name: str) -> list[VersionRecord]:
        loaded = await store.load_package(self.ctx.db, name)
        return [] if loaded is None else loaded[2]

    def forget(self, name: str) -> None:
        """Drop what this process remembers of a package that is gone."""
        self.packuments.forget(name)
        self.published_names.pop(name, None)
        for key in [k for k in self.tarball_keys if k[0] == name]:
            del self.tarball_keys[key]

    async def tarball_response(self, request: Request, name: str, filename: str) -> Response:
        """The stored tarball, streamed as stored; 404 if there is none."""
        generation = self.ctx.changes.generation(name)
        remembered = self.tarball_keys.get((name, filename))
        if remembered is not None and remembered[0] == generation:
            if remembered[1] is None:  # a pull-through cache asks this for every tarball
                raise NotFound(f"{name}: tarball {filename} not found")
            try:
                return await self._serve(request, remembered[1])
            except NotFound:
                self.tarball_keys.pop((name, filename), None)
        row = await store.get_tarball(self.ctx.db, name, filename)
        key = None if row is None else row["blob_key"]
        self.tarball_keys[(name, filename)] = (generation, key)
        if len(self.tarball_keys) > TARBALL_KEYS:
            self.tarball_keys.popitem(last=False)
        if key is None:
            raise NotFound(f"{name}: tarball {filename} not found")
        return await self._serve(request, key)

    async def is_published(self, name: str) -> bool:
        """Whether any version of ``name`` is published here (then the upstream is never
        asked for it); remembered until the next change to ``name``."""
        generation = self.ctx.changes.generation(name)
        remembered = self.published_names.get(name)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        published = await store.has_versions(self.ctx.db, name)
        self.published_names[name] = (generation, published)
        if len(self.published_names) > TARBALL_KEYS:
            self.published_names.popitem(last=False)
        return published

    async def _serve(self, request: Request, key: str) -> Response:
        return await blob_response(
            self.ctx.blobs,
            key,
            request,
            "application/octet-stream",
            on_start=lambda size: self.ctx.artifact_served(key, size, request),
            memory=True,  # tarball keys are unique per upload, never reused
        )
