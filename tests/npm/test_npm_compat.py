"""What npm users do every day beyond install and publish, with the real npm 11.

Legacy package names, the whole package document (readme, time, metadata fields), missing
tarballs, and ``npm login``/``adduser``/``whoami`` against an open depot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer, run

from .conftest import Npm  # noqa: TID252 - fixtures' helper type


def test_a_legacy_capitalised_name_is_published_and_installed(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    """A patched fork of ``JSONStream`` keeps its name: npm accepts it for existing packages."""
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("JSONStream", "1.3.6"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    npm(registry, "install", "JSONStream@^1.3.0", cwd=project)
    node = run(["node", "-p", "require('JSONStream')"], cwd=project)
    assert node.stdout.strip() == "JSONStream@1.3.6"


def test_names_npm_refuses_outright_are_still_refused(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    refused = npm(registry, "publish", cwd=make_package("_private", "1.0.0"), check=False)
    assert refused.returncode != 0
    assert httpx.get(f"{depot_server.url}/npm/_private").status_code == 400


def test_a_tarball_the_package_does_not_have_is_404(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=make_package("holder", "1.0.0"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    for missing in ("holder-9.9.9.tgz", "other-1.0.0.tgz", "holder.zip"):
        url = f"{registry}holder/-/{missing}"
        response = httpx.get(url)
        assert response.status_code == 404, (missing, response.status_code)
        assert response.json()["error"]
        failed = npm(registry, "install", url, cwd=project, check=False)
        assert failed.returncode != 0 and "404" in failed.stderr, failed.stderr
