"""nginx with ``proxy_cache`` in front of depot, as a CDN would stand: NARs are cached for good,
narinfo and nix-cache-info are revalidated, and nix substitutes through it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer
from depot.core.testing_services import CachingProxy
from depot.nix import narinfo
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix  # noqa: TID252


def test_the_second_download_of_a_nar_is_answered_by_the_proxy(
    nix: Nix,
    make_closure: Callable[[], Closure],
    nix_depot: DepotServer,
    make_caching_proxy: Callable[[str], CachingProxy],
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    built = make_closure()
    nix("nix", "copy", "--to", f"{nix_depot.url}/nix", built.app)
    proxy = make_caching_proxy(nix_depot.url)
    hash_part = Path(built.app).name[:32]
    nar_path = (
        "/nix/" + narinfo.parse(httpx.get(f"{nix_depot.url}/nix/{hash_part}.narinfo").text).url
    )

    trusted = ["--option", "trusted-public-keys", str(signing_key.public_key())]
    for store in ("first", "second"):
        # A fresh store and HOME each time: nix itself has nothing cached.
        Nix(tmp_path / f"home-{store}")(
            "nix", "copy", *trusted, "--from", f"{proxy.url}/nix",
            "--to", str(tmp_path / store), built.app,
        )  # fmt: skip
        assert (tmp_path / store / built.app.lstrip("/") / "lib-path").exists()

    nix_depot.wait_for_log(f'"path": "{nar_path}"')
    assert len(nix_depot.requests_for(nar_path)) == 1
    again = httpx.get(proxy.url + nar_path)
    assert again.headers["x-cache-status"] == "HIT"
    assert again.headers["cache-control"] == "public, max-age=31536000, immutable"
    # The narinfo was asked for each time (no-cache): a new signature would show at once.
    assert len(nix_depot.requests_for(f"/nix/{hash_part}.narinfo")) >= 3


def test_narinfo_and_cache_info_answer_conditional_requests(
    nix: Nix, closure: Closure, nix_depot: DepotServer
) -> None:
    nix("nix", "copy", "--to", f"{nix_depot.url}/nix", closure.app)
    for path in (f"{Path(closure.app).name[:32]}.narinfo", "nix-cache-info"):
        first = httpx.get(f"{nix_depot.url}/nix/{path}")
        assert first.headers["cache-control"] == "no-cache"
        for method in ("GET", "HEAD"):
            again = httpx.request(
                method,
                f"{nix_depot.url}/nix/{path}",
                headers={"If-None-Match": first.headers["etag"]},
            )
            assert again.status_code == 304 and again.content == b""
