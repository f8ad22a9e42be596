"""Retention of cached content: evict what was fetched from upstreams, least recently used first.

Only content an ecosystem declares cached (``ctx.cache_stored(item, size)``, for something it
fetched from an upstream) is ever evicted; published and pushed content is never in
:data:`cache_items`, so ``--cache-max-size`` and ``--cache-max-age`` cannot touch it.

Use is recorded without a database write per request: ``ctx.record_use(item)`` notes the time in
a per-process dict (:class:`UseRecorder`), and the dict is written in one batch every
:data:`FLUSH_EVERY` seconds and at shutdown. A replica that dies loses at most that much use
information: an item may then be evicted a little earlier than it would have been, never a
published one.

Eviction (:func:`evict`) runs at the start of each collection: items unused for longer than the
maximum age, then, while the cached total exceeds the maximum size, the least recently used, a
page of :data:`PAGE` at a time. The ecosystem removes each item through the
``depot_cached_content`` hook (its rows, then ``ctx.release_blobs``); the core then forgets it.

The built-in ecosystems declare what their pull-through caches (``--npm-upstream``,
``--pypi-upstream``, ``--nix-upstream``) store: npm tarballs and packuments, Python files and
project pages, Nix store paths (narinfo with its NAR); see each one's ``retention`` module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
from depot.core.reachability import cache_items

if TYPE_CHECKING:
    from depot.core.app import Depot
    from depot.core.database import Database

log = logging.getLogger("depot.core.retention")

#: Recorded uses are written to the database this often (seconds).
FLUSH_EVERY = 60.0

#: Items evicted per call of the ecosystem's ``evict``.
PAGE = 500


class CachedContent(Protocol):
    """How the core evicts one ecosystem's cached items (``depot_cached_content`` hook)."""

    ecosystem: str

    async def evict(self, items: Sequence[str]) -> None:
        """Remove these cached items (rows first, then ``ctx.release_blobs``); an item already
        gone is not an error."""


@dataclass(frozen=True)
class EvictionReport:
    items: int = 0
    bytes: int = 0


#: A recorded use, run with values ``ecosystem``, ``item`` and ``used`` (built once: a flush
#: runs it for every item served since the last, see depot.core.prepared).
_RECORD_USE = (
    cache_items.update()
    .where(
        cache_items.c.ecosystem == sa.bindparam("ecosystem"),
        cache_items.c.item == sa.bindparam("item"),
        cache_items.c.last_used < sa.bindparam("used"),
    )
    .values(last_used=sa.bindparam("used"))
)


class UseRecorder:
    """Last-use times gathered in memory and written in batches (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[tuple[str, str], float] = {}

    def record(self, ecosystem: str, item: str) -> None:
        self._pending[(ecosystem, item)] = time.time()

    async def flush(self) -> None:
        """Write what was recorded; items no longer cached are simply not updated."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        async with self.db.transaction():  # one commit for the whole batch
            for (ecosystem, item), used in pending.items():
                await self.db.execute(
                    _RECORD_USE, {"ecosystem": ecosystem, "item": item, "used": used}
                )

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                await self.flush()
            except Exception as exc:  # the next flush tries again with what it has
                log.warning("cannot record cache use", extra={"error": str(exc)})


async def cache_stored(db: Database, ecosystem: str, item: str, size: int) -> None:
    """Declare an item fetched from an upstream: evictable, used now."""
    await db.execute(
        db.upsert(cache_items, ["ecosystem", "item"], ["size", "last_used"]),
        {"ecosystem": ecosystem, "item": item, "size": size, "last_used": time.time()},
    )


async def cached_totals(db: Database) -> dict[str, tuple[int, int]]:
    """Items and bytes of cached content per ecosystem, as declared (for the ``/`` page)."""
    size = sa.func.coalesce(sa.func.sum(cache_items.c.size), 0)
    rows = await db.fetch_all(
        sa.select(cache_items.c.ecosystem, sa.func.count(), size).group_by(cache_items.c.ecosystem)
    )
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


async def evict(
    depot: Depot, max_size: int | None, max_age: float | None, dry_run: bool = False
) -> dict[str, EvictionReport]:
    """Evict cached items over the age, then least recently used ones while over the size."""
    db = depot.database
    evictors = {
        c.ecosystem: c
        for found in reversed(depot.plugins.hook.depot_cached_content(depot=depot))
        for c in found or ()
    }
    report: dict[str, EvictionReport] = {}
    if not evictors or (max_size is None and max_age is None):
        return report
    with contextlib.suppress(AttributeError):
        await depot.use_recorder.flush()
    known = cache_items.c.ecosystem.in_(list(evictors))

    async def take(rows: Sequence[sa.Row]) -> None:
        by_ecosystem: dict[str, list[sa.Row]] = {}
        for row in rows:
            by_ecosystem.setdefault(row.ecosystem, []).append(row)
        for ecosystem, items in by_ecosystem.items():
            if not dry_run:
                await evictors[ecosystem].evict([row.item for row in items])
                # An item stored again or used meanwhile (another process, a use flushed) has
                # a newer last use: its entry stays, so what was fetched again stays evictable.
                await db.execute(
                    cache_items.delete().where(
                        cache_items.c.ecosystem == ecosystem,
                        sa.tuple_(cache_items.c.item, cache_items.c.last_used).in_(
                            [(row.item, row.last_used) for row in items]
                        ),
                    )
                )
            before = report.get(ecosystem, EvictionReport())
            report[ecosystem] = EvictionReport(
                before.items + len(items), before.bytes + sum(row.size for row in items)
            )

    columns = (
        cache_items.c.ecosystem, cache_items.c.item, cache_items.c.size, cache_items.c.last_used,
    )  # fmt: skip
    order = (cache_items.c.last_used, cache_items.c.ecosystem, cache_items.c.item)

    async def pages(condition: sa.ColumnElement[bool]) -> AsyncIterator[Sequence[sa.Row]]:
        """Items matching ``condition``, least recently used first, a page at a time; each page
        starts after the last item of the previous one, so evicted or not, none is seen twice."""
        after: tuple[float, str, str] | None = None
        while True:
            query = sa.select(*columns).where(known, condition)
            if after is not None:
                query = query.where(sa.tuple_(*order) > sa.tuple_(*map(sa.literal, after)))
            rows = await db.fetch_all(query.order_by(*order).limit(PAGE))
            if not rows:
                return
            yield rows
            after = (rows[-1].last_used, rows[-1].ecosystem, rows[-1].item)

    cutoff = None if max_age is None else time.time() - max_age
    if cutoff is not None:
        async for rows in pages(cache_items.c.last_used < cutoff):
            await take(rows)
    if max_size is not None:
        total = int(
            await db.fetch_val(
                sa.select(sa.func.coalesce(sa.func.sum(cache_items.c.size), 0)).where(known)
            )
            or 0
        )
        if dry_run:
            total -= sum(r.bytes for r in report.values())
        # Items over the age are gone already (or, in a dry run, counted already).
        younger = sa.true() if cutoff is None else cache_items.c.last_used >= cutoff
        async with contextlib.aclosing(pages(younger)) as lru:
            async for rows in lru:
                if total <= max_size:
                    break
                chosen = []
                for row in rows:
                    if total <= max_size:
                        break
                    chosen.append(row)
                    total -= row.size
                await take(chosen)
    return report
