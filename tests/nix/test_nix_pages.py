"""The store path page, ``/-/browse/nix/<hash part>``, as a person sees it in a real Chromium
after a real ``nix copy`` and ``nix store sign``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.pages import human_size
from depot.core.testing import Chromium, DepotServer
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix  # noqa: TID252 - fixtures' helper types
from .test_nix_cache import sign_with_a_second_key  # noqa: TID252


def hash_part(path: str) -> str:
    return Path(path).name[:32]


def test_store_path_page_shows_sizes_references_closure_and_signatures(
    nix: Nix,
    make_closure: Callable[[], Closure],
    nix_depot: DepotServer,
    signing_key: SecretKey,
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    built = make_closure()
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", f"{cache}?compression=xz", built.app)
    second = sign_with_a_second_key(nix, cache, built.app, tmp_path)
    info = {
        p["path"]: p for p in json.loads(nix("nix", "path-info", "--json", "-r", built.app).stdout)
    }

    dom = chromium.dom(f"{nix_depot.url}/-/browse/nix/{hash_part(built.app)}")
    assert f"<h1>{built.app}</h1>" in dom
    assert f"({info[built.app]['narSize']} bytes)" in dom
    narinfo = httpx.get(f"{cache}/{hash_part(built.app)}.narinfo").text
    nar_hash = next(line for line in narinfo.splitlines() if line.startswith("NarHash: "))
    assert nar_hash.removeprefix("NarHash: ") in dom
    closure_size = info[built.app]["narSize"] + info[built.lib]["narSize"]
    assert f"2 path(s), {human_size(closure_size)} unpacked" in dom
    # The reference to lib links to lib's page; lib's page lists app among its referrers.
    lib_page = f"{nix_depot.url}/-/browse/nix/{hash_part(built.lib)}"
    assert f'href="{lib_page}">{built.lib}</a>' in dom
    # Signatures: the second key's is another key than depot's; depot serves its own, valid.
    assert second.name in dom and "another key than depot" in dom
    assert (
        f"Served with a signature by depot's key <code>{signing_key.public_key()}</code>: verifies"
        in dom
    )
    assert f"nix copy --from '{cache}' {built.app}" in dom
    assert f"nix-store -r {built.app} --option substituters '{cache}'" in dom
    assert Path(built.app_drv).name in dom  # the deriver

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)  # a screenshot for people to look at
    page = f"{nix_depot.url}/-/browse/nix/{hash_part(built.app)}"
    chromium.screenshot(page, artifacts / "nix-store-path-page.png", window="1280,1400")

    lib = chromium.dom(lib_page)
    assert f'href="{nix_depot.url}/-/browse/nix/{hash_part(built.app)}">{built.app}</a>' in lib
    assert "Referrers (1)" in lib and "References (0)" in lib

    # Searching by name finds it and links to the page, as on the other ecosystems' pages.
    name = Path(built.app).name[33:]
    found = chromium.dom(f"{nix_depot.url}/-/browse/nix?q={name}")
    assert f'href="{nix_depot.url}/-/browse/nix/{hash_part(built.app)}"' in found


def test_without_a_key_the_page_says_signatures_cannot_be_checked(
    nix: Nix, make_closure: Callable[[], Closure], depot_server: DepotServer, chromium: Chromium
) -> None:
    """A depot started without ``--private-key`` serves paths unsigned and says so."""
    built = make_closure()
    nix("nix", "copy", "--to", f"{depot_server.url}/nix", built.lib)
    dom = chromium.dom(f"{depot_server.url}/-/browse/nix/{hash_part(built.lib)}")
    assert "None: this path is served unsigned." in dom
