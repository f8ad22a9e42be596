"""The Python index as people browse it: projects with their versions, files and sizes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.catalog import CatalogEntry, CatalogStats, cached_entries
from depot.core.database import contains
from depot.pypi.schema import cached_files, pypi_files
from depot.pypi.simple import sort_versions


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class PypiCatalog:
    """Counts files, lists the newest uploads, finds projects by name."""

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def stats(self, newest: int = 5) -> CatalogStats:
        totals = await self.ctx.db.fetch_one(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(pypi_files.c.size), 0))
        )
        entries: list[CatalogEntry] = []
        if newest:
            query = (
                sa.select(pypi_files.c.filename, pypi_files.c.project, pypi_files.c.size,
                          pypi_files.c.upload_time)
                .order_by(pypi_files.c.upload_time.desc())
                .limit(newest)
            )  # fmt: skip
            for row in await self.ctx.db.fetch_all(query):
                filename, project, size, upload_time = row._mapping  # type: ignore[attr-defined]
                entries.append(
                    CatalogEntry(
                        name=filename, summary=project, size=size, uploaded_at=_time(upload_time),
                        href=f"/simple/{project}/", page=project,
                    )
                )  # fmt: skip
        assert totals is not None
        return CatalogStats(objects=int(totals[0]), bytes=int(totals[1]), newest=entries)

    async def search(self, query: str, limit: int = 50) -> Sequence[CatalogEntry]:
        select = (
            sa.select(
                pypi_files.c.project,
                sa.func.count(),
                sa.func.sum(pypi_files.c.size),
                sa.func.max(pypi_files.c.upload_time),
            )
            .group_by(pypi_files.c.project)
            .order_by(pypi_files.c.project)
            .limit(limit)
        )
        if query:
            select = select.where(contains(pypi_files.c.project, query))
        rows = [tuple(r._mapping) for r in await self.ctx.db.fetch_all(select)]  # type: ignore[attr-defined]
        versions = await self._versions([r[0] for r in rows])
        return [
            CatalogEntry(
                name=project,
                summary=f"{files} file(s)",
                size=int(size or 0),
                uploaded_at=_time(newest),
                href=f"/simple/{project}/",
                fields=(("versions", ", ".join(versions.get(project, []))),),
                page=project,
            )
            for project, files, size, newest in rows
        ] + (await self._cached(query, limit - len(rows)) if len(rows) < limit else [])

    async def _cached(self, query: str, limit: int) -> list[CatalogEntry]:
        """Projects held only as a cache of a ``--pypi-upstream`` (a project with an upload
        here is never served from upstream, so it is not listed twice), with the files
        fetched so far."""
        held = await self.ctx.held_documents.listed(
            containing=query, excluding=sa.select(pypi_files.c.project), limit=limit
        )
        if not held:
            return []
        c = cached_files.c
        tallies = {
            r[0]: (int(r[1]), int(r[2] or 0))
            for r in await self.ctx.db.fetch_all(
                sa.select(c.project, sa.func.count(), sa.func.sum(c.size))
                .where(c.project.in_([h.name for h in held]))
                .where(c.filename.not_like("%.metadata"))  # PEP 658 files beside the wheels
                .group_by(c.project)
            )
        }
        return cached_entries(held, tallies, unit="file(s)", href=lambda name: f"/simple/{name}/")

    async def _versions(self, projects: list[str]) -> dict[str, list[str]]:
        if not projects:
            return {}
        query = (
            sa.select(pypi_files.c.project, pypi_files.c.version)
            .where(pypi_files.c.project.in_(projects))
            .distinct()
        )
        found: dict[str, list[Any]] = {}
        for row in await self.ctx.db.fetch_all(query):
            project, version = row._mapping  # type: ignore[attr-defined]
            found.setdefault(project, []).append(version)
        return {project: sort_versions(versions) for project, versions in found.items()}
