"""A full or read-only store: uploads are answered 507 with the reason, reads go on.

The store lives on a small tmpfs mounted for the test (as root; CI runs as root), the database
outside it, so the blob store fills first as a disk of artefacts would. NAR PUT, npm publish and
twine upload each hit the full disk; each is one 507 with a reason, one error-level JSON log line
naming the store and the cause, and one count in ``depot_storage_write_refusals``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer, metric, run

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)

STORE_SIZE = 4 * 1024 * 1024
BIG = 6 * 1024 * 1024  # more than the store holds


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STORE_SIZE}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def full_depot(
    small_store: Path, tmp_path: Path, make_depot_server: Callable[..., DepotServer]
) -> DepotServer:
    database = f"sqlite:///{tmp_path / 'depot.db'}"
    # The store is the mount itself, so that the server log (written beside it) is not on it.
    return make_depot_server("--database-url", database, store_path=small_store)


def npm_publish_body(name: str, version: str, payload: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for path, data in (
            ("package/package.json", json.dumps({"name": name, "version": version}).encode()),
            ("package/payload.bin", payload),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = out.getvalue()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    document = {
        "_id": name,
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "dist": {"integrity": integrity}}},
        "_attachments": {
            f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(tgz).decode(),
                "length": len(tgz),
            }
        },
    }
    return json.dumps(document).encode()


def wheel(directory: Path, name: str, version: str, payload: bytes) -> Path:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/payload.bin", payload)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return path


def refusal_lines(server: DepotServer) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "store refused a write"]


def test_a_full_store_answers_507_and_keeps_serving_reads(
    full_depot: DepotServer, tmp_path: Path
) -> None:
    url = full_depot.url
    small = npm_publish_body("small", "1.0.0", b"x" * 1000)
    assert httpx.put(f"{url}/npm/small", content=small).status_code == 201

    nar = os.urandom(BIG)
    name = "1" * 52
    answer = httpx.put(f"{url}/nix/nar/{name}.nar", content=nar, timeout=60)
    assert answer.status_code == 507, answer.text
    assert "No space left on device" in answer.text

    answer = httpx.put(
        f"{url}/npm/big", content=npm_publish_body("big", "1.0.0", os.urandom(BIG)), timeout=60
    )
    assert answer.status_code == 507, answer.text
    assert answer.json()["error"].startswith("insufficient storage: the blob store")

    dist = tmp_path / "dist"
    dist.mkdir()
    upload = run(
        [
            str(Path(sys.executable).with_name("twine")), "upload", "--disable-progress-bar",
            "--repository-url", f"{url}/python/", "-u", "x", "-p", "x",
            str(wheel(dist, "bigwheel", "1.0", os.urandom(BIG))),
        ],
        check=False,
    )  # fmt: skip
    assert upload.returncode != 0
    assert "507" in upload.stdout + upload.stderr

    # One line per refused request (twine retries a 5xx, so its upload may be several).
    lines = refusal_lines(full_depot)
    assert [line["path"] for line in lines[:2]] == [f"/nix/nar/{name}.nar", "/npm/big"]
    assert {line["path"] for line in lines[2:]} == {"/python/"}
    assert all(line["level"] == "error" and line["cause"] == "full" for line in lines)
    assert all(line["store"] == f"fs {full_depot.store_path / 'blobs'}" for line in lines)
    assert "Traceback" not in full_depot.log()
    metrics = httpx.get(f"{url}/metrics").text
    assert metric(metrics, "depot_storage_write_refusals_total", cause="full") == len(lines)

    # Reads go on, and nothing of the refused uploads is visible.
    assert httpx.get(f"{url}/npm/small").status_code == 200
    assert httpx.get(f"{url}/npm/small/-/small-1.0.0.tgz").status_code == 200
    assert httpx.get(f"{url}/npm/big").status_code == 404
    assert httpx.get(f"{url}/python/simple/bigwheel/").status_code == 404
    assert httpx.head(f"{url}/nix/nar/{name}.nar").status_code == 404
    assert not list((full_depot.store_path / "blobs" / ".tmp").iterdir())


def test_a_read_only_store_answers_507(full_depot: DepotServer, small_store: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_store)], check=True)
    answer = httpx.put(f"{full_depot.url}/nix/nar/{'1' * 52}.nar", content=b"nar")
    assert answer.status_code == 507, answer.text
    assert "Read-only file system" in answer.text
    assert [line["cause"] for line in refusal_lines(full_depot)] == ["read-only"]
    assert httpx.get(f"{full_depot.url}/nix/nix-cache-info").status_code == 200
