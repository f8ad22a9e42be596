"""Uploads that do not add up are refused with a reason, and leave the cache as it was."""

from __future__ import annotations

import hashlib
import json
import lzma
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.nix import narinfo
from depot.nix.narinfo import NarInfo
from depot.nix.nixbase32 import Hash

from .conftest import Closure, stored_files  # noqa: TID252


def nar_of(path: str) -> bytes:
    return subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True).stdout


def upload_of(
    path: str, nar: bytes | None = None, references: tuple[str, ...] = ()
) -> tuple[str, bytes, NarInfo]:
    """An xz NAR file, its URL and a correct narinfo for ``path`` (or for the given NAR bytes)."""
    nar = nar_of(path) if nar is None else nar
    file = lzma.compress(nar)
    file_hash = Hash("sha256", hashlib.sha256(file).digest())
    url = f"nar/{file_hash.nix32()}.nar.xz"
    info = NarInfo(
        store_path=path,
        url=url,
        compression="xz",
        nar_hash=Hash("sha256", hashlib.sha256(nar).digest()),
        nar_size=len(nar),
        file_hash=file_hash,
        file_size=len(file),
        references=references,
    )
    return url, file, info


@pytest.fixture
def fresh(make_closure: Callable[[], Closure]) -> Closure:
    return make_closure()


def put(server: DepotServer, path: str, body: bytes | str) -> httpx.Response:
    return httpx.put(f"{server.url}/nix/{path}", content=body, timeout=30)


def test_a_correct_upload_is_published(nix_depot: DepotServer, fresh: Closure) -> None:
    url, file, info = upload_of(fresh.lib)
    hash_part = info.hash_part
    assert httpx.head(f"{nix_depot.url}/nix/{url}").status_code == 404
    assert put(nix_depot, url, file).status_code == 200
    # Uploaded but not yet named by a verified narinfo: not served.
    assert httpx.get(f"{nix_depot.url}/nix/{url}").status_code == 404
    assert put(nix_depot, f"{hash_part}.narinfo", narinfo.format(info)).status_code == 200
    assert httpx.get(f"{nix_depot.url}/nix/{url}").content == file
    served = narinfo.parse(httpx.get(f"{nix_depot.url}/nix/{hash_part}.narinfo").text)
    assert served.unsigned() == info


def _wrong_nar_size(info: NarInfo) -> NarInfo:
    return NarInfo(**{**info.__dict__, "nar_size": info.nar_size + 8})


def _wrong_nar_hash(info: NarInfo) -> NarInfo:
    return NarInfo(**{**info.__dict__, "nar_hash": Hash("sha256", bytes(32))})


def _wrong_file_size(info: NarInfo) -> NarInfo:
    return NarInfo(**{**info.__dict__, "file_size": (info.file_size or 0) + 1})


def _bad_reference(info: NarInfo) -> NarInfo:
    return NarInfo(**{**info.__dict__, "references": ("not-a-store-path",)})


def _absent_nar(info: NarInfo) -> NarInfo:
    return NarInfo(**{**info.__dict__, "url": f"nar/{'1' * 52}.nar.xz", "file_hash": None})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_wrong_nar_size, "NarSize"),
        (_wrong_nar_hash, "NarHash"),
        (_wrong_file_size, "FileSize"),
        (_bad_reference, "References"),
        (_absent_nar, "has not been uploaded"),
    ],
)
def test_narinfo_that_does_not_match_its_nar_is_refused(
    tamper: Callable[[NarInfo], NarInfo], reason: str, nix_depot: DepotServer, fresh: Closure
) -> None:
    url, file, info = upload_of(fresh.lib)
    assert put(nix_depot, url, file).status_code == 200
    before = stored_files(nix_depot)
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(tamper(info)))
    assert response.status_code == 400
    assert reason in response.text
    assert httpx.get(f"{nix_depot.url}/nix/{info.hash_part}.narinfo").status_code == 404
    assert stored_files(nix_depot) == before


def test_narinfo_under_a_foreign_hash_part_is_refused(
    nix_depot: DepotServer, fresh: Closure
) -> None:
    url, file, info = upload_of(fresh.lib)
    put(nix_depot, url, file)
    foreign = Path(fresh.app).name[:32]
    response = put(nix_depot, f"{foreign}.narinfo", narinfo.format(info))
    assert response.status_code == 400 and "does not belong" in response.text
    assert httpx.get(f"{nix_depot.url}/nix/{foreign}.narinfo").status_code == 404


def test_nar_whose_bytes_do_not_match_its_name_is_refused(
    nix_depot: DepotServer, fresh: Closure
) -> None:
    url, file, _info = upload_of(fresh.lib)
    before = stored_files(nix_depot)
    response = put(nix_depot, url, file[:-1] + bytes([file[-1] ^ 1]))
    assert response.status_code == 400 and "hashes to" in response.text
    assert stored_files(nix_depot) == before


@pytest.mark.parametrize(
    "nar",
    [
        pytest.param(b"\x0d" + bytes(7) + b"nix-archive-2\x00\x00\x00", id="wrong-magic"),
        pytest.param(
            b"\x0d" + bytes(7) + b"nix-archive-1\x00\x00\x00" + b"\x01" * 64, id="garbage"
        ),
    ],
)
def test_a_nar_that_is_not_a_nar_is_refused(
    nar: bytes, nix_depot: DepotServer, fresh: Closure
) -> None:
    url, file, info = upload_of(fresh.lib, nar=nar)
    assert put(nix_depot, url, file).status_code == 200
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(info))
    assert response.status_code == 400 and "NAR" in response.text
    assert httpx.get(f"{nix_depot.url}/nix/{info.hash_part}.narinfo").status_code == 404


