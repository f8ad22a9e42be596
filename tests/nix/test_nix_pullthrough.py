"""``--nix-upstream``: depot as a pull-through cache in front of other binary caches.

The upstream is a real ``depot serve --private-key`` holding paths pushed with ``nix copy``,
behind the fault-injecting proxy; the caching depot signs with a key of its own and trusts the
upstream's key. Upstream requests are counted from the upstream's own access log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.testing import Chromium, DepotServer, metric
from depot.core.testing_upstream import FaultProxy
from depot.nix import narinfo
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix, start_signing_depot


def upstream_requests(upstream: DepotServer) -> int:
    count = 0
    for line in upstream.settled_log().splitlines():
        if '"depot.access"' in line and json.loads(line)["path"].startswith("/nix/"):
            count += 1
    return count


@pytest.fixture
def upstream(tmp_path: Path, signing_key: SecretKey) -> Iterator[DepotServer]:
    (tmp_path / "upstream").mkdir()
    server = start_signing_depot(tmp_path / "upstream", signing_key)
    yield server
    server.stop()


@pytest.fixture
def built(nix: Nix, make_closure: Callable[[], Closure], upstream: DepotServer) -> Closure:
    closure = make_closure()
    nix("nix", "copy", "--to", f"{upstream.url}/nix?compression=xz", closure.app)
    return closure


@pytest.fixture
def proxy(upstream: DepotServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url) as running:
        yield running


@pytest.fixture
def cache_key() -> SecretKey:
    return SecretKey.generate("depot-cache-1")


@pytest.fixture
def caching(
    tmp_path: Path, proxy: FaultProxy, signing_key: SecretKey, cache_key: SecretKey
) -> Iterator[DepotServer]:
    (tmp_path / "caching").mkdir()
    server = start_signing_depot(
        tmp_path / "caching", cache_key,
        "--nix-upstream", proxy.url + "/nix",
        "--nix-upstream-key", str(signing_key.public_key()),
    )  # fmt: skip
    yield server
    server.stop()


def copy_from(nix: Nix, cache: DepotServer, key: SecretKey, dest: Path, path: str, **kw: object):
    return nix(
        "nix", "copy", "--option", "trusted-public-keys", str(key.public_key()),
        "--from", f"{cache.url}/nix", "--to", str(dest), path, **kw,
    )  # fmt: skip


def test_nix_copy_from_fetches_once_then_serves_locally_signed_by_both(
    built: Closure,
    upstream: DepotServer,
    caching: DepotServer,
    cache_key: SecretKey,
    signing_key: SecretKey,
    nix: Nix,
    tmp_path: Path,
) -> None:
    before = upstream_requests(upstream)
    # Trusting only the caching depot's key: its signature is on what it serves.
    copy_from(nix, caching, cache_key, tmp_path / "first", built.app)
    fetched = upstream_requests(upstream)
    assert fetched - before == 4  # two narinfos, two NARs
    text = httpx.get(f"{caching.url}/nix/{Path(built.app).name[:32]}.narinfo").text
    assert f"Sig: {cache_key.name}:" in text and f"Sig: {signing_key.name}:" in text
    copy_from(nix, caching, signing_key, tmp_path / "second", built.app)
    assert upstream_requests(upstream) == fetched
    exposition = httpx.get(caching.url + "/metrics").text
    # The NARs; the narinfos were answered from the process's rendered-narinfo cache.
    assert metric(exposition, "depot_upstream_hits_total", ecosystem="nix") == 2


def test_upstream_stopped_the_held_closure_still_copies(
    built: Closure,
    proxy: FaultProxy,
    caching: DepotServer,
    cache_key: SecretKey,
    nix: Nix,
    tmp_path: Path,
) -> None:
    copy_from(nix, caching, cache_key, tmp_path / "first", built.app)
    proxy.stop()
    copy_from(nix, caching, cache_key, tmp_path / "second", built.app)
    missing = httpx.get(f"{caching.url}/nix/{'0' * 32}.narinfo")
    assert missing.status_code == 502 and proxy.url in missing.text


def test_a_narinfo_with_a_wrong_signature_is_refused_and_not_stored(
    built: Closure,
    upstream: DepotServer,
    proxy: FaultProxy,
    caching: DepotServer,
    cache_key: SecretKey,
    signing_key: SecretKey,
    nix: Nix,
    tmp_path: Path,
) -> None:
    hash_part = Path(built.app).name[:32]
    text = httpx.get(f"{upstream.url}/nix/{hash_part}.narinfo").text
    info = narinfo.parse(text)
    genuine = next(s for s in info.signatures if s.key_name == signing_key.name)
    forged = SecretKey.generate(signing_key.name).sign(info.fingerprint())  # same name, other key
    proxy.add("replace", r"\.narinfo$", old=str(genuine).encode(), new=str(forged).encode())
    answer = httpx.get(f"{caching.url}/nix/{hash_part}.narinfo")
    assert answer.status_code == 502 and "no valid signature" in answer.text
    result = copy_from(nix, caching, cache_key, tmp_path / "dest", built.app, check=False)
    assert result.returncode != 0
    proxy.clear()
    assert httpx.get(f"{caching.url}/nix/{hash_part}.narinfo").status_code == 200


def test_a_tampered_nar_is_refused_and_not_stored(
    built: Closure,
    proxy: FaultProxy,
    caching: DepotServer,
    cache_key: SecretKey,
    nix: Nix,
    tmp_path: Path,
) -> None:
    proxy.add("tamper", r"/nix/nar/")
    result = copy_from(nix, caching, cache_key, tmp_path / "dest", built.app, check=False)
    assert result.returncode != 0
    info = narinfo.parse(httpx.get(f"{caching.url}/nix/{Path(built.lib).name[:32]}.narinfo").text)
    answer = httpx.get(f"{caching.url}/nix/{info.url}")
    assert answer.status_code == 502 and "FileHash" in answer.text
    held = caching.store_path / "blobs" / "nix" / "upstream" / "nar"
    assert not held.exists() or not any(held.iterdir())


def test_misses_are_remembered_briefly(proxy: FaultProxy, caching: DepotServer) -> None:
    for _ in range(3):
        answer = httpx.get(f"{caching.url}/nix/{'1' * 32}.narinfo")
        assert answer.status_code == 404
    assert proxy.count(r"/nix/1{32}\.narinfo$") == 1


def test_pages_show_cached_paths_apart_from_pushed_ones(
    built: Closure,
    proxy: FaultProxy,
    caching: DepotServer,
    cache_key: SecretKey,
    nix: Nix,
    make_closure: Callable[[], Closure],
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    """A path depot looked up through its upstream has a page saying so (and whether its NAR is
    held yet, which a ``nix copy --from`` changes); a path pushed to it says pushed."""
    upstream_label = proxy.url + "/nix"
    app_hash = Path(built.app).name[:32]
    page = f"{caching.url}/-/browse/nix/{app_hash}"
    assert httpx.get(page).status_code == 404  # nothing held yet
    assert httpx.get(f"{caching.url}/nix/{app_hash}.narinfo").status_code == 200
    dom = chromium.dom(page)
    assert f"Cached from {upstream_label}" in dom
    assert "not fetched yet" in dom  # the narinfo is held, its NAR not

    copy_from(nix, caching, cache_key, tmp_path / "copied", built.app)
    dom = chromium.dom(page)  # the kept page moved with the NAR's fetch
    assert f"cached from {upstream_label}, fetched " in dom
    assert "fetched and verified" in dom and "not fetched yet" not in dom
    lib_row = dom.split(Path(built.lib).name + "</a>", 1)[1].split("</tr>", 1)[0]
    assert "cached from" in lib_row  # the reference is held, as a cached path
    assert "Pushed to this depot" not in dom

    pushed = make_closure()
    nix("nix", "copy", "--to", f"{caching.url}/nix", pushed.app)
    mine = chromium.dom(f"{caching.url}/-/browse/nix/{Path(pushed.app).name[:32]}")
    assert "Pushed to this depot" in mine and "pushed here" in mine
    assert "cached from" not in mine.lower()

    search = chromium.dom(caching.url + "/-/browse/nix")
    published_part, _, cached_part = search.partition("Cached from upstreams")
    assert pushed.app in published_part and built.app not in published_part
    assert built.app in cached_part and built.lib in cached_part
    assert f"cached from {upstream_label}" in cached_part
