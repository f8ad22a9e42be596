"""``depot python delete``: a release, or a whole project, removed on purpose; pip no longer finds
it, and its files (and core metadata) leave the blob store unless another file shares them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from depot.core.testing import DepotServer

from .conftest import Clients


def blobs(server: DepotServer) -> set[str]:
    root = server.store_path / "blobs" / "pypi"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_delete_a_release_then_the_project(
    depot_server: DepotServer, clients: Clients, wheel_factory: Callable[..., Path]
) -> None:
    wheels = [wheel_factory("gc-demo", v) for v in ("1.0", "2.0")]
    clients.twine_upload(depot_server.url, wheels)
    index = f"{depot_server.url}/python/simple/"
    stored = blobs(depot_server)
    assert len(stored) == 4  # two wheels and their core metadata

    dry = clients.depot("python", "delete", depot_server.url, "gc-demo", "2.0", "--dry-run")
    assert "would delete gc-demo 2.0: 1 file(s)" in dry.stdout
    assert blobs(depot_server) == stored

    clients.depot("python", "delete", depot_server.url, "gc-demo", "2.0")
    assert len(blobs(depot_server)) == 2
    _, pinned = clients.pip_install(index, "gc-demo==2.0", check=False)
    assert pinned.returncode != 0 and "No matching distribution" in pinned.stderr
    target, _ = clients.pip_install(index, "gc-demo")
    assert (target / "gc_demo-1.0.dist-info").is_dir()

    clients.depot("python", "delete", depot_server.url, "gc-demo")
    assert blobs(depot_server) == set()
    assert (
        clients.depot("python", "delete", depot_server.url, "gc-demo", check=False).returncode == 1
    )
