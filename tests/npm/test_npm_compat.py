"""What npm users do every day beyond install and publish, with the real npm 11.

Legacy package names, the whole package document (readme, time, metadata fields), missing
tarballs, and ``npm login``/``adduser``/``whoami`` against an open depot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
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


def _documented_package(
    make_package: Callable[..., Path], version: str, readme: str, **fields: object
) -> Path:
    folder = make_package(
        "documented",
        version,
        description="A package with its papers in order",
        homepage="https://example.com/documented",
        repository={"type": "git", "url": "git+https://example.com/documented.git"},
        bugs={"url": "https://example.com/documented/issues"},
        keywords=["papers", "order"],
        license="MIT",
        author={"name": "Ann Author", "email": "ann@example.com"},
        maintainers=[{"name": "ann", "email": "ann@example.com"}],
        **fields,
    )
    (folder / "README.md").write_text(readme)
    return folder


def test_npm_view_shows_what_the_publish_sent(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=_documented_package(make_package, "1.0.0", "# Documented\n"))
    readme = "# Documented\n\nNow with *usage*.\n"
    npm(registry, "publish", cwd=_documented_package(make_package, "1.1.0", readme))

    assert npm(registry, "view", "documented", "readme").stdout.strip() == readme.strip()
    fields = ["description", "homepage", "repository", "bugs", "keywords", "license", "author"]
    fields += ["maintainers", "time"]
    view = json.loads(npm(registry, "view", "documented", *fields, "--json").stdout)
    assert view["description"] == "A package with its papers in order"
    assert view["homepage"] == "https://example.com/documented"
    assert view["repository"]["url"] == "git+https://example.com/documented.git"
    assert view["bugs"] == {"url": "https://example.com/documented/issues"}
    assert view["keywords"] == ["papers", "order"]
    assert view["license"] == "MIT"
    assert view["author"] == "Ann Author <ann@example.com>"  # npm view writes people as text
    assert view["maintainers"] == ["ann <ann@example.com>"]
    time = view["time"]
    assert {"created", "modified", "1.0.0", "1.1.0"} <= set(time)
    assert time["created"] <= time["1.0.0"] < time["1.1.0"] <= time["modified"]

    packument = httpx.get(f"{registry}documented").json()
    assert packument["readme"] == readme and packument["readmeFilename"] == "README.md"
    assert all("readme" not in v for v in packument["versions"].values())
    abbreviated = httpx.get(
        f"{registry}documented", headers={"accept": "application/vnd.npm.install-v1+json"}
    )
    assert "readme" not in abbreviated.text and "papers in order" not in abbreviated.text
    assert len(abbreviated.content) < len(httpx.get(f"{registry}documented").content) / 2


def test_a_publish_without_a_readme_leaves_none_on_top(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path]
) -> None:
    """The top level is the latest publish's, as on the public registry: nothing stale stays."""
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    npm(registry, "publish", cwd=_documented_package(make_package, "1.0.0", "# Old\n"))
    npm(registry, "publish", cwd=make_package("documented", "2.0.0", description="Rewritten"))
    packument = httpx.get(f"{registry}documented").json()
    assert packument["description"] == "Rewritten"
    assert "# Old" not in packument.get("readme", "")  # npm sends a placeholder readme
    assert "homepage" not in packument
    assert npm(registry, "view", "documented@1.0.0", "homepage").stdout.strip() == (
        "https://example.com/documented"
    )


LOGINS = {
    "login": (["login"], [("Username:", "ann"), ("Password:", "any password")], "ann"),
    "login-legacy": (
        ["login", "--auth-type=legacy"],
        [("Username:", "ann"), ("Password:", "any password")],
        "ann",
    ),
    "adduser": (
        ["adduser"],
        [("Username:", "bob"), ("Password:", "pw"), ("Email", "bob@example.com")],
        "bob",
    ),
}


@pytest.mark.parametrize("how", list(LOGINS))
def test_npm_login_on_an_open_depot_leaves_a_token_that_publish_uses(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], how: str
) -> None:
    """No hand-edited .npmrc: ``npm login``, then ``npm publish`` and ``npm whoami`` work."""
    args, prompts, username = LOGINS[how]
    registry = depot_server.url + "/npm/"
    refused = npm(registry, "publish", cwd=make_package("logged", "1.0.0"), check=False)
    assert refused.returncode != 0 and "ENEEDAUTH" in refused.stderr  # npm wants a token first

    logged_in = npm.answer(registry, *args, prompts=prompts)
    assert logged_in.returncode == 0, logged_in.stdout
    assert f"Logged in on {registry}" in logged_in.stdout
    assert "_authToken=depot_npm_" in (npm.home / "npmrc").read_text()
    assert npm(registry, "whoami").stdout.strip() == username
    npm(registry, "publish", cwd=make_package("logged", "1.0.0"))
    assert "1.0.0" in httpx.get(f"{registry}logged").json()["versions"]

    token = (npm.home / "npmrc").read_text().split("_authToken=")[1].split()[0]
    npm(registry, "logout")
    npmrc = npm.home / "npmrc"
    assert not npmrc.exists() or "_authToken" not in npmrc.read_text()
    forgotten = httpx.get(f"{registry}-/whoami", headers={"authorization": f"Bearer {token}"})
    assert forgotten.json() == {"username": "anonymous"}


def test_npm_login_refuses_a_username_npm_would_not_send(depot_server: DepotServer) -> None:
    response = httpx.put(
        f"{depot_server.url}/npm/-/user/org.couchdb.user:..%2fx",
        json={"name": "../x", "password": "p"},
    )
    assert response.status_code == 400 and "invalid username" in response.json()["error"]
