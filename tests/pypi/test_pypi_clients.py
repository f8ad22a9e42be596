"""pip, uv and twine against a real ``depot serve`` holding the test projects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


def simple_url(server: DepotServer) -> str:
    return f"{server.url}/python/simple/"


def test_pip_installs_a_closure_with_extras_and_uses_core_metadata(
    published: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    target, _ = clients.pip_install(simple_url(published), "alpha[fancy]")
    # delta 2.0 requires Python >= 4, so pip must pick 1.0; Beta.Pkg arrives normalised.
    assert list_installed(target) == {
        "alpha": "1.0",
        "beta-pkg": "1.1",
        "gamma": "1.0",
        "delta": "1.0",
    }
    assert (target / "gamma.py").exists()
    # PEP 658: pip read each wheel's .metadata instead of downloading wheels to resolve.
    log = published.log()
    for wheel in ["alpha-1.0", "Beta.Pkg-1.1", "gamma-1.0", "delta-1.0"]:
        assert re.search(
            rf'"path": "/python/files/[^"]+/{re.escape(wheel)}-py3-none-any\.whl\.metadata", "status": 200',
            log,
        )


def test_pip_download_fetches_the_files(published: DepotServer, clients) -> None:
    dest = clients.pip_download(simple_url(published), "alpha")
    assert sorted(p.name for p in dest.iterdir()) == [
        "Beta.Pkg-1.1-py3-none-any.whl", "alpha-1.0-py3-none-any.whl", "delta-1.0-py3-none-any.whl",
    ]  # fmt: skip


def test_pip_installs_an_sdist_when_asked_for_no_binary(
    published: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    target, _ = clients.pip_install(
        simple_url(published), "--no-deps", "--no-build-isolation", "--no-binary=:all:", "gamma"
    )
    assert list_installed(target) == {"gamma": "1.0"}


def test_uv_installs_the_same_closure(
    published: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    target = clients.uv_install(simple_url(published), "alpha[fancy]", "Beta.Pkg==1.0")
    assert list_installed(target) == {"alpha": "1.0", "beta-pkg": "1.0", "gamma": "1.0"}


def test_json_project_page_follows_pep_691(published: DepotServer, dists: Path) -> None:
    response = httpx.get(simple_url(published) + "delta/", headers={"Accept": PIP_ACCEPT})
    assert response.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
    assert response.headers["vary"] == "Accept"
    page = response.json()
    assert page["meta"]["api-version"] == "1.1"
    assert page["name"] == "delta" and page["versions"] == ["1.0", "2.0"]
    by_name = {f["filename"]: f for f in page["files"]}
    assert set(by_name) == {"delta-1.0-py3-none-any.whl", "delta-1.0.tar.gz",
                            "delta-2.0-py3-none-any.whl", "delta-2.0.tar.gz"}  # fmt: skip
    for filename, entry in by_name.items():
        local = (dists / filename).read_bytes()
        assert entry["hashes"] == {"sha256": hashlib.sha256(local).hexdigest()}
        assert entry["size"] == len(local)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["upload-time"])
        assert entry["yanked"] is False
        served = httpx.get(entry["url"])
        assert served.status_code == 200 and served.content == local
    assert by_name["delta-2.0-py3-none-any.whl"]["requires-python"] == ">=4"
    wheel = by_name["delta-1.0-py3-none-any.whl"]
    metadata = httpx.get(wheel["url"] + ".metadata")
    assert hashlib.sha256(metadata.content).hexdigest() == wheel["core-metadata"]["sha256"]
    assert b"Name: delta" in metadata.content and b"Version: 1.0" in metadata.content
    assert by_name["delta-1.0.tar.gz"]["core-metadata"] is False


def test_html_project_page_follows_pep_503(published: DepotServer) -> None:
    response = httpx.get(simple_url(published) + "delta/", headers={"Accept": "text/html"})
    assert response.headers["content-type"].startswith("text/html")
    body = response.text
    assert '<meta name="pypi:repository-version" content="1.1">' in body
    anchors = re.findall(r"<a ([^>]*)>([^<]*)</a>", body)
    assert len(anchors) == 4
    for attributes, text in anchors:
        assert re.search(rf'href="[^"]*/{re.escape(text)}#sha256=[0-9a-f]{{64}}"', attributes)
        assert 'data-requires-python="&gt;=' in attributes
        assert ('data-core-metadata="sha256=' in attributes) == text.endswith(".whl")


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
     ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+json"),
     ("text/html", "text/html; charset=utf-8")],
)  # fmt: skip
def test_root_page_lists_normalised_projects_in_each_format(
    published: DepotServer, accept: str, content_type: str
) -> None:
    response = httpx.get(simple_url(published), headers={"Accept": accept})
    assert response.headers["content-type"] == content_type
    if "json" in accept:
        names = [p["name"] for p in response.json()["projects"]]
    else:
        names = re.findall(r'<a href="([^"/]+)/">', response.text)
    assert names == ["alpha", "beta-pkg", "delta", "gamma"]


def test_non_normalised_names_redirect_and_unknown_projects_are_404(published: DepotServer) -> None:
    response = httpx.get(simple_url(published) + "Beta.Pkg/")
    assert response.status_code == 301
    assert response.headers["location"] == simple_url(published) + "beta-pkg/"
    assert httpx.get(simple_url(published) + "beta-pkg").headers["location"].endswith("/beta-pkg/")
    assert httpx.get(simple_url(published) + "no-such-project/").status_code == 404


def test_unacceptable_media_type_is_406(published: DepotServer) -> None:
    response = httpx.get(simple_url(published) + "gamma/", headers={"Accept": "application/json"})
    assert response.status_code == 406


def test_files_answer_head_and_ranges(published: DepotServer, dists: Path) -> None:
    url = f"{published.url}/python/files/gamma/gamma-1.0-py3-none-any.whl"
    local = (dists / "gamma-1.0-py3-none-any.whl").read_bytes()
    head = httpx.head(url)
    assert head.headers["accept-ranges"] == "bytes"
    assert int(head.headers["content-length"]) == len(local)
    assert head.headers["etag"] == f'"{hashlib.sha256(local).hexdigest()}"'
    tail = httpx.get(url, headers={"Range": "bytes=-22"})  # a zip's end-of-central-directory
    assert tail.status_code == 206 and tail.content == local[-22:]
    assert (
        httpx.get(f"{published.url}/python/files/alpha/gamma-1.0-py3-none-any.whl").status_code
        == 404
    )
    assert (
        httpx.get(f"{published.url}/python/files/gamma/gamma-1.0.tar.gz.metadata").status_code
        == 404
    )


def test_twine_reupload_of_same_file_is_accepted_and_different_bytes_are_refused(
    published: DepotServer, dists: Path, clients, wheel_factory: Callable[..., Path]
) -> None:
    again = clients.twine_upload(published.url, [dists / "gamma-1.0-py3-none-any.whl"])
    assert again.returncode == 0
    impostor = wheel_factory("gamma", "1.0")  # same filename, other bytes
    refused = clients.twine_upload(published.url, [impostor], check=False)
    assert refused.returncode != 0
    assert "409" in refused.stdout + refused.stderr
    # What pip gets is still the original.
    served = httpx.get(f"{published.url}/python/files/gamma/gamma-1.0-py3-none-any.whl")
    assert served.content == (dists / "gamma-1.0-py3-none-any.whl").read_bytes()
