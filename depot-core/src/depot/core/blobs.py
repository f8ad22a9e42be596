"""The blob store contract: artefacts streamed in and out, published atomically.

A backend (``fs``, ``s3``, a third party's) implements :class:`BlobStore` over raw keys and is
registered with the ``depot_storage_backends`` hook. Ecosystems see it through
:class:`ScopedBlobStore`, which confines every key to the ecosystem's own namespace.

Writes go through :class:`BlobUpload`: bytes are hashed as they stream in, nothing is visible under
the key until :meth:`BlobUpload.commit`, and leaving the ``async with`` block without committing
(a failed verification, a dropped connection, a crash) leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from depot.core.artifactmemory import HeldArtifact

if TYPE_CHECKING:
    from depot.core.artifactmemory import ArtifactMemory
    from depot.core.settings import Settings

#: Reads and writes move in chunks this large: big enough that per-chunk overhead (a thread
#: hop, an ASGI message) is negligible, small enough that memory stays flat.
CHUNK_SIZE = 1024 * 1024

_SEGMENT = re.compile(r"^[A-Za-z0-9_+@=,~!-][A-Za-z0-9._+@=,~!-]*$")


class InvalidKey(ValueError):
    """A blob key that could escape its namespace or name something odd; callers answer 400."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey`.

    Refused: empty segments, ``.``/``..``, a leading ``.`` (temporary files live there), absolute
    paths, backslashes, NUL and anything outside a conservative character set.
    """
    if not key or len(key) > 1024:
        raise InvalidKey("blob key is empty or too long")
    if "\x00" in key or "\\" in key or key.startswith("/"):
        raise InvalidKey(f"blob key {key!r} is not a relative path")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment):
            raise InvalidKey(f"blob key segment {segment!r} is not allowed")
    return key


@dataclass(frozen=True)
class BlobStat:
    """What a store knows about a committed blob.

    ``modified`` (POSIX seconds) and ``etag`` (a quoted strong entity tag that changes whenever
    the bytes under the key do) become the blob's ``Last-Modified`` and ``ETag`` when served; a
    backend that knows neither leaves them None and depot derives a tag from key, size and time.
    ``modified`` is also what the garbage collector reads: it keeps every blob younger than its
    grace period, so a re-upload under the same key protects it again, and a blob whose backend
    cannot tell is never collected.
    """

    size: int
    modified: float | None = None
    etag: str | None = None


@dataclass(frozen=True)
class BlobEntry:
    """A committed blob as a listing yields it: its key, size and last write time."""

    key: str
    size: int
    modified: float


@dataclass(frozen=True)
class LeftoverReport:
    """Temporary objects of unfinished uploads that a store removed (or would remove)."""

    objects: int = 0
    bytes: int = 0


class BlobUpload(Protocol):
    """A write in progress; see the module docstring for the life cycle."""

    @property
    def size(self) -> int:
        """Bytes written so far."""

    def hexdigest(self, algorithm: str) -> str:
        """Digest of all bytes, for an algorithm requested at open; valid after ``complete``."""

    def digest(self, algorithm: str) -> bytes:
        """Raw digest of all bytes; valid after ``complete``."""

    async def write(self, data: bytes) -> None:
        """Append bytes."""

    async def complete(self) -> None:
        """Declare the input finished: afterwards ``size`` and the digests are final."""

    async def commit(self, key: str | None = None) -> None:
        """Publish the blob atomically under ``key`` (default: the key given at open).

        A blob already there is replaced. Content-addressed ecosystems open the upload under any
        key and commit under the digest once they know it, so two uploads racing for one name can
        never leave a row pointing at the other's bytes.

        A backend that learns the committed blob's :class:`BlobStat` while committing may leave
        it in an attribute ``committed`` (the fs store does), sparing a ``stat`` afterwards.

        A backend whose commit is a sequence of blocking calls (the fs store) may also offer
        ``blocking_commit(key) -> BlockingCommit``: the same commit as one call for a thread
        that may block, so that :meth:`depot.core.app.EcosystemContext.group_commit` runs it in
        the same hand-over to the writer thread as the rows that point at the blob.
        """


class BlockingCommit(Protocol):
    """A blob's commit to run on a thread that may block (see :meth:`BlobUpload.commit`)."""

    def __call__(self) -> None:
        """Commit (raises what the commit raises)."""

    def discard(self) -> None:
        """It will not run: release what the upload holds for it."""


