"""Pull-through caching: one client that fetches from an ecosystem's upstreams for every ecosystem.

An ecosystem given an upstream (``--npm-upstream``, ...) asks :class:`UpstreamClient`
(``ctx.upstream``) for what it does not hold. The client owns what is the same everywhere:

- **HTTP**: one aiohttp session per ecosystem, a connect timeout and a read timeout (no bytes for
  ``--upstream-timeout`` seconds), retries with backoff on connection errors and 5xx answers, and
  conditional revalidation (``If-None-Match``/``If-Modified-Since``) of held metadata.
- **Single-flight**: concurrent requests for one object share one upstream request
  (:meth:`UpstreamClient.single_flight` for documents, :meth:`UpstreamClient.fetch_blob` for
  artifacts), in this process. Replicas and workers may each fetch once; ecosystems store
  content-addressed with insert-or-ignore rows, so those copies never conflict.
- **The tee** (:class:`BlobFlight`): an artifact's bytes go from upstream into a blob upload and
  into a spool file at once; every waiting client reads the spool at its own pace, so the first
  one gets bytes while they are being stored and a client that hangs up spoils nothing. The last
  byte is held back from every client until the blob is verified (the ecosystem's ``verify``,
  else its ``finish``, which then commits it too): a client never receives a complete body that
  was not verified. When verification fails the connections are cut, nothing is stored, and for
  a short while the reason is answered as a 502 instead of fetching the same bad bytes again.
- **Writes behind** (:meth:`UpstreamClient.write_behind`): a fetched document is answered from
  memory while its blob and row are written; shutdown waits for those writes.
- **Freshness and outages**: :meth:`UpstreamClient.is_fresh` says whether held metadata is
  within ``--upstream-max-age``; with ``--offline`` held content is never revalidated. An upstream
  that failed is left alone for :data:`DOWN_SECONDS` before held metadata is revalidated again, so
  an outage costs one timeout, not one per request. Errors name the upstream: 504 when it timed
  out, 502 otherwise.
- **Metrics** per ecosystem and upstream: hits, misses, requests, bytes, errors, stale answers.

The ecosystem says what to fetch and how to verify it; rows recording where cached content came
from are the ecosystem's (its tables, its provenance columns).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
from depot.core.blobs import CHUNK_SIZE, BlobUpload
from depot.core.errors import HTTPError, NotFound
from depot.core.hookspecs import hookimpl
from depot.core.settings import option
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    import aiohttp
    from depot.core.app import Depot

log = logging.getLogger("depot.core.upstream")

T = TypeVar("T")

#: Checks a complete upload (raising :class:`Unverified`, or :class:`Abandoned` when the bytes
#: turn out not to be wanted) before clients get its last byte; a coroutine function when it
#: must wait for what verifies the bytes (metadata fetched at the same time).
Verify = Callable[[BlobUpload], Awaitable[None] | None]

#: Default ``--upstream-max-age``: the public npm registry serves packuments with
#: ``Cache-Control: max-age=300`` itself, so a depot revalidating every five minutes is as fresh
#: as a client talking to the registry directly, while a CI fleet installing the same tree a
#: hundred times in those minutes costs the upstream one conditional request per document.
DEFAULT_MAX_AGE = 300
#: Default ``--upstream-timeout``: seconds to connect, and seconds without a byte, before giving up.
DEFAULT_TIMEOUT = 30.0
#: Attempts per upstream request (connection errors and 5xx are retried, 4xx are not).
ATTEMPTS = 3
#: Backoff before the second and third attempts (seconds, with up to 25% jitter).
BACKOFF = (0.2, 0.8)
#: After an upstream failed, held metadata is answered stale without asking it for this long.
DOWN_SECONDS = 5.0
#: A verification failure is answered from memory for this long instead of fetching again.
FAILURE_MEMORY = 30.0
#: How long "no upstream has it" is remembered for a key passed to ``remember_missing``.
MISSING_MEMORY = 60.0
#: Prefetches (:meth:`UpstreamClient.prefetch`) running at once, and waiting at most.
PREFETCH_CONCURRENCY = 8
PREFETCH_QUEUE = 1000
#: Connections kept to upstreams (per ecosystem), and seconds an idle one stays open.
CONNECTIONS = 64
KEEPALIVE_SECONDS = 60.0
#: Statuses meaning "no such object" (Nix treats 403 like 404 as well; npm and PyPI send 404).
MISSING_STATUSES = (404, 410)
#: A flight keeps what it received in memory up to this many bytes (most npm tarballs and
#: wheels) and in an unnamed temporary file beyond. Creating, writing and removing a file for
#: every fetched artifact cost about 2 ms of the event loop per artifact on a busy disk.
SPOOL_IN_MEMORY = 1024 * 1024


@hookimpl
def depot_serve_options() -> list[click.Option]:
    return [
        option(
            ["--upstream-max-age"],
            type=click.IntRange(min=0),
            default=DEFAULT_MAX_AGE,
            show_default=True,
            help="Seconds fetched upstream metadata is used before it is revalidated.",
        ),
        option(
            ["--upstream-timeout"],
            type=click.FloatRange(min=0.1),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to connect to an upstream, and seconds without a byte from it.",
        ),
        option(
            ["--offline"],
            is_flag=True,
            default=False,
            help="Never revalidate held upstream content; contact upstreams only for what is "
            "missing.",
        ),
    ]


class UpstreamError(HTTPError):
    """An upstream could not give what was asked: 502 (or 504 on a timeout), naming it."""

    def __init__(self, upstream: str, reason: str, status: int = 502) -> None:
        super().__init__(status, f"upstream {upstream}: {reason}")
        self.upstream = upstream


class Unverified(Exception):
    """Raised by an ecosystem's ``finish``: fetched bytes do not match what they must be."""


