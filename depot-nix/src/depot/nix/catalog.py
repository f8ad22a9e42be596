"""What the nix cache holds, for depot's ``/`` page, browse pages and stored-object gauges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.catalog import CatalogEntry, CatalogStats
from depot.nix import tables


class NixCatalog:
    ecosystem = "nix"

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx

    async def stats(self, newest: int = 5) -> CatalogStats:
        n = tables.narinfos
        totals = await self.ctx.db.fetch_one(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(n.c.file_size), 0))
        )
        rows = await self.ctx.db.fetch_all(
            sa.select(n).order_by(n.c.created_at.desc(), n.c.hash_part).limit(newest)
        )
        assert totals is not None
        return CatalogStats(
            objects=int(totals[0]), bytes=int(totals[1]), newest=[self._entry(r) for r in rows]
        )

    async def search(self, query: str, limit: int = 50) -> Sequence[CatalogEntry]:
        n = tables.narinfos
        select = sa.select(n).order_by(n.c.store_path).limit(limit)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            select = select.where(n.c.store_path.like(f"%{escaped}%", escape="\\"))
        return [self._entry(r) for r in await self.ctx.db.fetch_all(select)]

    @staticmethod
    def _entry(row: Any) -> CatalogEntry:
        references = row.references.split()
        return CatalogEntry(
            name=row.store_path,
            summary=f"NAR {row.nar_size} bytes, {row.compression}",
            size=row.file_size,
            uploaded_at=row.created_at,
            href=f"/{row.hash_part}.narinfo",
            page=row.hash_part,
            fields=(
                ("NarHash", row.nar_hash),
                ("References", ", ".join(references) or "none"),
                ("Deriver", row.deriver or ""),
            ),
        )
