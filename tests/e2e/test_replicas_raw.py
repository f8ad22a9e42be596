"""Two ``depot serve`` replicas on one S3 bucket and one PostgreSQL database behave as one depot.

Driven through depot-raw's ``/raw`` routes (a blob and a row per file), the simplest plugin that
exercises both shared services; the ecosystems' own clients are in the sibling test files.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx


def put_file(url: str, name: str, data: bytes) -> httpx.Response:
    return httpx.put(
        f"{url}/raw/files/{name}",
        content=data,
        headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
        timeout=120,
    )


def test_upload_through_one_replica_is_served_by_the_other_at_once(make_replicas: Any) -> None:
    a, b = make_replicas(2)
    assert (
        httpx.get(f"{b.url}/raw/files/big.bin").status_code == 404
    )  # B has looked: no stale answer
    data = os.urandom(12 * 1024 * 1024)
    assert put_file(a.url, "big.bin", data).status_code == 201
    got = httpx.get(f"{b.url}/raw/files/big.bin", timeout=60)
    assert got.status_code == 200 and got.content == data
    part = httpx.get(f"{b.url}/raw/files/big.bin", headers={"Range": "bytes=9000000-9999999"})
    assert part.status_code == 206 and part.content == data[9_000_000:10_000_000]
    assert [f["name"] for f in httpx.get(f"{b.url}/raw/").json()] == ["big.bin"]


def test_concurrent_uploads_through_both_replicas_all_land(make_replicas: Any) -> None:
    replicas = make_replicas(2)
    files = {f"f{i:02d}.bin": os.urandom(200_000 + i) for i in range(16)}

    def upload(item: tuple[int, tuple[str, bytes]]) -> int:
        i, (name, data) = item
        return put_file(replicas[i % 2].url, name, data).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(upload, enumerate(files.items()))) == {201}
    for i, (name, data) in enumerate(files.items()):
        assert httpx.get(f"{replicas[(i + 1) % 2].url}/raw/files/{name}").content == data
    listed = {f["name"] for f in httpx.get(f"{replicas[0].url}/raw/").json()}
    assert listed == set(files)


def test_same_name_raced_through_both_replicas_has_one_winner(make_replicas: Any) -> None:
    """Two different uploads of one name at once: exactly one is published, the other gets 409."""
    a, b = make_replicas(2)
    contents = [os.urandom(9 * 1024 * 1024), os.urandom(9 * 1024 * 1024)]  # multipart each
    with ThreadPoolExecutor(2) as pool:
        statuses = list(
            pool.map(
                lambda p: put_file(p[0].url, "same.bin", p[1]).status_code,
                [(a, contents[0]), (b, contents[1])],
            )
        )
    assert sorted(statuses) == [201, 409]
    winner = contents[statuses.index(201)]
    assert httpx.get(f"{a.url}/raw/files/same.bin", timeout=60).content == winner
    assert httpx.get(f"{b.url}/raw/files/same.bin", timeout=60).content == winner
