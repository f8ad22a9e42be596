"""``depot npm delete``: a published version, or a whole package, removed on purpose; the real npm
client no longer finds it, and its tarball leaves the blob store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from depot.core.testing import DepotServer

from .conftest import Npm


def tarballs(server: DepotServer) -> set[str]:
    root = server.store_path / "blobs" / "npm"
    return {str(p.relative_to(root)) for p in root.rglob("*.tgz")}


def depot_npm_delete(server: DepotServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "depot.core", "npm", "delete", server.url, *args],
        capture_output=True, text=True,
    )  # fmt: skip


def test_delete_one_version_then_the_package(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = f"{depot_server.url}/npm/"
    npm.login(registry)
    for version in ("1.0.0", "1.1.0"):
        npm(registry, "publish", cwd=make_package("@gc/left-pad", version))
    assert len(tarballs(depot_server)) == 2

    dry = depot_npm_delete(depot_server, "@gc/left-pad@1.1.0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete @gc/left-pad 1.1.0 (1 tarball(s)" in dry.stdout
    assert len(tarballs(depot_server)) == 2
    npm(registry, "view", "@gc/left-pad@1.1.0", "version")

    one = depot_npm_delete(depot_server, "@gc/left-pad@1.1.0")
    assert one.returncode == 0, one.stderr
    assert len(tarballs(depot_server)) == 1
    gone = npm(registry, "view", "@gc/left-pad@1.1.0", "version", check=False)
    assert gone.stdout.strip() == ""  # npm view prints nothing for a version that is not there
    assert npm(registry, "view", "@gc/left-pad", "version").stdout.strip() == "1.0.0"

    whole = depot_npm_delete(depot_server, "@gc/left-pad")
    assert whole.returncode == 0, whole.stderr
    assert tarballs(depot_server) == set()
    missing = npm(registry, "view", "@gc/left-pad", check=False)
    assert missing.returncode != 0 and "E404" in missing.stderr

    again = depot_npm_delete(depot_server, "@gc/left-pad")
    assert again.returncode == 1 and "HTTP 404" in again.stderr
