"""The core's upstream client (depot.core.upstream) as a third-party ecosystem would use it.

A tiny ecosystem, ``mirror``, defined here with ``@hookimpl`` like any plugin, caches files of an
upstream verified by the sha256 its client names, and holds the upstream's file list as a
document that can grow (depot.core.held: revalidated when due, served stale when the upstream
fails). The upstream is a real ``depot serve`` holding
files in depot-raw, behind the fault-injecting proxy; the caching depot runs under hypercorn in
this process, on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from depot.core import Depot, Ecosystem, hookimpl
from depot.core.database import Schema
from depot.core.errors import NotFound
from depot.core.held import HeldDocument, upstream_documents
from depot.core.http import blob_response
from depot.core.plugins import load_plugins
from depot.core.testing import DepotServer, free_port, metric
from depot.core.testing_upstream import FaultProxy
from depot.core.upstream import Unverified, UpstreamError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

mirrored = sa.Table(
    "mirror_files",
    sa.MetaData(),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("upstream_url", sa.String(1024), nullable=False),
)


class MirrorPlugin:
    """GET /mirror/<name>?sha256=HEX: the held copy, or the upstream's, verified, stored."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    @hookimpl
    def depot_ecosystems(self) -> list[Ecosystem]:
        return [Ecosystem("mirror", "/mirror", "Mirror")]

    @hookimpl
    def depot_schemas(self) -> list[Schema]:
        return [Schema("mirror", 1, [mirrored])]

    @hookimpl
    def depot_routes(self, depot: Depot) -> list[Any]:
        upstream = self.upstream

        async def get(request: Request) -> Response:
            ctx = depot.context("mirror")
            name = request.path_params["name"]
            row = await ctx.db.fetch_one(sa.select(mirrored).where(mirrored.c.name == name))
            if row is not None:
                ctx.upstream.hit(upstream)
                return await blob_response(ctx.blobs, f"sha256/{row.sha256}", request)
            expected = request.query_params["sha256"]

            async def finish(upload: Any) -> None:
                digest = upload.hexdigest("sha256")
                if digest != expected:
                    raise Unverified(f"sha256 is {digest}, the index says {expected}")
                await upload.commit(f"sha256/{digest}")
                await ctx.db.execute(
                    ctx.db.insert_or_ignore(mirrored).values(
                        name=name, sha256=digest, upstream_url=upstream
                    )
                )

            return await ctx.upstream.fetch_blob(
                request,
                key=("file", name),
                upstream=upstream,
                url=f"{upstream}/raw/files/{name}",
                open_upload=lambda: ctx.blobs.upload(f"incoming/{name}"),
                finish=finish,
            )

        async def listing(request: Request) -> Response:
            """The names the upstream lists, from the held copy of its list as freshness
            requires."""
            ctx = depot.context("mirror")
            documents = ctx.held_documents

            async def refresh(held: HeldDocument | None) -> HeldDocument:
                fetched = await ctx.upstream.fetch_document(
                    upstream, f"{upstream}/raw/", accept="application/json",
                    etag=held.etag if held else None,
                    last_modified=held.last_modified if held else None,
                )  # fmt: skip
                if fetched.status == 304 and held is not None:
                    return await documents.confirm(held)
                if fetched.status != 200:
                    raise NotFound(f"{upstream} lists no files")
                if not isinstance(json.loads(fetched.body), list):
                    raise UpstreamError(upstream, "the file list is not a JSON list")
                return await documents.store(
                    "listing", upstream, fetched.body, etag=fetched.etag,
                    last_modified=fetched.last_modified, replaces=held,
                )  # fmt: skip

            held = await documents.current("listing", upstream, refresh)
            return JSONResponse(sorted(entry["name"] for entry in await documents.read(held)))

        return [
            Mount(
                "/mirror",
                routes=[
                    Route("/-/listing", listing, methods=["GET"]),
                    Route("/{name}", get, methods=["GET", "HEAD"]),
                ],
            )
        ]


