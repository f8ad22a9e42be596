"""``--npm-upstream``: depot as a pull-through cache in front of another registry.

The upstream is a real ``depot serve`` holding packages published with npm, behind the
fault-injecting proxy (:mod:`depot.core.testing_upstream`); the caching depot is a second
``depot serve`` with ``--npm-upstream`` pointing at the proxy. Upstream requests are counted from
the upstream's own access log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import (
    HOSTILE_README,
    Chromium,
    DepotServer,
    metric,
    scan_dom,
    until_fresh,
)
from depot.core.testing_upstream import FaultProxy

from .conftest import Npm

#: Other processes learn of a change within the bound (depot.core.changes); one poll interval,
#: and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75


def upstream_requests(upstream: DepotServer, fragment: str = "/npm/") -> int:
    """Requests the upstream depot answered under ``fragment``, from its access log."""
    count = 0
    for line in upstream.settled_log().splitlines():
        if '"depot.access"' not in line:
            continue
        entry = json.loads(line)
        if fragment in entry["path"]:
            count += 1
    return count


@pytest.fixture
def upstream(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    return make_depot_server()


@pytest.fixture
def proxy(upstream: DepotServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url) as running:
        yield running


@pytest.fixture
def publisher(tmp_path: Path, npm: Npm) -> Npm:
    """npm with a cache of its own: npm publish keeps the tarballs in its cache, and an install
    sharing that cache would never download them."""
    home = tmp_path / "publisher-home"
    home.mkdir()
    (home / "npmrc").write_text("")
    return Npm(home)


@pytest.fixture
def published(upstream: DepotServer, publisher: Npm, make_package: Callable[..., Path]) -> None:
    """On the upstream: ``pt-leaf`` 1.0.0 and 1.1.0, ``@pt/mid`` 2.0.0 -> pt-leaf ^1.0.0."""
    registry = upstream.url + "/npm/"
    publisher.login(registry)
    for name, version, fields in (
        ("pt-leaf", "1.0.0", {}),
        ("pt-leaf", "1.1.0", {}),
        ("@pt/mid", "2.0.0", {"dependencies": {"pt-leaf": "^1.0.0"}}),
    ):
        publisher(registry, "publish", cwd=make_package(name, version, **fields))


def make_app(tmp_path: Path, name: str = "app") -> Path:
    app = tmp_path / name
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": name, "version": "1.0.0", "dependencies": {"@pt/mid": "^2.0.0"}})
    )
    return app


def installed(app: Path) -> dict[str, str]:
    found = {}
    for name in ("pt-leaf", "@pt/mid"):
        manifest = app / "node_modules" / name / "package.json"
        found[name] = json.loads(manifest.read_text())["version"]
    return found


def test_first_install_fetches_and_a_second_install_is_local(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    tmp_path: Path,
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    registry = caching.url + "/npm/"
    app = make_app(tmp_path)
    before = upstream_requests(upstream)
    npm(registry, "install", cwd=app)
    assert installed(app) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    lock = json.loads((app / "package-lock.json").read_text())
    resolved = [p["resolved"] for p in lock["packages"].values() if "resolved" in p]
    assert resolved and all(url.startswith(registry) for url in resolved)  # links point at depot
    fetched = upstream_requests(upstream)
    assert fetched - before == 4  # two packuments, two tarballs

    # A second machine: empty npm cache, npm ci from the lockfile.
    second = make_app(tmp_path, "second")
    (second / "package-lock.json").write_text((app / "package-lock.json").read_text())
    npm.home = tmp_path / "npm-home-2"
    npm.home.mkdir()
    (npm.home / "npmrc").write_text("")
    npm(registry, "ci", cwd=second)
    npm(registry, "install", cwd=make_app(tmp_path, "third"))
    assert installed(second) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    assert upstream_requests(upstream) == fetched  # not one request reached the upstream
    exposition = httpx.get(caching.url + "/metrics").text
    labels = {"ecosystem": "npm", "upstream": proxy.url + "/npm/"}
    assert metric(exposition, "depot_upstream_hits_total", **labels) >= 4
    assert metric(exposition, "depot_upstream_misses_total", **labels) == 4


def test_upstream_stopped_a_fresh_install_of_the_same_tree_still_works(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    tmp_path: Path,
) -> None:
    # max-age 0: every packument request tries to revalidate, so the outage is met each time.
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/", "--upstream-max-age", "0")
    registry = caching.url + "/npm/"
    npm(registry, "install", cwd=make_app(tmp_path))
    upstream.stop()
    npm.home = tmp_path / "npm-home-2"
    npm.home.mkdir()
    (npm.home / "npmrc").write_text("")
    fresh = make_app(tmp_path, "fresh")
    npm(registry, "install", cwd=fresh)
    assert installed(fresh) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    assert "upstream unavailable, answering held copy" in caching.log()
    exposition = httpx.get(caching.url + "/metrics").text
    assert metric(exposition, "depot_upstream_stale_total", ecosystem="npm") >= 1
    # What is not held names the upstream.
    missing = httpx.get(registry + "pt-never-fetched")
    assert missing.status_code == 502 and proxy.url in missing.json()["error"]


def test_revalidation_sees_a_version_published_upstream_later(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    publisher: Npm,
    make_package: Callable[..., Path],
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/", "--upstream-max-age", "0")
    first = httpx.get(caching.url + "/npm/pt-leaf").json()
    assert sorted(first["versions"]) == ["1.0.0", "1.1.0"]
    assert first["versions"]["1.1.0"]["dist"]["tarball"].startswith(caching.url + "/npm/")
    unchanged = httpx.get(caching.url + "/npm/pt-leaf")
    assert unchanged.json() == first  # a 304 from upstream kept the held copy
    publisher(upstream.url + "/npm/", "publish", cwd=make_package("pt-leaf", "1.2.0"))
    later = httpx.get(caching.url + "/npm/pt-leaf").json()
    assert "1.2.0" in later["versions"] and later["dist-tags"]["latest"] == "1.2.0"


def test_a_packument_refetched_through_another_process_is_served_by_this_one_within_the_bound(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    publisher: Npm,
    make_package: Callable[..., Path],
) -> None:
    """Two processes on one store, held copies used for an hour: a tarball of a version newer
    than the held packument, asked for through the second, refetches the packument there; the
    first, which remembers the held row, serves the new copy within the change notification's
    bound, not an hour later (and never the old copy's blob, which no row names any more)."""
    first = make_depot_server("--npm-upstream", proxy.url + "/npm/", "--upstream-max-age", "3600")
    second = first.another()
    try:
        held = httpx.get(first.url + "/npm/pt-leaf").json()
        assert sorted(held["versions"]) == ["1.0.0", "1.1.0"]
        publisher(upstream.url + "/npm/", "publish", cwd=make_package("pt-leaf", "1.2.0"))
        assert httpx.get(second.url + "/npm/pt-leaf/-/pt-leaf-1.2.0.tgz").status_code == 200
        until_fresh(
            lambda: "1.2.0" in httpx.get(first.url + "/npm/pt-leaf").json()["versions"],
            WITHIN,
        )
    finally:
        second.stop()


def test_a_tampered_tarball_is_refused_and_not_stored(
    published: None,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    tmp_path: Path,
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    registry = caching.url + "/npm/"
    proxy.add("tamper", r"/pt-leaf-.*\.tgz$")
    result = npm(registry, "install", cwd=make_app(tmp_path), check=False)
    assert result.returncode != 0
    tarball = httpx.get(registry + "pt-leaf/-/pt-leaf-1.1.0.tgz")
    assert tarball.status_code == 502
    assert "sha512" in tarball.json()["error"] and proxy.url in tarball.json()["error"]
    assert "upstream content failed verification" in caching.log()
    upstream_dist = httpx.get(proxy.url + "/npm/pt-leaf").json()["versions"]["1.1.0"]["dist"]
    leaf_sha512 = base64.b64decode(upstream_dist["integrity"].split("-", 1)[1]).hex()
    stored = (caching.store_path / "blobs" / "npm" / "upstream").glob("tarballs/*")
    assert leaf_sha512 not in {path.stem for path in stored}


def test_concurrent_requests_for_a_missing_packument_make_one_upstream_request(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    proxy.add("slow", "/npm/pt-leaf$", delay=1.0)

    async def twenty() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(client.get(caching.url + "/npm/pt-leaf") for _ in range(20))
            )

    answers = asyncio.run(twenty())
    assert all(a.status_code == 200 for a in answers)
    assert len({a.content for a in answers}) == 1
    assert proxy.count("/npm/pt-leaf$") == 1


def test_a_name_published_here_shadows_the_upstream(
    published: None,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    make_package: Callable[..., Path],
    tmp_path: Path,
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    registry = caching.url + "/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("pt-leaf", "9.0.0"))
    before = proxy.count()
    packument = httpx.get(registry + "pt-leaf")
    assert sorted(packument.json()["versions"]) == ["9.0.0"]
    assert "x-depot-origin" not in packument.headers
    assert httpx.get(registry + "pt-leaf/-/pt-leaf-1.1.0.tgz").status_code == 404
    assert proxy.count() == before  # the upstream was never asked about the name
    # The dependency from upstream resolves to the local name, and ^1.0.0 is not satisfied.
    result = npm(registry, "install", cwd=make_app(tmp_path), check=False)
    assert result.returncode != 0 and "pt-leaf" in result.stderr
    cached = httpx.get(registry + "@pt/mid")
    assert cached.headers["x-depot-origin"] == f"cached from {proxy.url}/npm/"


@pytest.mark.network
def test_install_through_the_public_registry(
    make_depot_server: Callable[..., DepotServer], npm: Npm, tmp_path: Path
) -> None:
    caching = make_depot_server("--npm-upstream", "https://registry.npmjs.org/")
    registry = caching.url + "/npm/"
    app = tmp_path / "public-app"
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": "public-app", "version": "1.0.0", "dependencies": {"is-odd": "3.0.1"}})
    )
    npm(registry, "install", cwd=app)
    assert (app / "node_modules" / "is-number" / "package.json").exists()
    lock = json.loads((app / "package-lock.json").read_text())
    assert all(
        p["resolved"].startswith(registry) for p in lock["packages"].values() if "resolved" in p
    )


def test_a_tarball_asked_for_first_is_fetched_with_its_packument_once(
    published: None, proxy: FaultProxy, make_depot_server: Callable[..., DepotServer]
) -> None:
    # npm ci from a lockfile asks a cold depot for tarballs only: the packument (whose integrity
    # verifies the tarball) and the tarball are fetched together, once however many ask.
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    url = caching.url + "/npm/@pt/mid/-/mid-2.0.0.tgz"
    expected = httpx.get(proxy.url + "/npm/@pt/mid/-/mid-2.0.0.tgz").content
    before = proxy.count()

    async def ten() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.get(url) for _ in range(10)))

    answers = asyncio.run(ten())
    assert all(a.status_code == 200 and a.content == expected for a in answers)
    assert proxy.count(r"/npm/@pt(%2[fF]|/)mid$") == 1
    assert proxy.count("/mid-2.0.0.tgz$") == 2  # the one fetched here, and the one above
    assert proxy.count() - before == 2


