"""``--pypi-upstream``: depot as a pull-through cache in front of other indexes.

The upstream is a real ``depot serve`` holding the test projects uploaded with twine, behind the
fault-injecting proxy; the caching depot is a second ``depot serve``. Upstream requests are
counted from the upstream's own access log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.testing import Chromium, DepotServer, metric
from depot.core.testing_upstream import FaultProxy

from .conftest import Clients, installed

EXPECTED = {"alpha": "1.0", "beta-pkg": "1.1", "delta": "1.0"}


def upstream_requests(upstream: DepotServer) -> int:
    count = 0
    for line in upstream.settled_log().splitlines():
        if '"depot.access"' in line and "/python/" in json.loads(line)["path"]:
            count += 1
    return count


@pytest.fixture
def proxy(published: DepotServer) -> Iterator[FaultProxy]:
    with FaultProxy(published.url) as running:
        yield running


@pytest.fixture
def index(proxy: FaultProxy) -> str:
    return proxy.url + "/python/simple/"


def test_first_install_fetches_and_later_installs_are_local(
    published: DepotServer,
    index: str,
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
) -> None:
    caching = make_depot_server("--pypi-upstream", index)
    local_index = caching.url + "/python/simple/"
    before = upstream_requests(published)
    target, _ = clients.pip_install(local_index, "alpha")
    assert installed(target) == EXPECTED
    fetched = upstream_requests(published)
    # Three pages, three core metadata files (PEP 658) and three wheels, each fetched once.
    assert fetched - before == 9
    page = httpx.get(
        local_index + "alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert all(f["url"].startswith(caching.url + "/python/files/") for f in page.json()["files"])
    again, _ = clients.pip_install(local_index, "alpha")
    assert installed(again) == EXPECTED
    assert installed(clients.uv_install(local_index, "alpha")) == EXPECTED
    assert upstream_requests(published) == fetched  # nothing more reached the upstream
    exposition = httpx.get(caching.url + "/metrics").text
    assert metric(exposition, "depot_upstream_hits_total", ecosystem="pypi") >= 6


def test_upstream_unreachable_a_fresh_install_still_works(
    proxy: FaultProxy, index: str, make_depot_server: Callable[..., DepotServer], clients: Clients
) -> None:
    caching = make_depot_server("--pypi-upstream", index, "--upstream-max-age", "0")
    local_index = caching.url + "/python/simple/"
    clients.pip_install(local_index, "alpha")
    proxy.stop()
    target, _ = clients.pip_install(local_index, "alpha")
    assert installed(target) == EXPECTED
    assert "upstream unavailable, answering held copy" in caching.log()
    exposition = httpx.get(caching.url + "/metrics").text
    assert metric(exposition, "depot_upstream_stale_total", ecosystem="pypi") >= 1
    missing = httpx.get(local_index + "gamma/")
    assert missing.status_code == 502 and proxy.url in missing.text


def test_a_tampered_file_is_refused_and_not_stored(
    proxy: FaultProxy, index: str, make_depot_server: Callable[..., DepotServer], clients: Clients
) -> None:
    caching = make_depot_server("--pypi-upstream", index)
    local_index = caching.url + "/python/simple/"
    proxy.add("tamper", r"/gamma-1\.0-py3-none-any\.whl$")
    _, result = clients.pip_install(local_index, "gamma", check=False)
    assert result.returncode != 0
    answer = httpx.get(caching.url + "/python/files/gamma/gamma-1.0-py3-none-any.whl")
    assert answer.status_code == 502 and "the index says" in answer.text
    assert proxy.url in answer.text
    stored = caching.store_path / "blobs" / "pypi" / "upstream" / "files"
    held = [path.read_bytes() for path in stored.iterdir()] if stored.exists() else []
    # gamma's core metadata, verified, may be held; no byte of the tampered wheel is.
    assert all(blob.startswith(b"Metadata-Version:") for blob in held)


def test_upstreams_are_tried_in_order(
    index: str, make_depot_server: Callable[..., DepotServer], clients: Clients
) -> None:
    empty = make_depot_server()
    caching = make_depot_server(
        "--pypi-upstream", empty.url + "/python/simple/", "--pypi-upstream", index
    )
    target, _ = clients.pip_install(caching.url + "/python/simple/", "alpha")
    assert installed(target) == EXPECTED


def test_a_project_uploaded_here_shadows_the_upstream(
    proxy: FaultProxy,
    index: str,
    dists: Path,
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
) -> None:
    caching = make_depot_server("--pypi-upstream", index)
    clients.twine_upload(caching.url, [dists / "delta-1.0-py3-none-any.whl"])
    before = proxy.count()
    page = httpx.get(
        caching.url + "/python/simple/delta/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    ).json()
    assert [f["filename"] for f in page["files"]] == ["delta-1.0-py3-none-any.whl"]
    assert httpx.get(caching.url + "/python/files/delta/delta-2.0.tar.gz").status_code == 404
    assert proxy.count() == before  # the upstream was never asked about the project


@pytest.mark.network
def test_install_through_pypi(
    make_depot_server: Callable[..., DepotServer], clients: Clients
) -> None:
    caching = make_depot_server("--pypi-upstream", "https://pypi.org/simple/")
    target, _ = clients.pip_install(caching.url + "/python/simple/", "six==1.16.0")
    assert installed(target) == {"six": "1.16.0"}
    assert installed(clients.uv_install(caching.url + "/python/simple/", "six==1.16.0")) == {
        "six": "1.16.0"
    }


def test_core_metadata_is_proxied_verified_and_fetched_once(
    published: DepotServer,
    index: str,
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
) -> None:
    caching = make_depot_server("--pypi-upstream", index)
    local_index = caching.url + "/python/simple/"
    json_page = {"Accept": "application/vnd.pypi.simple.v1+json"}
    upstream_page = httpx.get(published.url + "/python/simple/alpha/", headers=json_page).json()
    upstream_wheel = next(f for f in upstream_page["files"] if f["filename"].endswith(".whl"))
    upstream_metadata = httpx.get(upstream_wheel["url"] + ".metadata").content

    before = upstream_requests(published)
    page = httpx.get(local_index + "alpha/", headers=json_page).json()
    wheel = next(f for f in page["files"] if f["filename"] == upstream_wheel["filename"])
    # PEP 714: the upstream's core metadata hash, offered on depot's page (HTML too, PEP 658).
    assert wheel["core-metadata"] == upstream_wheel["core-metadata"] != False  # noqa: E712
    html = httpx.get(local_index + "alpha/", headers={"Accept": "text/html"}).text
    assert f'data-core-metadata="sha256={wheel["core-metadata"]["sha256"]}"' in html
    target, _ = clients.pip_install(local_index, "alpha")
    assert installed(target) == EXPECTED
    fetched = upstream_requests(published)
    assert fetched - before == 9  # pages, core metadata files, wheels: once each
    paths = [
        json.loads(line)["path"]
        for line in published.settled_log().splitlines()
        if "access" in line
    ]
    assert any(p.endswith("/alpha-1.0-py3-none-any.whl.metadata") for p in paths)
    answer = httpx.get(wheel["url"] + ".metadata")
    assert answer.status_code == 200 and answer.content == upstream_metadata
    assert installed(clients.uv_install(local_index, "alpha")) == EXPECTED
    assert upstream_requests(published) == fetched  # uv read the held metadata and wheels


def test_tampered_core_metadata_is_refused_and_not_stored(
    proxy: FaultProxy, index: str, make_depot_server: Callable[..., DepotServer], clients: Clients
) -> None:
    caching = make_depot_server("--pypi-upstream", index)
    proxy.add("tamper", r"/gamma-1\.0-py3-none-any\.whl\.metadata$")
    local_index = caching.url + "/python/simple/"
    _, result = clients.pip_install(local_index, "--retries", "0", "gamma", check=False)
    assert result.returncode != 0
    answer = httpx.get(caching.url + "/python/files/gamma/gamma-1.0-py3-none-any.whl.metadata")
    assert answer.status_code == 502 and "the index says" in answer.text
    stored = caching.store_path / "blobs" / "pypi" / "upstream" / "files"
    held = [path.read_bytes() for path in stored.iterdir()] if stored.exists() else []
    # The wheel itself (verified, prefetched) may be held; no tampered metadata is.
    assert not any(blob.startswith(b"Metadata-Version:") for blob in held)


def test_pages_show_cached_files_apart_from_uploaded_ones(
    index: str,
    dists: Path,
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
    chromium: Chromium,
) -> None:
    """After ``pip install`` through the caching depot, a project's page marks each file cached
    from the upstream (the wheel pip fetched) or not fetched yet (the sdist); a project
    uploaded to the caching depot itself says published."""
    caching = make_depot_server("--pypi-upstream", index)
    pages = caching.url + "/-/browse/pypi/"
    assert httpx.get(pages + "alpha").status_code == 404  # nothing held yet
    clients.pip_install(caching.url + "/python/simple/", "alpha")

    alpha = chromium.dom(pages + "alpha")
    assert f"Cached from {index}" in alpha
    wheel_row = alpha.split("alpha-1.0-py3-none-any.whl</a>", 1)[1].split("</tr>", 1)[0]
    assert f"cached from {index}, fetched " in wheel_row
    sdist_row = alpha.split("alpha-1.0.tar.gz</a>", 1)[1].split("</tr>", 1)[0]
    assert f"at {index}, not fetched yet" in sdist_row
    assert "Published to this depot" not in alpha
    # Requires-Dist from the cached wheel's METADATA, linked to the cached dependency's page.
    assert f'href="{pages}beta-pkg"' in alpha

    clients.twine_upload(caching.url, [dists / "gamma-1.0-py3-none-any.whl"])
    gamma = chromium.dom(pages + "gamma")
    assert "Published to this depot" in gamma and "published here" in gamma
    assert "cached from" not in gamma.lower()

    search = chromium.dom(caching.url + "/-/browse/pypi")
    published_part, _, cached_part = search.partition("Cached from upstreams")
    assert "gamma" in published_part and "alpha" not in published_part
    assert "alpha" in cached_part and "beta-pkg" in cached_part
    assert f"cached from {index}" in cached_part
