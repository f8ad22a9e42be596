"""Two ``depot serve`` replicas sharing PostgreSQL and S3 (moto): upload to one, install from the other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def test_upload_to_one_replica_install_from_the_other(
    make_replicas: Callable[..., list],
    dists: Path,
    clients,
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    first, second = make_replicas(2)
    clients.twine_upload(
        first.url, [dists / "delta-1.0-py3-none-any.whl", dists / "delta-1.0.tar.gz"]
    )
    # The second replica renders (and caches) the page now ...
    before = httpx.get(f"{second.url}/python/simple/delta/", headers=JSON).json()
    assert before["versions"] == ["1.0"]
    clients.twine_upload(first.url, sorted(dists.glob("*.whl")))
    # ... and must not serve that cached page once the first replica has stored more.
    after = httpx.get(f"{second.url}/python/simple/delta/", headers=JSON).json()
    assert after["versions"] == ["1.0", "2.0"]
    target, _ = clients.pip_install(f"{second.url}/python/simple/", "alpha[fancy]")
    assert list_installed(target) == {
        "alpha": "1.0",
        "beta-pkg": "1.1",
        "gamma": "1.0",
        "delta": "1.0",
    }
    metadata = httpx.get(f"{second.url}/python/files/delta/delta-1.0-py3-none-any.whl.metadata")
    assert metadata.status_code == 200 and b"Name: delta" in metadata.content