class Abandoned(Exception):
    """Raised by an ecosystem's ``finish``: the bytes were fetched ahead (before the metadata
    that names them arrived) and turn out not to be wanted. Nothing is stored and nothing is
    remembered as failed."""


@dataclass(frozen=True)
class Fetched:
    """An upstream's answer to a document request.

    ``status`` is 200 (``body`` holds the document), 304 (the held copy is current) or 404.
    """

    status: int
    body: bytes
    etag: str | None
    last_modified: str | None
    url: str
    content_type: str = ""


class UpstreamClient:
    """The upstream client of one ecosystem (``ctx.upstream``); see the module docstring."""

    def __init__(self, depot: Depot, ecosystem: str) -> None:
        import aiohttp  # noqa: F401 - here, at start-up, rather than in the first cold request

        self.depot = depot
        self.ecosystem = ecosystem
        extra = depot.settings.extra
        self.max_age = float(extra.get("upstream_max_age", DEFAULT_MAX_AGE))
        self.timeout = float(extra.get("upstream_timeout", DEFAULT_TIMEOUT))
        self.offline = bool(extra.get("offline", False))
        self._session: aiohttp.ClientSession | None = None
        self._documents: dict[Hashable, asyncio.Task[Any]] = {}
        self._blobs: dict[Hashable, BlobFlight] = {}
        self._failures: dict[Hashable, tuple[float, UpstreamError]] = {}
        self._down_until: dict[str, float] = {}
        self._missing: dict[Hashable, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writing: set[asyncio.Task[Any]] = set()
        self._prefetching: set[Hashable] = set()
        self._prefetch_slots = asyncio.Semaphore(PREFETCH_CONCURRENCY)

    # -- freshness and outages -------------------------------------------------------------

    def is_fresh(self, checked_at: float) -> bool:
        """Whether metadata last confirmed with upstream at ``checked_at`` (epoch seconds) may be
        answered without asking again: always with ``--offline``, else within the max-age."""
        return self.offline or time.time() - checked_at < self.max_age

    def is_down(self, upstream: str) -> bool:
        """True while an upstream that just failed is left alone (held metadata goes stale)."""
        return self._down_until.get(upstream, 0.0) > time.monotonic()

    def remember_missing(self, key: Hashable) -> None:
        """Remember for :data:`MISSING_MEMORY` seconds that no upstream has ``key`` (most Nix
        narinfo lookups are for paths nobody has: a short negative cache spares the upstream)."""
        if len(self._missing) > 100_000:
            now = time.monotonic()
            self._missing = {k: t for k, t in self._missing.items() if t > now}
        self._missing[key] = time.monotonic() + MISSING_MEMORY

    def known_missing(self, key: Hashable) -> bool:
        """True while ``key`` is remembered as missing upstream."""
        until = self._missing.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._missing[key]
        return False

    def hit(self, upstream: str) -> None:
        """Count an answer from held upstream content that needed no upstream request."""
        self.depot.metrics.upstream_hits.labels(self.ecosystem, upstream).inc()

    def miss(self, upstream: str) -> None:
        """Count a request for upstream content that is not held (or is due for revalidation)."""
        self.depot.metrics.upstream_misses.labels(self.ecosystem, upstream).inc()

    def stale(self, upstream: str, what: str, error: Exception) -> None:
        """Count and log held metadata answered past its max-age because upstream failed."""
        self.depot.metrics.upstream_stale.labels(self.ecosystem, upstream).inc()
        log.warning(
            "upstream unavailable, answering held copy",
            extra={"ecosystem": self.ecosystem, "upstream": upstream, "object": what,
                   "error": str(error)},
        )  # fmt: skip

    def _failed(self, upstream: str, error: Exception) -> None:
        self.depot.metrics.upstream_errors.labels(self.ecosystem, upstream).inc()
        self._down_until[upstream] = time.monotonic() + DOWN_SECONDS

    # -- HTTP ------------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The ecosystem's aiohttp session, opened on first use and closed at shutdown."""
        if self._session is None or self._session.closed:
            import aiohttp

            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.timeout, sock_read=self.timeout
            )
            # Keep-alive for a minute: a cold install asks for hundreds of objects in a burst,
            # and a new connection per request would cost a handshake each.
            connector = aiohttp.TCPConnector(
                limit=CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,  # bytes are stored and verified exactly as sent
                headers={"User-Agent": "depot (pull-through cache)"},
            )
            self.depot.exit_stack.push_async_callback(self.close)
        return self._session

    async def close(self) -> None:
        """Cancel fetches in flight (their uploads abort, nothing is stored), let the writes
        behind (:meth:`write_behind`) end, and close the session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # After the fetches: one that ended just before its cancellation may have left a write.
        await asyncio.gather(*self._writing, return_exceptions=True)
        for flight in list(self._blobs.values()):
            flight.release()
        self._blobs.clear()
        self._documents.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, upstream: str, url: str, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """A response whose headers arrived; retried with backoff on connection errors and 5xx.

        The caller releases the response. Raises :class:`UpstreamError` (504 on a timeout).
        """
        import aiohttp

        error: UpstreamError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                delay = BACKOFF[min(attempt, len(BACKOFF)) - 1]
                await asyncio.sleep(delay * (1 + random.random() / 4))  # noqa: S311 - jitter
            self.depot.metrics.upstream_requests.labels(self.ecosystem, upstream).inc()
            try:
                response = await self.session().get(url, headers=dict(headers))
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                error = UpstreamError(upstream, f"timed out fetching {url} ({exc})", 504)
                continue
            except aiohttp.ClientError as exc:
                error = UpstreamError(upstream, f"cannot fetch {url}: {_describe(exc)}")
                continue
            if response.status < 500:
                return response
            response.release()
            error = UpstreamError(upstream, f"{url} answered {response.status}")
        assert error is not None
        self._failed(upstream, error)
        raise error

    async def fetch_document(
        self,
        upstream: str,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str | None = None,
        limit: int = 64 * 1024 * 1024,
    ) -> Fetched:
        """GET a metadata document (packument, simple page, narinfo), conditionally when a held
        copy's validators are given. 404/410 give status 404; other 4xx and failures raise
        :class:`UpstreamError`. Bodies over ``limit`` bytes are refused (502)."""
        import aiohttp

        headers = {"Accept-Encoding": "identity"}
        if accept:
            headers["Accept"] = accept
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        response = await self._request(upstream, url, headers)
        try:
            if response.status == 304:
                return Fetched(304, b"", etag, last_modified, url)
            if response.status in MISSING_STATUSES:
                return Fetched(404, b"", None, None, url)
            if response.status != 200:
                error = UpstreamError(upstream, f"{url} answered {response.status}")
                self._failed(upstream, error)
                raise error
            body = bytearray()
            try:
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    body += chunk
                    if len(body) > limit:
                        raise UpstreamError(upstream, f"{url} is larger than {limit} bytes")
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                error = UpstreamError(upstream, f"timed out reading {url} ({exc})", 504)
                self._failed(upstream, error)
                raise error from exc
            except aiohttp.ClientError as exc:
                error = UpstreamError(upstream, f"reading {url}: {_describe(exc)}")
                self._failed(upstream, error)
                raise error from exc
            self.depot.metrics.upstream_bytes.labels(self.ecosystem, upstream).inc(len(body))
            return Fetched(
                200,
                bytes(body),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
                str(response.url),
                response.headers.get("Content-Type", ""),
            )
        finally:
            response.release()

    # -- single-flight ---------------------------------------------------------------------

    async def single_flight(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work()`` once for every caller asking for ``key`` at the same time.

        The work runs in a task of its own: a caller that goes away (a client hanging up) does
        not cancel it for the others, and shutdown cancels it.
        """
        task = self._documents.get(key)
        if task is None:
            task = self._spawn(work())
            self._documents[key] = task
            task.add_done_callback(lambda _: self._documents.pop(key, None))
        return await asyncio.shield(task)

    def background(self, coroutine: Awaitable[Any], what: str) -> None:
        """Run ``coroutine`` in a task of its own (a prefetch of what a client will ask for
        next), cancelled at shutdown; a failure is logged with ``what``, never raised."""

        async def run() -> None:
            try:
                await coroutine
            except (HTTPError, Unverified) as exc:
                log.info("prefetch failed", extra={"object": what, "reason": str(exc)})
            except Exception:
                log.exception("prefetch failed", extra={"object": what})

        self._spawn(run())

    def write_behind(self, coroutine: Awaitable[Any], what: str) -> asyncio.Future[None]:
        """Run ``coroutine``, a write of what was fetched and already answered (a held
        document's blob and row), in a task of its own that shutdown waits for, not cancels:
        the clients waiting for the document need not wait for the store's and the database's
        fsyncs too. A failure is logged with ``what``, never raised (the caller undoes what it
        remembered in the coroutine itself); the task returned ends when the write did."""

        async def run() -> None:
            try:
                await coroutine
            except Exception:
                log.exception("storing upstream content failed", extra={"object": what})

        task = asyncio.ensure_future(run())
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return task

    def _spawn(self, coroutine: Awaitable[T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- artifacts: the tee ----------------------------------------------------------------

    async def fetch_blob(
        self,
        request: Request,
        *,
        key: Hashable,
        upstream: str,
        url: str,
        open_upload: Callable[[], AbstractAsyncContextManager[BlobUpload]],
        finish: Callable[[BlobUpload], Awaitable[None]],
        on_chunk: Callable[[bytes], None] | None = None,
        media_type: str = "application/octet-stream",
        verify: Verify | None = None,
    ) -> Response:
        """A response streaming ``url`` while it is stored; one upstream request per ``key``.

        ``open_upload()`` opens the blob upload (under a temporary key); ``on_chunk`` sees every
        chunk (a streaming parser); ``finish(upload)`` runs once all bytes are in and
        ``upload.complete()`` was awaited: it raises :class:`Unverified` with the reason when the
        bytes are wrong, and otherwise commits the blob and records its row. ``verify(upload)``
        (:data:`Verify`), when given, runs before ``finish`` and raises :class:`Unverified` the
        same way: once it passed, clients get the last byte while ``finish`` commits (they wait
        for verified bytes, not for the store's and the database's writes). 404 when upstream
        has no such object, 502/504 naming the upstream when it fails.
        """
        flight = self.start_blob(
            key=key, upstream=upstream, url=url, open_upload=open_upload, finish=finish,
            on_chunk=on_chunk, verify=verify,
        )  # fmt: skip
        return await self.respond(flight, request, media_type)

    def start_blob(
        self,
        *,
        key: Hashable,
        upstream: str,
        url: str,
        open_upload: Callable[[], AbstractAsyncContextManager[BlobUpload]],
        finish: Callable[[BlobUpload], Awaitable[None]],
        on_chunk: Callable[[bytes], None] | None = None,
        verify: Verify | None = None,
    ) -> BlobFlight:
        """Start fetching ``url`` into the store (or join the fetch of ``key`` in flight) and
        return the flight, held for the caller: pass it to :meth:`respond`, or
        :meth:`BlobFlight.release` it. For fetching ahead of the client that will want the
        object: ``finish`` may wait for what verifies the bytes (metadata fetched at the same
        time) and raise :class:`Abandoned` when they turn out not to be wanted. Raises the
        remembered reason when ``key`` failed verification just before."""
        flight = self._flight(key, upstream, url, open_upload, finish, on_chunk, verify)
        flight.acquire()
        return flight

    def _flight(
        self,
        key: Hashable,
        upstream: str,
        url: str,
        open_upload: Callable[[], AbstractAsyncContextManager[BlobUpload]],
        finish: Callable[[BlobUpload], Awaitable[None]],
        on_chunk: Callable[[bytes], None] | None,
        verify: Verify | None,
    ) -> BlobFlight:
        """The flight fetching ``key``: the one in progress, or a new one."""
        remembered = self._failures.get(key)
        if remembered is not None:
            if remembered[0] > time.monotonic():
                raise remembered[1]
            del self._failures[key]
        flight = self._blobs.get(key)
        if flight is None:
            self.miss(upstream)
            flight = BlobFlight(self, key, upstream, url, open_upload, finish, on_chunk, verify)
            self._blobs[key] = flight
            flight.task = self._spawn(flight.run())
        return flight

    async def respond(
        self, flight: BlobFlight, request: Request, media_type: str = "application/octet-stream"
    ) -> Response:
        """The response streaming a flight from :meth:`start_blob` (which it releases): sent
        once upstream's headers arrived, its last byte once the blob is verified.
        404 when upstream has no such object, 502/504 naming the upstream when it fails."""
        try:
            await asyncio.shield(flight.started)
            if flight.done and not flight.committed:
                # Finished before this client came: failed, or abandoned as not wanted.
                raise flight.error or UpstreamError(
                    flight.upstream, f"fetching {flight.url} failed"
                )
        except BaseException:
            flight.release()
            raise
        return TeeResponse(flight, request, media_type)

    def prefetch(
        self,
        *,
        key: Hashable,
        upstream: str,
        url: str,
        open_upload: Callable[[], AbstractAsyncContextManager[BlobUpload]],
        finish: Callable[[BlobUpload], Awaitable[None]],
        wanted: Callable[[], Awaitable[bool]] | None = None,
        verify: Verify | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        """Fetch an artifact clients will likely ask for next into the store, in the background
        (npm: the tarballs of a fetched packument's dist-tags; PyPI: a wheel whose core metadata
        a client just read, the core metadata of a likely dependency).

        At most :data:`PREFETCH_CONCURRENCY` prefetches run at a time and
        :data:`PREFETCH_QUEUE` wait; more are dropped (a client asking fetches it as usual).
        A prefetch is a flight like any other: a client asking for ``key`` meanwhile joins it
        (one upstream request), and shutdown cancels it. ``wanted()``, awaited just before the
        fetch, may say it is no longer needed (already held). ``verify`` and ``on_chunk`` are as
        in :meth:`fetch_blob`. Nothing starts while ``key`` is in flight or recently failed.
        Failures are logged, not raised.
        """
        if key in self._blobs or key in self._prefetching or self.offline:
            return
        remembered = self._failures.get(key)
        if remembered is not None and remembered[0] > time.monotonic():
            return
        if len(self._prefetching) >= PREFETCH_QUEUE:
            return
        self._prefetching.add(key)

        async def run() -> None:
            try:
                async with self._prefetch_slots:
                    if wanted is not None and not await wanted():
                        return
                    flight = self.start_blob(
                        key=key, upstream=upstream, url=url, open_upload=open_upload,
                        finish=finish, on_chunk=on_chunk, verify=verify,
                    )  # fmt: skip
                    try:
                        assert flight.task is not None
                        await asyncio.shield(flight.task)
                    finally:
                        flight.release()
            except HTTPError as exc:
                log.info("prefetch failed", extra={"url": url, "reason": exc.reason})
            except Exception:
                log.exception("prefetch failed", extra={"url": url})
            finally:
                self._prefetching.discard(key)

        self._spawn(run())


class _Spool:
    """The bytes a flight received so far, for readers at their own offsets: in memory up to
    :data:`SPOOL_IN_MEMORY`, then in an unnamed temporary file."""

    def __init__(self) -> None:
        self._memory = bytearray()
        self._file: Any = None
        self.closed = False

    def to_file(self) -> None:
        """Keep what arrives in the temporary file from now on (what came so far moves there)."""
        self._file = tempfile.TemporaryFile(prefix="depot-upstream-")  # noqa: SIM115
        if self._memory:
            os.pwrite(self._file.fileno(), self._memory, 0)
        self._memory = bytearray()

    def append(self, chunk: bytes, offset: int) -> None:
        if self._file is None and offset + len(chunk) > SPOOL_IN_MEMORY:
            self.to_file()
        if self._file is None:
            self._memory += chunk
        else:
            os.pwrite(self._file.fileno(), chunk, offset)

    def read(self, offset: int, size: int) -> bytes:
        if self._file is None:
            return bytes(self._memory[offset : offset + size])
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        self.closed = True
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()


class BlobFlight:
    """One artifact on its way from upstream into the blob store and to its waiting clients.

    Bytes are appended to the spool (:class:`_Spool`) as they arrive; readers read it at their
    own offsets. The spool is closed when the fetch and its last reader are done.
    """

    def __init__(
        self,
        client: UpstreamClient,
        key: Hashable,
        upstream: str,
        url: str,
        open_upload: Callable[[], AbstractAsyncContextManager[BlobUpload]],
        finish: Callable[[BlobUpload], Awaitable[None]],
        on_chunk: Callable[[bytes], None] | None,
        verify: Verify | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.upstream = upstream
        self.url = url
        self._open_upload = open_upload
        self._finish = finish
        self._on_chunk = on_chunk
        self._verify = verify
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.content_length: int | None = None
        self.received = 0
        self.done = False
        self.committed = False
        self.verified = False
        self.error: UpstreamError | None = None
        self._progress = asyncio.Event()
        self._spool = _Spool()
        self._users = 1  # the fetch itself; readers add one each

    def acquire(self) -> None:
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and not self._spool.closed:
            self._spool.close()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait(self) -> None:
        """Until more bytes arrive or the fetch ends."""
        await self._progress.wait()

    def readable(self) -> int:
        """How many bytes readers may send now: all once verified, else all but the last."""
        return self.received if self.verified else max(0, self.received - 1)

    def read(self, offset: int, size: int) -> bytes:
        return self._spool.read(offset, size)

    async def run(self) -> None:
        import aiohttp

        client = self.client
        metrics = client.depot.metrics
        response: aiohttp.ClientResponse | None = None
        try:
            response = await client._request(
                self.upstream, self.url, {"Accept-Encoding": "identity"}
            )
            if response.status in MISSING_STATUSES:
                raise NotFound(f"upstream {self.upstream} has no {self.url}")
            if response.status != 200:
                raise UpstreamError(self.upstream, f"{self.url} answered {response.status}")
            self.content_length = response.content_length
            if self.content_length is not None and self.content_length > SPOOL_IN_MEMORY:
                self._spool.to_file()
            async with self._open_upload() as upload:
                self.started.set_result(None)
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    self._spool.append(chunk, self.received)
                    self.received += len(chunk)
                    self._notify()
                    if self._on_chunk is not None:
                        self._on_chunk(chunk)
                    await upload.write(chunk)
                metrics.upstream_bytes.labels(client.ecosystem, self.upstream).inc(self.received)
                if self.content_length is not None and self.received != self.content_length:
                    raise UpstreamError(
                        self.upstream,
                        f"{self.url} sent {self.received} of {self.content_length} bytes",
                    )
                await upload.complete()
                if self._verify is not None:
                    checked = self._verify(upload)
                    if checked is not None:
                        await checked
                    self.verified = True
                    self._notify()
                await self._finish(upload)
            self.committed = self.verified = True
        except Abandoned as exc:
            self.error = UpstreamError(self.upstream, f"{self.url}: {exc}; nothing was stored")
            log.debug("fetched ahead and not wanted", extra={"url": self.url, "reason": str(exc)})
        except Unverified as exc:
            self.error = UpstreamError(self.upstream, f"{self.url}: {exc}; nothing was stored")
            client._failures[self.key] = (time.monotonic() + FAILURE_MEMORY, self.error)
            metrics.upstream_errors.labels(client.ecosystem, self.upstream).inc()
            log.error(
                "upstream content failed verification",
                extra={"ecosystem": client.ecosystem, "upstream": self.upstream, "url": self.url,
                       "reason": str(exc)},
            )  # fmt: skip
        except HTTPError as exc:
            self.error = exc if isinstance(exc, UpstreamError) else None
            if not self.started.done():
                self.started.set_exception(exc)
                self.started.exception()  # retrieved: the client that asked may be gone
            elif self.error is not None:
                client._failed(self.upstream, exc)
                log.error("upstream fetch failed", extra={"reason": exc.reason})
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            self.error = UpstreamError(self.upstream, f"timed out reading {self.url}", 504)
            client._failed(self.upstream, exc)
            log.error("upstream fetch failed", extra={"reason": self.error.reason})
        except aiohttp.ClientError as exc:
            self.error = UpstreamError(self.upstream, f"reading {self.url}: {_describe(exc)}")
            client._failed(self.upstream, exc)
            log.error("upstream fetch failed", extra={"reason": self.error.reason})
        except asyncio.CancelledError:
            self.error = UpstreamError(self.upstream, "depot is shutting down", 503)
            raise
        except Exception as exc:  # a fault of ours (the store, the database): logged, not stored
            self.error = UpstreamError(self.upstream, f"storing {self.url} failed")
            log.exception("storing upstream content failed", extra={"url": self.url})
            if not self.started.done():
                self.started.set_exception(self.error)
                self.started.exception()
            del exc
        finally:
            if response is not None:
                response.release()
            if not self.started.done():
                self.started.set_exception(
                    self.error or UpstreamError(self.upstream, f"fetching {self.url} failed")
                )
                self.started.exception()  # retrieved here: nobody may be waiting any more
            self.done = True
            if client._blobs.get(self.key) is self:
                del client._blobs[self.key]
            self._notify()
            self.release()


class TeeResponse(Response):
    """Streams a :class:`BlobFlight` to one client, holding the last byte back until the blob
    is verified (and, without a separate ``verify``, committed). If the fetch fails after the
    headers went out, the connection is closed short of the announced length, so the client
    discards what it got."""

    def __init__(self, flight: BlobFlight, request: Request, media_type: str) -> None:
        self.flight = flight
        self.head_only = request.method == "HEAD"
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        headers = {"cache-control": "no-cache"}
        if flight.content_length is not None:
            headers["content-length"] = str(flight.content_length)
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        flight = self.flight
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if self.head_only:
                await send({"type": "http.response.body", "body": b""})
                return
            offset = 0
            while True:
                limit = flight.readable()
                if offset < limit:
                    chunk = flight.read(offset, min(CHUNK_SIZE, limit - offset))
                    offset += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                if flight.done or (flight.verified and offset == flight.received):
                    if flight.verified and offset == flight.received:
                        await send({"type": "http.response.body", "body": b""})
                    # Otherwise the fetch failed: return without ending the body, and the server
                    # closes the connection short of Content-Length (or of the final chunk).
                    return
                await flight.wait()
        finally:
            flight.release()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