@pytest.fixture
def origin(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    return make_depot_server()


def put_file(origin: DepotServer, name: str, data: bytes) -> str:
    response = httpx.put(f"{origin.url}/raw/files/{name}", content=data, timeout=60)
    assert response.status_code == 201, response.text
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def proxy(origin: DepotServer) -> AsyncIterator[FaultProxy]:
    with FaultProxy(origin.url) as running:
        yield running


class Caching:
    """The caching depot under hypercorn in this process, and a client for it."""

    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.depot: Depot = app.state.depot
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, timeout=60)

    async def held(self, name: str) -> bool:
        ctx = self.depot.context("mirror")
        row = await ctx.db.fetch_one(sa.select(mirrored).where(mirrored.c.name == name))
        return row is not None

    async def metrics(self) -> str:
        return (await self.client.get("/metrics")).text


@pytest.fixture
async def caching(tmp_path: Path, proxy: FaultProxy) -> AsyncIterator[Caching]:
    from depot.core import create_app
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    plugins = load_plugins(extra=(MirrorPlugin(proxy.url),))
    app = create_app(
        plugins=plugins, store_path=tmp_path / "store", upstream_timeout=2.0, upstream_max_age=0
    )
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get(url + "/-/health")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
    caching = Caching(app, url)
    yield caching
    await caching.client.aclose()
    stop.set()
    await server


