"""What Python content ``--cache-max-size``/``--cache-max-age`` may evict: what came from upstream.

Two kinds of cached item, each declared to the core (``ctx.cache_stored``) when it is verified
and stored by :mod:`depot.pypi.pullthrough`, and marked used (``ctx.record_use``) when served:

- a file (wheel or sdist), item ``<project>/<filename>``, sized by the file;
- a project page (the upstream's file list), item ``<project>``, sized by the kept list (the
  core's held document of that name, :mod:`depot.core.held`).

They are evicted separately, least recently used first (:mod:`depot.core.retention`). A file
evicted while its project's page is held is fetched again through that page's URL and sha256
the next time it is asked for; an evicted page is fetched again from the upstreams on the next
install, while the files still held are served as before. Uploaded and pushed files live in
``pypi_files`` and are never declared, so they are never evicted. Normalised project names
contain no ``/``, so the two kinds cannot be confused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from depot.pypi.schema import cached_files


def topic(project: str) -> str:
    """The change topic of a project's upstream content (pages and files), under ``pypi:``."""
    return f"upstream/{project}"


def page_item(project: str) -> str:
    return project


def file_item(project: str, filename: str) -> str:
    return f"{project}/{filename}"


class PypiCachedContent:
    """The pypi ecosystem's evictor for the core (``depot_cached_content``)."""

    ecosystem = "pypi"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def evict(self, items: Sequence[str]) -> None:
        """Delete the items' rows (one transaction), then release the blobs they named: no row
        ever points at a removed blob, and a blob another row shares stays."""
        db = self.ctx.db
        projects = [i for i in items if "/" not in i]
        filenames = [i.split("/", 1)[1] for i in items if "/" in i]
        since = time.time()  # a blob stored again from now on is kept by the release
        keys: list[str] = []
        async with db.transaction():
            keys += await self.ctx.held_documents.forget(projects)
            if filenames:
                chosen = cached_files.c.filename.in_(filenames)
                rows = await db.fetch_all(sa.select(cached_files.c.blob_key).where(chosen))
                keys += [row[0] for row in rows]
                await db.execute(cached_files.delete().where(chosen))
        # The pages of these projects change (a file no longer cached, or no page at all), and
        # processes remember held pages and file rows (depot.pypi.pullthrough): they forget the
        # evicted ones within the change notification's bound.
        touched = sorted({item.split("/", 1)[0] for item in items})
        await self.ctx.changes.notify(*touched, *(topic(project) for project in touched))
        await self.ctx.release_blobs(keys, since)
