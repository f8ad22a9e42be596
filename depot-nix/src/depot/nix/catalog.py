"""What the nix cache holds, for depot's ``/`` page, browse pages and stored-object gauges."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.catalog import CatalogEntry, CatalogStats
from depot.core.database import contains
from depot.core.packagepages import CACHED, Provenance
from depot.nix import narinfo, tables
from depot.nix.narinfo import NarInfoError


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
        entries = [self._entry(r) for r in await self.ctx.db.fetch_all(select)]
        if len(entries) < limit:
            entries += await self._cached(query, limit - len(entries))
        return entries

    async def _cached(self, query: str, limit: int) -> list[CatalogEntry]:
        """Paths held as a cache of a ``--nix-upstream`` (a pushed path is served as pushed,
        so it is not listed twice). The store path is inside the narinfo the upstream signed:
        the text narrows the rows, the parsed StorePath confirms each."""
        u = tables.upstream_narinfos
        select = (
            sa.select(u.c.hash_part, u.c.upstream_url, u.c.narinfo, u.c.fetched_at, u.c.nar_key)
            .where(u.c.hash_part.not_in(sa.select(tables.narinfos.c.hash_part)))
            .order_by(u.c.hash_part)
        )
        if query:
            select = select.where(contains(u.c.narinfo, query))
        entries = []
        for row in await self.ctx.db.fetch_all(select):
            try:
                info = narinfo.parse(row[2])
            except NarInfoError:
                continue
            if query and query.lower() not in info.store_path.lower():
                continue
            entries.append(
                CatalogEntry(
                    name=info.store_path,
                    summary=f"NAR {info.nar_size} bytes, {info.compression}"
                    + ("" if row[4] is not None else " (NAR not fetched yet)"),
                    size=info.file_size if row[4] is not None else 0,
                    uploaded_at=datetime.fromtimestamp(row[3], UTC),
                    href=f"/{row[0]}.narinfo",
                    page=row[0],
                    fields=(("NarHash", str(info.nar_hash)),),
                    provenance=Provenance(CACHED, row[1], row[3]),
                )
            )
            if len(entries) >= limit:
                break
        return sorted(entries, key=lambda e: e.name)

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
