"""Retention of cached content, the core side: items an ecosystem declares fetched from an
upstream are evicted least recently used first when over --cache-max-size, or when unused for
--cache-max-age; published content never is. Use is recorded in batches.

The raw example stands in for a pull-through ecosystem (npm, pypi and nix are tested with their
real clients in tests/*/test_*_retention.py): this test's plugin declares some raw files cached
and evicts them the way an ecosystem would (rows, then blobs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from depot.core import create_app, hookimpl
from depot.core.collector import collect
from depot.core.plugins import load_plugins
from depot.core.reachability import cache_items


class RawAsCache:
    """Evicts raw files by name, as a pull-through ecosystem would evict what it fetched."""

    ecosystem = "raw"

    def __init__(self, depot: object) -> None:
        self.ctx = depot.context("raw")  # type: ignore[attr-defined]

    async def evict(self, items: Sequence[str]) -> None:
        from depot_raw.tables import raw_files

        rows = await self.ctx.db.fetch_all(
            sa.select(raw_files.c.sha256).where(raw_files.c.name.in_(list(items)))
        )
        await self.ctx.db.execute(raw_files.delete().where(raw_files.c.name.in_(list(items))))
        await self.ctx.release_blobs([f"sha256/{row[0]}" for row in rows])


class CachePlugin:
    @hookimpl
    def depot_cached_content(self, depot: object) -> list[object]:
        return [RawAsCache(depot)]


async def test_lru_eviction_over_max_size_never_touches_published_content(tmp_path: Path) -> None:
    app = create_app(
        plugins=load_plugins(extra=(CachePlugin(),)),
        store_path=tmp_path / "store",
        cache_max_size="2500",
    )
    depot = app.state.depot
    await depot.startup()
    ctx = depot.context("raw")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for name in ("published", "cached-old", "cached-used", "cached-new"):
                put = await client.put(f"/raw/files/{name}", content=name.encode() * 100)
                assert put.status_code == 201
            for name in ("cached-old", "cached-used", "cached-new"):  # fetched from upstream
                await ctx.cache_stored(name, 1000)
                time.sleep(0.01)  # distinct last-use times, in this order
            ctx.record_use("cached-old")  # served again: now the most recently used
            ctx.record_use("cached-used")
            assert (
                await depot.database.fetch_val(  # nothing written per use...
                    sa.select(sa.func.max(cache_items.c.last_used))
                )
                < time.time() - 0.005
            )
            await depot.use_recorder.flush()  # ...until the batch is written
            page = (await client.get("/")).text
            assert "least recently used first above 2.4 KiB" in page
            assert "cached from upstream: raw</td><td>3 items, 2.9 KiB" in page

            dry = await collect(depot, grace=3600, dry_run=True)
            assert dry.evicted["raw"].items == 1

            report = await collect(depot, grace=3600)

            assert (report.evicted["raw"].items, report.evicted["raw"].bytes) == (1, 1000)
            status = {
                name: (await client.get(f"/raw/files/{name}")).status_code
                for name in ("published", "cached-old", "cached-used", "cached-new")
            }
            # cached-new was used least recently (stored, never served); the cache is now at
            # 2000 <= 2500 bytes, and the published file was never a candidate.
            assert status == {
                "published": 200, "cached-old": 200, "cached-used": 200, "cached-new": 404,
            }  # fmt: skip
            # The operator sees what retention dropped (the dry run counted nothing).
            metrics = (await client.get("/metrics")).text
            assert 'depot_cache_evicted_items{ecosystem="raw"} 1.0' in metrics
            assert 'depot_cache_evicted_bytes{ecosystem="raw"} 1000.0' in metrics
    finally:
        await depot.shutdown()


async def test_max_age_evicts_items_unused_for_longer(tmp_path: Path) -> None:
    app = create_app(
        plugins=load_plugins(extra=(CachePlugin(),)),
        store_path=tmp_path / "store",
        cache_max_age="1h",
    )
    depot = app.state.depot
    await depot.startup()
    ctx = depot.context("raw")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for name in ("stale", "fresh"):
                assert (await c.put(f"/raw/files/{name}", content=name.encode())).status_code == 201
                await ctx.cache_stored(name, len(name))
            await depot.database.execute(
                cache_items.update()
                .where(cache_items.c.item == "stale")
                .values(last_used=time.time() - 7200)
            )
            report = await collect(depot, grace=3600)
            assert report.evicted["raw"].items == 1
            assert (await c.get("/raw/files/stale")).status_code == 404
            assert (await c.get("/raw/files/fresh")).status_code == 200
    finally:
        await depot.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Eviction's keyset paging compares row values: both databases must accept it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/depot.db"
    return request.getfixturevalue("postgres_url")


async def test_a_dry_run_over_age_and_size_reports_what_the_real_run_evicts(
    tmp_path: Path, database_url: str
) -> None:
    app = create_app(
        plugins=load_plugins(extra=(CachePlugin(),)),
        store_path=tmp_path / "store",
        database_url=database_url,
        cache_max_age="1h",
        cache_max_size="500",
    )
    depot = app.state.depot
    await depot.startup()
    ctx = depot.context("raw")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            # "stale" goes by age; then "older" (300) brings the rest (700) under 500 bytes.
            for name, size, age in (("stale", 1000, 7200), ("older", 300, 60), ("newer", 400, 0)):
                assert (await c.put(f"/raw/files/{name}", content=name.encode())).status_code == 201
                await ctx.cache_stored(name, size)
                await depot.database.execute(
                    cache_items.update()
                    .where(cache_items.c.item == name)
                    .values(last_used=time.time() - age)
                )
            dry = await collect(depot, grace=3600, dry_run=True)
            assert (dry.evicted["raw"].items, dry.evicted["raw"].bytes) == (2, 1300)
            assert (await c.get("/raw/files/stale")).status_code == 200  # nothing evicted
            report = await collect(depot, grace=3600)
            assert (report.evicted["raw"].items, report.evicted["raw"].bytes) == (2, 1300)
            status = {
                n: (await c.get(f"/raw/files/{n}")).status_code for n in ("stale", "older", "newer")
            }
            assert status == {"stale": 404, "older": 404, "newer": 200}
    finally:
        await depot.shutdown()
