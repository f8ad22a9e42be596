"""What Nix content ``--cache-max-size``/``--cache-max-age`` may evict: what came from upstream.

One kind of cached item: a store path fetched from a ``--nix-upstream``, item ``<hash part>``,
made of its narinfo and, once fetched, its NAR and listing. It is declared to the core
(``ctx.cache_stored``) by :mod:`depot.nix.pullthrough` when the verified narinfo is stored
(sized by the narinfo) and again when its verified NAR is (sized by the NAR file and the
narinfo), and marked used (``ctx.record_use``) whenever the narinfo or the NAR is served.

Eviction (:mod:`depot.core.retention`, least recently used first) deletes the narinfo row, then
announces the hash part (the core's change notification drops the rendered narinfo every
process keeps), then releases the NAR and listing: a narinfo is never left naming a NAR that is
gone. The next lookup fetches and verifies the narinfo from upstream again, and the NAR after
it. Pushed paths live in ``nix_narinfos`` and are never declared, so they are never evicted; a
NAR a pushed narinfo shares is kept by the release.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from depot.nix.tables import upstream_narinfos


class NixCachedContent:
    """The nix ecosystem's evictor for the core (``depot_cached_content``)."""

    ecosystem = "nix"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def evict(self, items: Sequence[str]) -> None:
        db = self.ctx.db
        chosen = upstream_narinfos.c.hash_part.in_(list(items))
        since = time.time()  # a blob stored again from now on is kept by the release
        async with db.transaction():
            rows = await db.fetch_all(
                sa.select(upstream_narinfos.c.nar_key, upstream_narinfos.c.listing_key).where(
                    chosen
                )
            )
            await db.execute(upstream_narinfos.delete().where(chosen))
        await self.ctx.changes.notify(*items)
        keys = [key for row in rows for key in (row[0], row[1]) if key is not None]
        await self.ctx.release_blobs(keys, since)
