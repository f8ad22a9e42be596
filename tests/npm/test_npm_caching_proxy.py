"""nginx with ``proxy_cache`` in front of depot: tarballs are cached for good, and a version
published after the packument was cached shows through the proxy within --document-max-age."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.core.testing_services import CachingProxy

from .conftest import Npm  # noqa: TID252

INSTALL_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"


def test_the_second_download_of_a_tarball_is_answered_by_the_proxy(
    npm: Npm,
    make_package: Callable[..., Path],
    depot_server: DepotServer,
    make_caching_proxy: Callable[[str], CachingProxy],
    tmp_path: Path,
) -> None:
    registry = f"{depot_server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("cached-pkg", "1.0.0"))
    proxy = make_caching_proxy(depot_server.url)

    for run in ("first", "second"):
        client = Npm(tmp_path / f"npm-{run}")  # an empty npm cache each time
        client.home.mkdir()
        (client.home / "npmrc").write_text("")
        project = tmp_path / f"project-{run}"
        project.mkdir()
        client(f"{proxy.url}/npm/", "install", "cached-pkg", cwd=project)
        assert (project / "node_modules" / "cached-pkg" / "index.js").exists()

    tarball = "/npm/cached-pkg/-/cached-pkg-1.0.0.tgz"
    depot_server.wait_for_log(f'"path": "{tarball}"')
    assert len(depot_server.requests_for(tarball)) == 1
    again = httpx.get(proxy.url + tarball)
    assert again.headers["x-cache-status"] == "HIT"
    assert again.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize("max_age", [0, 2])
def test_a_version_published_after_the_packument_was_cached_shows_within_max_age(
    max_age: int,
    npm: Npm,
    make_package: Callable[..., Path],
    make_depot_server: Callable[..., DepotServer],
    make_caching_proxy: Callable[[str], CachingProxy],
) -> None:
    depot = make_depot_server("--document-max-age", str(max_age))
    registry = f"{depot.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("fresh-pkg", "1.0.0"))
    proxy = make_caching_proxy(depot.url)

    def versions() -> httpx.Response:
        return httpx.get(f"{proxy.url}/npm/fresh-pkg", headers={"Accept": INSTALL_ACCEPT})

    first = versions()
    assert list(first.json()["versions"]) == ["1.0.0"]
    expected = f"public, max-age={max_age}" if max_age else "no-cache"
    assert first.headers["cache-control"] == expected and first.headers["etag"]

    npm(registry, "publish", cwd=make_package("fresh-pkg", "1.1.0"))
    # The README's bound: max-age seconds (nginx counts whole seconds), polled with a margin.
    deadline = time.monotonic() + max_age + 10
    while "1.1.0" not in (seen := versions()).json()["versions"]:
        assert max_age > 0, "with no-cache the proxy must ask depot every time"
        assert time.monotonic() < deadline, f"1.1.0 not visible through the proxy: {seen.headers}"
        time.sleep(0.2)
