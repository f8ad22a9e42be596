"""The blob-store contract, on the filesystem and on S3 (moto's server on loopback).

Every backend must: stream in and out, hash while streaming, publish atomically, leave nothing when
an upload is abandoned, keep each ecosystem under its own prefix.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from depot.core import storage_s3
from depot.core.blobs import BlobStore, ScopedBlobStore
from depot.core.errors import ConfigError
from depot.core.settings import Settings
from depot.core.storage_fs import FSBlobStore
from depot.core.storage_s3 import PART_SIZE, open_s3
from depot.core.testing_services import MotoServer, S3Bucket

MiB = 1024 * 1024


def s3_settings(**options: Any) -> Settings:
    return Settings.from_options(options, storage_s3.depot_serve_options())


@pytest.fixture(params=["fs", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[BlobStore, Any]]:
    """A raw store and a way to see what it holds: the fs root or the S3 bucket."""
    if request.param == "fs":
        store = FSBlobStore.open_sync(tmp_path / "blobs")
        yield store, None
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        store = await open_s3(s3_settings(**bucket.options))
        yield store, bucket
    await store.close()


async def read_all(
    blobs: ScopedBlobStore, key: str, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, start, end)])


async def write_in_chunks(upload: Any, data: bytes, chunk: int = 256 * 1024) -> None:
    for i in range(0, len(data), chunk):
        await upload.write(data[i : i + chunk])


@pytest.mark.parametrize(
    "size",
    [0, 5, 3 * MiB + 17, PART_SIZE, 2 * PART_SIZE + 123],
    ids=["empty", "tiny", "one-put", "one-part", "multipart"],
)
async def test_committed_blob_reads_back_with_digests(
    backend: tuple[BlobStore, Any], size: int
) -> None:
    store, _ = backend
    blobs = ScopedBlobStore(store, "eco")
    data = os.urandom(size)
    async with blobs.upload("a/b.bin", hashes=("sha256", "sha512")) as upload:
        await write_in_chunks(upload, data)
        await upload.complete()
        assert upload.size == size
        assert upload.hexdigest("sha256") == hashlib.sha256(data).hexdigest()
        assert upload.hexdigest("sha512") == hashlib.sha512(data).hexdigest()
        await upload.commit()
    assert (await blobs.stat("a/b.bin")).size == size
    assert await read_all(blobs, "a/b.bin") == data
    if size > 100:
        assert await read_all(blobs, "a/b.bin", 100, size - 7) == data[100 : size - 7]
        assert await read_all(blobs, "a/b.bin", size - 10) == data[size - 10 :]


@pytest.mark.parametrize("size", [5, 2 * PART_SIZE + 1], ids=["small", "multipart"])
async def test_upload_left_without_commit_leaves_nothing(
    backend: tuple[BlobStore, Any], size: int
) -> None:
    store, bucket = backend
    blobs = ScopedBlobStore(store, "eco")
    with pytest.raises(RuntimeError):
        async with blobs.upload("x") as upload:
            await write_in_chunks(upload, os.urandom(size))
            await upload.complete()
            raise RuntimeError("verification failed")
    assert await blobs.stat("x") is None
    if bucket is not None:
        assert bucket.object_keys() == []
        assert bucket.pending_multipart_uploads() == [], "the multipart upload was not aborted"


async def test_large_blob_is_invisible_until_commit(backend: tuple[BlobStore, Any]) -> None:
    store, _ = backend
    blobs = ScopedBlobStore(store, "eco")
    async with blobs.upload("big") as upload:
        await write_in_chunks(upload, os.urandom(PART_SIZE + MiB))
        await upload.complete()
        assert await blobs.stat("big") is None
        await upload.commit()
    assert (await blobs.stat("big")).size == PART_SIZE + MiB


@pytest.mark.parametrize("size", [5, PART_SIZE + 3], ids=["small", "multipart"])
async def test_commit_under_digest_key(backend: tuple[BlobStore, Any], size: int) -> None:
    store, bucket = backend
    blobs = ScopedBlobStore(store, "eco")
    data = os.urandom(size)
    async with blobs.upload("incoming/f") as upload:
        await write_in_chunks(upload, data)
        await upload.complete()
        await upload.commit(f"sha256/{upload.hexdigest('sha256')}")
    digest_key = f"sha256/{hashlib.sha256(data).hexdigest()}"
    assert await blobs.stat("incoming/f") is None
    assert await read_all(blobs, digest_key) == data
    if bucket is not None:
        assert bucket.object_keys() == [f"eco/{digest_key}"]


async def test_commit_replaces_and_delete_removes(backend: tuple[BlobStore, Any]) -> None:
    store, _ = backend
    blobs = ScopedBlobStore(store, "eco")
    for content in (b"first", b"second!"):
        async with blobs.upload("k") as upload:
            await upload.write(content)
            await upload.commit()
    assert await read_all(blobs, "k") == b"second!"
    await blobs.delete("k")
    await blobs.delete("k")  # absent: no error
    assert await blobs.stat("k") is None


async def test_a_rewritten_key_gets_a_new_etag(backend: tuple[BlobStore, Any]) -> None:
    """The ETag depot serves a blob with moves whenever its bytes do, even at the same size."""
    store, _ = backend
    blobs = ScopedBlobStore(store, "eco")
    tags = []
    for content in (b"first", b"other"):
        async with blobs.upload("k") as upload:
            await upload.write(content)
            await upload.commit()
        stat = await blobs.stat("k")
        assert stat is not None and stat.etag and stat.modified
        tags.append(stat.etag)
    assert tags[0] != tags[1]
    assert (await blobs.stat("k")).etag == tags[1]  # stable while the bytes are


async def test_reading_a_missing_blob_fails_as_not_found(backend: tuple[BlobStore, Any]) -> None:
    store, _ = backend
    blobs = ScopedBlobStore(store, "eco")
    with pytest.raises(FileNotFoundError):
        await read_all(blobs, "nope")


async def test_ecosystems_keep_their_own_prefix(backend: tuple[BlobStore, Any]) -> None:
    store, bucket = backend
    key = "@scope/pkg/-/pkg-1.0.0+build=1,~!.tgz"  # characters that need URL-encoding
    for namespace in ("npm", "python"):
        async with ScopedBlobStore(store, namespace).upload(key) as upload:
            await upload.write(namespace.encode())
            await upload.commit()
    assert await read_all(ScopedBlobStore(store, "npm"), key) == b"npm"
    assert await read_all(ScopedBlobStore(store, "python"), key) == b"python"
    assert await ScopedBlobStore(store, "nix").stat(key) is None
    if bucket is not None:
        assert bucket.object_keys() == [f"npm/{key}", f"python/{key}"]


async def test_s3_upload_memory_stays_near_two_parts(s3_bucket: S3Bucket) -> None:
    """An 80 MiB upload is never held whole: about two parts (one buffered, one in flight)."""
    store = await open_s3(s3_settings(**s3_bucket.options))
    tracemalloc.start()
    try:
        async with ScopedBlobStore(store, "eco").upload("huge") as upload:
            for _ in range(80):
                await upload.write(os.urandom(MiB))
            await upload.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    assert peak < 4 * PART_SIZE, f"peak {peak / MiB:.1f} MiB for an 80 MiB upload"


async def test_s3_missing_bucket_is_one_line_config_error(s3_bucket: S3Bucket) -> None:
    options = {**s3_bucket.options, "s3_bucket": "no-such-bucket-here"}
    with pytest.raises(ConfigError, match="S3 bucket 'no-such-bucket-here' does not exist") as err:
        await open_s3(s3_settings(**options))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"s3_bucket": None}, "needs --s3-bucket"),
        ({"s3_secret_access_key": None}, "must be given together"),
    ],
)
async def test_s3_incomplete_options_are_config_errors(
    s3_bucket: S3Bucket, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await open_s3(s3_settings(**{**s3_bucket.options, **change}))


async def test_s3_unreachable_endpoint_is_one_line_config_error(make_moto_server: Any) -> None:
    server: MotoServer = make_moto_server()
    server.stop()  # a port where nothing listens any more
    options = {**S3Bucket(server, "b", None).options}
    with pytest.raises(ConfigError, match="cannot reach S3") as err:
        await open_s3(s3_settings(**options))
    assert "\n" not in str(err.value)
