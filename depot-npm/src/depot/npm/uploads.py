"""Receiving a tarball: stream it into the blob store while hashing it and reading package.json.

Shared by ``npm publish`` (bytes decoded from a base64 attachment as the request body streams in,
see :mod:`depot.npm.publish_body`) and the push API (raw bytes):
the tarball is verified before anything points at it: its hashes against what the caller
expects, its package.json against the name and version it is published as. Only then is the blob
committed and the tarball row recorded.
"""

from __future__ import annotations

import asyncio
import binascii
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from depot.core import EcosystemContext
from depot.core.blobs import BlobUpload
from depot.core.errors import BadRequest, Conflict
from depot.npm import store
from depot.npm.integrity import ALGORITHMS, IntegrityError, sri, verify
from depot.npm.tarball import PackageJsonReader, TarballError

#: Tarball bytes read for package.json in a thread once this many have arrived (less is read on
#: the event loop at the end: a thread hop costs more than reading a small tarball).
READ_IN_THREAD_AT = 256 * 1024


@dataclass(frozen=True)
class StoredTarball:
    filename: str
    key: str
    size: int
    sha1: str  # hex, npm's ``shasum``
    integrity: str  # ``sha512-<base64>``


class Base64Error(ValueError):
    """Attachment text that is not canonical, padded base64."""


