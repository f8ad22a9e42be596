"""npm publish bodies are read as they stream in: big tarballs in bounded memory, bad ones refused.

Against a real ``depot serve``: the real npm publishes and installs a package whose tarball is tens
of MiB while the server's peak RSS (``VmHWM``) is watched, and hand-made bodies check order, cut
bodies, bad base64 and malformed JSON over a real HTTP connection.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.core.testing_services import S3Bucket

from .conftest import Npm, make_tgz, publish_body  # noqa: TID252 - test helpers

#: Incompressible bytes put into the big package: the tarball ends up this large too.
BIG_FILE_SIZE = 48 * 1024 * 1024


def peak_rss(server: DepotServer) -> int:
    """The server process's peak resident memory so far, in bytes (Linux ``VmHWM``)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def stored_files(server: DepotServer) -> list[Path]:
    """Every file in the blob store, temporary uploads included."""
    return [p for p in (server.store_path / "blobs").rglob("*") if p.is_file()]


def install(npm: Npm, registry: str, project: Path, spec: str) -> Path:
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    npm(registry, "install", spec, cwd=project)
    return project / "node_modules"


def test_a_large_package_publishes_and_installs_in_bounded_memory(
    depot_server: DepotServer, npm: Npm, make_package: Callable[..., Path], tmp_path: Path
) -> None:
    registry = depot_server.url + "/npm/"
    npm.login(registry)
    # Warm up first (imports, database, caches) so that the baseline is the server at work.
    npm(registry, "publish", cwd=make_package("warmup", "1.0.0"))
    install(npm, registry, tmp_path / "warm", "warmup")
    baseline = peak_rss(depot_server)

    big = make_package("big", "1.0.0")
    payload = os.urandom(BIG_FILE_SIZE)
    (big / "payload.bin").write_bytes(payload)
    npm(registry, "publish", cwd=big)
    del payload
    installed = install(npm, registry, tmp_path / "project", "big") / "big" / "payload.bin"
    assert (
        hashlib.sha256(installed.read_bytes()).digest()
        == hashlib.sha256((big / "payload.bin").read_bytes()).digest()
    )

    tarball_size = sum(p.stat().st_size for p in stored_files(depot_server) if "big-" in p.name)
    assert tarball_size > BIG_FILE_SIZE  # random bytes do not compress
    growth = peak_rss(depot_server) - baseline
    # The body was ~64 MiB of base64; reading it whole would have cost several times that.
    assert growth < tarball_size // 2, f"peak RSS grew {growth >> 20} MiB, tarball {tarball_size}"


