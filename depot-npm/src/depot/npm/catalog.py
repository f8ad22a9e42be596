"""The npm registry as people browse it (``/`` and ``/-/browse/npm``): packages and tarballs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.catalog import CatalogEntry, CatalogStats, cached_entries
from depot.core.database import contains
from depot.npm.store import cached_tarballs, packages, tarballs, versions
from depot.npm.versions import choose_latest


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class NpmCatalog:
    """Counts tarballs and their bytes, lists the newest versions, finds packages by name."""

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def stats(self, newest: int = 5) -> CatalogStats:
        totals = await self.ctx.db.fetch_one(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(tarballs.c.size), 0))
        )
        assert totals is not None
        entries = []
        if newest:
            query = (
                sa.select(versions.c.name, versions.c.version, versions.c.created, tarballs.c.size)
                .join(
                    tarballs,
                    sa.and_(
                        tarballs.c.name == versions.c.name,
                        tarballs.c.filename == versions.c.filename,
                    ),
                )
                .order_by(versions.c.created.desc())
                .limit(newest)
            )
            for row in await self.ctx.db.fetch_all(query):
                entries.append(
                    CatalogEntry(
                        name=f"{row[0]}@{row[1]}",
                        summary=row[0],
                        size=int(row[3]),
                        uploaded_at=_time(row[2]),
                        href=f"/{row[0]}",
                        page=row[0],
                    )
                )
        return CatalogStats(objects=int(totals[0]), bytes=int(totals[1]), newest=entries)

    async def search(self, query: str, limit: int = 50) -> Sequence[CatalogEntry]:
        select = sa.select(packages.c.name, packages.c.modified).order_by(packages.c.name)
        if query:
            select = select.where(contains(packages.c.name, query))
        rows = await self.ctx.db.fetch_all(select.limit(limit))
        entries = []
        for name, modified in ((r[0], r[1]) for r in rows):
            sizes = await self.ctx.db.fetch_one(
                sa.select(sa.func.coalesce(sa.func.sum(tarballs.c.size), 0)).where(
                    tarballs.c.name == name
                )
            )
            numbers = [
                r[0]
                for r in await self.ctx.db.fetch_all(
                    sa.select(versions.c.version).where(versions.c.name == name)
                )
            ]
            if not numbers:
                continue
            entries.append(
                CatalogEntry(
                    name=name,
                    summary=f"{len(numbers)} version(s)",
                    size=int(sizes[0]) if sizes else None,
                    uploaded_at=_time(modified),
                    href=f"/{name}",
                    fields=(("latest", choose_latest(numbers) or ""),),
                    page=name,
                )
            )
        if len(rows) < limit:
            entries += await self._cached(query, limit - len(rows))
        return entries

    async def _cached(self, query: str, limit: int) -> list[CatalogEntry]:
        """Packages held only as a cache of ``--npm-upstream`` (a name published here is never
        served from upstream, so it is not listed twice), with the tarballs fetched so far."""
        held = await self.ctx.held_documents.listed(
            containing=query, excluding=sa.select(packages.c.name), limit=limit
        )
        if not held:
            return []
        c = cached_tarballs.c
        tallies = {
            r[0]: (int(r[1]), int(r[2] or 0))
            for r in await self.ctx.db.fetch_all(
                sa.select(c.name, sa.func.count(), sa.func.sum(c.size))
                .where(c.name.in_([h.name for h in held]))
                .group_by(c.name)
            )
        }
        return cached_entries(held, tallies, unit="tarball(s)", href=lambda name: f"/{name}")
