"""The registry as npm 11 uses it: publish, install, ci, view, dist-tag, deprecate, unpublish."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from depot.core.testing import DepotServer, run

from .conftest import Npm  # noqa: TID252 - fixtures' helper type


def pack(npm: Npm, registry: str, folder: Path) -> Path:
    """``npm pack`` a package directory; returns the tarball."""
    out = npm(registry, "pack", "--json", cwd=folder)
    return folder / json.loads(out.stdout)[0]["filename"]


def publish(npm: Npm, registry: str, folder: Path, *args: str) -> None:
    npm(registry, "publish", *args, cwd=folder)


def installed_version(project: Path, name: str) -> str:
    return json.loads((project / "node_modules" / name / "package.json").read_text())["version"]


def test_publish_then_install_and_ci_a_scoped_tree(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    base = make_package("@demo/base", "1.0.0")
    npm(registry, "publish", str(pack(npm, registry, base)), cwd=base)  # a tarball made by npm pack
    publish(npm, registry, make_package("@demo/base", "1.1.0"))
    publish(npm, registry, make_package("@demo/base", "2.0.0-rc.1"), "--tag", "next")
    publish(npm, registry, make_package("helper", "0.3.1", dependencies={"@demo/base": "~1.0.0"}))
    publish(
        npm,
        registry,
        make_package("app", "1.0.0", dependencies={"@demo/base": "^1.0.0", "helper": "0.3.x"}),
    )

    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    npm(registry, "install", "app", cwd=project)
    assert installed_version(project, "app") == "1.0.0"
    assert installed_version(project, "@demo/base") == "1.1.0"
    assert installed_version(project, "helper/node_modules/@demo/base") == "1.0.0"
    run(["node", "-e", "console.log(require('app'))"], cwd=project)

    lock = json.loads((project / "package-lock.json").read_text())
    resolved = lock["packages"]["node_modules/@demo/base"]["resolved"]
    assert resolved == depot_server.url + "/npm/@demo/base/-/base-1.1.0.tgz"

    shutil.rmtree(project / "node_modules")
    shutil.rmtree(npm.home / "cache")  # ci must fetch every tarball again from the depot
    npm(registry, "ci", cwd=project)
    assert installed_version(project, "@demo/base") == "1.1.0"
    assert installed_version(project, "helper/node_modules/@demo/base") == "1.0.0"

    out = npm(registry, "view", "@demo/base", "--json", cwd=project)
    view = json.loads(out.stdout)
    assert view["dist-tags"] == {"latest": "1.1.0", "next": "2.0.0-rc.1"}
    assert view["versions"] == ["1.0.0", "1.1.0", "2.0.0-rc.1"]


def test_latest_follows_semver_precedence_not_publish_order(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    publish(npm, registry, make_package("prec", "1.10.0"))
    # npm 11 asks for an explicit tag here; the registry still keeps latest at the highest.
    publish(npm, registry, make_package("prec", "1.9.0"), "--tag", "latest")
    publish(npm, registry, make_package("prec", "2.0.0"), "--tag", "beta")
    out = npm(registry, "view", "prec", "dist-tags", "--json")
    assert json.loads(out.stdout) == {"latest": "1.10.0", "beta": "2.0.0"}


def test_dist_tags_deprecate_and_unpublish(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        publish(npm, registry, make_package("@demo/tools", version))

    npm(registry, "dist-tag", "add", "@demo/tools@1.0.0", "stable")
    assert "stable: 1.0.0" in npm(registry, "dist-tag", "ls", "@demo/tools").stdout
    npm(registry, "dist-tag", "rm", "@demo/tools", "stable")
    assert "stable" not in npm(registry, "dist-tag", "ls", "@demo/tools").stdout

    npm(registry, "deprecate", "@demo/tools@1.0.0", "use 1.2")
    view = json.loads(npm(registry, "view", "@demo/tools@1.0.0", "--json").stdout)
    assert view["deprecated"] == "use 1.2"
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text("{}")
    result = npm(registry, "install", "@demo/tools@1.0.0", cwd=project)
    assert "use 1.2" in result.stderr
    npm(registry, "deprecate", "@demo/tools@1.0.0", "")
    assert "deprecated" not in json.loads(
        npm(registry, "view", "@demo/tools@1.0.0", "--json").stdout
    )

    npm(registry, "unpublish", "@demo/tools@1.2.0", "--force")
    view = json.loads(npm(registry, "view", "@demo/tools", "--json").stdout)
    assert view["versions"] == ["1.0.0", "1.1.0"]
    assert view["dist-tags"]["latest"] == "1.1.0"
    tarball = depot_server.url + "/npm/@demo/tools/-/tools-1.2.0.tgz"
    assert run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", tarball]).stdout == "404"

    npm(registry, "unpublish", "@demo/tools", "--force")
    gone = npm(registry, "view", "@demo/tools", check=False)
    assert gone.returncode != 0 and "E404" in gone.stderr


def test_republishing_a_version_is_refused(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    publish(npm, registry, make_package("once", "1.0.0"))
    again = make_package("once", "1.0.0", description="different bytes")
    result = npm(registry, "publish", cwd=again, check=False)
    assert result.returncode != 0
    assert (
        "previously published" in result.stderr
    )  # npm checks first; the server's 409: test_npm_api


def test_search_ping_and_audit_answer(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    publish(npm, registry, make_package("findme-pkg", "1.0.0", description="a needle"))
    npm(registry, "ping")
    found = json.loads(npm(registry, "search", "findme", "--json").stdout)
    assert [(p["name"], p["version"]) for p in found] == [("findme-pkg", "1.0.0")]
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text("{}")
    npm(registry, "install", "findme-pkg", "--audit=true", cwd=project)
    audit = npm(registry, "audit", "--json", cwd=project)
    assert json.loads(audit.stdout)["metadata"]["vulnerabilities"]["total"] == 0


def test_concurrent_publishes_all_land_and_a_duplicate_is_refused_alone(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    """npm clients publishing at once (their rows share commits on SQLite): every version is
    served, and of two publishes of one version exactly one wins while the others go on."""
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    folders = [make_package("burst", f"1.0.{i}") for i in range(6)]
    folders += [make_package("burst-other", "2.0.0")]
    folders += [make_package("burst", "1.0.3", description="the same version, other bytes")]
    with ThreadPoolExecutor(len(folders)) as pool:
        # npm 11 wants an explicit tag for a version below one already published.
        results = list(
            pool.map(
                lambda f: npm(registry, "publish", "--tag", "latest", cwd=f, check=False), folders
            )
        )
    codes = [r.returncode for r in results]
    assert codes[:3] + codes[4:7] == [0] * 6, [
        line for r in results for line in r.stderr.splitlines() if "error" in line
    ]
    assert sorted([codes[3], codes[7]])[0] == 0 and sorted([codes[3], codes[7]])[1] != 0

    view = json.loads(npm(registry, "view", "burst", "--json").stdout)
    assert view["versions"] == [f"1.0.{i}" for i in range(6)]
    assert view["dist-tags"]["latest"] == "1.0.5"
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    npm(registry, "install", "burst@1.0.3", "burst-other", cwd=project)
    assert installed_version(project, "burst") == "1.0.3"
    assert installed_version(project, "burst-other") == "2.0.0"