def put(server: DepotServer, name: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    """PUT a publish body as npm does; an iterator is sent chunked, a piece at a time."""
    return httpx.put(
        f"{server.url}/npm/{name.replace('/', '%2f')}",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer test-token"},
        timeout=60,
    )


def attachments_first(name: str, version: str, tgz: bytes) -> bytes:
    """A publish body with ``_attachments`` before the fields it is verified against."""
    body = publish_body(name, version, tgz)
    reordered = {"_attachments": body.pop("_attachments"), **body}
    return json.dumps(reordered, indent=1).replace("/", "\\/").encode()


def test_attachment_data_may_come_before_the_versions_that_verify_it(
    depot_server: DepotServer,
) -> None:
    tgz = make_tgz("@s/early", "1.0.0")
    body = attachments_first("@s/early", "1.0.0", tgz)
    chunks = (body[i : i + 7] for i in range(0, len(body), 7))
    response = put(depot_server, "@s/early", chunks)
    assert response.status_code == 201, response.text
    tarball = httpx.get(f"{depot_server.url}/npm/@s/early/-/early-1.0.0.tgz")
    assert tarball.content == tgz


def _valid_body(pad_bytes: int = 200_000) -> dict[str, Any]:
    # Big enough that the data spans many reads on the server.
    pad = os.urandom(pad_bytes).hex()
    tgz = make_tgz("p", "1.0.0", manifest={"name": "p", "version": "1.0.0", "pad": pad})
    return publish_body("p", "1.0.0", tgz)


def _cut(fraction: float) -> bytes:
    body = json.dumps(_valid_body()).encode()
    return body[: int(len(body) * fraction)]


def _with_data(data: str, *, versions_last: bool = False) -> bytes:
    body = _valid_body()
    body["_attachments"]["p-1.0.0.tgz"]["data"] = data
    if versions_last:  # and no length, so that the integrity is what refuses the bytes
        del body["_attachments"]["p-1.0.0.tgz"]["length"]
        body["versions"] = body.pop("versions")
    return json.dumps(body).encode()


def _twice() -> bytes:
    body = _valid_body()
    data = body["_attachments"]["p-1.0.0.tgz"]["data"]
    text = json.dumps(body)
    return text.replace('"data": ', f'"data": "{data}", "data": ', 1).encode()


def _bad_bodies() -> list[Any]:
    data = _valid_body()["_attachments"]["p-1.0.0.tgz"]["data"]
    middle = len(data) // 2 // 4 * 4
    return [
        pytest.param(_cut(0.5), "truncated", id="truncated-in-the-data"),
        pytest.param(_cut(0.999), "truncated", id="truncated-after-the-data"),
        pytest.param(_with_data(data[:middle] + "!" + data[middle + 1 :]), "base64", id="bad-b64"),
        pytest.param(_with_data(data[:-1]), "base64", id="b64-cut-short"),
        pytest.param(_with_data("QQ==" + data), "padding", id="data-after-padding"),
        pytest.param(_with_data(data)[:-1] + b",}", "malformed", id="malformed-after-the-data"),
        pytest.param(b'{"name": "p", "versions": {,}}', "malformed", id="malformed-before"),
        pytest.param(_twice(), "twice", id="data-twice-for-one-file"),
        pytest.param(
            _with_data(base64.b64encode(make_tgz("p", "2.0.0")).decode(), versions_last=True),
            "sha512",
            id="integrity-checked-after-the-data",
        ),
    ]


@pytest.mark.parametrize(("body", "reason"), _bad_bodies())
def test_bad_publish_bodies_are_refused_and_nothing_is_stored(
    depot_server: DepotServer, body: bytes, reason: str
) -> None:
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response = put(depot_server, "p", chunks)
    assert response.status_code == 400
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert httpx.get(f"{depot_server.url}/npm/p").status_code == 404
    assert stored_files(depot_server) == []


def test_a_document_too_large_without_its_data_is_refused(depot_server: DepotServer) -> None:
    body = _valid_body()
    body["readme"] = "x" * (17 * 1024 * 1024)
    response = put(depot_server, "p", json.dumps(body).encode())
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert stored_files(depot_server) == []


def test_a_client_that_goes_away_mid_body_leaves_nothing(depot_server: DepotServer) -> None:
    # Half of it is more than the store buffers before it creates the upload's file.
    body = json.dumps(_valid_body(pad_bytes=3_000_000)).encode()
    with socket.create_connection(("127.0.0.1", depot_server.port)) as conn:
        conn.sendall(
            b"PUT /npm/p HTTP/1.1\r\nHost: depot\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        # The upload has started once its temporary file exists.
        deadline = time.monotonic() + 20
        while not stored_files(depot_server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_files(depot_server), "the server never started receiving the tarball"
    deadline = time.monotonic() + 20
    while stored_files(depot_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_files(depot_server) == []
    assert httpx.get(f"{depot_server.url}/npm/p").status_code == 404
    # A client going away is not a fault of the server: an access line, no traceback.
    assert '"method": "PUT", "path": "/npm/p", "status": 400' in depot_server.wait_for_log('"PUT"')
    assert "Traceback" not in depot_server.log()


def big_tgz(name: str, version: str, size: int) -> bytes:
    """A gzipped npm tarball carrying ``size`` random bytes besides its package.json."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for path, data in (
            ("package/package.json", json.dumps({"name": name, "version": version}).encode()),
            ("package/payload.bin", os.urandom(size)),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_bad_tarball_on_s3_leaves_no_object_and_no_multipart_upload(
    make_depot_server: Callable[..., DepotServer], s3_bucket: S3Bucket
) -> None:
    server = make_depot_server(*s3_bucket.serve_args)
    body = publish_body("p", "1.0.0", big_tgz("p", "1.0.0", 20 * 1024 * 1024))
    data = body["_attachments"]["p-1.0.0.tgz"]["data"]
    # Several 8 MiB parts are sent before the bad character near the end shows up.
    body["_attachments"]["p-1.0.0.tgz"]["data"] = data[:-8] + "!" + data[-7:]
    encoded = json.dumps(body).encode()
    response = put(server, "p", (encoded[i : i + 65536] for i in range(0, len(encoded), 65536)))
    assert response.status_code == 400
    assert "base64" in response.json()["error"]
    assert s3_bucket.object_keys() == []
    assert s3_bucket.pending_multipart_uploads() == []
    assert httpx.get(f"{server.url}/npm/p").status_code == 404
