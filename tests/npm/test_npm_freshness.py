"""Cached packuments follow every write: at once on the writing worker, within the core's bound
(depot.core.changes.BOUND) on the other workers of ``--workers 2`` and on a replica sharing
PostgreSQL. Writes go through the real npm; freshness is polled with a deadline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import DepotServer, until_fresh

from .conftest import Npm, make_tgz, publish_body  # noqa: TID252 - fixtures' helpers

#: The promise, one poll interval, and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75
ABBREVIATED = {"Accept": "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"}


def packument(registry: str, name: str) -> dict[str, Any]:
    response = httpx.get(registry + name, headers=ABBREVIATED)
    return response.json() if response.status_code == 200 else {}


def versions(registry: str, name: str) -> set[str]:
    return set(packument(registry, name).get("versions", {}))


def warm(registry: str, name: str) -> None:
    """Enough requests that every worker has rendered and cached the packument."""
    for _ in range(20):
        assert versions(registry, name)


def test_every_write_reaches_every_worker_within_the_bound(
    make_depot_server: Callable[..., DepotServer], npm: Npm, make_package: Callable[..., Path]
) -> None:
    server = make_depot_server("--workers", "2")
    registry = f"{server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("fresh", "1.0.0"))
    warm(registry, "fresh")

    npm(registry, "publish", cwd=make_package("fresh", "1.1.0"))
    until_fresh(lambda: versions(registry, "fresh") == {"1.0.0", "1.1.0"}, WITHIN)

    npm(registry, "dist-tag", "add", "fresh@1.0.0", "stable")
    until_fresh(lambda: packument(registry, "fresh")["dist-tags"].get("stable") == "1.0.0", WITHIN)

    npm(registry, "deprecate", "fresh@1.0.0", "use 1.1")
    full = lambda: httpx.get(registry + "fresh").json()["versions"]["1.0.0"]  # noqa: E731
    until_fresh(lambda: full().get("deprecated") == "use 1.1", WITHIN)

    npm(registry, "unpublish", "fresh@1.0.0")
    until_fresh(lambda: versions(registry, "fresh") == {"1.1.0"}, WITHIN)
    viewed = json.loads(npm(registry, "view", "fresh", "versions", "--json").stdout)
    assert viewed in ("1.1.0", ["1.1.0"])

    npm(registry, "unpublish", "fresh", "--force")
    until_fresh(lambda: httpx.get(registry + "fresh").status_code == 404, WITHIN)


def test_the_writing_worker_serves_the_change_on_the_next_request(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = f"{depot_server.url}/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("next", "1.0.0"))
    first = httpx.get(registry + "next", headers=ABBREVIATED)
    again = httpx.get(
        registry + "next", headers={**ABBREVIATED, "If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    npm(registry, "publish", cwd=make_package("next", "1.1.0"))
    assert versions(registry, "next") == {"1.0.0", "1.1.0"}
    npm(registry, "dist-tag", "add", "next@1.0.0", "old")
    assert packument(registry, "next")["dist-tags"]["old"] == "1.0.0"
    npm(registry, "unpublish", "next@1.0.0")
    assert versions(registry, "next") == {"1.1.0"}
    stale = httpx.get(
        registry + "next", headers={**ABBREVIATED, "If-None-Match": first.headers["etag"]}
    )
    assert stale.status_code == 200


def test_a_replica_follows_writes_made_through_the_other_within_the_bound(
    make_replicas: Any, npm: Npm, make_package: Callable[..., Path]
) -> None:
    a, b = make_replicas(2)
    via_a, via_b = f"{a.url}/npm/", f"{b.url}/npm/"
    npm.login(via_a)
    npm(via_a, "publish", cwd=make_package("shared", "1.0.0"))
    warm(via_b, "shared")
    npm(via_a, "publish", cwd=make_package("shared", "1.1.0"))
    until_fresh(lambda: versions(via_b, "shared") == {"1.0.0", "1.1.0"}, WITHIN, streak=3)
    npm(via_a, "dist-tag", "add", "shared@1.0.0", "stable")
    until_fresh(lambda: packument(via_b, "shared")["dist-tags"].get("stable") == "1.0.0", WITHIN, 3)
    npm(via_a, "unpublish", "shared@1.0.0")
    until_fresh(lambda: versions(via_b, "shared") == {"1.1.0"}, WITHIN, streak=3)
    tarball = f"{via_b}shared/-/shared-1.0.0.tgz"
    assert httpx.get(tarball).status_code == 404


def test_a_version_published_through_another_process_meanwhile_is_shown_after_its_own_publish(
    tmp_path: Path,
) -> None:
    """``depot npm push`` of a version another process published a moment ago is answered
    "existing"; the next packument there must show it, not the one rendered before, which the
    other process's notification corrects only a poll later (250 ms)."""
    first = DepotServer(tmp_path / "store").start()
    second = first.another()
    try:
        with httpx.Client() as client:
            for n in range(4):
                version = f"1.0.{n}"
                tgz = make_tgz("echo", version)
                document = publish_body("echo", version, tgz)["versions"][version]
                assert len(versions(second.url + "/npm/", "echo")) == n  # rendered and kept
                tarball = f"{first.url}/npm/echo/-/echo-{version}.tgz"
                assert client.put(tarball, content=tgz).status_code == 201  # push HEADs it first
                # The window: these two puts and the GET.
                for server, status in ((first, 201), (second, 200)):
                    put = client.put(f"{server.url}/npm/echo/{version}", json=document)
                    assert put.status_code == status, put.text
                shown = client.get(f"{second.url}/npm/echo", headers=ABBREVIATED).json()
                assert version in shown["versions"]
    finally:
        second.stop()
        first.stop()
