"""Prometheus metrics: requests, bytes, verification failures, latency, stored objects.

In one process each depot app has its own registry (two depots in one process do not share
counters). With ``depot serve --workers N`` every worker is a process of its own, so the supervisor
turns on prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see
:mod:`depot.core.serve`): each worker writes its values to files in that directory, and
``/metrics``, whichever worker answers it, reads them all and reports the sum over the workers.
An application that embeds depot under a multi-process server of its own can set
``PROMETHEUS_MULTIPROC_DIR`` itself (before anything imports prometheus_client) for the same effect.

Stored-object gauges come from the ecosystems' catalogs and the shared database, so every worker
and every replica reports the same totals; the worker answering a scrape refreshes them first.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from depot.core.auth import WRITE_METHODS
from depot.core.errors import ConfigError
from depot.core.logs import log_access
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from depot.core.app import Depot

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: prometheus-client's switch for multiprocess mode; it is read when prometheus_client is imported.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory the workers of this process group share their values through, if any."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class Metrics:
    """The collectors of one depot.

    In multiprocess mode the collectors belong to no registry (their values live in the shared
    files); :attr:`registry` holds one ``MultiProcessCollector`` that reads every worker's files.
    The stored-object gauges use ``livemostrecent``: every worker would report the same database
    totals, so the merged view keeps the one refreshed last, once, instead of adding them up.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared_dir = multiprocess_dir()
        r: CollectorRegistry | None = self.registry
        if shared_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            if not os.path.isdir(shared_dir):
                raise ConfigError(f"{MULTIPROC_DIR_ENV}={shared_dir} is not a directory")
            MultiProcessCollector(self.registry, path=shared_dir)
            r = None
        self.requests = Counter(
            "depot_http_requests",
            "HTTP requests answered",
            ["ecosystem", "route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "depot_http_request_duration_seconds", "Time to answer a request", ["ecosystem"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.bytes_served = Counter(
            "depot_bytes_served", "Response body bytes sent", ["ecosystem"], registry=r
        )
        self.bytes_received = Counter(
            "depot_bytes_received", "Request body bytes received", ["ecosystem"], registry=r
        )
        self.verification_failures = Counter(
            "depot_upload_verification_failures",
            "Uploads refused as malformed or not matching their hashes",
            ["ecosystem"], registry=r,
        )  # fmt: skip
        self.storage_refusals = Counter(
            "depot_storage_write_refusals",
            "Writes refused because the blob store or database could not take them "
            "(cause: full, quota, read-only, permission)",
            ["ecosystem", "cause"], registry=r,
        )  # fmt: skip
        self.artifacts_stored = Counter(
            "depot_artifacts_stored", "Artifacts verified and stored", ["ecosystem"], registry=r
        )
        self.artifacts_served = Counter(
            "depot_artifacts_served", "Artifact downloads started", ["ecosystem"], registry=r
        )
        self.stored_objects = Gauge(
            "depot_stored_objects", "Objects held", ["ecosystem"],
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.stored_bytes = Gauge(
            "depot_stored_bytes", "Bytes held", ["ecosystem"],
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        # Pull-through caches (depot.core.upstream), per ecosystem and upstream URL.
        upstream_labels = ["ecosystem", "upstream"]
        self.upstream_hits = Counter(
            "depot_upstream_hits", "Cached upstream content answered without asking upstream",
            upstream_labels, registry=r,
        )  # fmt: skip
        self.upstream_misses = Counter(
            "depot_upstream_misses", "Requests for upstream content depot did not hold",
            upstream_labels, registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "depot_upstream_requests", "HTTP requests sent to an upstream (retries included)",
            upstream_labels, registry=r,
        )  # fmt: skip
        self.upstream_bytes = Counter(
            "depot_upstream_bytes", "Response body bytes received from an upstream",
            upstream_labels, registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "depot_upstream_errors",
            "Upstream fetches that failed: unreachable, timed out, 5xx, or content that failed "
            "verification", upstream_labels, registry=r,
        )  # fmt: skip
        self.upstream_stale = Counter(
            "depot_upstream_stale",
            "Held metadata answered past its max-age because the upstream could not be asked",
            upstream_labels, registry=r,
        )  # fmt: skip
        # Garbage collection, from the report the last collector (any process, any replica)
        # recorded in the shared database.
        gc_gauges = {
            "gc_last_run": (
                "depot_gc_last_run_timestamp_seconds", "When the last collection started", [],
            ),
            "gc_last_duration": ("depot_gc_last_run_duration_seconds", "How long it took", []),
            "gc_reclaimed_objects": (
                "depot_gc_reclaimed_objects", "Blobs removed by all collections", ["ecosystem"],
            ),
            "gc_reclaimed_bytes": (
                "depot_gc_reclaimed_bytes", "Bytes removed by all collections", ["ecosystem"],
            ),
            "cache_evicted_items": (
                "depot_cache_evicted_items",
                "Items cached from upstreams that retention evicted, all collections",
                ["ecosystem"],
            ),
            "cache_evicted_bytes": (
                "depot_cache_evicted_bytes",
                "Bytes of cached items that retention evicted, all collections", ["ecosystem"],
            ),
            "blob_store_objects": (
                "depot_blob_store_objects", "Blobs in the store after the last collection",
                ["ecosystem"],
            ),
            "blob_store_bytes": (
                "depot_blob_store_bytes", "Bytes in the store after the last collection",
                ["ecosystem"],
            ),
        }  # fmt: skip
        for attribute, (name, documentation, labels) in gc_gauges.items():
            gauge = Gauge(
                name, documentation, labels, registry=r, multiprocess_mode="livemostrecent"
            )
            setattr(self, attribute, gauge)
        self._request_children: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}

    def observe_request(
        self,
        ecosystem: str,
        route: str,
        method: str,
        status: int,
        seconds: float,
        sent: int,
        received: int,
    ) -> None:
        """Record one answered request; labelled children are looked up once and kept."""
        key = (ecosystem, route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(ecosystem, route, method, str(status)),
                self.latency.labels(ecosystem),
                self.bytes_served.labels(ecosystem),
                self.bytes_received.labels(ecosystem),
                self.verification_failures.labels(ecosystem),
            )
            self._request_children[key] = children
        count, latency, served, received_bytes, failures = children
        count.inc()
        latency.observe(seconds)
        if sent:
            served.inc(sent)
        if received:
            received_bytes.inc(received)
        if method in WRITE_METHODS and status in (400, 409, 413, 422):
            failures.inc()

    async def refresh_stored(self, depot: Depot) -> None:
        """Set the stored-object gauges from the catalogs (one query per ecosystem)."""
        for catalog in depot.catalogs():
            stats = await catalog.stats(newest=0)
            self.stored_objects.labels(catalog.ecosystem).set(stats.objects)
            self.stored_bytes.labels(catalog.ecosystem).set(stats.bytes)
        await self.refresh_collection(depot)

    async def refresh_collection(self, depot: Depot) -> None:
        """Set the garbage-collection gauges from what the last collector recorded."""
        from depot.core.collector import evicted_totals, last_collection, reclaimed_totals

        last = await last_collection(depot.database)
        if last is None:
            return
        self.gc_last_run.set(last.started)
        self.gc_last_duration.set(last.duration)
        for name, tally in last.ecosystems.items():
            self.blob_store_objects.labels(name).set(tally.kept)
            self.blob_store_bytes.labels(name).set(tally.kept_bytes)
        for name, total in (await reclaimed_totals(depot.database)).items():
            self.gc_reclaimed_objects.labels(name).set(total["objects"])
            self.gc_reclaimed_bytes.labels(name).set(total["bytes"])
        for name, total in (await evicted_totals(depot.database)).items():
            self.cache_evicted_items.labels(name).set(total["items"])
            self.cache_evicted_bytes.labels(name).set(total["bytes"])


class ObserverMiddleware:
    """Watches every HTTP request once: the access log line and the request metrics.

    One wrapper around ``send`` and ``receive`` serves both, so each request pays for one layer.
    A request is recorded just before its last body message goes out, so a client holding a
    complete answer finds it counted by the next ``/metrics``, even one answered by another worker.
    """

    def __init__(self, app: ASGIApp, depot: Depot) -> None:
        self.app = app
        self.depot = depot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read now: routing rewrites root_path in place on the way down.
        path = scope["path"]
        ecosystem = self.depot.ecosystem_for_path(scope.get("root_path", ""), path) or "core"
        start = time.perf_counter()
        status = 500
        sent = 0
        received = 0
        recorded = False
        deadlines = self.depot.body_deadlines

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            seconds = time.perf_counter() - start
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", None) or (
                "unmatched" if status == 404 else "other"
            )
            method = scope["method"]
            self.depot.metrics.observe_request(
                ecosystem, route, method, status, seconds, sent, received
            )
            log_access(method, path, status, sent, seconds, (scope.get("client") or ("", 0))[0])

        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the client to go away, for as long as it takes
                return await receive()
            # A body that stalls is answered 408 rather than holding the request (and its
            # buffers) until the client gives up, which may be never.
            async with deadlines.watch():
                message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record()
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            record()  # no complete answer went out (an error, a client gone): still counted


async def metrics_endpoint(request: Request) -> Response:
    """``/metrics`` in the Prometheus text format."""
    depot: Depot = request.scope["depot"]
    await depot.metrics.refresh_stored(depot)
    return Response(generate_latest(depot.metrics.registry), media_type=CONTENT_TYPE_LATEST)
