"""The filesystem blob store: atomic publication, streaming reads, safe keys."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from depot.core.blobs import CHUNK_SIZE, InvalidKey, ScopedBlobStore, check_key
from depot.core.storage_fs import HASH_ON_LOOP, FSBlobStore


@pytest.fixture
def store(tmp_path: Path) -> FSBlobStore:
    return FSBlobStore.open_sync(tmp_path / "blobs")


async def read_all(
    blobs: ScopedBlobStore, key: str, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, start, end)])


async def test_committed_blob_reads_back_with_digests(store: FSBlobStore) -> None:
    blobs = ScopedBlobStore(store, "eco")
    data = os.urandom(3 * 1024 * 1024 + 17)
    async with blobs.upload("a/b.bin", hashes=("sha256", "sha512")) as upload:
        for i in range(0, len(data), 65536):
            await upload.write(data[i : i + 65536])
        await upload.complete()
        assert upload.size == len(data)
        assert upload.hexdigest("sha256") == hashlib.sha256(data).hexdigest()
        assert upload.hexdigest("sha512") == hashlib.sha512(data).hexdigest()
        await upload.commit()
    assert (await blobs.stat("a/b.bin")).size == len(data)
    assert await read_all(blobs, "a/b.bin") == data
    assert await read_all(blobs, "a/b.bin", 100, 2_000_000) == data[100:2_000_000]
    assert (store.root / "eco" / "a" / "b.bin").exists()


@pytest.mark.parametrize(
    "size",
    [0, 5, HASH_ON_LOOP, HASH_ON_LOOP + 1, CHUNK_SIZE + HASH_ON_LOOP + 1],
    ids=["empty", "tiny", "hashed-on-the-loop", "hashed-in-a-thread", "chunk-and-a-tail"],
)
async def test_every_size_commits_its_bytes_with_their_digests(
    store: FSBlobStore, size: int
) -> None:
    # Small blobs are hashed on the event loop and written only by the commit; bigger tails
    # in a thread as they are written: every way gives the same bytes and digests.
    blobs = ScopedBlobStore(store, "eco")
    data = os.urandom(size)
    async with blobs.upload("incoming/x", hashes=("sha256", "sha1")) as upload:
        for i in range(0, size, 40_000):
            await upload.write(data[i : i + 40_000])
        await upload.complete()
        assert upload.hexdigest("sha256") == hashlib.sha256(data).hexdigest()
        assert upload.hexdigest("sha1") == hashlib.sha1(data).hexdigest()  # noqa: S324
        await upload.commit("sha256/x")
    assert await read_all(blobs, "sha256/x") == data
    assert (await blobs.stat("sha256/x")).size == size
    assert list(store.tmp_dir.iterdir()) == []


async def test_upload_left_without_commit_leaves_nothing(store: FSBlobStore) -> None:
    blobs = ScopedBlobStore(store, "eco")
    for partial in (b"partial", os.urandom(CHUNK_SIZE + 1)):  # buffered, and written
        with pytest.raises(RuntimeError):
            async with blobs.upload("x") as upload:
                await upload.write(partial)
                raise RuntimeError("verification failed")
        assert await blobs.stat("x") is None
        assert list(store.tmp_dir.iterdir()) == []


async def test_commit_under_digest_key(store: FSBlobStore) -> None:
    blobs = ScopedBlobStore(store, "eco")
    async with blobs.upload("incoming/f") as upload:
        await upload.write(b"hello")
        await upload.complete()
        await upload.commit(f"sha256/{upload.hexdigest('sha256')}")
    assert await blobs.stat("incoming/f") is None
    assert await read_all(blobs, f"sha256/{hashlib.sha256(b'hello').hexdigest()}") == b"hello"


async def test_blob_is_invisible_until_commit(store: FSBlobStore) -> None:
    blobs = ScopedBlobStore(store, "eco")
    async with blobs.upload("big") as upload:
        await upload.write(os.urandom(2 * 1024 * 1024))
        assert await blobs.stat("big") is None
        await upload.commit()
        assert (await blobs.stat("big")).size == 2 * 1024 * 1024


@pytest.mark.parametrize(
    "key",
    [
        "",
        "..",
        "../x",
        "a/../../b",
        "/etc/passwd",
        "a\\b",
        "a\x00b",
        ".tmp/x",
        "a//b",
        "a/.hidden",
        "a/",
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


async def test_scoped_store_refuses_traversal(store: FSBlobStore) -> None:
    blobs = ScopedBlobStore(store, "eco")
    with pytest.raises(InvalidKey):
        async with blobs.upload("../other/x"):
            pass


def test_writer_killed_mid_write_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    writer = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        from depot.core.storage_fs import FSBlobStore
        async def main():
            store = FSBlobStore.open_sync(Path({str(root)!r}))
            async with store.upload("eco/victim") as upload:
                for _ in range(64):
                    await upload.write(os.urandom(1024 * 1024))
                print("writing", flush=True)
                await asyncio.sleep(60)
                await upload.commit()
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "eco" / "victim").exists()
    assert list((root / ".tmp").iterdir()), (
        "the killed writer's temporary file should still be there"
    )
    # Start-up leaves a temporary file another process may still be writing...
    FSBlobStore.open_sync(root)
    (leftover,) = list((root / ".tmp").iterdir())
    # ...and sweeps one nobody wrote to for an hour: no live upload is that quiet.
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    FSBlobStore.open_sync(root)
    assert list((root / ".tmp").iterdir()) == []


def test_store_path_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    from depot.core.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        FSBlobStore.open_sync(blocker / "blobs")
