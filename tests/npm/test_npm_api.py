"""The registry's HTTP API in-process: forms, caching headers, URLs, and refusal of bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core import create_app

from .conftest import make_tgz, publish_body  # noqa: TID252 - test helpers


@pytest.fixture(params=["sqlite", "postgresql"])
def database_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """SQLite in the store, or a fresh database on the machine's PostgreSQL server."""
    if request.param == "postgresql":
        return {"database_url": request.getfixturevalue("postgres_url")}
    return {}


@pytest.fixture
async def app_client(
    database_options: dict[str, Any], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process depot (no lifespan, as when mounted) on each database."""
    app = create_app(store_path=tmp_path / "store", **database_options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        yield client
    await app.state.depot.shutdown()


ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"


async def put_publish(
    client: httpx.AsyncClient, name_or_prefix: str, name: Any = None, body: Any = None
) -> httpx.Response:
    """PUT a publish document as npm does (``@scope%2fname``), optionally under a mount prefix."""
    if body is None:
        prefix, name, body = "", name_or_prefix, name
    else:
        prefix = name_or_prefix
    escaped = name.replace("/", "%2f")
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.put(
        f"{prefix}/npm/{escaped}", content=content, headers={"content-type": "application/json"}
    )


def stored_tarballs(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob("*") if p.is_file() and p.name.endswith(".tgz")]


async def test_packument_forms_etag_and_scoped_spellings(app_client: httpx.AsyncClient) -> None:
    tgz = make_tgz("@s/p", "1.0.0")
    assert (
        await put_publish(app_client, "@s/p", publish_body("@s/p", "1.0.0", tgz))
    ).status_code == 201

    full = await app_client.get("/npm/@s%2fp")
    assert full.status_code == 200 and full.headers["content-type"].startswith("application/json")
    assert full.json()["_id"] == "@s/p" and "time" in full.json()
    assert (await app_client.get("/npm/@s/p")).json() == full.json()
    assert (await app_client.get("/npm/%40s%2Fp")).json() == full.json()

    abbreviated = await app_client.get("/npm/@s%2fp", headers={"accept": ABBREVIATED})
    assert abbreviated.headers["content-type"].startswith("application/vnd.npm.install-v1+json")
    document = abbreviated.json()
    assert set(document) == {"name", "dist-tags", "versions", "modified"}
    dist = document["versions"]["1.0.0"]["dist"]
    assert dist["tarball"] == "http://depot.test/npm/@s/p/-/p-1.0.0.tgz"
    assert dist["shasum"] == hashlib.sha1(tgz).hexdigest()  # noqa: S324

    etag = abbreviated.headers["etag"]
    cached = await app_client.get(
        "/npm/@s%2fp", headers={"accept": ABBREVIATED, "if-none-match": etag}
    )
    assert cached.status_code == 304
    tgz2 = make_tgz("@s/p", "1.1.0")
    await put_publish(app_client, "@s/p", publish_body("@s/p", "1.1.0", tgz2))
    changed = await app_client.get(
        "/npm/@s%2fp", headers={"accept": ABBREVIATED, "if-none-match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["modified"] >= document["modified"]


async def test_tarballs_are_served_as_stored(app_client: httpx.AsyncClient) -> None:
    tgz = make_tgz("p", "1.0.0")
    await put_publish(app_client, "p", publish_body("p", "1.0.0", tgz))
    head = await app_client.head("/npm/p/-/p-1.0.0.tgz")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(tgz))
    got = await app_client.get("/npm/p/-/p-1.0.0.tgz")
    assert got.content == tgz and "content-encoding" not in got.headers
    version = await app_client.get("/npm/p/latest")
    assert version.json()["version"] == "1.0.0"
    assert (
        (await app_client.get("/npm/p/1.0.0"))
        .json()["dist"]["tarball"]
        .endswith("/npm/p/-/p-1.0.0.tgz")
    )
    assert (await app_client.get("/npm/p/-/p-9.9.9.tgz")).status_code == 404


async def test_tarball_urls_follow_the_host_the_client_used(app_client: httpx.AsyncClient) -> None:
    await put_publish(app_client, "p", publish_body("p", "1.0.0", make_tgz("p", "1.0.0")))
    doc = (await app_client.get("/npm/p", headers={"host": "mirror.example:8443"})).json()
    assert (
        doc["versions"]["1.0.0"]["dist"]["tarball"]
        == "http://mirror.example:8443/npm/p/-/p-1.0.0.tgz"
    )


async def test_base_url_overrides_the_request(tmp_path: Path) -> None:
    app = create_app(store_path=tmp_path / "store", base_url="https://depot.example.com/root")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inside") as client:
        await put_publish(client, "p", publish_body("p", "1.0.0", make_tgz("p", "1.0.0")))
        doc = (await client.get("/npm/p")).json()
    await app.state.depot.shutdown()
    assert (
        doc["versions"]["1.0.0"]["dist"]["tarball"]
        == "https://depot.example.com/root/npm/p/-/p-1.0.0.tgz"
    )


def _bad_publishes() -> list[Any]:
    tgz = make_tgz("p", "1.0.0")
    other = make_tgz("p", "1.0.0", manifest={"name": "q", "version": "1.0.0"})
    wrong_version = make_tgz("p", "1.0.0", manifest={"name": "p", "version": "2.0.0"})
    good = publish_body("p", "1.0.0", tgz)
    mismatch = publish_body("p", "1.0.0", tgz)
    mismatch["versions"]["1.0.0"]["dist"]["integrity"] = publish_body("p", "1.0.0", b"x")[
        "versions"
    ]["1.0.0"]["dist"]["integrity"]
    bad_shasum = publish_body("p", "1.0.0", tgz)
    bad_shasum["versions"]["1.0.0"]["dist"]["shasum"] = "0" * 40
    no_hashes = publish_body("p", "1.0.0", tgz)
    no_hashes["versions"]["1.0.0"]["dist"] = {}
    garbage = publish_body("p", "1.0.0", b"not a tarball")
    bad_b64 = publish_body("p", "1.0.0", tgz)
    bad_b64["_attachments"]["p-1.0.0.tgz"]["data"] = "!!!not base64!!!"
    return [
        pytest.param("p", b"{not json", 400, id="malformed-json"),
        pytest.param("p", b"[]", 400, id="not-an-object"),
        pytest.param("p", mismatch, 400, id="integrity-mismatch"),
        pytest.param("p", bad_shasum, 400, id="shasum-mismatch"),
        pytest.param("p", no_hashes, 400, id="no-hashes"),
        pytest.param("p", garbage, 400, id="not-a-tarball"),
        pytest.param("p", bad_b64, 400, id="bad-base64"),
        pytest.param(
            "p", publish_body("p", "1.0.0", other), 400, id="tarball-names-another-package"
        ),
        pytest.param(
            "p", publish_body("p", "1.0.0", wrong_version), 400, id="tarball-names-another-version"
        ),
        pytest.param(
            "node_modules",
            publish_body("node_modules", "1.0.0", make_tgz("node_modules", "1.0.0")),
            400,
            id="reserved-name",
        ),
        pytest.param(
            ".p", publish_body(".p", "1.0.0", make_tgz(".p", "1.0.0")), 400, id="dot-name"
        ),
        pytest.param(
            "p", publish_body("p", "1.0", make_tgz("p", "1.0")), 400, id="non-semver-version"
        ),
        pytest.param(
            "p", publish_body("p", "v1.0.0", make_tgz("p", "v1.0.0")), 400, id="v-prefixed-version"
        ),
        pytest.param("q", good, 400, id="document-names-another-package"),
        pytest.param("p", {**good, "dist-tags": {"1.x": "1.0.0"}}, 400, id="range-as-tag"),
    ]


@pytest.mark.parametrize(("name", "body", "status"), _bad_publishes())
async def test_bad_publishes_are_refused_and_nothing_is_stored(
    app_client: httpx.AsyncClient, tmp_path: Path, name: str, body: Any, status: int
) -> None:
    response = await put_publish(app_client, name, body)
    assert response.status_code == status
    assert response.json()["error"]
    assert (await app_client.get(f"/npm/{name}")).status_code in (400, 404)
    assert stored_tarballs(tmp_path / "store") == []


@pytest.mark.parametrize(
    "path",
    [
        "/npm/..%2f..%2fetc%2fpasswd",
        "/npm/p/-/..%2f..%2fx.tgz",
        "/npm/@s%2f..",
        "/npm/p/-/q-1.0.0.tgz",
        "/npm/p/..%2f1.0.0",
    ],
)
async def test_traversal_is_refused(
    app_client: httpx.AsyncClient, tmp_path: Path, path: str
) -> None:
    await put_publish(app_client, "p", publish_body("p", "1.0.0", make_tgz("p", "1.0.0")))
    for method in ("GET", "PUT"):
        response = await app_client.request(method, path, content=make_tgz("p", "1.0.0"))
        assert 400 <= response.status_code < 500, (method, path, response.status_code)
    assert len(stored_tarballs(tmp_path / "store")) == 1


async def test_a_published_version_is_never_replaced(app_client: httpx.AsyncClient) -> None:
    first = make_tgz("p", "1.0.0")
    second = make_tgz(
        "p", "1.0.0", manifest={"name": "p", "version": "1.0.0", "description": "new"}
    )
    assert (
        await put_publish(app_client, "p", publish_body("p", "1.0.0", first))
    ).status_code == 201
    again = await put_publish(app_client, "p", publish_body("p", "1.0.0", second))
    assert again.status_code == 409 and "previously published" in again.json()["error"]
    assert (await app_client.get("/npm/p/-/p-1.0.0.tgz")).content == first
    pushed = await app_client.put("/npm/p/-/p-1.0.0.tgz", content=second)
    assert pushed.status_code == 409


async def test_concurrent_publishes_of_different_versions_keep_all(
    app_client: httpx.AsyncClient,
) -> None:
    versions = [f"1.{i}.0" for i in range(12)]
    responses = await asyncio.gather(
        *(
            put_publish(app_client, "busy", publish_body("busy", v, make_tgz("busy", v)))
            for v in versions
        )
    )
    assert [r.status_code for r in responses] == [201] * len(versions)
    document = (await app_client.get("/npm/busy")).json()
    assert sorted(document["versions"]) == sorted(versions)
    assert document["dist-tags"]["latest"] == "1.11.0"


async def test_push_api_verifies_the_version_document_against_the_tarball(
    app_client: httpx.AsyncClient,
) -> None:
    tgz = make_tgz("@s/pushed", "2.0.0")
    manifest = publish_body("@s/pushed", "2.0.0", tgz)["versions"]["2.0.0"]
    early = await app_client.put("/npm/@s%2fpushed/2.0.0", json=manifest)
    assert early.status_code == 400  # no tarball yet
    assert (await app_client.head("/npm/@s/pushed/-/pushed-2.0.0.tgz")).status_code == 404
    assert (
        await app_client.put("/npm/@s/pushed/-/pushed-2.0.0.tgz", content=tgz)
    ).status_code == 201
    lying = json.loads(json.dumps(manifest))
    lying["dist"]["shasum"] = "1" * 40
    lying["dist"]["integrity"] = None
    assert (await app_client.put("/npm/@s%2fpushed/2.0.0", json=lying)).status_code == 400
    lying["dist"]["shasum"] = ["not", "a", "string"]
    answer = await app_client.put("/npm/@s%2fpushed/2.0.0", json=lying)
    assert answer.status_code == 400 and "must be a string" in answer.text
    assert (await app_client.head("/npm/@s%2fpushed/2.0.0")).status_code == 404
    assert (await app_client.put("/npm/@s%2fpushed/2.0.0", json=manifest)).status_code == 201
    assert (
        await app_client.put("/npm/@s%2fpushed/2.0.0", json=manifest)
    ).status_code == 200  # resumed push
    assert (await app_client.head("/npm/@s%2fpushed/2.0.0")).status_code == 200


async def test_dist_tag_api(app_client: httpx.AsyncClient) -> None:
    for version in ("1.0.0", "2.0.0"):
        await put_publish(app_client, "t", publish_body("t", version, make_tgz("t", version)))
    assert (await app_client.put("/npm/-/package/t/dist-tags/old", json="1.0.0")).status_code == 200
    assert (await app_client.get("/npm/-/package/t/dist-tags")).json() == {
        "latest": "2.0.0",
        "old": "1.0.0",
    }
    assert (
        await app_client.put("/npm/-/package/t/dist-tags/future", json="9.0.0")
    ).status_code == 404
    assert (await app_client.put("/npm/-/package/t/dist-tags/1.x", json="1.0.0")).status_code == 400
    assert (await app_client.delete("/npm/-/package/t/dist-tags/old")).status_code == 200
    assert (await app_client.get("/npm/-/package/t/dist-tags")).json() == {"latest": "2.0.0"}


async def test_tarball_urls_include_the_mount_prefix(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    depot = create_app(store_path=tmp_path / "store")
    outer = Starlette(routes=[Mount("/registry", app=depot)])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://corp.example") as client:
        body = publish_body("@s/m", "1.0.0", make_tgz("@s/m", "1.0.0"))
        assert (await put_publish(client, "/registry", "@s/m", body)).status_code == 201
        doc = (await client.get("/registry/npm/@s%2fm", headers={"accept": ABBREVIATED})).json()
        tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
        assert tarball == "http://corp.example/registry/npm/@s/m/-/m-1.0.0.tgz"
        assert (await client.get(tarball)).status_code == 200
    await depot.state.depot.shutdown()


async def test_browse_and_front_page_show_packages(app_client: httpx.AsyncClient) -> None:
    for version in ("1.0.0", "1.2.0"):
        await put_publish(
            app_client, "@s/shown", publish_body("@s/shown", version, make_tgz("@s/shown", version))
        )
    browse = await app_client.get("/-/browse/npm", params={"q": "SHOWN"})
    assert browse.status_code == 200
    assert "@s/shown" in browse.text and "1.2.0" in browse.text
    front = (await app_client.get("/")).text
    assert "@s/shown@1.2.0" in front and "_authToken" in front


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/npm/p", 405), ("PATCH", "/npm/p/-/p-1.0.0.tgz", 405), ("GET", "/npm/p/a/b/c", 404),
     ("POST", "/npm/-/v1/login", 404), ("PUT", "/npm/-/user/org.couchdb.user:me", 400),
     ("PUT", "/npm/-/user/org.couchdb.user:a%20b", 400), ("GET", "/npm/-/user/x", 404)],
)  # fmt: skip
async def test_other_requests_get_json_errors(
    app_client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await app_client.request(method, path, json={})
    assert response.status_code == status
    assert response.json()["error"]
    assert (await app_client.get("/npm/-/whoami")).json() == {"username": "anonymous"}


async def test_a_pruning_put_without_versions_unpublishes_nothing(
    app_client: httpx.AsyncClient,
) -> None:
    await put_publish(app_client, "keep", publish_body("keep", "1.0.0", make_tgz("keep", "1.0.0")))
    rev = (await app_client.get("/npm/keep?write=true")).json()["_rev"]
    response = await app_client.put(f"/npm/keep/-rev/{rev}", json={"name": "keep"})
    assert response.status_code == 400
    assert list((await app_client.get("/npm/keep")).json()["versions"]) == ["1.0.0"]
    stale = await app_client.delete("/npm/keep/-rev/1-stale")
    assert stale.status_code == 409


def _publishes_that_lie() -> list[Any]:
    """Publish or update documents that would be answered 201 and publish nothing they claim."""
    tgz = make_tgz("p", "2.0.0")
    string_length = publish_body("p", "2.0.0", tgz)
    string_length["_attachments"]["p-2.0.0.tgz"]["length"] = str(len(tgz))
    missing_attachment = publish_body("p", "2.0.0", tgz)
    missing_attachment["versions"]["3.0.0"] = {"name": "p", "version": "3.0.0"}
    list_tag = publish_body("p", "2.0.0", tgz, **{"dist-tags": {"latest": ["2.0.0"]}})
    without_data = publish_body("p", "2.0.0", tgz)
    del without_data["_attachments"]
    junk = {"_id": "p", "name": "p", **{f"junk{i}": i for i in range(200_000)}}
    return [
        pytest.param({"_id": "p", "name": "p", "versions": None}, id="versions-null"),
        pytest.param({"_id": "p", "name": "p"}, id="no-versions"),
        pytest.param(junk, id="200000-junk-keys"),
        pytest.param(
            {"name": "p", "_rev": "\x00\x01\x02", "versions": {"1.0.0": {}}}, id="control-rev"
        ),
        pytest.param(without_data, id="new-version-without-attachment"),
        pytest.param(missing_attachment, id="one-version-without-attachment"),
        pytest.param(string_length, id="string-length"),
        pytest.param(list_tag, id="dist-tag-not-a-string"),
    ]


@pytest.mark.parametrize("body", _publishes_that_lie())
async def test_publishes_that_change_nothing_or_lie_are_refused(
    app_client: httpx.AsyncClient, tmp_path: Path, body: Any
) -> None:
    first = publish_body("p", "1.0.0", make_tgz("p", "1.0.0"))
    assert (await put_publish(app_client, "p", first)).status_code == 201
    before = (await app_client.get("/npm/p")).json()
    response = await put_publish(app_client, "p", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    after = (await app_client.get("/npm/p")).json()
    assert after["versions"].keys() == before["versions"].keys() == {"1.0.0"}
    assert after["dist-tags"] == before["dist-tags"]
    assert len(stored_tarballs(tmp_path / "store")) == 1


async def test_a_deprecation_with_a_stale_rev_is_a_conflict(app_client: httpx.AsyncClient) -> None:
    await put_publish(app_client, "d", publish_body("d", "1.0.0", make_tgz("d", "1.0.0")))
    document = (await app_client.get("/npm/d?write=true")).json()
    await put_publish(app_client, "d", publish_body("d", "1.1.0", make_tgz("d", "1.1.0")))
    document["versions"]["1.0.0"]["deprecated"] = "use 1.1"
    assert (await put_publish(app_client, "d", document)).status_code == 409
    fresh = (await app_client.get("/npm/d?write=true")).json()
    fresh["versions"]["1.0.0"]["deprecated"] = "use 1.1"
    assert (await put_publish(app_client, "d", fresh)).status_code == 201
    assert (await app_client.get("/npm/d/1.0.0")).json()["deprecated"] == "use 1.1"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/npm/q", b"[" * 100_000),
        ("/npm/q", b'{"name": "q", "versions": {"1.0.0": ' + b"[" * 100_000 + b"}}"),
        ("/npm/q", b'{"name": "q", "n": ' + b"1" * 100_000 + b"}"),
        ("/npm/q/1.0.0", b'{"name": "q", "version": "1.0.0", "n": ' + b"9" * 100_000 + b"}"),
        ("/npm/q/1.0.0", b"[" * 100_000),
        ("/npm/-/package/q/dist-tags/beta", b"[" * 100_000),
        ("/npm/q/-rev/1-0", b"{" * 100_000),
    ],
)
async def test_deep_json_and_long_numbers_are_400(
    app_client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    await put_publish(app_client, "q", publish_body("q", "1.0.0", make_tgz("q", "1.0.0")))
    response = await app_client.put(path, content=body)
    assert response.status_code == 400, response.text
    assert "deeper than" in response.json()["error"] or "longer than" in response.json()["error"]


async def test_a_long_search_text_is_400_not_an_outage(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/npm/-/v1/search", params={"text": "a" * 60_000})
    assert response.status_code == 400
    assert response.json()["error"] == "the search text is longer than 256 characters"


async def test_package_readme_gives_pages_the_latest_publishs_readme(
    database_options: dict[str, Any], tmp_path: Path
) -> None:
    from depot.npm.store import package_readme

    app = create_app(store_path=tmp_path / "store", **database_options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        for version, readme in (("1.0.0", "# one"), ("1.1.0", "# two")):
            body = publish_body("@s/doc", version, make_tgz("@s/doc", version))
            body["versions"][version].update(readme=readme, readmeFilename="README.md")
            body["description"] = f"release {version}"
            assert (await put_publish(client, "@s/doc", body)).status_code == 201
        db = app.state.depot.context("npm").db
        found = await package_readme(db, "@s/doc")
        assert found is not None
        assert (found.description, found.readme, found.readme_filename) == (
            "release 1.1.0",
            "# two",
            "README.md",
        )
        assert await package_readme(db, "@s/none") is None
    await app.state.depot.shutdown()


async def test_a_schema_1_registry_is_migrated_and_shows_its_readmes(
    database_options: dict[str, Any], tmp_path: Path
) -> None:
    """A package published before schema 2 keeps serving, its readme lifted to the top level."""
    import sqlalchemy as sa
    from depot.core.database import Database, Schema
    from depot.npm import store

    store_path = tmp_path / "store"
    store_path.mkdir()
    url = database_options.get("database_url") or f"sqlite:///{store_path / 'depot.db'}"
    old_metadata = sa.MetaData()
    old_packages = sa.Table(
        "npm_packages",
        old_metadata,
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("created", sa.String(32), nullable=False),
        sa.Column("modified", sa.String(32), nullable=False),
        sa.Column("serial", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fields", sa.JSON, nullable=False),
    )
    # Schema 1's versions and tarballs: today's, without what schema 3 added (provenance).
    old_tables = [old_packages] + [
        sa.Table(t.name, old_metadata, *(c._copy() for c in t.columns if c.name != "provenance"))
        for t in (store.versions, store.tarballs)
    ]
    db = Database(url)
    await db.connect()
    await db.migrate([Schema("npm", 1, old_tables)])
    manifest = {"name": "legacy", "version": "1.0.0", "readme": "# from v1", "description": "d1"}
    await db.execute(
        old_packages.insert().values(
            name="legacy", created="t", modified="t", serial=1, fields={"description": "d1"}
        )
    )
    await db.execute(
        store.versions.insert().values(
            name="legacy", version="1.0.0", filename="legacy-1.0.0.tgz", manifest=manifest,
            integrity="sha512-x", shasum="0", created="t",
        )
    )  # fmt: skip
    await db.disconnect()

    app = create_app(store_path=store_path, **database_options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        packument = (await client.get("/npm/legacy")).json()
        assert packument["readme"] == "# from v1" and packument["description"] == "d1"
        found = await store.package_readme(app.state.depot.context("npm").db, "legacy")
        assert found is not None and found.readme == "# from v1"
        body = publish_body("legacy", "1.1.0", make_tgz("legacy", "1.1.0"))
        body["versions"]["1.1.0"]["readme"] = "# from v2"
        assert (await put_publish(client, "legacy", body)).status_code == 201
        assert (await client.get("/npm/legacy")).json()["readme"] == "# from v2"
    await app.state.depot.shutdown()


async def test_login_tokens_name_their_user_until_logout(app_client: httpx.AsyncClient) -> None:
    user = {"_id": "org.couchdb.user:ann", "name": "ann", "password": "x", "type": "user"}
    created = await app_client.put("/npm/-/user/org.couchdb.user:ann", json=user)
    assert created.status_code == 201
    token = created.json()["token"]
    again = await app_client.put("/npm/-/user/org.couchdb.user:ann", json=user)
    assert again.json()["token"] != token  # each login its own token
    bearer = {"authorization": f"Bearer {token}"}
    assert (await app_client.get("/npm/-/whoami", headers=bearer)).json() == {"username": "ann"}
    assert (
        await app_client.delete(f"/npm/-/user/token/{token}", headers=bearer)
    ).status_code == 200
    whoami = await app_client.get("/npm/-/whoami", headers=bearer)
    assert whoami.json() == {"username": "anonymous"}
    mismatch = await app_client.put("/npm/-/user/org.couchdb.user:bob", json=user)
    assert mismatch.status_code == 400
