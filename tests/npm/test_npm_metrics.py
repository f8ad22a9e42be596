"""/metrics after a real npm publish and install: the counters move by what npm did."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer, metric

from .conftest import Npm  # noqa: TID252 - fixtures' helper types


def test_npm_install_moves_the_counters(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    package = make_package("metered", "1.0.0")
    npm(registry, "publish", cwd=package)
    tarball_size = int(
        httpx.head(registry + "metered/-/metered-1.0.0.tgz").headers["content-length"]
    )

    # A second npm with an empty cache: the publisher's cache already holds the tarball.
    installer_home = tmp_path / "installer"
    installer_home.mkdir()
    (installer_home / "npmrc").write_text("")
    installer = Npm(installer_home)
    before = httpx.get(depot_server.url + "/metrics").text
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    installer(registry, "install", "metered", cwd=project)
    after = httpx.get(depot_server.url + "/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("depot_artifacts_served_total", ecosystem="npm") == 1
    assert delta("depot_http_requests_total", ecosystem="npm", method="GET", status="200") >= 2
    assert delta("depot_bytes_served_total", ecosystem="npm") >= tarball_size
    assert delta("depot_http_requests_total", ecosystem="npm", method="PUT") == 0
    assert metric(after, "depot_stored_objects", ecosystem="npm") >= 1
