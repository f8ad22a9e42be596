"""The depot application: plugins, settings, database and blob store behind one Starlette app.

:func:`create_app` builds it; :class:`Depot` holds what a running depot owns and hands each
ecosystem an :class:`EcosystemContext`. Start-up (open the blob store, connect and migrate the
database, pick the authenticator) runs in the lifespan when there is one, and otherwise on the first
request, because Starlette does not run the lifespan of an app mounted inside another. A depot
started by a request closes itself when the event loop winds down (see :meth:`Depot.startup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from typing import Any

from depot.core.artifactmemory import ArtifactMemory
from depot.core.auth import WRITE_METHODS, Authenticator
from depot.core.blobs import (
    BlobEntry,
    BlobStore,
    InvalidKey,
    ScopedBlobStore,
    ScopedUpload,
    StorageBackend,
)
from depot.core.catalog import Catalog
from depot.core.changes import CHANGES_SCHEMA, Changes, Recorded, TopicFeed
from depot.core.database import Database, RowWrite
from depot.core.ecosystem import Ecosystem
from depot.core.errors import BadRequest, ConfigError, HTTPError, ServiceUnavailable
from depot.core.faults import OUTAGE_TYPES, is_backend_outage, storage_refusal
from depot.core.held import HeldDocuments
from depot.core.http import ErrorRenderer, external_base, plain_error
from depot.core.lifespan import running
from depot.core.logs import configure_logging
from depot.core.metrics import Metrics, ObserverMiddleware, metrics_endpoint
from depot.core.packagepages import PackagePages, package_page_url
from depot.core.pages import browse, health, index, package_page
from depot.core.plugins import Plugins, load_plugins
from depot.core.reachability import (
    CORE_SCHEMA,
    BlobReferences,
    ensure_lock_row,
    hold_reference_lock,
)
from depot.core.rendered import RenderedCache
from depot.core.routing import SegmentRouter
from depot.core.settings import Settings
from depot.core.stalls import BodyDeadlines
from depot.core.upstream import UpstreamClient
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("depot.core")


class EcosystemContext:
    """What the core gives one ecosystem: its settings, database, blob namespace and logger.

    ``changes`` is the change notification every cache of rendered documents uses
    (:mod:`depot.core.changes`): ``await ctx.changes.notify(name)`` after committing a write
    that changes what ``name``'s documents show, and ``ctx.changes.generation(name)`` to check
    that a cached rendering is still current, without a database query.
    """

    def __init__(self, depot: Depot, ecosystem: Ecosystem) -> None:
        self.depot = depot
        self.ecosystem = ecosystem
        self.name = ecosystem.name
        self.settings = depot.settings
        self.log = logging.getLogger(f"depot.{ecosystem.name}")
        self.changes = TopicFeed(depot.changes, ecosystem.name)
        self._blobs: ScopedBlobStore | None = None
        self._upstream: UpstreamClient | None = None
        self._held_documents: HeldDocuments | None = None

    @property
    def db(self) -> Database:
        return self.depot.database

    @property
    def blobs(self) -> ScopedBlobStore:
        if self._blobs is None:
            if self.depot.blob_store is None:
                raise ServiceUnavailable("depot is starting")
            self._blobs = ScopedBlobStore(
                self.depot.blob_store, self.name, self.depot.artifact_memory
            )
        return self._blobs

    @property
    def upstream(self) -> UpstreamClient:
        """The client for this ecosystem's upstreams (pull-through caching), made on first use."""
        if self._upstream is None:
            self._upstream = UpstreamClient(self.depot, self.name)
        return self._upstream

    @property
    def held_documents(self) -> HeldDocuments:
        """The documents held from this ecosystem's upstreams (packuments, project pages):
        their rows, the freshness policy and per-process memory (:mod:`depot.core.held`)."""
        if self._held_documents is None:
            self._held_documents = HeldDocuments(self)
        return self._held_documents

    def external_url(self, request: Request, path: str = "") -> str:
        """Absolute URL of ``path`` under this ecosystem, as the client reached the server."""
        return external_base(request, self.settings) + self.ecosystem.prefix + path

    def page_url(self, request: Request, name: str) -> str:
        """Absolute URL of the package page of ``name`` in this ecosystem (``/-/browse/...``)."""
        return package_page_url(external_base(request, self.settings), self.name, name)

    @property
    def document_cache_control(self) -> str:
        """``Cache-Control`` of a mutable document (narinfo, packument, simple page).

        ``no-cache`` by default: a client or proxy may keep the document but asks again each
        time (a 304 when unchanged), so a publish, yank or unpublish is seen at once.
        ``--document-max-age N`` lets caches answer alone for N seconds, the bound on staleness.
        """
        max_age = self.settings.document_max_age
        return f"public, max-age={max_age}" if max_age > 0 else "no-cache"

    @asynccontextmanager
    async def reference_blobs(self, *keys: str) -> AsyncIterator[None]:
        """Make rows point at blobs, safely against the garbage collector.

        Write the rows that point at ``keys`` inside this block: it is a database transaction
        holding the reference lock shared (see :mod:`depot.core.reachability`), and each blob is
        checked to exist first. Until the block commits, no collection removes any blob; if a
        collection removed one of them just before, :class:`BlobMissing` (a 409) is raised and
        nothing is written, so no row ever points at a missing blob. Blobs just uploaded are
        safe anyway (younger than the grace period); what this guards is a row that comes to
        point at a blob written long ago (a NAR uploaded before a failed ``nix copy``, a
        content-addressed file stored before).

        On SQLite the blocks of one process run one at a time (SQLite has one writer): they
        queue on the event loop instead of in SQLite's busy handler, which sleeps up to 100 ms
        per try while another block, awaiting inside its transaction, holds the write lock.
        Do not nest them. Inside ``ctx.db.write`` there is no queueing: on SQLite the group
        commit's transaction already holds the write lock, on another thread.
        """
        queue = self.db.dialect_name == "sqlite" and not self.db.in_transaction()
        writer = self.depot.sqlite_writer if queue else nullcontext()
        async with writer, self.db.transaction():
            await hold_reference_lock(self.db, exclusive=False)
            for key in keys:
                if await self.blobs.stat(key) is None:
                    raise BlobMissing(key)
            yield

    async def group_commit(
        self,
        rows: Sequence[RowWrite],
        *,
        keys: Sequence[str] = (),
        cached: Sequence[tuple[str, int]] = (),
        notify: Sequence[str] = (),
        blob: tuple[ScopedUpload, str] | None = None,
    ) -> None:
        """Write ``rows`` (``(statement, parameters)``, the statement a template run as
        ``ctx.db.execute(statement, parameters)``, e.g. ``ctx.db.insert_or_ignore(table)``
        with the row's column values) as one ``ctx.db.write``: on
        SQLite in the group commit shared with every other write waiting at that moment (see
        :class:`depot.core.database.GroupCommit`). As in :meth:`reference_blobs`, the blobs
        ``keys`` must exist (else :class:`BlobMissing`, and nothing is written); ``cached``
        items ``(item, size)`` are declared evictable (:meth:`cache_stored`) and the names in
        ``notify`` recorded as changed in the same transaction, then announced. Returns once
        committed; for the many small writes of a filling pull-through cache.

        ``blob``: ``(upload, key)``, an upload from ``ctx.blobs.upload`` that the rows point at,
        committed under ``key`` first (if it fails, nothing is written). On the fs store the
        commit runs on the group commit's thread just before the transaction: one hand-over
        between threads per object instead of two (each costs the busy event loop context
        switches for the GIL): about a quarter less CPU for a filling pull-through cache."""

        async def rows_and_records() -> Recorded:
            for statement, parameters in rows:
                await self.db.execute(statement, parameters)
            for item, size in cached:
                await self.cache_stored(item, size)
            return await self.changes.record(*notify)

        async def write() -> Recorded:
            if not keys:  # blobs committed just now: younger than any grace period
                return await rows_and_records()
            async with self.reference_blobs(*keys):
                return await rows_and_records()

        before = None
        if blob is not None:
            upload, key = blob
            before = upload.blocking_commit(key)
            if before is None:
                await upload.commit(key)
        recorded = await self.db.write(write, before)
        if blob is not None:
            await blob[0].committed_as(blob[1])
        await self.changes.notify(*notify, recorded=recorded)

    async def release_blobs(
        self, keys: Sequence[str], since: float | None = None
    ) -> list[BlobEntry]:
        """Remove blobs whose rows the ecosystem just deleted (and committed), unless another row
        still points at one or it was written again since ``since`` (default: now).

        For deletion on purpose (``depot nix delete``, ...). Returns the removed blobs (keys
        inside the namespace, with sizes). Blobs of an ecosystem that reports no references
        (``depot_blob_references``) are never removed.
        """
        from depot.core.collector import release

        removed = await release(
            self.depot, self.name, keys, time.time() if since is None else since
        )
        for entry in removed:
            self.log.info("blob removed", extra={"key": entry.key, "size": entry.size})
        return removed

    async def cache_stored(self, item: str, size: int) -> None:
        """Declare ``item`` (an ecosystem's own name for it) as fetched from an upstream: it
        may be evicted by ``--cache-max-size``/``--cache-max-age``, least recently used first,
        through this ecosystem's ``depot_cached_content``. Never call it for published content."""
        from depot.core.retention import cache_stored

        await cache_stored(self.db, self.name, item, size)

    def record_use(self, item: str) -> None:
        """Note that a cached item was served now; written in batches, not per request."""
        self.depot.use_recorder.record(self.name, item)

    def artifact_stored(self, key: str, size: int, request: Request | None = None) -> None:
        """Announce a verified, committed artifact to listeners (logs, metrics)."""
        self.log.info("stored", extra={"key": key, "size": size})
        self.depot.metrics.artifacts_stored.labels(self.name).inc()
        self.depot.plugins.hook.depot_artifact_stored(
            ecosystem=self.name, key=key, size=size, request=request
        )

    def artifact_served(self, key: str, size: int, request: Request | None = None) -> None:
        """Announce an artifact download to listeners."""
        self.depot.metrics.artifacts_served.labels(self.name).inc()
        self.depot.plugins.hook.depot_artifact_served(
            ecosystem=self.name, key=key, size=size, request=request
        )


