"""The core's package-page machinery, through the example third-party plugin (depot-raw).

A plugin gets ``/-/browse/<ecosystem>/<name>`` by implementing ``depot_package_pages``; the core
lays the page out, links to it from ``/`` and the search page, and builds every link from the
request (mount prefix, Host) or ``--base-url``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from depot.core import create_app
from depot.core.markup import readme
from depot.core.packagepages import (
    AT_UPSTREAM,
    CACHED,
    PUBLISHED,
    PUSHED,
    PackagePage,
    Provenance,
    provenance_label,
    render,
)
from starlette.applications import Starlette
from starlette.routing import Mount


async def test_a_plugin_gets_a_page_per_package_linked_from_the_other_pages(
    app_client: httpx.AsyncClient,
) -> None:
    body = b"report contents"
    assert (await app_client.put("/raw/files/report.txt", content=body)).status_code == 201
    page = await app_client.get("/-/browse/raw/report.txt")
    assert page.status_code == 200
    assert "<h1>report.txt</h1>" in page.text
    assert hashlib.sha256(body).hexdigest() in page.text
    assert "curl -fO http://depot.test/raw/files/report.txt" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # no script may run
    assert "default-src 'none'" in page.headers["content-security-policy"]
    link = 'href="http://depot.test/-/browse/raw/report.txt"'
    assert link in (await app_client.get("/")).text
    assert link in (await app_client.get("/-/browse/raw?q=report")).text


async def test_a_name_the_ecosystem_does_not_hold_is_a_404(app_client: httpx.AsyncClient) -> None:
    missing = await app_client.get("/-/browse/raw/nothing-here.txt")
    assert missing.status_code == 404 and "nothing-here.txt" in missing.text
    assert (await app_client.get("/-/browse/cargo/serde")).status_code == 404


async def test_links_carry_the_mount_prefix(tmp_path: Path) -> None:
    depot = create_app(store_path=tmp_path / "store")
    host = Starlette(routes=[Mount("/pkgs", app=depot)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as client:
        await client.put("/pkgs/raw/files/a.txt", content=b"mounted")
        page = (await client.get("/pkgs/-/browse/raw/a.txt")).text
        listing = (await client.get("/pkgs/-/browse/raw")).text
    await depot.state.depot.shutdown()
    assert 'href="http://host.test/pkgs/raw/files/a.txt"' in page
    assert 'href="http://host.test/pkgs/-/browse/raw"' in page  # back to the search page
    assert 'href="http://host.test/pkgs/-/browse/raw/a.txt"' in listing


async def test_links_follow_base_url(tmp_path: Path) -> None:
    app = create_app(store_path=tmp_path / "store", base_url="https://depot.example/mirror/")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal:9") as client:
        await client.put("/raw/files/b.txt", content=b"b")
        page = (await client.get("/-/browse/raw/b.txt")).text
    await app.state.depot.shutdown()
    assert "curl -fO https://depot.example/mirror/raw/files/b.txt" in page
    assert "http://internal:9" not in page


def test_readme_sanitiser_keeps_text_and_drops_what_runs() -> None:
    cleaned = readme(
        '<p align="center" onclick="x()">hi <a href="javascript:x()">j</a> '
        '<a href="https://example.org/">ok</a></p><script>x()</script><img src=x onerror=x()>'
    )
    assert "onclick" not in cleaned and "onerror" not in cleaned and "<script" not in cleaned
    assert "javascript:" not in cleaned
    assert 'href="https://example.org/"' in cleaned and 'align="center"' in cleaned


def test_provenance_is_said_the_same_way_for_every_ecosystem_and_escaped() -> None:
    hostile = 'https://up.example/"><script>x()</script>'
    cached = Provenance(CACHED, hostile, 0.0)
    label = provenance_label(cached)
    assert "<script>" not in label and "&lt;script&gt;" in label
    assert "cached from https://up.example/" in label and "1970-01-01 00:00 UTC" in label
    assert "not fetched yet" in provenance_label(Provenance(AT_UPSTREAM, "https://up.example/"))
    assert "published here" in provenance_label(Provenance(PUBLISHED))
    assert "pushed here" in provenance_label(Provenance(PUSHED))
    page = render(PackagePage(title="left-pad", provenance=cached))
    assert "Cached from https://up.example/" in page and "<script>" not in page
    page = render(PackagePage(title="mine", provenance=Provenance(PUBLISHED)))
    assert "Published to this depot" in page and "never merged" in page
    assert "Cached" not in render(PackagePage(title="no upstreams here"))
