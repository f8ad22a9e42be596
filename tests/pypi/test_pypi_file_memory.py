"""Small distribution files are sent from each worker's memory (``--artifact-memory``), and never
outlive their release: after ``depot python delete`` the file (and its core metadata) is a 404 at
once on the writing worker and within the core's bound on every other, and pip no longer gets it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import DepotServer, until_fresh

from .conftest import Clients

#: The promise, one poll interval, and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def file_urls(server: DepotServer, project: str) -> dict[str, tuple[str, str]]:
    page = httpx.get(f"{server.url}/python/simple/{project}/", headers=JSON).json()
    return {f["filename"]: (f["url"], f["hashes"]["sha256"]) for f in page["files"]}


def test_a_deleted_file_is_gone_on_every_worker_within_the_bound(
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
    wheel_factory: Callable[..., Path],
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    server = make_depot_server("--workers", "2")
    index = f"{server.url}/python/simple/"
    clients.twine_upload(server.url, [wheel_factory("held-demo", v) for v in ("1.0", "2.0")])
    target, _ = clients.pip_install(index, "held-demo==1.0")  # pip checks the sha256
    assert list_installed(target) == {"held-demo": "1.0"}
    urls = file_urls(server, "held-demo")
    url, sha256 = urls["held_demo-1.0-py3-none-any.whl"]
    for _ in range(20):  # every worker now holds the wheel (and its metadata) in memory
        response = httpx.get(url)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == sha256
        assert httpx.get(url + ".metadata").status_code == 200

    clients.depot("python", "delete", server.url, "held-demo", "1.0")
    until_fresh(lambda: httpx.get(url).status_code == 404, WITHIN)
    until_fresh(lambda: httpx.get(url + ".metadata").status_code == 404, WITHIN)
    _, pinned = clients.pip_install(index, "held-demo==1.0", check=False)
    assert pinned.returncode != 0
    other, _ = urls["held_demo-2.0-py3-none-any.whl"]
    assert httpx.get(other).status_code == 200

    clients.depot("python", "delete", server.url, "held-demo")
    until_fresh(lambda: httpx.get(other).status_code == 404, WITHIN)


def test_the_writing_worker_answers_404_on_the_next_request(
    depot_server: DepotServer, clients: Clients, wheel_factory: Callable[..., Path]
) -> None:
    clients.twine_upload(depot_server.url, [wheel_factory("next-demo", "1.0")])
    url, _ = file_urls(depot_server, "next-demo")["next_demo-1.0-py3-none-any.whl"]
    assert httpx.get(url).status_code == httpx.get(url).status_code == 200
    clients.depot("python", "delete", depot_server.url, "next-demo")
    assert httpx.get(url).status_code == 404
    assert httpx.get(url + ".metadata").status_code == 404
