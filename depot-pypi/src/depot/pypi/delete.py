"""Removing published files on purpose: ``DELETE /python/-/projects/<project>[/<version>]``.

Used by ``depot python delete``. Yanking (:mod:`depot.pypi.yank`) is what PyPI offers and what
keeps pinned installs working; deletion is for content that must go (a leaked secret, a licence
problem, space). The rows go first, in one transaction, so the files leave the project page at
once; then the blobs (distribution files and their core metadata) that no remaining row shares.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.errors import NotFound
from depot.pypi.schema import blob_key, pypi_files
from depot.pypi.yank import _same_version, parse_version


async def delete_files(
    ctx: EcosystemContext, project: str, version: str | None, dry_run: bool
) -> dict[str, Any]:
    """Delete every file of ``project`` (PEP 503 normalised), or of one release; the answer lists
    the files and the blobs removed (or, with ``dry_run``, that would be)."""
    since = time.time()
    wanted = None if version is None else parse_version(version)
    rows = await ctx.db.fetch_all(
        sa.select(
            pypi_files.c.filename,
            pypi_files.c.version,
            pypi_files.c.sha256,
            pypi_files.c.metadata_sha256,
            pypi_files.c.size,
        ).where(pypi_files.c.project == project)
    )
    if not rows:
        raise NotFound(f"project {project} not found")
    doomed = [r for r in rows if wanted is None or _same_version(r, wanted)]
    if not doomed:
        raise NotFound(f"project {project} has no version {version}")
    filenames = sorted(r["filename"] for r in doomed)
    keys = [blob_key(r["sha256"]) for r in doomed]
    keys += [blob_key(r["metadata_sha256"]) for r in doomed if r["metadata_sha256"]]
    if dry_run:
        blobs = [(k, s.size) for k in dict.fromkeys(keys) if (s := await ctx.blobs.stat(k))]
    else:
        async with ctx.db.transaction():
            await ctx.db.execute(pypi_files.delete().where(pypi_files.c.filename.in_(filenames)))
        await ctx.changes.notify(project)
        blobs = [(e.key, e.size) for e in await ctx.release_blobs(keys, since)]
        ctx.log.info("deleted", extra={"project": project, "files": filenames})
    return {
        "project": project,
        "version": version,
        "files": filenames,
        "dry_run": dry_run,
        "blobs": [{"key": k, "size": size} for k, size in blobs],
    }


class PypiBlobReferences:
    """The pypi ecosystem's reachability for the garbage collector (``depot_blob_references``).

    Keys are ``sha256/<2>/<sha256>`` (:func:`depot.pypi.schema.blob_key`): a file or the core
    metadata of a wheel.
    """

    ecosystem = "pypi"

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx

    async def referenced(self, keys: Any) -> set[str]:
        from depot.pypi.schema import cached_files

        found: set[str] = set()
        # Files cached from --pypi-upstream (depot.pypi.pullthrough), under upstream/; the core
        # counts the held pages' blobs itself (depot.core.held).
        cached = [k for k in keys if k.startswith("upstream/")]
        if cached:
            column = cached_files.c.blob_key
            rows = await self.ctx.db.fetch_all(
                sa.select(column).where(column.in_(cached)).distinct()
            )
            found.update(row[0] for row in rows)
        digests = {k.rsplit("/", 1)[-1]: k for k in keys if k.startswith("sha256/")}
        if not digests:
            return found
        for column in (pypi_files.c.sha256, pypi_files.c.metadata_sha256):
            rows = await self.ctx.db.fetch_all(
                sa.select(column).where(column.in_(list(digests))).distinct()
            )
            found.update(digests[row[0]] for row in rows if blob_key(row[0]) == digests[row[0]])
        return found