class BlobMissing(HTTPError):
    """409: a row was to point at a blob that is not (or no longer) in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(409, f"{key} is not in the store (removed meanwhile?); upload it again")
        self.key = key


class Depot:
    """One depot: its plugins, settings and the services it starts."""

    def __init__(self, settings: Settings, plugins: Plugins) -> None:
        self.settings = settings
        self.plugins = plugins
        self.ecosystems: dict[str, Ecosystem] = {}
        # pluggy answers last-registered first; keep the order plugins were registered in.
        for declared in reversed(plugins.hook.depot_ecosystems()):
            for ecosystem in declared or ():
                if ecosystem.name in self.ecosystems:
                    raise ConfigError(f"two plugins declare the ecosystem {ecosystem.name!r}")
                self.ecosystems[ecosystem.name] = ecosystem
        self.changes = Changes()
        self._contexts = {name: EcosystemContext(self, e) for name, e in self.ecosystems.items()}
        self._error_renderers: dict[str, ErrorRenderer] = {}
        self.database = Database(settings.database_url)
        self.blob_store: BlobStore | None = None
        self.authenticator: Authenticator | None = None
        self.open_access = False
        self.exit_stack = AsyncExitStack()
        self.started = False
        self._start_lock = asyncio.Lock()
        self.sqlite_writer = asyncio.Lock()  # see EcosystemContext.reference_blobs
        self._closer: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.body_deadlines = BodyDeadlines(settings.request_body_timeout)
        self._catalogs: list[Catalog] | None = None
        self._package_pages: list[PackagePages] | None = None
        self.rendered_pages = RenderedCache(32 * 1024 * 1024)
        self.artifact_memory = (
            ArtifactMemory(settings.artifact_memory) if settings.artifact_memory > 0 else None
        )
        self._blob_references: dict[str, BlobReferences] | None = None
        from depot.core.retention import UseRecorder

        self.use_recorder = UseRecorder(self.database)

    def context(self, ecosystem: str) -> EcosystemContext:
        """The context of a declared ecosystem."""
        return self._contexts[ecosystem]

    def set_error_renderer(self, ecosystem: str, renderer: ErrorRenderer) -> None:
        """Render errors under ``ecosystem``'s prefix in its clients' format (npm wants JSON)."""
        self._error_renderers[ecosystem] = renderer

    def catalogs(self) -> list[Catalog]:
        """The ecosystems' catalogs (for pages and gauges), collected once."""
        if self._catalogs is None:
            found = reversed(self.plugins.hook.depot_catalogs(depot=self))
            self._catalogs = [c for catalogs in found for c in catalogs or ()]
        return self._catalogs

    def package_pages(self) -> list[PackagePages]:
        """The ecosystems' package pages (``/-/browse/<ecosystem>/<name>``), collected once."""
        if self._package_pages is None:
            found = reversed(self.plugins.hook.depot_package_pages(depot=self))
            self._package_pages = [p for pages in found for p in pages or ()]
        return self._package_pages

    def blob_references(self) -> dict[str, BlobReferences]:
        """Each ecosystem's reachability (``depot_blob_references``) by name; collected once."""
        if self._blob_references is None:
            found = reversed(self.plugins.hook.depot_blob_references(depot=self))
            self._blob_references = {r.ecosystem: r for refs in found for r in refs or ()}
        return self._blob_references

    def ecosystem_for_path(self, root_path: str, path: str) -> str | None:
        """The ecosystem whose prefix a request path falls under, relative to depot's mount."""
        relative = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        for name, ecosystem in self.ecosystems.items():
            if relative == ecosystem.prefix or relative.startswith(ecosystem.prefix + "/"):
                return name
        return None

    def storage_backends(self) -> dict[str, StorageBackend]:
        backends: dict[str, StorageBackend] = {}
        for registered in self.plugins.hook.depot_storage_backends():
            for backend in registered or ():
                backends.setdefault(backend.name, backend)
        return backends

    async def startup(self, *, lazily: bool = False) -> None:
        """Open the blob store, migrate the database, choose the authenticator; once.

        A failure closes whatever was already opened: an open SQLite connection's thread would
        otherwise keep ``depot serve`` from exiting after printing its one-line error.

        ``lazily`` (a first request starts the depot, no lifespan will close it) also leaves a
        task that closes the depot when it is cancelled: ``asyncio.run`` and ``asyncio.Runner``
        (hypercorn, uvicorn) cancel leftover tasks while the loop still runs, before the
        interpreter waits for non-daemon threads such as aiosqlite's, which would otherwise hold
        the host process after SIGTERM.
        """
        try:
            await self._startup()
        except BaseException:
            if not self.started:
                await self.shutdown()
            raise
        if lazily and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._close_with_loop(), name="depot: close with the event loop"
            )

    async def _close_with_loop(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            # Cancelled by shutdown() itself: nothing more to do.
            if self._closer is asyncio.current_task():
                self._closer = None
                await self.shutdown()

    async def _startup(self) -> None:
        async with self._start_lock:
            if self.started:
                return
            backends = self.storage_backends()
            backend = backends.get(self.settings.storage_type)
            if backend is None:
                raise ConfigError(
                    f"unknown storage type {self.settings.storage_type!r} "
                    f"(available: {', '.join(sorted(backends)) or 'none'})"
                )
            self.blob_store = await backend.open(self.settings)
            self.exit_stack.push_async_callback(self.blob_store.close)
            if self.database_is_sqlite_in_store():
                self.settings.store_path.mkdir(parents=True, exist_ok=True)
            try:
                await self.database.connect()
            except Exception as exc:
                raise ConfigError(f"cannot open database: {exc}".splitlines()[0]) from exc
            self.exit_stack.push_async_callback(self.database.disconnect)
            await self.database.prepare()
            schemas = [s for found in self.plugins.hook.depot_schemas() for s in found or ()]
            await self.database.migrate([CORE_SCHEMA, CHANGES_SCHEMA, *schemas])
            await ensure_lock_row(self.database)
            await self.changes.start(self.database)
            self.exit_stack.push_async_callback(self.changes.stop)
            authenticator = self.plugins.hook.depot_authenticator(settings=self.settings)
            if authenticator is None:
                raise ConfigError("--auth-file is set but no installed plugin can authenticate")
            self.authenticator = authenticator
            self.exit_stack.push_async_callback(authenticator.close)
            for result in self.plugins.hook.depot_startup(depot=self):
                if inspect.isawaitable(result):
                    await result
            self._start_use_recorder()
            if self.settings.gc_interval:
                self._start_collector()
            self.started = True
            # Only the built-in open authenticator (no --auth-file) says so: then requests skip
            # the authorisation step (and the start-up check) altogether. Any other authenticator
            # judges every request.
            self.open_access = getattr(self.authenticator, "allows_everything", False) is True
            log.info(
                "depot started",
                extra={
                    "ecosystems": sorted(self.ecosystems),
                    "storage_type": self.settings.storage_type,
                    "database": self.database.dialect_name,
                },
            )

    def _start_use_recorder(self) -> None:
        """Write recorded cache use every minute and once more at shutdown."""
        task = asyncio.get_running_loop().create_task(
            self.use_recorder.flush_periodically(), name="depot-cache-use"
        )

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await self.use_recorder.flush()

        self.exit_stack.push_async_callback(stop)

    def _start_collector(self) -> None:
        """``--gc-interval``: a background task, cancelled and awaited before the database and
        blob store close (the exit stack unwinds in reverse)."""
        from depot.core.collector import collect_periodically

        task = asyncio.get_running_loop().create_task(
            collect_periodically(self, self.settings.gc_interval, self.settings.gc_grace),
            name="depot-gc",
        )

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self.exit_stack.push_async_callback(stop)

    def describe_blob_store(self) -> str:
        """``<type> <where>`` for logs: the directory or bucket of the blob store."""
        where = getattr(self.blob_store, "root", None) or getattr(self.blob_store, "bucket", "")
        return f"{self.settings.storage_type} {where}".strip()

    def database_is_sqlite_in_store(self) -> bool:
        return self.database.dialect_name == "sqlite" and self.settings.database_url.endswith(
            str(self.settings.store_path / "depot.db")
        )

    async def shutdown(self) -> None:
        """Close what startup opened, in reverse order."""
        closer, self._closer = self._closer, None
        if closer is not None and closer is not asyncio.current_task():
            closer.cancel()
        self.open_access = False
        await self.exit_stack.aclose()
        self.exit_stack = AsyncExitStack()
        self.started = False

    def render_error(self, request: Request, exc: HTTPError) -> Response | Any:
        name = self.ecosystem_for_path(
            request.scope.get("depot.root_path", ""), request.scope.get("path", "")
        )
        renderer = self._error_renderers.get(name) if name else None
        if renderer is not None:
            return renderer(request, exc)
        return plain_error(request, exc)


class DepotMiddleware:
    """Outermost layer: remembers the mount point, starts the depot lazily, authenticates."""

    def __init__(self, app: ASGIApp, depot: Depot) -> None:
        self.app = app
        self.depot = depot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope["depot"] = self.depot
        scope["depot.root_path"] = scope.get("root_path", "")
        if self.depot.open_access:  # started, and no authenticator that needs asking
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if not self.depot.started:
                try:
                    await self.depot.startup(lazily=True)
                except ConfigError as exc:
                    log.error("start-up failed", extra={"reason": str(exc)})
                    raise ServiceUnavailable(f"depot cannot start: {exc}") from exc
            assert self.depot.authenticator is not None
            decision = await self.depot.authenticator.authorize(
                request, write=scope.get("method", "GET") in WRITE_METHODS
            )
            if not decision.allowed:
                headers = {}
                if decision.status == 401:
                    headers["WWW-Authenticate"] = 'Bearer realm="depot", Basic realm="depot"'
                raise HTTPError(decision.status, decision.reason, headers)
            if decision.identity:
                scope["depot.identity"] = decision.identity
        except HTTPError as exc:
            response = self.depot.render_error(request, exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _http_error_handler(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPError)
    depot: Depot = request.scope["depot"]
    return depot.render_error(request, exc)


def _invalid_key_handler(request: Request, exc: Exception) -> Any:
    return _http_error_handler(request, BadRequest(str(exc)))


def _client_gone_handler(request: Request, exc: Exception) -> Any:
    """A client that hangs up mid-body is its own doing: a 400 access line, not a logged 500.

    Whatever the handler was receiving is abandoned the usual way (uploads abort when their
    context exits), and nobody reads this answer.
    """
    return _http_error_handler(
        request, BadRequest("the client went away before the end of the body")
    )


def _storage_refused(request: Request, exc: Exception, cause: str) -> Any:
    """507 for a write the store cannot take, one error line naming the store, and a count.

    Reads go on as before: only the write that hit the condition is refused, and nothing of it
    is kept (uploads abort as they do for any error).
    """
    depot: Depot = request.scope["depot"]
    ecosystem = depot.ecosystem_for_path(
        request.scope.get("depot.root_path", ""), request.scope.get("path", "")
    )
    if isinstance(exc, sqlite3.Error):
        kind, store, detail = "database", f"database {depot.database.dialect_name}", str(exc)
    else:
        assert isinstance(exc, OSError)
        kind, store, detail = "blob store", depot.describe_blob_store(), exc.strerror or str(exc)
    log.error(
        "store refused a write",
        extra={
            "store": store,
            "cause": cause,
            "error": f"{type(exc).__name__}: {exc}",
            "method": request.method,
            "path": request.url.path,
        },
    )
    depot.metrics.storage_refusals.labels(ecosystem or "core", cause).inc()
    return _http_error_handler(
        request,
        HTTPError(507, f"insufficient storage: the {kind} cannot take this write ({detail})"),
    )


def _os_error_handler(request: Request, exc: Exception) -> Any:
    cause = storage_refusal(exc)
    if cause is None:
        raise exc
    return _storage_refused(request, exc, cause)


def _outage_handler(request: Request, exc: Exception) -> Any:
    cause = storage_refusal(exc)
    if cause is not None:  # SQLite's "database or disk is full" is not an outage
        return _storage_refused(request, exc, cause)
    if not is_backend_outage(exc):
        raise exc
    log.error("backing service unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
    return _http_error_handler(
        request, ServiceUnavailable("storage or database temporarily unavailable")
    )


def create_app(*, plugins: Plugins | None = None, **options: Any) -> Starlette:
    """Build a depot as an ASGI app.

    Keyword options are ``depot serve``'s flags in snake_case (``store_path``, ``database_url``,
    ``storage_type``, ``private_key``, ``auth_file``, ``base_url``, ...), with the same defaults.
    ``plugins`` replaces entry-point discovery (tests use it). The app works on its own under a
    server and mounted inside another Starlette app with ``Mount("/prefix", app=create_app())``.
    """
    plugins = plugins or load_plugins()
    plugin_options = [o for found in plugins.hook.depot_serve_options() for o in found or ()]
    settings = Settings.from_options(options, plugin_options)
    configure_logging(settings.verbose)
    for failure in plugins.failed:
        log.error(
            "plugin failed to load",
            extra={
                "plugin": failure.name,
                "distribution": failure.distribution,
                "reason": failure.error,
            },
        )
    depot = Depot(settings, plugins)

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/-/health", health, methods=["GET", "HEAD"]),
        Route("/-/browse/{ecosystem}", browse, methods=["GET", "HEAD"]),
        Route("/-/browse/{ecosystem}/{name:path}", package_page, methods=["GET", "HEAD"]),
    ]
    if not settings.metrics_listen_addr:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    for contributed in reversed(plugins.hook.depot_routes(depot=depot)):
        routes.extend(contributed or ())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(app):
            yield

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPError: _http_error_handler,
            InvalidKey: _invalid_key_handler,
            ClientDisconnect: _client_gone_handler,
            OSError: _os_error_handler,
            **{t: _outage_handler for t in OUTAGE_TYPES},
        },
    )
    app.router = SegmentRouter(routes, lifespan=lifespan)
    app.state.depot = depot
    app.add_middleware(DepotMiddleware, depot=depot)
    app.add_middleware(ObserverMiddleware, depot=depot)
    return app
