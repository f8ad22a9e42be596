"""nginx with ``proxy_cache`` in front of depot: wheels and their core metadata are cached for
good, and a release uploaded after the simple page was cached shows within --document-max-age."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.core.testing_services import CachingProxy

from .conftest import Clients  # noqa: TID252

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


def test_the_second_download_of_a_wheel_is_answered_by_the_proxy(
    clients: Clients,
    wheel_factory: Callable[..., Path],
    depot_server: DepotServer,
    make_caching_proxy: Callable[[str], CachingProxy],
) -> None:
    wheel = wheel_factory("cached-dist", "1.0")
    clients.twine_upload(depot_server.url, [wheel])
    proxy = make_caching_proxy(depot_server.url)

    for _ in range(2):
        downloaded = clients.pip_download(f"{proxy.url}/python/simple/", "cached-dist==1.0")
        assert (downloaded / wheel.name).read_bytes() == wheel.read_bytes()

    path = f"/python/files/cached-dist/{wheel.name}"
    depot_server.wait_for_log(f'"path": "{path}"')
    assert len(depot_server.requests_for(path)) == 1
    for cached in (path, path + ".metadata"):
        again = httpx.get(proxy.url + cached)
        assert again.headers["x-cache-status"] == "HIT", cached
        assert again.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert len(depot_server.requests_for(cached)) <= 1


@pytest.mark.parametrize("max_age", [0, 2])
def test_a_release_uploaded_after_the_page_was_cached_shows_within_max_age(
    max_age: int,
    clients: Clients,
    wheel_factory: Callable[..., Path],
    make_depot_server: Callable[..., DepotServer],
    make_caching_proxy: Callable[[str], CachingProxy],
) -> None:
    depot = make_depot_server("--document-max-age", str(max_age))
    clients.twine_upload(depot.url, [wheel_factory("fresh-dist", "1.0")])
    proxy = make_caching_proxy(depot.url)

    def versions() -> httpx.Response:
        return httpx.get(f"{proxy.url}/python/simple/fresh-dist/", headers={"Accept": PIP_ACCEPT})

    first = versions()
    assert first.json()["versions"] == ["1.0"]
    expected = f"public, max-age={max_age}" if max_age else "no-cache"
    assert first.headers["cache-control"] == expected and first.headers["etag"]

    clients.twine_upload(depot.url, [wheel_factory("fresh-dist", "1.1")])
    deadline = time.monotonic() + max_age + 10
    while "1.1" not in (seen := versions()).json()["versions"]:
        assert max_age > 0, "with no-cache the proxy must ask depot every time"
        assert time.monotonic() < deadline, f"1.1 not visible through the proxy: {seen.headers}"
        time.sleep(0.2)
    # pip still installs through the proxy (and the cached metadata matches the wheel).
    downloaded = clients.pip_download(f"{proxy.url}/python/simple/", "fresh-dist==1.1")
    assert [p.name for p in downloaded.iterdir()] == ["fresh_dist-1.1-py3-none-any.whl"]
