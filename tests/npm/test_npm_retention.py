"""``--cache-max-size``/``--cache-max-age`` over an npm pull-through cache.

The upstream and its fault proxy are those of :mod:`test_npm_pullthrough`. Use is recorded in
memory and written at shutdown (or every minute), so each test stops the caching depot, runs
``depot gc`` on its store as an operator would, and starts a depot on the same store again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer, depot_gc
from depot.core.testing_upstream import FaultProxy

from .conftest import Npm
from .test_npm_pullthrough import (  # noqa: F401 - fixtures
    installed,
    make_app,
    proxy,
    published,
    publisher,
    upstream,
)


def fresh_npm(tmp_path: Path, label: str) -> Npm:
    """npm with an empty cache of its own, so that it asks the registry for everything."""
    home = tmp_path / f"npm-home-{label}"
    home.mkdir()
    (home / "npmrc").write_text("")
    return Npm(home)


def bulky_package(make_package: Callable[..., Path], name: str, size: int) -> Path:
    """A package whose tarball is about ``size`` bytes (random bytes do not compress)."""
    folder = make_package(name, "1.0.0")
    (folder / "payload.bin").write_bytes(os.urandom(size))
    return folder


def app_needing(tmp_path: Path, label: str, dependencies: dict[str, str]) -> Path:
    app = tmp_path / label
    app.mkdir()
    manifest = {"name": label, "version": "1.0.0", "dependencies": dependencies}
    (app / "package.json").write_text(json.dumps(manifest))
    return app


def test_over_max_size_the_least_recently_used_are_evicted_and_fetched_again(
    published: None,  # noqa: F811
    upstream: DepotServer,  # noqa: F811
    proxy: FaultProxy,  # noqa: F811
    publisher: Npm,  # noqa: F811
    make_depot_server: Callable[..., DepotServer],
    make_package: Callable[..., Path],
    tmp_path: Path,
) -> None:
    publisher(upstream.url + "/npm/", "publish", cwd=bulky_package(make_package, "pt-big", 200_000))
    args = ("--npm-upstream", proxy.url + "/npm/")
    caching = make_depot_server(*args)
    registry = caching.url + "/npm/"
    # Published here, larger than the whole cache may be: never counted, never evicted.
    own = fresh_npm(tmp_path, "own")
    own.login(registry)
    own(registry, "publish", cwd=bulky_package(make_package, "pt-own", 300_000))

    fresh_npm(tmp_path, "1")(registry, "install", cwd=make_app(tmp_path, "tree"))
    fresh_npm(tmp_path, "2")(registry, "install", cwd=app_needing(tmp_path, "big", {"pt-big": "1"}))
    again = make_app(tmp_path, "tree-again")
    fresh_npm(tmp_path, "3")(registry, "install", cwd=again)  # the small tree, used again
    assert installed(again) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    caching.stop()  # writes the recorded uses

    # About 200 KB cached for pt-big, a few KB for the small tree: pt-big (packument and
    # tarball) was used least recently and goes; the small tree stays; pt-own is not cache.
    report = depot_gc(caching, "--cache-max-size", "100K").stdout
    assert "npm: evicted 2 cached items" in report, report

    caching = make_depot_server(*args, store_path=caching.store_path)
    registry = caching.url + "/npm/"
    before = proxy.count()
    big = app_needing(tmp_path, "big-again", {"pt-big": "1"})
    fresh_npm(tmp_path, "4")(registry, "install", cwd=big)  # fetched again, and it works
    assert (big / "node_modules" / "pt-big" / "payload.bin").stat().st_size == 200_000
    assert proxy.count() - before == 2  # its packument and tarball, nothing of the small tree

    proxy.stop()  # upstream gone: what is held, and what is published here, still installs
    tree = make_app(tmp_path, "tree-offline")
    fresh_npm(tmp_path, "5")(registry, "install", cwd=tree)
    assert installed(tree) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    mine = app_needing(tmp_path, "own-app", {"pt-own": "1"})
    fresh_npm(tmp_path, "6")(registry, "install", cwd=mine)
    assert (mine / "node_modules" / "pt-own" / "payload.bin").stat().st_size == 300_000


def test_max_age_evicts_what_was_unused_for_longer_and_dry_run_removes_nothing(
    published: None,  # noqa: F811
    proxy: FaultProxy,  # noqa: F811
    make_depot_server: Callable[..., DepotServer],
    make_package: Callable[..., Path],
    tmp_path: Path,
) -> None:
    args = ("--npm-upstream", proxy.url + "/npm/")
    caching = make_depot_server(*args)
    registry = caching.url + "/npm/"
    own = fresh_npm(tmp_path, "own")
    own.login(registry)
    own(registry, "publish", cwd=make_package("pt-own", "1.0.0"))
    fresh_npm(tmp_path, "1")(registry, "install", cwd=make_app(tmp_path, "tree"))
    caching.stop()
    stopped = time.time()
    blobs = caching.store_path / "blobs" / "npm"
    held = sorted(p for p in blobs.rglob("*") if p.is_file())

    assert "evicted" not in depot_gc(caching, "--cache-max-age", "1h").stdout
    while time.time() < stopped + 1.5:  # the tree's last use is now over a second ago
        time.sleep(0.1)
    dry = depot_gc(caching, "--dry-run", "--cache-max-age", "1s").stdout
    assert "npm: would evict 4 cached items" in dry, dry  # two packuments, two tarballs
    assert sorted(p for p in blobs.rglob("*") if p.is_file()) == held
    done = depot_gc(caching, "--cache-max-age", "1s").stdout
    assert "npm: evicted 4 cached items" in done, done

    caching = make_depot_server(*args, store_path=caching.store_path)
    registry = caching.url + "/npm/"
    assert httpx.get(registry + "pt-own").status_code == 200  # published: kept
    before = proxy.count()
    tree = make_app(tmp_path, "tree-again")
    fresh_npm(tmp_path, "2")(registry, "install", cwd=tree)
    assert installed(tree) == {"pt-leaf": "1.1.0", "@pt/mid": "2.0.0"}
    assert proxy.count() - before == 4  # all fetched again from upstream
