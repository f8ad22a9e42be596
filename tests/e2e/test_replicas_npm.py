"""Real npm against two depot replicas sharing one S3 bucket and one PostgreSQL database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from depot.core.testing import run

NPM = shutil.which("npm")
pytestmark = pytest.mark.skipif(NPM is None, reason="npm is not installed")


def npm(
    home: Path, registry: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """npm with its own cache and config under ``home``, talking to ``registry`` only."""
    home.mkdir(parents=True, exist_ok=True)
    npmrc = home / "npmrc"
    if not npmrc.exists():  # npm publish wants a token even when the registry is open
        parts = urlsplit(registry)
        npmrc.write_text(f"//{parts.netloc}{parts.path}:_authToken=test-token\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env.update(
        HOME=str(home),
        NPM_CONFIG_CACHE=str(home / "cache"),
        NPM_CONFIG_USERCONFIG=str(npmrc),
        NPM_CONFIG_UPDATE_NOTIFIER="false",
        NPM_CONFIG_AUDIT="false",
        NPM_CONFIG_FUND="false",
        NPM_CONFIG_FETCH_RETRIES="0",
    )
    assert NPM is not None
    return run([NPM, *args, "--registry", registry], cwd=cwd or home, env=env)


def package(root: Path, name: str, version: str) -> Path:
    folder = root / f"{name}-{version}"
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(
        json.dumps({"name": name, "version": version, "main": "index.js"})
    )
    (folder / "index.js").write_text(f"module.exports = {json.dumps(version)};\n")
    return folder


def test_concurrent_publish_of_versions_through_both_replicas_keeps_every_version(
    make_replicas: Any, tmp_path: Path
) -> None:
    a, b = make_replicas(2)
    registries = [f"{a.url}/npm/", f"{b.url}/npm/"]
    assert httpx.get(f"{b.url}/npm/replicated").status_code == 404  # B has looked: no stale answer
    versions = [f"1.0.{i}" for i in range(6)]

    def publish(i: int) -> None:
        # A tag of its own each: npm refuses to move "latest" below a higher version, and the
        # tags written concurrently through both replicas must all survive too.
        folder = package(tmp_path / "src", "replicated", versions[i])
        npm(tmp_path / f"home-{i}", registries[i % 2], "publish", "--tag", f"line-{i}", cwd=folder)

    with ThreadPoolExecutor(len(versions)) as pool:
        list(pool.map(publish, range(len(versions))))

    for registry in registries:
        listed = json.loads(
            npm(tmp_path / "viewer", registry, "view", "replicated", "versions", "--json").stdout
        )
        assert sorted(listed) == versions, registry
    packument = httpx.get(f"{a.url}/npm/replicated").json()
    assert sorted(packument["versions"]) == versions
    tags = packument["dist-tags"]
    assert all(tags[f"line-{i}"] == version for i, version in enumerate(versions)), tags


def test_npm_install_through_one_replica_of_what_was_published_through_the_other(
    make_replicas: Any, tmp_path: Path
) -> None:
    a, b = make_replicas(2)
    npm(
        tmp_path / "publisher",
        f"{a.url}/npm/",
        "publish",
        cwd=package(tmp_path / "src", "crossing", "2.1.0"),
    )
    project = tmp_path / "app"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "app", "version": "0.0.0"}))
    npm(tmp_path / "installer", f"{b.url}/npm/", "install", "crossing@2.1.0", cwd=project)
    installed = project / "node_modules" / "crossing" / "index.js"
    assert installed.read_text() == 'module.exports = "2.1.0";\n'
    lock = json.loads((project / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/crossing"]["resolved"].startswith(f"{b.url}/npm/")


def test_what_one_replica_has_served_follows_changes_made_through_the_other(
    make_replicas: Any, tmp_path: Path
) -> None:
    """B renders (maybe caches) the packument; publish, dist-tag, unpublish via A show at once."""
    a, b = make_replicas(2)
    via_a, via_b = f"{a.url}/npm/", f"{b.url}/npm/"

    def view_through_b(field: str) -> Any:
        value = json.loads(
            npm(tmp_path / "viewer", via_b, "view", "followed", field, "--json").stdout
        )
        return (
            [value] if field == "versions" and isinstance(value, str) else value
        )  # npm unwraps one

    npm(
        tmp_path / "publisher", via_a, "publish", cwd=package(tmp_path / "src", "followed", "1.0.0")
    )
    assert view_through_b("versions") == ["1.0.0"]
    tarball = f"{b.url}/npm/followed/-/followed-1.0.0.tgz"
    assert httpx.get(tarball).status_code == 200

    npm(
        tmp_path / "publisher", via_a, "publish", cwd=package(tmp_path / "src", "followed", "1.1.0")
    )
    assert view_through_b("versions") == ["1.0.0", "1.1.0"]
    assert view_through_b("dist-tags")["latest"] == "1.1.0"

    npm(tmp_path / "publisher", via_a, "dist-tag", "add", "followed@1.0.0", "stable")
    assert view_through_b("dist-tags")["stable"] == "1.0.0"

    npm(tmp_path / "publisher", via_a, "unpublish", "followed@1.0.0")
    assert view_through_b("versions") == ["1.1.0"]
    assert httpx.get(tarball).status_code == 404