class Base64Decoder:
    """Decode base64 text given in pieces of any size, holding at most three characters back.

    ``npm publish`` sends a tarball as one base64 string; its pieces arrive cut anywhere. Only
    the standard alphabet with ``=`` padding at the very end is accepted (what Node's
    ``Buffer.toString("base64")`` writes): no whitespace, no data after padding.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._padded = False

    def feed(self, text: str) -> bytes:
        data = self._pending + text
        cut = len(data) - len(data) % 4
        self._pending = data[cut:]
        return self._decode(data[:cut])

    def finish(self) -> bytes:
        """The end of the text: it must have come out to whole 4-character groups."""
        if self._pending:
            raise Base64Error("the base64 text is truncated (its length is not a multiple of 4)")
        return b""

    def _decode(self, quads: str) -> bytes:
        if not quads:
            return b""
        if self._padded:
            raise Base64Error("data after the base64 padding")
        try:
            decoded = binascii.a2b_base64(quads.encode("ascii"), strict_mode=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise Base64Error(f"not valid base64: {exc}") from exc
        self._padded = quads.endswith("=")
        return decoded


class IncomingTarball:
    """A tarball streaming into an uncommitted blob upload: hashed and read for package.json.

    Nothing is visible until :meth:`commit`; leaving the upload's ``async with`` without it (any
    error) leaves nothing behind. Write, :meth:`complete`, :meth:`verify`, then :meth:`commit`.
    """

    def __init__(self, upload: BlobUpload, key: str, filename: str) -> None:
        self.upload = upload
        self.key = key
        self.filename = filename
        self._reader = PackageJsonReader()
        self._unread = bytearray()  # bytes not yet given to the reader
        self.manifest: dict[str, Any] | None = None

    async def write(self, chunk: bytes) -> None:
        self._unread += chunk
        if len(self._unread) >= READ_IN_THREAD_AT:
            await self._read()
        await self.upload.write(chunk)

    async def _read(self) -> None:
        """Give the reader what arrived: gunzipping and walking the tar is CPU work, done in a
        thread once there is enough of it, so that other requests are not held up."""
        data, self._unread = bytes(self._unread), bytearray()
        try:
            if len(data) >= READ_IN_THREAD_AT:
                await asyncio.to_thread(self._reader.feed, data)
            else:
                self._reader.feed(data)
        except TarballError as exc:
            raise BadRequest(f"{self.filename}: {exc}") from exc

    async def complete(self) -> None:
        """All bytes are in: fix the size and digests and read the package.json found."""
        await self._read()
        await self.upload.complete()
        if self.upload.size == 0:
            raise BadRequest(f"{self.filename}: the tarball is empty")
        try:
            self.manifest = self._reader.finish()
        except TarballError as exc:
            raise BadRequest(f"{self.filename}: {exc}") from exc

    def verify(
        self,
        name: str,
        version: str,
        *,
        integrity: str | None = None,
        shasum: str | None = None,
        length: int | None = None,
        require_digest: bool = True,
    ) -> None:
        """400 unless the bytes are what the publisher claims and name ``name@version``."""
        assert self.manifest is not None, "complete() before verify()"
        size = self.upload.size
        if length is not None and length != size:
            raise BadRequest(f"{self.filename}: attachment length {length} but {size} bytes sent")
        for field, claimed in (("integrity", integrity), ("shasum", shasum)):
            if claimed is not None and not isinstance(claimed, str):
                raise BadRequest(f"{self.filename}: dist.{field} must be a string")
        if require_digest or integrity or shasum:
            try:
                verify(self.digests(), integrity, shasum)
            except IntegrityError as exc:
                raise BadRequest(f"{self.filename}: {exc}") from exc
        found = f"{self.manifest.get('name')}@{self.manifest.get('version')}"
        if self.manifest.get("name") != name or self.manifest.get("version") != version:
            raise BadRequest(f"{self.filename}: package.json says {found}, not {name}@{version}")

    def digests(self) -> dict[str, bytes]:
        return {a: self.upload.digest(a) for a in ALGORITHMS}

    async def commit(self) -> StoredTarball:
        await self.upload.commit()
        digests = self.digests()
        return StoredTarball(
            filename=self.filename,
            key=self.key,
            size=self.upload.size,
            sha1=digests["sha1"].hex(),
            integrity=sri("sha512", digests["sha512"]),
        )


async def require_new_tarball(ctx: EcosystemContext, name: str, filename: str) -> None:
    """409 if the file exists: published files never change."""
    if await store.get_tarball(ctx.db, name, filename) is not None:
        raise Conflict(f"{name}: tarball {filename} already exists; published files never change")


@asynccontextmanager
async def open_tarball(
    ctx: EcosystemContext, name: str, filename: str
) -> AsyncIterator[IncomingTarball]:
    """An upload of ``filename`` (canonical ``<basename>-<version>.tgz``) under a fresh key."""
    key = f"tarballs/{name}/{uuid.uuid4().hex[:16]}-{filename}"
    async with ctx.blobs.upload(key, hashes=ALGORITHMS) as upload:
        yield IncomingTarball(upload, key, filename)


async def add_tarball_row(
    ctx: EcosystemContext, name: str, stored: StoredTarball, provenance: str = "published"
) -> None:
    """The tarball row of a committed blob; 409 if a concurrent upload recorded the file first.

    Run it inside a write (``ctx.db.write``); whoever runs it deletes the blob if it fails.
    """
    async with ctx.reference_blobs(stored.key):
        recorded = await store.add_tarball(
            ctx.db,
            name,
            stored.filename,
            stored.key,
            stored.size,
            stored.sha1,
            stored.integrity,
            provenance,
        )
    if not recorded:
        raise Conflict(
            f"{name}: tarball {stored.filename} already exists; published files never change"
        )


async def record_tarball(
    ctx: EcosystemContext, name: str, stored: StoredTarball, provenance: str = "published"
) -> None:
    """The tarball row, written after its blob is committed; 409 if a concurrent upload won."""
    try:
        await ctx.db.write(lambda: add_tarball_row(ctx, name, stored, provenance))
    except Exception:
        await ctx.blobs.delete(stored.key)
        raise


async def receive_tarball(
    ctx: EcosystemContext,
    name: str,
    version: str,
    filename: str,
    chunks: AsyncIterator[bytes],
    *,
    integrity: str | None = None,
    shasum: str | None = None,
    length: int | None = None,
    require_digest: bool = True,
    provenance: str = "published",
) -> StoredTarball:
    """Store a tarball of ``name@version`` after verifying it; 400/409 and nothing kept otherwise.

    ``integrity``/``shasum`` are what the publisher claims (``require_digest``: one must be
    given); the push API checks them later against the version document instead.
    """
    await require_new_tarball(ctx, name, filename)
    async with open_tarball(ctx, name, filename) as tarball:
        async for chunk in chunks:
            await tarball.write(chunk)
        await tarball.complete()
        tarball.verify(
            name,
            version,
            integrity=integrity,
            shasum=shasum,
            length=length,
            require_digest=require_digest,
        )
        stored = await tarball.commit()
    await record_tarball(ctx, name, stored, provenance)
    return stored