def test_truncated_nar_upload_leaves_nothing(nix_depot: DepotServer, fresh: Closure) -> None:
    url, file, info = upload_of(fresh.lib)
    before = stored_files(nix_depot)
    address = urlsplit(nix_depot.url)
    with socket.create_connection((address.hostname, address.port)) as conn:
        head = (
            f"PUT /nix/{url} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Content-Length: {len(file)}\r\nContent-Type: application/x-nix-nar\r\n\r\n"
        )
        conn.sendall(head.encode() + file[: len(file) // 2])
    # The server notices the dropped connection and discards the partial upload.
    response = put(nix_depot, url, file[: len(file) // 2])
    assert response.status_code == 400
    assert stored_files(nix_depot) == before
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(info))
    assert response.status_code == 400 and "has not been uploaded" in response.text


def served_narinfo(server: DepotServer, hash_part: str) -> NarInfo:
    response = httpx.get(f"{server.url}/nix/{hash_part}.narinfo")
    assert response.status_code == 200, response.text
    return narinfo.parse(response.text)


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("nar_hash", Hash("sha256", bytes(32)), "NarHash"),
        ("nar_size", 12345, "NarSize"),
        ("references", (f"{'1' * 32}-other",), "References"),
    ],
)
def test_a_narinfo_that_changes_a_published_path_is_refused(
    field: str, value: object, label: str, nix_depot: DepotServer, fresh: Closure
) -> None:
    url, file, info = upload_of(fresh.lib)
    put(nix_depot, url, file)
    assert put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(info)).status_code == 200
    before = served_narinfo(nix_depot, info.hash_part)
    changed = NarInfo(**{**info.__dict__, field: value})
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(changed))
    assert response.status_code == 409 and label in response.text
    assert served_narinfo(nix_depot, info.hash_part) == before
    # The same narinfo again is fine (nix copy retried).
    assert put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(info)).status_code == 200


def test_a_second_upload_of_a_path_packed_otherwise_is_accepted_and_the_first_kept(
    nix_depot: DepotServer, fresh: Closure
) -> None:
    """As when two CI machines push one path, one with xz and one uncompressed, from builders
    that name different derivations: both succeed, the first stays served, signatures add up."""
    from depot.nix.signing import SecretKey

    url, file, info = upload_of(fresh.lib)
    put(nix_depot, url, file)
    assert put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(info)).status_code == 200
    before = served_narinfo(nix_depot, info.hash_part)

    plain = nar_of(fresh.lib)
    plain_hash = Hash("sha256", hashlib.sha256(plain).digest())
    other_url = f"nar/{plain_hash.nix32()}.nar"
    assert put(nix_depot, other_url, plain).status_code == 200
    second_key = SecretKey.generate("second-builder-1")
    other = NarInfo(
        **{**info.__dict__, "url": other_url, "compression": "none", "file_hash": plain_hash,
           "file_size": len(plain), "deriver": f"{'2' * 32}-other.drv", "signatures": ()}
    ).signed(second_key)  # fmt: skip
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(other))
    assert response.status_code == 200, response.text

    after = served_narinfo(nix_depot, info.hash_part)
    assert (after.url, after.compression, after.file_hash, after.deriver) == (
        before.url, before.compression, before.file_hash, before.deriver
    )  # fmt: skip
    assert set(after.signatures) == set(before.signatures) | set(other.signatures)
    assert after.verify_signature(second_key.public_key())
    # The NAR that lost is not served: nothing points at it.
    assert httpx.head(f"{nix_depot.url}/nix/{other_url}").status_code == 404
    log = nix_depot.wait_for_log("kept the first upload")
    kept = [json.loads(line) for line in log.splitlines() if "kept the first upload" in line]
    assert {(k["kept_url"], k["incoming_url"]) for k in kept} >= {(before.url, other_url)}


def test_a_forged_signature_in_depots_name_is_refused(
    nix_depot: DepotServer, fresh: Closure, signing_key: object
) -> None:
    from depot.nix.signing import SecretKey

    assert isinstance(signing_key, SecretKey)
    url, file, info = upload_of(fresh.lib)
    put(nix_depot, url, file)
    impostor = SecretKey(signing_key.name, bytes(32))
    forged = info.signed(impostor)
    response = put(nix_depot, f"{info.hash_part}.narinfo", narinfo.format(forged))
    assert response.status_code == 400 and "does not verify" in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "nar/..%2F..%2Fdepot.db"),
        ("PUT", "nar/..%2F..%2Fdepot.db"),
        ("GET", "nar/%2e%2e/%2e%2e/depot.db"),
        ("GET", "log/..%2F..%2Fdepot.db"),
        ("PUT", "log/..%2Fx.drv"),
        ("GET", "..%2F..%2Fdepot.db.narinfo"),
        ("PUT", "..%2Fabc.narinfo"),
        ("GET", "realisations/..%2F..%2Fdepot.db.doi"),
        ("PUT", f"nar/{'1' * 52}.nar.xz%2F..%2F..%2Fx"),
        ("GET", "%2e%2e/%2e%2e/blobs"),
    ],
)
def test_traversal_attempts_get_4xx(method: str, path: str, nix_depot: DepotServer) -> None:
    response = httpx.request(
        method, f"{nix_depot.url}/nix/{path}", content=b"x" if method == "PUT" else None
    )
    assert 400 <= response.status_code < 500, response.text
