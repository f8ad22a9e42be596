"""What npm content ``--cache-max-size``/``--cache-max-age`` may evict: what came from upstream.

Two kinds of cached item, each declared to the core (``ctx.cache_stored``) when it is verified
and stored by :mod:`depot.npm.pullthrough`, and marked used (``ctx.record_use``) when served:

- a tarball, item ``<name>/-/<filename>`` (the path of its URL under ``/npm/``), sized by the
  tarball;
- a packument, item ``<name>``, sized by the upstream's document (the core's held document of
  that name, :mod:`depot.core.held`).

They are evicted separately, least recently used first (:mod:`depot.core.retention`). A tarball
evicted while its packument is held is fetched again through that packument the next time it
is asked for; a packument evicted is fetched again from upstream on the next install, while the
tarballs still held are served as before. Published and pushed versions live in other tables
and are never declared, so they are never evicted. npm names never contain ``/-/``, so the two
kinds cannot be confused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from depot.npm.store import cached_tarballs

TARBALL_SEPARATOR = "/-/"


def packument_item(name: str) -> str:
    return name


def tarball_item(name: str, filename: str) -> str:
    return f"{name}{TARBALL_SEPARATOR}{filename}"


class NpmCachedContent:
    """The npm ecosystem's evictor for the core (``depot_cached_content``)."""

    ecosystem = "npm"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def evict(self, items: Sequence[str]) -> None:
        """Delete the items' rows (one transaction), then release the blobs they named: no row
        ever points at a removed blob, and a blob another row shares stays."""
        db = self.ctx.db
        names = [i for i in items if TARBALL_SEPARATOR not in i]
        files = [tuple(i.split(TARBALL_SEPARATOR, 1)) for i in items if TARBALL_SEPARATOR in i]
        since = time.time()  # a blob stored again from now on is kept by the release
        keys: list[str] = []
        async with db.transaction():
            keys += await self.ctx.held_documents.forget(names)
            if files:
                chosen = sa.tuple_(cached_tarballs.c.name, cached_tarballs.c.filename).in_(files)
                rows = await db.fetch_all(sa.select(cached_tarballs.c.blob_key).where(chosen))
                keys += [row[0] for row in rows]
                await db.execute(cached_tarballs.delete().where(chosen))
        # The pages of these packages change (a version no longer cached, or no page at all).
        await self.ctx.changes.notify(*sorted({*names, *(f[0] for f in files)}))
        await self.ctx.release_blobs(keys, since)
