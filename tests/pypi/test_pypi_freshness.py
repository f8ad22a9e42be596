"""Cached simple pages follow uploads and yanks: at once on the writing worker, within the core's
bound (depot.core.changes.BOUND) on the other worker of ``--workers 2`` and on a replica sharing
PostgreSQL. Writes go through twine and ``depot python yank``; pip installs at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import DepotServer, until_fresh

#: The promise, one poll interval, and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def files(server: DepotServer, project: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/python/simple/{project}/", headers=JSON)
    if response.status_code != 200:
        return {}
    return {entry["filename"]: entry["yanked"] for entry in response.json()["files"]}


def html(server: DepotServer, project: str) -> str:
    return httpx.get(f"{server.url}/python/simple/{project}/").text


def test_uploads_and_yanks_reach_every_worker_within_the_bound(
    make_depot_server: Callable[..., DepotServer],
    dists: Path,
    clients,
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    server = make_depot_server("--workers", "2")
    clients.twine_upload(server.url, [dists / "delta-1.0-py3-none-any.whl"])
    for _ in range(20):  # every worker renders and caches both forms
        assert files(server, "delta") and "delta-1.0" in html(server, "delta")

    clients.twine_upload(server.url, [dists / "delta-1.0.tar.gz"])
    until_fresh(lambda: "delta-1.0.tar.gz" in files(server, "delta"), WITHIN)
    until_fresh(lambda: "delta-1.0.tar.gz" in html(server, "delta"), WITHIN)

    clients.depot("python", "yank", server.url, "delta", "1.0", "--reason", "broken")
    until_fresh(lambda: set(files(server, "delta").values()) == {"broken"}, WITHIN)
    until_fresh(lambda: 'data-yanked="broken"' in html(server, "delta"), WITHIN)

    clients.depot("python", "yank", server.url, "delta", "1.0", "--undo")
    until_fresh(lambda: set(files(server, "delta").values()) == {False}, WITHIN)
    target, _ = clients.pip_install(f"{server.url}/python/simple/", "delta")
    assert list_installed(target) == {"delta": "1.0"}


def test_the_writing_worker_serves_the_yank_on_the_next_request(
    depot_server: DepotServer, dists: Path, clients
) -> None:
    clients.twine_upload(depot_server.url, [dists / "gamma-1.0-py3-none-any.whl"])
    assert files(depot_server, "gamma") == {"gamma-1.0-py3-none-any.whl": False}
    clients.depot("python", "yank", depot_server.url, "gamma", "1.0")
    assert files(depot_server, "gamma") == {"gamma-1.0-py3-none-any.whl": True}


def test_a_replica_follows_yanks_made_through_the_other_within_the_bound(
    make_replicas: Callable[..., list], dists: Path, clients
) -> None:
    a, b = make_replicas(2)
    clients.twine_upload(a.url, [dists / "delta-1.0-py3-none-any.whl"])
    until_fresh(lambda: bool(files(b, "delta")), WITHIN, streak=3)
    clients.depot("python", "yank", a.url, "delta", "1.0", "--reason", "broken")
    until_fresh(lambda: set(files(b, "delta").values()) == {"broken"}, WITHIN, streak=3)
    clients.depot("python", "yank", a.url, "delta", "1.0", "--undo")
    until_fresh(lambda: set(files(b, "delta").values()) == {False}, WITHIN, streak=3)


def test_a_file_uploaded_through_another_process_meanwhile_is_listed_after_its_own_upload(
    wheel_factory: Callable[..., Path], tmp_path: Path
) -> None:
    """``depot python push`` to one process of a file another process stored a moment ago is
    told "already stored"; the next simple page there must list it, not the page rendered
    before, which the other process's notification corrects only a poll later (250 ms)."""
    first = DepotServer(tmp_path / "store").start()
    second = first.another()
    try:
        with httpx.Client() as client:
            for n in range(4):
                wheel = wheel_factory("echo", f"1.{n}")
                assert len(files(second, "echo")) == n  # rendered there, and kept
                for server, status in ((first, 201), (second, 200)):
                    put = client.put(
                        f"{server.url}/python/files/echo/{wheel.name}", content=wheel.read_bytes()
                    )
                    assert put.status_code == status, put.text
                listed = client.get(f"{second.url}/python/simple/echo/", headers=JSON).json()
                assert wheel.name in {entry["filename"] for entry in listed["files"]}
    finally:
        second.stop()
        first.stop()
