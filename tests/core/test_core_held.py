"""Documents held from upstreams (depot.core.held): one core table for every ecosystem.

A depot that cached packuments and project pages before they moved into the core's table keeps
serving them after the upgrade, from the database alone (a fresh process, upstream unreachable,
``--offline``), and the garbage collector still counts their blobs as live.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from depot.core.app import create_app
from depot.core.collector import collect
from depot.core.database import Database, Schema
from depot.core.held import upstream_documents
from depot.core.reachability import cache_items, gc_state
from depot.npm import store as npm_store
from depot.pypi import schema as pypi_schema

UNREACHABLE = "http://127.0.0.1:9/"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgresql":
        return {"database_url": request.getfixturevalue("postgres_url")}
    return {}


def _former_table(name: str, key: str) -> sa.Table:
    """An ecosystem's table of held documents as schema 3 had it."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column(key, sa.String(256), primary_key=True),
        *(c._copy() for c in upstream_documents.columns if c.name not in ("ecosystem", "name")),
    )


def _hold_blob(store_path: Path, ecosystem: str, key: str, document: dict[str, Any]) -> None:
    path = store_path / "blobs" / ecosystem / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(document).encode())


async def test_documents_held_before_the_core_table_are_served_after_the_upgrade(
    database_options: dict[str, Any], tmp_path: Path
) -> None:
    store_path = tmp_path / "store"
    store_path.mkdir()
    url = database_options.get("database_url") or f"sqlite:///{store_path / 'depot.db'}"
    packuments = _former_table("npm_upstream_packuments", "name")
    pages = _former_table("pypi_upstream_pages", "project")
    npm_tables = [t for t in npm_store.SCHEMA.tables] + [packuments]
    pypi_tables = [*pypi_schema.SCHEMA.tables, pages]
    db = Database(url)
    await db.connect()
    await db.migrate([
        Schema("core", 1, [gc_state, cache_items]),
        Schema("npm", 3, npm_tables),
        Schema("pypi", 3, pypi_tables),
    ])  # fmt: skip
    tarball = "http://upstream.test/old-held/-/old-held-1.0.0.tgz"
    packument = {
        "name": "old-held",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {
            "1.0.0": {
                "name": "old-held", "version": "1.0.0",
                "dist": {"tarball": tarball, "integrity": "sha512-" + "A" * 86 + "=="},
            }
        },
    }  # fmt: skip
    wheel = "old_held-1.0-py3-none-any.whl"
    page = {
        "name": "old-held",
        "upstream": "http://upstream.test/simple/",
        "files": [{"filename": wheel, "url": f"http://upstream.test/f/{wheel}",
                   "sha256": "ab" * 32, "size": 10}],
    }  # fmt: skip
    now = time.time()
    keys = {}
    for ecosystem, table, key_column, document in (
        ("npm", packuments, "name", packument),
        ("pypi", pages, "project", page),
    ):
        digest = hashlib.sha256(json.dumps(document).encode()).hexdigest()
        keys[ecosystem] = f"upstream/{'packuments' if ecosystem == 'npm' else 'pages'}/{digest}"
        _hold_blob(store_path, ecosystem, keys[ecosystem], document)
        await db.execute(
            table.insert().values(
                **{key_column: "old-held"}, upstream_url="http://upstream.test/",
                blob_key=keys[ecosystem], etag='"e1"', last_modified=None,
                fetched_at=now - 3600, checked_at=now - 3600,
            )
        )  # fmt: skip
    await db.disconnect()

    app = create_app(
        store_path=store_path, npm_upstream=UNREACHABLE, pypi_upstream=[UNREACHABLE],
        offline=True, **database_options,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        served = await client.get("/npm/old-held")
        assert served.status_code == 200, served.text
        assert served.json()["versions"]["1.0.0"]["dist"]["tarball"] == (
            "http://depot.test/npm/old-held/-/old-held-1.0.0.tgz"
        )
        simple = await client.get(
            "/python/simple/old-held/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        assert simple.status_code == 200, simple.text
        assert [f["filename"] for f in simple.json()["files"]] == [wheel]
        # Both are listed as cached in the search page, under the upstream they came from.
        search = await client.get("/-/browse/npm?q=old")
        assert "old-held" in search.text.partition("Cached from upstreams")[2]

        depot = app.state.depot
        ctx = depot.context("npm")
        rows = await ctx.db.fetch_all(sa.select(upstream_documents.c.ecosystem))
        assert sorted(r[0] for r in rows) == ["npm", "pypi"]
        # Their blobs are live: a collection taking everything unreferenced keeps them.
        await collect(depot, grace=0)
        for ecosystem, key in keys.items():
            assert (store_path / "blobs" / ecosystem / key).exists()
    await depot.shutdown()
