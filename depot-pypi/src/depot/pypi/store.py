"""Storage of distribution files: verify an uploaded file, write its blobs, then its row.

Both upload routes (twine's legacy form and the PUT that ``depot python push`` uses) hand a local,
seekable spool of the uploaded bytes to :func:`publish`, which reads top to bottom: check the
digests the client sent, read the core metadata out of the archive and compare it with the
filename, refuse a different file under a published name, write the blobs, insert the row.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.blobs import CHUNK_SIZE
from depot.core.changes import Recorded
from depot.core.database import json_value
from depot.core.errors import BadRequest, Conflict, HTTPError
from depot.pypi import yank
from depot.pypi.coremeta import CoreMetadata, InvalidDistribution, distribution_metadata
from depot.pypi.names import DistributionFile
from depot.pypi.schema import blob_key, pypi_files
from starlette.requests import Request

#: Spools keep this much in memory before they roll over to a temporary file on disk.
SPOOL_IN_MEMORY = CHUNK_SIZE

#: Digests a client may send, under the names twine's form uses.
DIGEST_FIELDS = ("sha256_digest", "md5_digest", "blake2_256_digest")


@dataclass
class Received:
    """An uploaded file spooled locally, with its size and digests."""

    file: IO[bytes]
    size: int
    digests: dict[str, str]  # field name in DIGEST_FIELDS -> lowercase hex


class _Digests:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.blake2_256 = hashlib.blake2b(digest_size=32)
        self.size = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.md5.update(data)
        self.blake2_256.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        return {
            "sha256_digest": self.sha256.hexdigest(),
            "md5_digest": self.md5.hexdigest(),
            "blake2_256_digest": self.blake2_256.hexdigest(),
        }


def spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - caller closes


async def receive_stream(chunks: AsyncIterator[bytes], max_size: int | None = None) -> Received:
    """Spool a request body to local storage, hashing it on the way in."""
    file = spool()
    digests = _Digests()
    buffer = bytearray()

    def write(data: bytes) -> None:
        digests.update(data)
        file.write(data)

    try:
        async for chunk in chunks:
            buffer += chunk
            if max_size is not None and digests.size + len(buffer) > max_size:
                raise HTTPError(413, f"file is larger than the limit of {max_size} bytes")
            if len(buffer) >= CHUNK_SIZE:
                data, buffer = bytes(buffer), bytearray()
                await asyncio.to_thread(write, data)
        if buffer:
            await asyncio.to_thread(write, bytes(buffer))
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return Received(file, digests.size, digests.hexdigests())


def digest_file(file: IO[bytes]) -> Received:
    """Hash a file that is already spooled (twine's form part); blocking, run in a thread."""
    digests = _Digests()
    file.seek(0)
    while chunk := file.read(CHUNK_SIZE):
        digests.update(chunk)
    file.seek(0)
    return Received(file, digests.size, digests.hexdigests())


def check_digests(received: Received, expected: Mapping[str, str | None]) -> None:
    """Every digest the client sent must match the bytes that arrived."""
    for field in DIGEST_FIELDS:
        claimed = (expected.get(field) or "").strip().lower()
        if claimed and claimed != received.digests[field]:
            raise BadRequest(
                f"{field} does not match the uploaded file "
                f"(sent {claimed}, received {received.digests[field]})"
            )


# Statements run with values (``db.execute(statement, values)``): built and compiled once, which
# on an upload's path costs a fraction of building each per call (see depot.core.prepared).
_FILE = sa.select(pypi_files).where(pypi_files.c.filename == sa.bindparam("filename"))
_PROJECT_FILES = (
    sa.select(
        pypi_files.c.filename,
        pypi_files.c.version,
        pypi_files.c.sha256,
        pypi_files.c.size,
        pypi_files.c.requires_python,
        pypi_files.c.metadata_sha256,
        pypi_files.c.upload_time,
        pypi_files.c.yanked,
    )
    .where(pypi_files.c.project == sa.bindparam("project"))
    .order_by(pypi_files.c.filename)
)


async def file_row(ctx: EcosystemContext, filename: str) -> Mapping[str, Any] | None:
    return await ctx.db.fetch_one(_FILE, {"filename": filename})


async def publish(
    ctx: EcosystemContext,
    dist: DistributionFile,
    received: Received,
    expected: Mapping[str, str | None],
    fields: Mapping[str, str] | None = None,
    request: Request | None = None,
) -> bool:
    """Verify and store one distribution file; True if stored, False if it was already there.

    Raises 400 for a digest mismatch or an archive whose metadata disagrees with its filename,
    409 when the filename is taken by different bytes.
    """
    check_digests(received, expected)
    sha256 = received.digests["sha256_digest"]
    try:
        metadata: CoreMetadata = await asyncio.to_thread(distribution_metadata, received.file, dist)
    except InvalidDistribution as exc:
        raise BadRequest(f"{dist.filename}: {exc}") from exc

    existing = await file_row(ctx, dist.filename)
    if existing is not None:
        if existing["sha256"] == sha256:
            # Same bytes again: nothing to do, except restore a blob lost from the store, which
            # is what re-running a push after such a loss should achieve.
            await store_blob(ctx, received.file, sha256)
            if dist.is_wheel:
                await store_bytes(ctx, metadata.raw, hashlib.sha256(metadata.raw).hexdigest())
            ctx.changes.observed(dist.project)  # perhaps uploaded through another replica
            return False
        raise Conflict(f"File already exists: {dist.filename} was published with other content")

    await store_blob(ctx, received.file, sha256)
    metadata_sha256 = None
    if dist.is_wheel:
        metadata_sha256 = hashlib.sha256(metadata.raw).hexdigest()
        await store_bytes(ctx, metadata.raw, metadata_sha256)

    row = {
        "filename": dist.filename,
        "project": dist.project,
        "version": str(dist.version),
        "packagetype": dist.packagetype,
        "sha256": sha256,
        "size": received.size,
        "requires_python": metadata.requires_python,
        "metadata_sha256": metadata_sha256,
        "upload_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "md5": received.digests["md5_digest"],
        "blake2_256": received.digests["blake2_256_digest"],
        "fields": dict(fields or {}),
    }
    keys = [blob_key(sha256)] + ([blob_key(metadata_sha256)] if metadata_sha256 else [])

    async def record() -> Recorded:
        """The file's row and its change-log row, in one transaction (its commit shared with
        other writes); 409 if another upload of the filename came first."""
        # Read in the transaction: a yank of the release committed before this row is not lost.
        row["yanked"] = await yank.release_state(ctx, dist.project, dist.version)
        async with ctx.reference_blobs(*keys):
            inserted = await ctx.db.fetch_one(
                ctx.db.insert_or_ignore(pypi_files, returning=[pypi_files.c.filename]), row
            )
        if inserted is None:  # another upload of the filename came first: the same bytes?
            winner = await file_row(ctx, dist.filename)
            if winner is None or winner["sha256"] != sha256:
                raise Conflict(
                    f"File already exists: {dist.filename} was published with other content"
                )
        return await ctx.changes.record(dist.project)

    recorded = await ctx.db.write(record)
    await ctx.changes.notify(dist.project, recorded=recorded)
    ctx.artifact_stored(blob_key(sha256), received.size, request)
    return True


async def store_blob(ctx: EcosystemContext, file: IO[bytes], sha256: str) -> None:
    """Copy a spooled file into the content-addressed blob store, checking its hash again."""
    key = blob_key(sha256)
    if await ctx.blobs.stat(key) is not None:
        return
    file.seek(0)
    async with ctx.blobs.upload(key, hashes=("sha256",)) as up:
        while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
            await up.write(chunk)
        await up.complete()
        if up.hexdigest("sha256") != sha256:
            raise HTTPError(500, "the spooled upload changed while it was being stored")
        await up.commit()
    file.seek(0)


async def store_bytes(ctx: EcosystemContext, data: bytes, sha256: str) -> None:
    """Store a small blob (core metadata) under its hash."""
    key = blob_key(sha256)
    if await ctx.blobs.stat(key) is not None:
        return
    async with ctx.blobs.upload(key, hashes=("sha256",)) as up:
        await up.write(data)
        await up.complete()
        await up.commit()


async def projects(ctx: EcosystemContext) -> list[str]:
    """Every project with at least one file, sorted."""
    query = sa.select(pypi_files.c.project).distinct().order_by(pypi_files.c.project)
    return [row[0] for row in await ctx.db.fetch_all(query)]


async def project_files(ctx: EcosystemContext, project: str) -> list[Mapping[str, Any]]:
    """The rows of a project's files, by filename."""
    return list(await ctx.db.fetch_all(_PROJECT_FILES, {"project": project}))


def stored_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return json_value(row["fields"]) or {}
