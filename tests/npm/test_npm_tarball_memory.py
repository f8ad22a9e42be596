"""Small tarballs are sent from each worker's memory (``--artifact-memory``), and never outlive
their package: after ``npm unpublish`` or ``depot npm delete`` (and a collection) the tarball is a
404 at once on the writing worker and within the core's bound on every other."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import DepotServer, until_fresh

from .conftest import Npm

#: The promise, one poll interval, and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75


def tarball_url(registry: str, name: str, version: str) -> str:
    return httpx.get(registry + name).json()["versions"][version]["dist"]["tarball"]


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def install(npm: Npm, registry: str, project: Path, spec: str) -> subprocess.CompletedProcess[str]:
    project.mkdir(exist_ok=True)
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0"}))
    return npm(registry, "install", spec, "--prefer-online", cwd=project, check=False)


def test_an_unpublished_tarball_is_gone_on_every_worker_within_the_bound(
    make_depot_server: Callable[..., DepotServer],
    npm: Npm,
    make_package: Callable[..., Path],
    tmp_path: Path,
) -> None:
    server = make_depot_server("--workers", "2")
    registry = f"{server.url}/npm/"
    npm.login(registry)
    for version in ("1.0.0", "1.1.0"):
        npm(registry, "publish", cwd=make_package("held", version))
    installed = install(npm, registry, tmp_path / "app", "held@1.0.0")
    assert installed.returncode == 0, installed.stderr  # npm checked the bytes' integrity
    url = tarball_url(registry, "held", "1.0.0")
    expected = httpx.get(registry + "held").json()["versions"]["1.0.0"]["dist"]["integrity"]
    for _ in range(20):  # every worker now holds the tarball in memory
        response = httpx.get(url)
        assert response.status_code == 200 and integrity(response.content) == expected

    npm(registry, "unpublish", "held@1.0.0")
    until_fresh(lambda: httpx.get(url).status_code == 404, WITHIN)
    assert httpx.get(tarball_url(registry, "held", "1.1.0")).status_code == 200
    again = install(npm, registry, tmp_path / "again", "held@1.0.0")
    assert again.returncode != 0

    other = tarball_url(registry, "held", "1.1.0")
    npm(registry, "unpublish", "held", "--force")
    until_fresh(lambda: httpx.get(other).status_code == 404, WITHIN)


def test_the_writing_worker_answers_404_on_the_next_request(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = f"{depot_server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("@mem/pad", "1.0.0"))
    npm(registry, "publish", cwd=make_package("@mem/pad", "2.0.0"))
    one = tarball_url(registry, "@mem%2fpad", "1.0.0")
    two = tarball_url(registry, "@mem%2fpad", "2.0.0")
    assert httpx.get(one).status_code == httpx.get(one).status_code == 200
    npm(registry, "unpublish", "@mem/pad@1.0.0")
    assert httpx.get(one).status_code == 404
    assert httpx.get(two).status_code == 200

    deleted = subprocess.run(
        [sys.executable, "-m", "depot.core", "npm", "delete", depot_server.url, "@mem/pad"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    assert httpx.get(two).status_code == 404
    assert not list((depot_server.store_path / "blobs" / "npm").rglob("*.tgz"))
    assert httpx.get(two).status_code == 404  # the blob is gone; the bytes were not kept


def test_a_held_tarball_answers_ranges_heads_and_conditional_requests(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = f"{depot_server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("ranged", "1.0.0"))
    url = tarball_url(registry, "ranged", "1.0.0")
    whole = httpx.get(url)
    held = httpx.get(url)  # from memory now
    assert held.content == whole.content and held.headers["etag"] == whole.headers["etag"]
    for name in ("content-type", "content-length", "accept-ranges", "cache-control"):
        assert held.headers[name] == whole.headers[name]
    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(whole.content))
    unchanged = httpx.get(url, headers={"If-None-Match": whole.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_artifact_memory_off_serves_the_same(
    make_depot_server: Callable[..., DepotServer], npm: Npm, make_package: Callable[..., Path]
) -> None:
    server = make_depot_server("--artifact-memory", "0")
    registry = f"{server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("plain", "1.0.0"))
    url = tarball_url(registry, "plain", "1.0.0")
    assert httpx.get(url).content == httpx.get(url).content
    npm(registry, "unpublish", "plain", "--force")
    assert httpx.get(url).status_code == 404