async def test_first_request_fetches_and_the_second_is_local(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(300_000)
    digest = put_file(origin, "a.bin", data)
    first = await caching.client.get(f"/mirror/a.bin?sha256={digest}")
    assert first.status_code == 200 and first.content == data
    second = await caching.client.get(f"/mirror/a.bin?sha256={digest}")
    assert second.status_code == 200 and second.content == data
    assert proxy.count("/raw/files/a.bin") == 1
    exposition = await caching.metrics()
    labels = {"ecosystem": "mirror", "upstream": proxy.url}
    assert metric(exposition, "depot_upstream_misses_total", **labels) == 1
    assert metric(exposition, "depot_upstream_hits_total", **labels) == 1
    assert metric(exposition, "depot_upstream_requests_total", **labels) == 1
    assert metric(exposition, "depot_upstream_bytes_total", **labels) == len(data)


async def test_twenty_concurrent_requests_make_one_upstream_request(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(2_000_000)
    digest = put_file(origin, "b.bin", data)
    proxy.add("slow", "/raw/files/b.bin", delay=0.5)
    answers = await asyncio.gather(
        *(caching.client.get(f"/mirror/b.bin?sha256={digest}") for _ in range(20))
    )
    assert all(a.status_code == 200 and a.content == data for a in answers)
    assert proxy.count("/raw/files/b.bin") == 1


async def test_a_large_body_of_unannounced_length_reaches_every_client_whole(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    # Chunked, larger than what a fetch keeps in memory: the copy moves to a file midway while
    # the clients read it.
    data = os.urandom(3_000_000)
    digest = put_file(origin, "chunked.bin", data)
    proxy.add("chunked", "/raw/files/chunked.bin")
    answers = await asyncio.gather(
        *(caching.client.get(f"/mirror/chunked.bin?sha256={digest}") for _ in range(5))
    )
    assert all(a.status_code == 200 and a.content == data for a in answers)
    assert proxy.count("/raw/files/chunked.bin") == 1
    assert await caching.held("chunked.bin")


async def test_the_first_client_gets_bytes_before_the_copy_is_stored(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(4_000_000)
    digest = put_file(origin, "c.bin", data)
    # The second half comes 1 s later (under the 2 s read timeout: a 2 s stall raced it).
    proxy.add("stall", "/raw/files/c.bin", delay=1.0)
    received = bytearray()
    async with caching.client.stream("GET", f"/mirror/c.bin?sha256={digest}") as response:
        async for chunk in response.aiter_bytes():
            if not received:
                assert not await caching.held("c.bin"), "bytes arrived only after storing"
            received += chunk
    assert bytes(received) == data
    assert await caching.held("c.bin")


async def test_a_client_that_hangs_up_does_not_spoil_the_copy(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(4_000_000)
    digest = put_file(origin, "d.bin", data)
    proxy.add("stall", "/raw/files/d.bin", delay=1.0)
    async with caching.client.stream("GET", f"/mirror/d.bin?sha256={digest}") as response:
        async for _chunk in response.aiter_bytes():
            break  # hang up after the first bytes
    for _ in range(200):
        if await caching.held("d.bin"):
            break
        await asyncio.sleep(0.05)
    again = await caching.client.get(f"/mirror/d.bin?sha256={digest}")
    assert again.content == data
    assert proxy.count("/raw/files/d.bin") == 1


async def test_tampered_bytes_are_refused_and_not_stored(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(200_000)
    digest = put_file(origin, "e.bin", data)
    proxy.add("tamper", "/raw/files/e.bin")
    with pytest.raises(httpx.HTTPError):
        # The body stops one byte short of its length: the client never holds tampered bytes.
        await caching.client.get(f"/mirror/e.bin?sha256={digest}")
    assert not await caching.held("e.bin")
    again = await caching.client.get(f"/mirror/e.bin?sha256={digest}")
    assert again.status_code == 502
    assert f"upstream {proxy.url}" in again.text and "sha256 is" in again.text
    assert proxy.count("/raw/files/e.bin") == 1  # the failure is remembered, not refetched
    exposition = await caching.metrics()
    assert metric(exposition, "depot_upstream_errors_total", ecosystem="mirror") == 1


async def test_a_truncated_body_is_not_stored_and_the_next_request_fetches_again(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(500_000)
    digest = put_file(origin, "f.bin", data)
    proxy.add("truncate", "/raw/files/f.bin", times=1)
    # Cut off before depot answered: a 502 naming the upstream; after its headers went out:
    # the connection closes short of the length. Either way the client knows it failed.
    try:
        answer = await caching.client.get(f"/mirror/f.bin?sha256={digest}")
    except httpx.HTTPError:
        pass
    else:
        assert answer.status_code == 502, answer.status_code
        assert f"upstream {proxy.url}" in answer.text
    assert not await caching.held("f.bin")
    again = await caching.client.get(f"/mirror/f.bin?sha256={digest}")
    assert again.status_code == 200 and again.content == data


async def test_an_upstream_answering_500_is_retried_then_a_502_naming_it(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    proxy.add("500", "/raw/files/g.bin")
    answer = await caching.client.get(f"/mirror/g.bin?sha256={'0' * 64}")
    assert answer.status_code == 502
    assert f"upstream {proxy.url}" in answer.text and "answered 500" in answer.text
    assert proxy.count("/raw/files/g.bin") == 3  # three attempts with backoff


async def test_a_500_then_success_is_answered_by_the_retry(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = b"retried"
    digest = put_file(origin, "h.bin", data)
    proxy.add("500", "/raw/files/h.bin", times=1)
    answer = await caching.client.get(f"/mirror/h.bin?sha256={digest}")
    assert answer.status_code == 200 and answer.content == data
    assert proxy.count("/raw/files/h.bin") == 2


async def test_an_upstream_too_slow_is_a_504(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    digest = put_file(origin, "i.bin", b"slow")
    proxy.add("slow", "/raw/files/i.bin", delay=5.0)  # --upstream-timeout is 2 s here
    answer = await caching.client.get(f"/mirror/i.bin?sha256={digest}")
    assert answer.status_code == 504 and "timed out" in answer.text


async def test_a_missing_upstream_object_is_a_404(proxy: FaultProxy, caching: Caching) -> None:
    answer = await caching.client.get(f"/mirror/nothing.bin?sha256={'0' * 64}")
    assert answer.status_code == 404 and proxy.url in answer.text


async def test_an_unreachable_upstream_is_a_502_naming_it(
    proxy: FaultProxy, caching: Caching
) -> None:
    proxy.stop()
    answer = await caching.client.get(f"/mirror/j.bin?sha256={'0' * 64}")
    assert answer.status_code == 502 and f"upstream {proxy.url}" in answer.text


async def test_shutdown_closes_the_session_and_cancels_fetches(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    data = os.urandom(100_000)
    digest = put_file(origin, "k.bin", data)
    proxy.add("stall", "/raw/files/k.bin", delay=30.0)
    request = asyncio.create_task(caching.client.get(f"/mirror/k.bin?sha256={digest}"))
    client = caching.depot.context("mirror").upstream
    for _ in range(200):
        if client._blobs:
            break
        await asyncio.sleep(0.05)
    await caching.depot.shutdown()
    assert not client._tasks and client._session is None
    request.cancel()
    with contextlib.suppress(BaseException):
        await request


async def test_a_held_document_is_served_before_it_is_written_and_written_before_shutdown_ends(
    origin: DepotServer, proxy: FaultProxy, caching: Caching, tmp_path: Path
) -> None:
    """A fetched document reaches its client without waiting for the database (here locked by
    another writer), and the write waiting behind it still lands when the depot shuts down."""
    put_file(origin, "w1.bin", b"one")
    database = tmp_path / "store" / "depot.db"
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # every other writer waits
        listing = await caching.client.get("/mirror/-/listing")
        assert listing.status_code == 200 and listing.json() == ["w1.bin"]
        query = "SELECT name FROM depot_upstream_documents WHERE ecosystem = 'mirror'"
        assert locker.execute(query).fetchall() == []  # not written yet
        shutdown = asyncio.create_task(caching.depot.shutdown())
        await asyncio.sleep(0.2)
        assert not shutdown.done()  # waiting for the write
        locker.execute("ROLLBACK")
        await shutdown
        assert locker.execute(query).fetchall() == [("listing",)]
    finally:
        locker.close()
    assert proxy.count("/raw/$") == 1


async def test_a_held_document_is_revalidated_when_due_and_served_stale_when_upstream_fails(
    origin: DepotServer, proxy: FaultProxy, caching: Caching
) -> None:
    """With --upstream-max-age 0 every request revalidates the held list: a file added upstream
    shows at once; with the upstream answering 500 the held copy is served, counted as stale;
    nothing held and the upstream failing is a 502 naming it."""
    proxy.add("500", "/raw/$", times=3)  # the three attempts of one fetch
    failed = await caching.client.get("/mirror/-/listing")
    assert failed.status_code == 502 and f"upstream {proxy.url}" in failed.text
    put_file(origin, "l1.bin", b"one")
    await asyncio.sleep(5.1)  # the failure is remembered for 5 s (UpstreamClient.is_down)
    assert (await caching.client.get("/mirror/-/listing")).json() == ["l1.bin"]
    put_file(origin, "l2.bin", b"two")
    assert (await caching.client.get("/mirror/-/listing")).json() == ["l1.bin", "l2.bin"]
    assert proxy.count("/raw/$") == 5
    proxy.add("500", "/raw/$")
    put_file(origin, "l3.bin", b"three")
    stale = await caching.client.get("/mirror/-/listing")
    assert stale.status_code == 200 and stale.json() == ["l1.bin", "l2.bin"]
    labels = {"ecosystem": "mirror", "upstream": proxy.url}
    assert metric(await caching.metrics(), "depot_upstream_stale_total", **labels) == 1
    rows = await caching.depot.context("mirror").db.fetch_all(
        sa.select(upstream_documents.c.name).where(upstream_documents.c.ecosystem == "mirror")
    )
    assert [row[0] for row in rows] == ["listing"]
