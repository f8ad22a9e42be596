"""Uploads that must be refused with a 4xx and leave nothing behind, and the PUT upload API."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer

from .conftest import Clients, installed  # noqa: TID252 - fixtures' helpers

UPLOAD = "/python/"


def form_for(path: Path, name: str, version: str, **overrides: str) -> dict[str, str]:
    """The fields twine sends along with the file."""
    data = path.read_bytes()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if path.suffix == ".whl" else "sdist",
        "metadata_version": "2.1",
        "summary": "a test package",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "md5_digest": hashlib.md5(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    fields.update(overrides)
    return fields


async def twine_post(
    client: httpx.AsyncClient, path: Path, fields: dict[str, str], filename: str | None = None
) -> httpx.Response:
    files = {"content": (filename or path.name, path.read_bytes(), "application/octet-stream")}
    return await client.post(UPLOAD, data=fields, files=files)


async def assert_nothing_stored(client: httpx.AsyncClient, tmp_path: Path) -> None:
    assert (
        await client.get(
            "/python/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    ).json()["projects"] == []
    blobs = tmp_path / "store" / "blobs" / "pypi"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


async def test_twine_style_upload_is_stored_with_all_digests_checked(
    app_client: httpx.AsyncClient, wheel_factory: Callable[..., Path]
) -> None:
    wheel = wheel_factory("demo", "1.0", requires_python=">=3.9")
    response = await twine_post(app_client, wheel, form_for(wheel, "demo", "1.0"))
    assert response.status_code == 200, response.text
    page = (
        await app_client.get(
            "/python/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    ).json()
    (entry,) = page["files"]
    assert entry["requires-python"] == ">=3.9"
    assert entry["url"] == "http://depot.test/python/files/demo/demo-1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("sha256 mismatch", "sha256_digest does not match"),
        ("md5 mismatch", "md5_digest does not match"),
        ("blake2 mismatch", "blake2_256_digest does not match"),
        ("corrupt wheel", "not a valid wheel"),
        ("metadata names another version", "filename says"),
        ("filename of another project", "does not belong to project"),
        ("version differs from the form", "is not version"),
        ("traversal in the filename", "not a distribution filename"),
        ("not a distribution", "neither a wheel"),
        ("sdist declared as wheel", "is not a bdist_wheel"),
        ("no file", "no 'content' file"),
        ("other action", "unsupported :action"),
    ],
)  # fmt: skip
async def test_bad_uploads_are_refused_and_nothing_is_stored(
    app_client: httpx.AsyncClient,
    wheel_factory: Callable[..., Path],
    tmp_path: Path,
    case: str,
    reason: str,
) -> None:
    wheel = wheel_factory("demo", "1.0")
    fields = form_for(wheel, "demo", "1.0")
    filename = None
    if case == "sha256 mismatch":
        fields["sha256_digest"] = "0" * 64
    elif case == "md5 mismatch":
        fields["md5_digest"] = "0" * 32
    elif case == "blake2 mismatch":
        fields["blake2_256_digest"] = "0" * 64
    elif case == "corrupt wheel":
        wheel.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
        fields = form_for(wheel, "demo", "1.0")
    elif case == "metadata names another version":
        wheel = wheel_factory("demo", "1.0", metadata_version="1.1")
        fields = form_for(wheel, "demo", "1.0")
    elif case == "filename of another project":
        fields = form_for(wheel, "other", "1.0")
    elif case == "version differs from the form":
        fields = form_for(wheel, "demo", "2.0")
    elif case == "traversal in the filename":
        filename = "../../demo-1.0-py3-none-any.whl"
    elif case == "not a distribution":
        filename = "demo-1.0.exe"
    elif case == "sdist declared as wheel":
        filename = "demo-1.0.tar.gz"
    elif case == "other action":
        fields[":action"] = "remove_pkg"
    if case == "no file":
        response = await app_client.post(UPLOAD, data=fields)
    else:
        response = await twine_post(app_client, wheel, fields, filename)
    assert 400 <= response.status_code < 500
    assert reason in response.text and response.text.count("\n") == 1
    await assert_nothing_stored(app_client, tmp_path)


@pytest.mark.parametrize(
    "body",
    [b"--xyz\r\nContent-Disposition: form-data; name=\"content\"; filename=\"demo-1.0.tar.gz\"\r\n\r\nabc",
     b"not multipart at all", b"--xyz--\r\n"],
)  # fmt: skip
async def test_malformed_multipart_is_400(
    app_client: httpx.AsyncClient, tmp_path: Path, body: bytes
) -> None:
    response = await app_client.post(
        UPLOAD, content=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert response.status_code == 400
    await assert_nothing_stored(app_client, tmp_path)


async def test_put_stores_a_verified_file_and_is_idempotent(
    app_client: httpx.AsyncClient, wheel_factory: Callable[..., Path]
) -> None:
    wheel = wheel_factory("demo", "1.0")
    data = wheel.read_bytes()
    url = f"/python/files/demo/{wheel.name}"
    assert (await app_client.head(url)).status_code == 404
    headers = {"X-Depot-Sha256": hashlib.sha256(data).hexdigest()}
    assert (await app_client.put(url, content=data, headers=headers)).status_code == 201
    assert (await app_client.put(url, content=data, headers=headers)).status_code == 200
    head = await app_client.head(url)
    assert head.status_code == 200 and head.headers["etag"] == f'"{headers["X-Depot-Sha256"]}"'
    assert (await app_client.get(url)).content == data
    other = wheel_factory("demo", "1.0", requires_python=">=3").read_bytes()
    conflict = await app_client.put(url, content=other)
    assert conflict.status_code == 409 and "File already exists" in conflict.text
    assert (await app_client.get(url)).content == data


@pytest.mark.parametrize(
    ("url", "sha256", "status"),
    [
        ("/python/files/demo/demo-1.0-py3-none-any.whl", "0" * 64, 400),
        ("/python/files/other/demo-1.0-py3-none-any.whl", None, 400),
        ("/python/files/Demo/demo-1.0-py3-none-any.whl", None, 400),
        ("/python/files/demo/..%2Fdemo-1.0-py3-none-any.whl", None, 404),
        ("/python/files/demo/.demo-1.0-py3-none-any.whl", None, 400),
    ],
)  # fmt: skip
async def test_put_refuses_mismatches_and_traversal(
    app_client: httpx.AsyncClient,
    wheel_factory: Callable[..., Path],
    tmp_path: Path,
    url: str,
    sha256: str | None,
    status: int,
) -> None:
    data = wheel_factory("demo", "1.0").read_bytes()
    headers = {"X-Depot-Sha256": sha256} if sha256 else {}
    response = await app_client.put(url, content=data, headers=headers)
    assert response.status_code == status
    await assert_nothing_stored(app_client, tmp_path)


async def test_project_page_shows_a_new_upload_at_once_and_revalidates_by_etag(
    app_client: httpx.AsyncClient, wheel_factory: Callable[..., Path]
) -> None:
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    first = wheel_factory("demo", "1.0")
    await app_client.put(f"/python/files/demo/{first.name}", content=first.read_bytes())
    page = await app_client.get("/python/simple/demo/", headers=accept)
    assert page.json()["versions"] == ["1.0"]
    unchanged = await app_client.get(
        "/python/simple/demo/", headers={**accept, "If-None-Match": page.headers["etag"]}
    )
    assert unchanged.status_code == 304

    second = wheel_factory("demo", "1.1")
    await app_client.put(f"/python/files/demo/{second.name}", content=second.read_bytes())
    changed = await app_client.get(
        "/python/simple/demo/", headers={**accept, "If-None-Match": page.headers["etag"]}
    )
    assert changed.status_code == 200 and changed.json()["versions"] == ["1.0", "1.1"]
    html = await app_client.get("/python/simple/demo/", headers={"Accept": "text/html"})
    assert html.headers["etag"] != changed.headers["etag"] and second.name in html.text


async def test_browse_page_and_front_page_show_projects(
    app_client: httpx.AsyncClient, wheel_factory: Callable[..., Path]
) -> None:
    for version in ("1.0", "1.10", "1.9"):
        wheel = wheel_factory("demo-tool", version)
        await app_client.put(f"/python/files/demo-tool/{wheel.name}", content=wheel.read_bytes())
    browse = await app_client.get("/-/browse/pypi", params={"q": "TOOL"})
    assert browse.status_code == 200
    assert "demo-tool" in browse.text and "1.0, 1.9, 1.10" in browse.text
    front = await app_client.get("/")
    assert "pip install --index-url http://depot.test/python/simple/" in front.text


async def test_reupload_restores_a_blob_lost_from_the_store(
    app_client: httpx.AsyncClient, wheel_factory: Callable[..., Path], tmp_path: Path
) -> None:
    wheel = wheel_factory("demo", "1.0")
    url = f"/python/files/demo/{wheel.name}"
    assert (await app_client.put(url, content=wheel.read_bytes())).status_code == 201
    for blob in (tmp_path / "store" / "blobs" / "pypi").rglob("*"):
        if blob.is_file():
            blob.unlink()
    assert (await app_client.get(url)).status_code == 404
    assert (await app_client.put(url, content=wheel.read_bytes())).status_code == 200
    assert (await app_client.get(url)).content == wheel.read_bytes()
    assert (await app_client.get(url + ".metadata")).status_code == 200


def test_concurrent_twine_uploads_all_land_and_a_conflict_fails_alone(
    depot_server: DepotServer, clients: Clients, wheel_factory: Callable[..., Path]
) -> None:
    """twine uploads at once (their rows share commits on SQLite): every file is listed and
    installable, and a file name uploaded twice with other bytes is refused for one of them."""
    wheels = [wheel_factory("burst", f"1.{i}") for i in range(5)]
    wheels += [wheel_factory("burst-other", "2.0")]
    wheels += [wheel_factory("burst", "1.2", files={"burst.py": "# other bytes\n"})]
    with ThreadPoolExecutor(len(wheels)) as pool:
        results = list(
            pool.map(lambda w: clients.twine_upload(depot_server.url, [w], check=False), wheels)
        )
    codes = [r.returncode for r in results]
    assert codes[:2] + codes[3:6] == [0] * 5, [r.stdout[-400:] for r in results if r.returncode]
    assert sorted([codes[2], codes[6]])[0] == 0 and sorted([codes[2], codes[6]])[1] != 0

    page = httpx.get(
        depot_server.url + "/python/simple/burst/",
        headers={"accept": "application/vnd.pypi.simple.v1+json"},
    ).json()
    assert page["versions"] == [f"1.{i}" for i in range(5)]
    target, _ = clients.pip_install(depot_server.url + "/python/simple/", "burst", "burst-other")
    assert installed(target) == {"burst": "1.4", "burst-other": "2.0"}
