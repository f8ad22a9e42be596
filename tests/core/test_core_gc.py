"""Garbage collection in the core, through the example raw plugin (a third-party ecosystem):
unreferenced blobs older than the grace period go, everything else stays; one collector at a
time; a row never points at a blob a collection removed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core import create_app
from depot.core.app import BlobMissing, Depot
from depot.core.collector import collect, last_collection
from depot.core.reachability import collector_lock

TWO_HOURS_AGO = time.time() - 7200


def backdate(path: Path) -> None:
    os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'depot.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def depot(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[Depot, httpx.AsyncClient]]:
    app = create_app(store_path=tmp_path / "store", database_url=database_url)
    depot: Depot = app.state.depot
    await depot.startup()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        yield depot, client
    await depot.shutdown()


def blob_files(depot: Depot) -> set[str]:
    root = depot.settings.store_path / "blobs"
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
    }


async def store_raw(client: httpx.AsyncClient, name: str, body: bytes) -> str:
    answer = await client.put(f"/raw/files/{name}", content=body)
    assert answer.status_code == 201, answer.text
    return f"raw/sha256/{answer.json()['sha256']}"


def orphan(depot: Depot, key: str, size: int = 100, old: bool = True) -> Path:
    path = depot.settings.store_path / "blobs" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"o" * size)
    if old:
        backdate(path)
    return path


async def test_unreferenced_blobs_older_than_the_grace_period_are_removed(depot: Any) -> None:
    depot, client = depot
    live = await store_raw(client, "kept.txt", b"published bytes")
    backdate(depot.settings.store_path / "blobs" / live)  # old, but a row points at it
    orphan(depot, "raw/sha256/" + "a" * 64, size=300)
    young = orphan(depot, "raw/sha256/" + "b" * 64, old=False)  # an upload whose row is coming

    report = await collect(depot, grace=3600)

    assert blob_files(depot) == {live, str(young.relative_to(depot.settings.store_path / "blobs"))}
    assert report.ecosystems["raw"].removed == 1
    assert report.ecosystems["raw"].removed_bytes == 300
    answer = await client.get("/raw/files/kept.txt")
    assert answer.status_code == 200 and answer.content == b"published bytes"
    recorded = await last_collection(depot.database)
    assert recorded is not None and recorded.ecosystems["raw"].removed == 1


async def test_grace_zero_takes_young_orphans_too(depot: Any) -> None:
    depot, client = depot
    live = await store_raw(client, "kept.txt", b"published bytes")
    orphan(depot, "raw/sha256/" + "b" * 64, old=False)
    await collect(depot, grace=0)
    assert blob_files(depot) == {live}


async def test_dry_run_removes_nothing_and_reports_what_it_would(depot: Any) -> None:
    depot, client = depot
    await store_raw(client, "kept.txt", b"published bytes")
    orphan(depot, "raw/sha256/" + "a" * 64, size=50)
    leftover = orphan(depot, ".tmp/upload-in-progress", size=7)
    before = blob_files(depot)

    report = await collect(depot, grace=3600, dry_run=True)

    assert blob_files(depot) == before and leftover.exists()
    assert (report.ecosystems["raw"].removed, report.ecosystems["raw"].removed_bytes) == (1, 50)
    assert (report.leftovers.objects, report.leftovers.bytes) == (1, 7)
    assert await last_collection(depot.database) is None  # a dry run is not a collection


async def test_temporary_files_of_unfinished_uploads_are_removed_after_the_grace_period(
    depot: Any,
) -> None:
    depot, _ = depot
    stale = orphan(depot, ".tmp/crashed-upload", size=11)
    fresh = orphan(depot, ".tmp/running-upload", old=False)
    report = await collect(depot, grace=3600)
    assert not stale.exists() and fresh.exists()
    assert (report.leftovers.objects, report.leftovers.bytes) == (1, 11)


async def test_a_row_never_points_at_a_blob_a_collection_removed(depot: Any) -> None:
    """A row that comes to point at an old blob (a NAR uploaded before a failed ``nix copy``)
    is checked inside the reference lock: after a collection took it, the insert is refused."""
    depot, _ = depot
    ctx = depot.context("raw")
    orphan(depot, "raw/sha256/" + "c" * 64)
    await collect(depot, grace=3600)
    with pytest.raises(BlobMissing):
        async with ctx.reference_blobs("sha256/" + "c" * 64):
            pytest.fail("the block must not run for a missing blob")


async def test_only_one_collection_runs_at_a_time(depot: Any) -> None:
    depot, _ = depot
    orphan(depot, "raw/sha256/" + "e" * 64, size=1, old=True)
    holding, finished = asyncio.Event(), asyncio.Event()

    async def another_collector() -> None:  # a task of its own: its own database connection
        async with depot.database.connection(), collector_lock(depot.database) as acquired:
            assert acquired
            holding.set()
            await finished.wait()

    # Another collector is running...
    other = asyncio.create_task(another_collector())
    await holding.wait()
    report = await collect(depot, grace=3600)
    finished.set()
    await other
    # ...so this one skips and removes nothing;
    assert report.skipped and report.removed == 0 and blob_files(depot)
    # once that collector has finished, the next collection runs.
    report = await collect(depot, grace=3600)
    assert not report.skipped and report.removed == 1 and not blob_files(depot)


async def test_removal_on_purpose_keeps_a_blob_another_row_shares(depot: Any) -> None:
    depot, client = depot
    ctx = depot.context("raw")
    key = await store_raw(client, "one.txt", b"same bytes")
    assert await store_raw(client, "two.txt", b"same bytes") == key
    # Deleting the row of one.txt must not take the blob two.txt still points at.
    from depot_raw.tables import raw_files

    await depot.database.execute(raw_files.delete().where(raw_files.c.name == "one.txt"))
    assert await ctx.release_blobs([key.removeprefix("raw/")]) == []
    await depot.database.execute(raw_files.delete())
    removed = await ctx.release_blobs([key.removeprefix("raw/")])
    assert [e.key for e in removed] == [key.removeprefix("raw/")]
    assert blob_files(depot) == set()


def test_depot_gc_command_prints_counts_per_ecosystem(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "DEPOT_STORE_PATH": str(store)}
    gc = [sys.executable, "-m", "depot.core", "gc"]
    first = subprocess.run([*gc, "--dry-run"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    blob = store / "blobs" / "raw" / "sha256" / ("d" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 2048)
    backdate(blob)

    dry = subprocess.run(
        [*gc, "--dry-run", "--grace", "1h"], env=env, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "raw: would remove 1 blob (2.0 KiB) of 1" in dry.stdout
    assert "dry run: would remove 1 object" in dry.stdout
    assert blob.exists()

    kept = subprocess.run([*gc, "--grace", "3h"], env=env, capture_output=True, text=True)
    assert "raw: removed 0 blobs" in kept.stdout and blob.exists()

    done = subprocess.run([*gc, "--grace", "1h"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "raw: removed 1 blob (2.0 KiB) of 1; 0 blobs (0 B) kept" in done.stdout
    assert not blob.exists()


def test_depot_gc_refuses_a_bad_duration_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "depot.core",
            "gc",
            "--grace",
            "soon",
            "--store-path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "is not a duration" in result.stderr and "Traceback" not in result.stderr


def test_serve_gc_interval_collects_in_the_background_and_stops_cleanly(
    make_depot_server: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    blob = store / "blobs" / "raw" / "sha256" / ("e" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    backdate(blob)
    server = make_depot_server("--gc-interval", "1h", "--gc-grace", "1h", store_path=store)
    deadline = time.monotonic() + 90
    # The blob goes before the collection records and logs its report: wait for both, or a
    # stop in between cancels the collection before its line (a race on a loaded machine).
    while (blob.exists() or "collection finished" not in server.log()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not blob.exists(), server.log()
    assert "collection finished" in server.log()
    assert server.stop() == 0


async def test_metrics_and_the_index_page_show_what_collections_reclaimed(depot: Any) -> None:
    from depot.core.testing import metric

    depot, client = depot
    live = await store_raw(client, "kept.txt", b"published bytes")
    page = (await client.get("/")).text
    assert "Storage and retention" in page and "last collection</td><td>none yet" in page
    assert "unreferenced blobs younger than 24h are kept" in page
    for size in (300, 200):
        orphan(depot, f"raw/sha256/{size:064x}", size=size)
        await collect(depot, grace=3600)

    exposition = (await client.get("/metrics")).text
    assert metric(exposition, "depot_gc_reclaimed_bytes", ecosystem="raw") == 500
    assert metric(exposition, "depot_gc_reclaimed_objects", ecosystem="raw") == 2
    assert metric(exposition, "depot_blob_store_bytes", ecosystem="raw") == len(b"published bytes")
    assert metric(exposition, "depot_blob_store_objects", ecosystem="raw") == 1
    assert metric(exposition, "depot_gc_last_run_timestamp_seconds") > time.time() - 60
    assert metric(exposition, "depot_gc_last_run_duration_seconds") > 0
    page = (await client.get("/")).text
    assert "removed 1 objects (200 B)" in page
    assert "store size: raw</td><td>1 blobs, 15 B" in page
    assert live


async def test_group_committed_and_serving_loop_reference_blocks_all_land(depot: Any) -> None:
    """Rows written through ``ctx.db.write`` (on SQLite a group commit on its own thread) and
    through ``reference_blobs`` on the serving loop, at the same time: all of them land."""
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from depot_raw.tables import raw_files

    depot, client = depot
    ctx = depot.context("raw")
    key = (await store_raw(client, "seed", b"shared bytes"))[len("raw/") :]
    sha256 = key.removeprefix("sha256/")

    async def written(i: int) -> None:
        async def rows() -> None:
            async with ctx.reference_blobs(key):
                await ctx.db.execute(
                    raw_files.insert().values(
                        name=f"w{i}", sha256=sha256, size=12, uploaded_at=datetime.now(UTC)
                    )
                )

        await ctx.db.write(rows)

    await asyncio.gather(
        *(written(i) for i in range(40)),
        *(store_raw(client, f"u{i}", f"bytes {i}".encode()) for i in range(40)),
    )
    names = {r[0] for r in await ctx.db.fetch_all(sa.select(raw_files.c.name))}
    assert names == {"seed"} | {f"w{i}" for i in range(40)} | {f"u{i}" for i in range(40)}
