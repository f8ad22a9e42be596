"""``--cache-max-size`` over a Nix pull-through cache, with the real nix.

The upstream (a signing depot), its fault proxy and the caching depot are those of
:mod:`test_nix_pullthrough`. Use is recorded in memory and written at shutdown, so the test
stops the caching depot, runs ``depot gc`` on its store, and starts a depot on the same store
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer, depot_gc
from depot.core.testing_upstream import FaultProxy
from depot.nix import narinfo
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix, start_signing_depot
from .test_nix_pullthrough import (  # noqa: F401 - fixtures
    built,
    cache_key,
    caching,
    copy_from,
    proxy,
    upstream,
)


def cached_size(source: DepotServer, closure: Closure) -> int:
    """About what the caching depot counts for a closure it fetched: each path's narinfo as the
    upstream signed it, and its NAR file."""
    total = 0
    for path in closure.paths:
        text = httpx.get(f"{source.url}/nix/{Path(path).name[:32]}.narinfo").text
        total += len(text) + int(narinfo.parse(text).file_size or 0)
    return total


def test_over_max_size_the_least_recently_used_paths_are_evicted_and_fetched_again(
    built: Closure,  # noqa: F811
    upstream: DepotServer,  # noqa: F811
    proxy: FaultProxy,  # noqa: F811
    caching: DepotServer,  # noqa: F811
    cache_key: SecretKey,  # noqa: F811
    signing_key: SecretKey,
    closure: Closure,
    make_closure: Callable[[], Closure],
    nix: Nix,
    tmp_path: Path,
) -> None:
    other = make_closure()
    nix("nix", "copy", "--to", f"{upstream.url}/nix?compression=xz", other.app)
    nix("nix", "copy", "--to", f"{caching.url}/nix", closure.app)  # pushed here: never evicted

    copy_from(nix, caching, cache_key, tmp_path / "first", built.app)
    copy_from(nix, caching, cache_key, tmp_path / "other", other.app)
    copy_from(nix, caching, cache_key, tmp_path / "again", built.app)  # `other` is now oldest
    caching.stop()  # writes the recorded uses

    # Just above what `built` takes (the slack, for a narinfo stored formatted slightly
    # otherwise, is smaller than either path of `other`): `other` must go, `built` stays.
    limit = cached_size(upstream, built) + 256
    report = depot_gc(caching, "--cache-max-size", str(limit)).stdout
    assert "nix: evicted 2 cached items" in report, report  # both paths of `other`

    args = (
        "--nix-upstream", proxy.url + "/nix",
        "--nix-upstream-key", str(signing_key.public_key()),
    )  # fmt: skip
    caching = start_signing_depot(tmp_path / "caching", cache_key, *args)
    try:
        evicted = rf"/nix/{Path(other.app).name[:32]}\.narinfo$"
        before, asked = proxy.count(), proxy.count(evicted)
        assert httpx.get(f"{caching.url}/nix/{Path(other.app).name[:32]}.narinfo").is_success
        assert proxy.count(evicted) == asked + 1  # asked upstream again
        copy_from(nix, caching, cache_key, tmp_path / "other-again", other.app)  # and it works
        assert proxy.count() - before == 4  # two narinfos, two NARs: nothing of `built`

        proxy.stop()  # upstream gone: what is held, and what was pushed here, still copies
        copy_from(nix, caching, cache_key, tmp_path / "offline", built.app)
        copy_from(nix, caching, cache_key, tmp_path / "pushed", closure.app)
    finally:
        caching.stop()


def test_a_path_evicted_while_the_depot_serves_is_fetched_again_not_served_from_memory(
    built: Closure,  # noqa: F811
    proxy: FaultProxy,  # noqa: F811
    caching: DepotServer,  # noqa: F811
    cache_key: SecretKey,  # noqa: F811
    nix: Nix,
    tmp_path: Path,
) -> None:
    copy_from(nix, caching, cache_key, tmp_path / "first", built.app)
    narinfo_url = f"{caching.url}/nix/{Path(built.app).name[:32]}.narinfo"
    upstream_narinfo = rf"/nix/{Path(built.app).name[:32]}\.narinfo$"
    assert httpx.get(narinfo_url).is_success  # kept rendered in the serving process
    asked = proxy.count(upstream_narinfo)

    report = depot_gc(caching, "--cache-max-size", "0").stdout
    assert "nix: evicted 2 cached items" in report, report

    # The eviction reaches the serving process through the change notification (within its
    # bound): the narinfo is then asked of the upstream again, never served naming a gone NAR.
    deadline = time.monotonic() + 10
    while proxy.count(upstream_narinfo) == asked and time.monotonic() < deadline:
        assert httpx.get(narinfo_url).is_success
        time.sleep(0.1)
    assert proxy.count(upstream_narinfo) == asked + 1
    copy_from(nix, caching, cache_key, tmp_path / "again", built.app)