@runtime_checkable
class BlobStore(Protocol):
    """A backend over raw keys. Keys are checked with :func:`check_key` before they get here."""

    async def stat(self, key: str) -> BlobStat | None:
        """Size of the blob, or None if there is none."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of a blob in chunks of about :data:`CHUNK_SIZE`."""

    def upload(
        self, key: str, hashes: Iterable[str] = ("sha256",)
    ) -> AbstractAsyncContextManager[BlobUpload]:
        """Start an atomic write; see :class:`BlobUpload`."""

    async def delete(self, key: str) -> None:
        """Remove a blob; no error if it is absent."""

    def list(self, prefix: str) -> AsyncIterator[BlobEntry]:
        """Every committed blob whose key starts with ``prefix``, in no particular order.

        Streamed: the backend fetches a page at a time (a directory walk, S3 ListObjectsV2 pages
        of 1,000), so listing a store of any size holds memory flat. Temporary objects of
        uploads in progress are not listed. Needed by the garbage collector; a backend without
        it is never collected.
        """

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several blobs (S3 DeleteObjects takes 1,000 a call); absent ones are fine."""

    async def remove_leftovers(self, older_than: float, dry_run: bool = False) -> LeftoverReport:
        """Remove what uploads that never finished left behind and not written since
        ``older_than`` (epoch seconds): the fs store's temporary files, S3's staged objects and
        multipart uploads. None of it was ever visible under a key."""

    def local_path(self, key: str) -> Path | None:
        """A file on this machine holding the blob, when the backend has one (for fast paths)."""

    async def close(self) -> None:
        """Release connections and threads."""


@dataclass(frozen=True)
class StorageBackend:
    """A blob store selectable with ``--storage-type NAME``."""

    name: str
    open: Callable[[Settings], Awaitable[BlobStore]]
    description: str = ""


class ScopedBlobStore:
    """An ecosystem's view of the blob store: every key lives under ``<namespace>/``."""

    def __init__(
        self, store: BlobStore, namespace: str, memory: ArtifactMemory | None = None
    ) -> None:
        self.store = store
        self.namespace = check_key(namespace)
        #: Small immutable blobs kept in this process (see :mod:`depot.core.artifactmemory`).
        self.memory = memory

    def _key(self, key: str) -> str:
        return f"{self.namespace}/{check_key(key)}"

    def full_key(self, key: str) -> str:
        """``key`` with the namespace, as the store knows it (checked: :class:`InvalidKey`)."""
        return self._key(key)

    async def stat(self, key: str) -> BlobStat | None:
        return await self.store.stat(self._key(key))

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.store.read(self._key(key), start, end)

    @asynccontextmanager
    async def upload(
        self, key: str, hashes: Iterable[str] = ("sha256",), *, remember: bool = False
    ) -> AsyncIterator[ScopedUpload]:
        """Start an atomic write (see :class:`BlobUpload`).

        ``remember``: the key it is committed under names these bytes for ever (content-addressed)
        and clients will ask for them soon (an artifact a pull-through cache just fetched): if
        small enough, the committed bytes go into this process's artifact memory, so the next
        download of it opens no file, as for any artifact served before.
        """
        remembering = self if remember and self.memory is not None else None
        async with self.store.upload(self._key(key), hashes) as upload:
            yield ScopedUpload(upload, self._key, remembering)

    async def delete(self, key: str) -> None:
        await self.store.delete(self._key(key))
        if self.memory is not None:
            self.memory.discard(self._key(key))

    async def list(self, prefix: str = "") -> AsyncIterator[BlobEntry]:
        """The namespace's blobs under ``prefix``, keys relative to the namespace."""
        skip = len(self.namespace) + 1
        async for entry in self.store.list(f"{self.namespace}/{prefix}"):
            yield BlobEntry(entry.key[skip:], entry.size, entry.modified)

    def local_path(self, key: str) -> Path | None:
        return self.store.local_path(self._key(key))


class ScopedUpload:
    """Keeps a commit under another key inside the namespace (and, for ``remember``, the bytes
    of a small blob until it is committed, then in the artifact memory)."""

    def __init__(
        self,
        upload: BlobUpload,
        scope: Callable[[str], str],
        remembering: ScopedBlobStore | None = None,
    ) -> None:
        self._upload = upload
        self._scope = scope
        self._remembering = remembering
        self._bytes: bytearray | None = bytearray() if remembering is not None else None

    @property
    def size(self) -> int:
        return self._upload.size

    def hexdigest(self, algorithm: str) -> str:
        return self._upload.hexdigest(algorithm)

    def digest(self, algorithm: str) -> bytes:
        return self._upload.digest(algorithm)

    async def write(self, data: bytes) -> None:
        if self._bytes is not None and self._remembering is not None:
            memory = self._remembering.memory
            if memory is not None and memory.fits(len(self._bytes) + len(data)):
                self._bytes += data
            else:
                self._bytes = None  # too large to keep: served from the store as usual
        await self._upload.write(data)

    async def complete(self) -> None:
        await self._upload.complete()

    async def commit(self, key: str | None = None) -> None:
        await self._upload.commit(None if key is None else self._scope(key))
        await self.committed_as(key)

    def blocking_commit(self, key: str) -> BlockingCommit | None:
        """The commit under ``key`` as one blocking call, if the store offers it (then call
        :meth:`committed_as` once it ran), else None: ``await commit(key)`` instead."""
        make = getattr(self._upload, "blocking_commit", None)
        return None if make is None else make(self._scope(key))  # type: ignore[no-any-return]

    async def committed_as(self, key: str | None) -> None:
        """After a commit under ``key``: a small ``remember`` blob goes into the memory."""
        store, body = self._remembering, self._bytes
        if store is None or body is None or key is None or store.memory is None:
            return
        # The validators a first read would find: the committed blob's own.
        stat = getattr(self._upload, "committed", None) or await store.stat(key)
        if stat is not None and stat.size == len(body):
            held = HeldArtifact(bytes(body), stat.etag, stat.modified)
            store.memory.put(store.full_key(key), held)


class Hashes:
    """Several running digests over one stream (sha256 for everyone, sha512 for npm, ...)."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        self._hashes = {name: hashlib.new(name) for name in algorithms}

    def update(self, data: bytes) -> None:
        for h in self._hashes.values():
            h.update(data)

    def hexdigest(self, algorithm: str) -> str:
        return self._hashes[algorithm].hexdigest()

    def digest(self, algorithm: str) -> bytes:
        return self._hashes[algorithm].digest()