def test_a_tampered_tarball_fetched_with_its_packument_is_refused_and_not_stored(
    published: None, proxy: FaultProxy, make_depot_server: Callable[..., DepotServer]
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    proxy.add("tamper", r"/pt-leaf-1\.1\.0\.tgz$")
    url = caching.url + "/npm/pt-leaf/-/pt-leaf-1.1.0.tgz"
    # The first client never gets the whole body: cut off before the last byte when it was
    # streamed while the tarball was verified, else (the packument came first) told why at once.
    try:
        first = httpx.get(url)
    except httpx.RemoteProtocolError:
        pass
    else:
        assert first.status_code == 502 and "sha512" in first.json()["error"]
    # The next is told why.
    tarball = httpx.get(url)
    assert tarball.status_code == 502 and "sha512" in tarball.json()["error"]
    assert not list((caching.store_path / "blobs" / "npm" / "upstream").glob("tarballs/*"))


def test_the_tarball_of_the_latest_version_is_fetched_with_the_packument(
    published: None,
    upstream: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
) -> None:
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    expected = httpx.get(proxy.url + "/npm/pt-leaf/-/pt-leaf-1.1.0.tgz").content
    assert httpx.get(caching.url + "/npm/pt-leaf").status_code == 200
    stored = caching.store_path / "blobs" / "npm" / "upstream" / "tarballs"
    for _ in range(300):  # fetched in the background: wait for it to be stored
        if stored.exists() and any(stored.iterdir()):
            break
        time.sleep(0.1)
    upstream.stop()
    assert httpx.get(caching.url + "/npm/pt-leaf/-/pt-leaf-1.1.0.tgz").content == expected
    # Only the version a dist-tag names was fetched ahead.
    assert httpx.get(caching.url + "/npm/pt-leaf/-/pt-leaf-1.0.0.tgz").status_code >= 500


def test_pages_show_cached_versions_apart_from_published_ones(
    published: None,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    make_package: Callable[..., Path],
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    """After ``npm view`` and ``npm install`` through the caching depot, its pages show each
    version as cached from the upstream (when its tarball was fetched) or not fetched yet; a
    package published to the caching depot itself says published."""
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    registry = caching.url + "/npm/"
    upstream_label = proxy.url + "/npm/"
    pages = caching.url + "/-/browse/npm/"
    assert httpx.get(pages + "pt-leaf").status_code == 404  # nothing held yet

    npm(registry, "view", "pt-leaf", "versions")  # the packument...
    # ... and, fetched ahead in the background, the tarball of the version `latest` names.
    for _ in range(300):
        if httpx.get(pages + "pt-leaf").text.count("not fetched yet") == 1:
            break
        time.sleep(0.1)
    dom = chromium.dom(pages + "pt-leaf")
    assert f"Cached from {upstream_label}" in dom
    assert dom.count(f"cached from {upstream_label}, fetched ") == 2  # 1.1.0: row and source
    assert dom.count(f"at {upstream_label}, not fetched yet") == 1  # 1.0.0

    npm(registry, "install", cwd=make_app(tmp_path))
    dom = chromium.dom(pages + "pt-leaf")
    assert dom.count(f"cached from {upstream_label}, fetched ") == 2  # 1.1.0: row and source
    assert dom.count(f"at {upstream_label}, not fetched yet") == 1  # 1.0.0
    mid = chromium.dom(pages + "@pt/mid")
    assert f"cached from {upstream_label}, fetched " in mid
    assert f'href="{pages}pt-leaf">pt-leaf</a>' in mid  # its cached dependency has a page

    npm.login(registry)
    npm(registry, "publish", cwd=make_package("pt-local", "3.0.0"))
    local = chromium.dom(pages + "pt-local")
    assert "Published to this depot" in local and "published here" in local
    assert "Cached from" not in local

    # The search page lists the cached packages apart, under their upstream.
    search = chromium.dom(caching.url + "/-/browse/npm?q=pt")
    published_part, _, cached_part = search.partition("Cached from upstreams")
    assert "pt-local" in published_part and "pt-leaf" not in published_part
    assert "pt-leaf" in cached_part and "@pt/mid" in cached_part
    assert f"cached from {upstream_label}" in cached_part


def test_a_cached_packages_hostile_readme_runs_nothing(
    upstream: DepotServer,
    proxy: FaultProxy,
    publisher: Npm,
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    make_package: Callable[..., Path],
    chromium: Chromium,
) -> None:
    """A readme from an upstream is as untrusted as a published one: the cached package's page
    renders it through the same sanitiser."""
    publisher.login(upstream.url + "/npm/")
    folder = make_package("pt-hostile", "1.0.0")
    (folder / "README.md").write_text(HOSTILE_README)
    publisher(upstream.url + "/npm/", "publish", cwd=folder)
    caching = make_depot_server("--npm-upstream", proxy.url + "/npm/")
    npm(caching.url + "/npm/", "view", "pt-hostile", "version")
    dom = chromium.dom(caching.url + "/-/browse/npm/pt-hostile")
    title, dangers = scan_dom(dom)
    assert title == "pt-hostile - npm registry - depot"
    assert dangers == []
    assert "<h1>Hostile readme</h1>" in dom and f"Cached from {proxy.url}/npm/" in dom
