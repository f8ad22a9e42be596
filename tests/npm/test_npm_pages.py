"""The npm package page, ``/-/browse/npm/<name>``, as a person sees it in a real Chromium after
real ``npm publish``, ``npm deprecate`` and ``npm dist-tag`` runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import HOSTILE_README, Chromium, DepotServer, scan_dom
from markdown_it import MarkdownIt

from .conftest import Npm, make_tgz, publish_body  # noqa: TID252 - fixtures' helpers

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def publish(npm: Npm, registry: str, folder: Path, readme: str | None = None) -> None:
    if readme is not None:
        (folder / "README.md").write_text(readme)
    npm(registry, "publish", cwd=folder)


def test_package_page_shows_versions_readme_dependencies_and_install_line(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], chromium: Chromium
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    publish(npm, registry, make_package("@pages/lib", "1.0.0"))
    publish(npm, registry, make_package("@pages/lib", "1.1.0"))
    app = make_package(
        "app-of-pages", "2.0.0", description="An app that uses pages",
        dependencies={"@pages/lib": "^1.0.0", "left-pad": "^1.3.0"},
    )  # fmt: skip
    publish(npm, registry, app, readme="# Using the app\n\nCall `start()` and *wait*.\n")
    npm(registry, "deprecate", "@pages/lib@1.0.0", "please use 1.1")
    npm(registry, "dist-tag", "add", "@pages/lib@1.0.0", "legacy")
    dist = json.loads(npm(registry, "view", "app-of-pages", "dist", "--json").stdout)

    dom = chromium.dom(depot_server.url + "/-/browse/npm/app-of-pages")
    assert "An app that uses pages" in dom
    assert "<h1>Using the app</h1>" in dom and "<em>wait</em>" in dom  # markdown rendered
    assert dist["integrity"] in dom and dist["shasum"] in dom
    assert f"npm install --registry {registry} app-of-pages@2.0.0" in dom
    # Dependencies: the one this depot holds links to its page, the other is plain text.
    assert f'href="{depot_server.url}/-/browse/npm/@pages/lib">@pages/lib</a>' in dom
    assert "left-pad" in dom and "/-/browse/npm/left-pad" not in dom
    assert f'href="{depot_server.url}/npm/app-of-pages/-/app-of-pages-2.0.0.tgz"' in dom

    lib = chromium.dom(depot_server.url + "/-/browse/npm/@pages/lib")
    assert "@pages:registry=" + registry in lib  # scoped: the .npmrc line for the scope
    assert "deprecated: please use 1.1" in lib
    assert "legacy: " in lib and "latest: " in lib
    assert f"npm install --registry {registry} @pages/lib@1.1.0" in lib  # latest is selected
    old = chromium.dom(depot_server.url + "/-/browse/npm/@pages/lib?version=1.0.0")
    assert f"npm install --registry {registry} @pages/lib@1.0.0" in old

    # Reachable from / and from the search page.
    for where in ("/", "/-/browse/npm?q=pages"):
        assert f'href="{depot_server.url}/-/browse/npm/app-of-pages"' in chromium.dom(
            depot_server.url + where
        )
    ARTIFACTS.mkdir(exist_ok=True)  # a phone-sized screenshot for people to look at
    shot = ARTIFACTS / "npm-package-page-phone.png"
    chromium.screenshot(depot_server.url + "/-/browse/npm/@pages/lib", shot, window="390,1400")
    assert shot.stat().st_size > 10_000


def test_a_hostile_readme_runs_nothing_in_the_browser(
    depot_server: DepotServer,
    npm: Npm,
    make_package: Callable[..., Path],
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    # The same readme rendered without the sanitiser does run in this browser: the check can fail.
    unsafe = tmp_path / "unsafe.html"
    rendered = MarkdownIt("commonmark", {"html": True}).render(HOSTILE_README)
    unsafe.write_text(f"<!doctype html><title>before</title><body>{rendered}</body>")
    title, dangers = scan_dom(chromium.dom(unsafe.as_uri()))
    assert title.startswith("pwned") and dangers

    registry = depot_server.url + "/npm/"
    npm.login(registry)
    publish(npm, registry, make_package("hostile-readme", "1.0.0"), readme=HOSTILE_README)
    dom = chromium.dom(depot_server.url + "/-/browse/npm/hostile-readme")
    title, dangers = scan_dom(dom)
    assert title == "hostile-readme - npm registry - depot"
    assert dangers == []
    assert "<strong>bold text that stays</strong>" in dom and "<h1>Hostile readme</h1>" in dom


async def test_a_kept_page_changes_with_a_publish_and_answers_if_none_match(
    app_client: httpx.AsyncClient,
) -> None:
    async def put(name: str, version: str, **manifest: object) -> None:
        body = publish_body(name, version, make_tgz(name, version))
        body["versions"][version].update(manifest)
        assert (await app_client.put(f"/npm/{name}", json=body)).status_code == 201

    await put("kept-app", "1.0.0", dependencies={"kept-dep": "^1.0.0"})
    first = await app_client.get("/-/browse/npm/kept-app")
    assert "/-/browse/npm/kept-dep" not in first.text  # not held yet: no link
    again = await app_client.get(
        "/-/browse/npm/kept-app", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304

    await put("kept-dep", "1.0.0")  # another package: the dependency becomes a link
    linked = await app_client.get(
        "/-/browse/npm/kept-app", headers={"If-None-Match": first.headers["etag"]}
    )
    assert (
        linked.status_code == 200
        and 'href="http://depot.test/-/browse/npm/kept-dep"' in linked.text
    )
    await put("kept-app", "1.1.0")  # a new version of this one
    newer = await app_client.get("/-/browse/npm/kept-app")
    assert "kept-app@1.1.0" in newer.text and newer.headers["etag"] != linked.headers["etag"]
