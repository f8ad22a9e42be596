"""The Python project page, ``/-/browse/pypi/<project>``, as a person sees it in a real Chromium
after real ``twine upload`` runs of wheels and sdists built by ``python -m build``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from depot.core.testing import HOSTILE_README, Chromium, DepotServer, scan_dom

from .conftest import Clients, build  # noqa: TID252 - the fixtures' helpers

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RST = """Pages demo
==========

A *reStructuredText* description with a `link <https://example.org/docs>`_.
"""
MARKDOWN = "# Pages demo\n\nA **Markdown** description with `code`.\n"
# readme_renderer refuses ``.. raw::`` (PyPI then shows the text as plain text), so what could
# run in reStructuredText is in its links and images.
HOSTILE_RST = """Hostile
=======

A `javascript link <javascript:document.title='pwned-rst-link'>`_ and *emphasis that stays*.

.. image:: javascript:document.title='pwned-rst-image'
   :target: javascript:document.title='pwned-rst-target'
"""


def project(
    root: Path,
    name: str,
    version: str,
    readme: str,
    content_type: str,
    dependencies: tuple[str, ...] = (),
    requires_python: str | None = None,
) -> Path:
    """A setuptools project whose description is ``readme`` of ``content_type``."""
    source = root / f"{name}-{version}"
    source.mkdir(parents=True)
    module = name.replace("-", "_")
    lines = [
        "[build-system]", 'requires = ["setuptools>=61"]', 'build-backend = "setuptools.build_meta"',
        "[project]", f'name = "{name}"', f'version = "{version}"',
        f"dependencies = {json.dumps(list(dependencies))}",
        f"readme = {{text = {json.dumps(readme)}, content-type = {json.dumps(content_type)}}}",
        *([f'requires-python = "{requires_python}"'] if requires_python else []),
        "[tool.setuptools]", f'py-modules = ["{module}"]',
    ]  # fmt: skip
    (source / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (source / f"{module}.py").write_text("")
    return source


def upload(clients: Clients, server: DepotServer, tmp_path: Path, *sources: Path) -> list[Path]:
    out = tmp_path / "dist"
    for source in sources:
        build(source, out)
    files = sorted(out.iterdir())
    clients.twine_upload(server.url, files)
    return files


@pytest.fixture
def server(make_depot_server) -> DepotServer:
    return make_depot_server()


def test_project_page_shows_versions_files_description_and_install_lines(
    server: DepotServer, clients: Clients, chromium: Chromium, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = upload(
        clients, server, tmp_path,
        project(src, "pages-dep", "1.0", "dep", "text/plain"),
        project(src, "pages-demo", "1.0", RST, "text/x-rst", ("pages-dep>=1", "requests>=2"),
                requires_python=">=3.8"),
        project(src, "pages-demo", "1.1", MARKDOWN, "text/markdown", ("pages-dep>=1",)),
    )  # fmt: skip
    httpx.post(
        f"{server.url}/python/-/yank/pages-demo/1.0", json={"reason": "broken on Windows"}
    ).raise_for_status()
    index = server.url + "/python/simple/"

    dom = chromium.dom(server.url + "/-/browse/pypi/pages-demo")
    assert ">Pages demo<" in dom and "<strong>Markdown</strong>" in dom  # 1.1, as markdown
    assert f"pip install --index-url {index} 'pages-demo==1.1'" in dom
    assert f"uv pip install --index-url {index} 'pages-demo==1.1'" in dom
    assert "yanked: broken on Windows" in dom
    for file in files:
        if file.name.startswith("pages_demo"):
            assert file.name in dom
            assert hashlib.sha256(file.read_bytes()).hexdigest() in dom
    assert "&gt;=3.8" in dom  # 1.0's files show their Requires-Python
    assert f'href="{server.url}/-/browse/pypi/pages-dep">pages-dep</a>' in dom

    old = chromium.dom(server.url + "/-/browse/pypi/Pages_Demo?version=1.0")
    assert "<em>reStructuredText</em>" in old  # rendered as reStructuredText
    assert 'href="https://example.org/docs"' in old
    assert "requests&gt;=2" in old and "/-/browse/pypi/requests" not in old  # not held here
    assert "'pages-demo==1.0'" in old

    for where in ("/", "/-/browse/pypi?q=demo"):
        assert f'href="{server.url}/-/browse/pypi/pages-demo"' in chromium.dom(server.url + where)
    ARTIFACTS.mkdir(exist_ok=True)  # screenshots for people to look at
    page = server.url + "/-/browse/pypi/pages-demo"
    chromium.screenshot(page, ARTIFACTS / "pypi-project-page.png", window="1280,1400")
    chromium.screenshot(page, ARTIFACTS / "pypi-project-page-phone.png", window="390,1400")


def test_a_hostile_description_runs_nothing_in_the_browser(
    server: DepotServer, clients: Clients, chromium: Chromium, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    upload(
        clients, server, tmp_path,
        project(src, "hostile-desc", "1.0", HOSTILE_RST, "text/x-rst"),
        project(src, "hostile-desc", "2.0", HOSTILE_README, "text/markdown"),
    )  # fmt: skip
    for version, kept in (("2.0", "<strong>bold text that stays</strong>"),
                          ("1.0", "<em>emphasis that stays</em>")):  # fmt: skip
        dom = chromium.dom(f"{server.url}/-/browse/pypi/hostile-desc?version={version}")
        title, dangers = scan_dom(dom)
        assert title == "hostile-desc - Python package index - depot", version
        assert dangers == [], version
        assert kept in dom


async def test_a_kept_page_changes_when_a_release_is_yanked(
    app_client: httpx.AsyncClient, wheel_factory
) -> None:
    for version in ("1.0", "2.0"):
        wheel = wheel_factory("kept-proj", version)
        data = wheel.read_bytes()
        put = await app_client.put(
            f"/python/files/kept-proj/{wheel.name}", content=data,
            headers={"X-Depot-Sha256": hashlib.sha256(data).hexdigest()},
        )  # fmt: skip
        assert put.status_code == 201
    first = await app_client.get("/-/browse/pypi/kept-proj")
    assert "kept-proj==2.0" in first.text and "yanked:" not in first.text
    kept = await app_client.get(
        "/-/browse/pypi/kept-proj", headers={"If-None-Match": first.headers["etag"]}
    )
    assert kept.status_code == 304

    yank = await app_client.post("/python/-/yank/kept-proj/2.0", json={"reason": "bad build"})
    assert yank.status_code == 200
    after = await app_client.get(
        "/-/browse/pypi/kept-proj", headers={"If-None-Match": first.headers["etag"]}
    )
    assert after.status_code == 200 and "yanked: bad build" in after.text
    assert "kept-proj==1.0" in after.text  # the newest release not yanked is shown first now
