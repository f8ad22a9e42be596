"""depot-raw's page per file, ``/-/browse/raw/<name>``: what a plugin writes to get pages.

The core lays the page out; the plugin says what to show, built from :mod:`depot.core.markup`.
"""

from __future__ import annotations

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.markup import code, link
from depot.core.packagepages import PackagePage
from depot.core.pages import human_size
from starlette.requests import Request

from depot_raw.tables import raw_files


class RawPages:
    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name

    async def page(self, name: str, request: Request) -> PackagePage | None:
        row = await self.ctx.db.fetch_one(sa.select(raw_files).where(raw_files.c.name == name))
        if row is None:
            return None
        url = self.ctx.external_url(request, f"/files/{name}")
        return PackagePage(
            title=name,
            install=(("download", f"curl -fO {url}"),),
            facts=(
                ("file", link(url, name)),
                ("size", human_size(row.size)),
                ("sha256", code(row.sha256)),
                ("uploaded", row.uploaded_at.strftime("%Y-%m-%d %H:%M UTC")),
            ),
        )
