"""depot-raw's hooks: the ecosystem, its routes, its table, its CLI group, catalog and pages."""

from __future__ import annotations

from collections.abc import Sequence

import click
from depot.core import Depot, Ecosystem, hookimpl
from depot.core.database import Schema
from starlette.routing import BaseRoute, Mount

ECOSYSTEM = Ecosystem(name="raw", prefix="/raw", title="Raw files")


@hookimpl
def depot_ecosystems() -> list[Ecosystem]:
    return [ECOSYSTEM]


@hookimpl
def depot_routes(depot: Depot) -> Sequence[BaseRoute]:
    from depot_raw.routes import routes

    return [Mount(ECOSYSTEM.prefix, routes=routes(depot.context(ECOSYSTEM.name)))]


@hookimpl
def depot_schemas() -> list[Schema]:
    from depot_raw.tables import raw_files

    return [Schema(name="raw", version=1, tables=[raw_files])]


@hookimpl
def depot_commands() -> Sequence[click.Command]:
    from depot_raw.cli import raw

    return [raw]


@hookimpl
def depot_catalogs(depot: Depot) -> list[object]:
    from depot_raw.catalog import RawCatalog

    return [RawCatalog(depot.context(ECOSYSTEM.name))]


@hookimpl
def depot_package_pages(depot: Depot) -> list[object]:
    from depot_raw.pages import RawPages

    return [RawPages(depot.context(ECOSYSTEM.name))]


class RawBlobReferences:
    """Which blobs raw rows point at (``sha256/<hex>``): what the garbage collector keeps."""

    ecosystem = ECOSYSTEM.name

    def __init__(self, depot: Depot) -> None:
        self.ctx = depot.context(ECOSYSTEM.name)

    async def referenced(self, keys: Sequence[str]) -> set[str]:
        import sqlalchemy as sa

        from depot_raw.tables import raw_files

        digests = [k.removeprefix("sha256/") for k in keys if k.startswith("sha256/")]
        rows = await self.ctx.db.fetch_all(
            sa.select(raw_files.c.sha256).where(raw_files.c.sha256.in_(digests)).distinct()
        )
        return {f"sha256/{row[0]}" for row in rows}


@hookimpl
def depot_blob_references(depot: Depot) -> list[object]:
    return [RawBlobReferences(depot)]
