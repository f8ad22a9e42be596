"""Cached narinfos follow uploads and ``nix store sign``: at once on the writing worker, within
the core's bound (depot.core.changes.BOUND) on the other worker of ``--workers 2`` and on a
replica sharing PostgreSQL. Absent paths are remembered too, and forgotten when one arrives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from depot.core.changes import BOUND, POLL_INTERVAL
from depot.core.testing import DepotServer, until_fresh
from depot.nix.narinfo import format as narinfo_format
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix, start_signing_depot  # noqa: TID252 - fixtures' helpers
from .test_nix_cache import sign_with_a_second_key  # noqa: TID252
from .test_nix_uploads import upload_of  # noqa: TID252

#: The promise, one poll interval, and some room for a loaded CI machine.
WITHIN = BOUND + POLL_INTERVAL + 0.75


def narinfo(server: DepotServer, path: str) -> str:
    hash_part = Path(path).name.split("-", 1)[0]
    response = httpx.get(f"{server.url}/nix/{hash_part}.narinfo")
    return response.text if response.status_code == 200 else ""


def test_uploads_and_signatures_reach_every_worker_within_the_bound(
    nix: Nix,
    make_closure: Callable[[], Closure],
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    server = start_signing_depot(tmp_path, signing_key, "--workers", "2")
    try:
        closure = make_closure()
        cache = f"{server.url}/nix"
        for _ in range(20):  # every worker looks, and remembers the path as absent
            assert narinfo(server, closure.app) == ""
        nix("nix", "copy", "--to", cache, closure.app)
        until_fresh(lambda: closure.app in narinfo(server, closure.app), WITHIN)

        second = sign_with_a_second_key(nix, cache, closure.app, tmp_path)
        until_fresh(lambda: f"Sig: {second.name}:" in narinfo(server, closure.app), WITHIN)
        info = nix.path_info(closure.app, store=cache)
        assert any(s.startswith(second.name + ":") for s in info["signatures"])  # type: ignore[union-attr]
    finally:
        server.stop()


def test_the_writing_worker_serves_the_new_signature_on_the_next_request(
    nix: Nix, make_closure: Callable[[], Closure], nix_depot: DepotServer, tmp_path: Path
) -> None:
    closure = make_closure()
    cache = f"{nix_depot.url}/nix"
    assert narinfo(nix_depot, closure.app) == ""
    nix("nix", "copy", "--to", cache, closure.app)
    assert closure.app in narinfo(nix_depot, closure.app)
    second = sign_with_a_second_key(nix, cache, closure.app, tmp_path)
    assert f"Sig: {second.name}:" in narinfo(nix_depot, closure.app)


def test_a_replica_follows_signatures_added_through_the_other_within_the_bound(
    make_replicas: Any, nix: Nix, make_closure: Callable[[], Closure], tmp_path: Path
) -> None:
    a, b = make_replicas(2)
    closure = make_closure()
    assert narinfo(b, closure.app) == ""
    nix("nix", "copy", "--to", f"{a.url}/nix", closure.app)
    until_fresh(lambda: closure.app in narinfo(b, closure.app), WITHIN, streak=3)
    second = sign_with_a_second_key(nix, f"{a.url}/nix", closure.app, tmp_path)
    until_fresh(lambda: f"Sig: {second.name}:" in narinfo(b, closure.app), WITHIN, streak=3)


def test_a_path_put_through_another_process_meanwhile_is_served_after_its_own_put(
    make_closure: Callable[[], Closure], signing_key: SecretKey, tmp_path: Path
) -> None:
    """Two ``nix copy`` runs through two processes share a dependency. nix asks for it (404),
    puts it, and checks it with a GET before putting what refers to it; the other process put
    it first, so this put only merged, and the GET must not answer from the absence remembered
    before the put, which the other process's notification corrects only a poll later. The
    puts and the GET take milliseconds; the poll interval is 250 ms."""
    first = start_signing_depot(tmp_path, signing_key)
    second = first.another()
    try:
        with httpx.Client() as client:
            for path in make_closure().paths + make_closure().paths:
                url, file, info = upload_of(path)
                assert narinfo(second, path) == ""  # remembered as absent there
                for server in (first, second):
                    assert client.put(f"{server.url}/nix/{url}", content=file).status_code == 200
                for server in (first, second):  # the window is these two puts and the GET
                    put = client.put(
                        f"{server.url}/nix/{info.hash_part}.narinfo", content=narinfo_format(info)
                    )
                    assert put.status_code == 200, put.text
                served = client.get(f"{second.url}/nix/{info.hash_part}.narinfo")
                assert f"StorePath: {path}" in served.text
    finally:
        second.stop()
        first.stop()
