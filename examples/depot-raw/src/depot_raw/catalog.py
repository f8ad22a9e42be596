"""depot-raw's catalog: the files it holds, for the ``/`` page, browsing and metrics."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.catalog import CatalogEntry, CatalogStats
from depot.core.database import contains

from depot_raw.tables import raw_files


class RawCatalog:
    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    def _entry(self, row: sa.Row) -> CatalogEntry:
        return CatalogEntry(
            name=row.name,
            summary=f"sha256 {row.sha256}",
            size=row.size,
            uploaded_at=row.uploaded_at,
            href=f"/files/{row.name}",
            page=row.name,
        )

    async def stats(self, newest: int = 5) -> CatalogStats:
        totals = await self.ctx.db.fetch_one(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(raw_files.c.size), 0))
        )
        rows = []
        if newest:
            query = sa.select(raw_files).order_by(raw_files.c.uploaded_at.desc()).limit(newest)
            rows = await self.ctx.db.fetch_all(query)
        return CatalogStats(
            objects=totals[0], bytes=int(totals[1]), newest=[self._entry(r) for r in rows]
        )

    async def search(self, query: str, limit: int = 50) -> Sequence[CatalogEntry]:
        select = sa.select(raw_files).order_by(raw_files.c.name).limit(limit)
        if query:
            select = select.where(contains(raw_files.c.name, query))
        return [self._entry(r) for r in await self.ctx.db.fetch_all(select)]
