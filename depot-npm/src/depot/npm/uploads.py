"""Receiving a tarball: stream it into the blob store while hashing it and reading package.json.

Shared by ``npm publish`` (bytes decoded from a base64 attachment) and the push API (raw bytes):
the tarball is verified before anything points at it: its hashes against what the caller
expects, its package.json against the name and version it is published as. Only then is the blob
committed and the tarball row recorded.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from depot.core import EcosystemContext
from depot.core.errors import BadRequest, Conflict
from depot.npm import store
from depot.npm.integrity import ALGORITHMS, IntegrityError, sri, verify
from depot.npm.tarball import PackageJsonReader, TarballError

#: Base64 characters decoded per step: a multiple of 4, about 1 MiB of tarball.
B64_STEP = 4 * 256 * 1024


@dataclass(frozen=True)
class StoredTarball:
    filename: str
    key: str
    size: int
    sha1: str  # hex, npm's ``shasum``
    integrity: str  # ``sha512-<base64>``


def decode_base64(data: str) -> Iterator[bytes]:
    """Decode a base64 attachment a slice at a time, so no second full copy is made."""
    for start in range(0, len(data), B64_STEP):
        try:
            yield base64.b64decode(data[start : start + B64_STEP], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"attachment data is not valid base64: {exc}") from exc


async def aiter_sync(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


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
) -> StoredTarball:
    """Store a tarball of ``name@version`` after verifying it; 400/409 and nothing kept otherwise.

    ``integrity``/``shasum`` are what the publisher claims (``require_digest``: one must be
    given); the push API checks them later against the version document instead.
    """
    if await store.get_tarball(ctx.db, name, filename) is not None:
        raise Conflict(f"{name}: tarball {filename} already exists; published files never change")
    key = f"tarballs/{name}/{uuid.uuid4().hex[:16]}-{filename}"
    reader = PackageJsonReader()
    async with ctx.blobs.upload(key, hashes=ALGORITHMS) as upload:
        try:
            async for chunk in chunks:
                reader.feed(chunk)
                await upload.write(chunk)
            await upload.complete()
            manifest = reader.finish()
        except TarballError as exc:
            raise BadRequest(f"{filename}: {exc}") from exc
        if upload.size == 0:
            raise BadRequest(f"{filename}: the tarball is empty")
        if length is not None and length != upload.size:
            raise BadRequest(f"{filename}: attachment length {length} but {upload.size} bytes sent")
        digests = {a: upload.digest(a) for a in ALGORITHMS}
        if require_digest or integrity or shasum:
            try:
                verify(digests, integrity, shasum)
            except IntegrityError as exc:
                raise BadRequest(f"{filename}: {exc}") from exc
        if manifest.get("name") != name or manifest.get("version") != version:
            raise BadRequest(
                f"{filename}: package.json says {manifest.get('name')}@{manifest.get('version')}, "
                f"not {name}@{version}"
            )
        await upload.commit()
        stored = StoredTarball(
            filename=filename,
            key=key,
            size=upload.size,
            sha1=digests["sha1"].hex(),
            integrity=sri("sha512", digests["sha512"]),
        )
    recorded = await store.add_tarball(
        ctx.db, name, filename, key, stored.size, stored.sha1, stored.integrity
    )
    if not recorded:  # a concurrent upload of the same file won
        await ctx.blobs.delete(key)
        raise Conflict(f"{name}: tarball {filename} already exists; published files never change")
    return stored
