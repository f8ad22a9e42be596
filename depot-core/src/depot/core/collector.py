"""Garbage collection: remove blobs no row points at, once they are older than a grace period.

A collection walks each ecosystem's namespace of the blob store page by page (the backend's
``list``), sets aside blobs last written before ``now - grace``, and every :data:`BATCH` of them
asks the ecosystem which are referenced (the ``depot_blob_references`` hook). Under the exclusive
reference lock (:mod:`depot.core.reachability`) it deletes the rest, after checking each is still
as old as listed: a blob uploaded again since the listing began is new again. Memory holds one
batch, whatever the size of the store.

The grace period protects uploads in flight. An ecosystem may write a blob some time before the
row that points at it: ``nix copy`` PUTs a NAR, then its narinfo after the narinfos of its
references, and a large closure may take a long time between the two. The default,
:data:`DEFAULT_GRACE` (24 hours), is far longer than any upload, lets a ``nix copy`` that failed
midway be retried the next day without sending its NARs again, and still bounds the garbage to
one day's failed uploads. ``--grace 0`` takes everything unreferenced now, uploads in progress
included: for operators who know nothing is uploading, and for tests.

Nothing is left half-done: the collector deletes blobs only, never rows, and only unreferenced
ones, so a process killed at any point leaves every row pointing at its blob. The one collector
at a time (the collector lock) records its report in the database, where every replica's
``/metrics`` and ``/`` page read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from depot.core import held
from depot.core.blobs import BlobEntry, BlobStore, LeftoverReport
from depot.core.errors import ConfigError
from depot.core.reachability import (
    BATCH,
    BlobReferences,
    collector_lock,
    hold_reference_lock,
    read_state,
    write_state,
)
from depot.core.settings import DEFAULT_GRACE

if TYPE_CHECKING:
    from depot.core.app import Depot
    from depot.core.database import Database

log = logging.getLogger("depot.core.gc")


#: Blob stats run this many at a time when a batch is checked before deletion.
STAT_CONCURRENCY = 32

#: Progress is reported at most this often (seconds).
PROGRESS_EVERY = 2.0

LAST_COLLECTION = "last-collection"
RECLAIMED_TOTAL = "reclaimed-total"
EVICTED_TOTAL = "evicted-total"


@dataclass
class EcosystemTally:
    """One ecosystem's share of a collection."""

    examined: int = 0  # blobs listed
    examined_bytes: int = 0
    removed: int = 0  # blobs removed (or, in a dry run, that would be)
    removed_bytes: int = 0
    collected: bool = True  # False: no reachability reported, nothing was removed

    @property
    def kept_bytes(self) -> int:
        return self.examined_bytes - self.removed_bytes

    @property
    def kept(self) -> int:
        return self.examined - self.removed


@dataclass
class CollectionReport:
    """What a collection found and removed."""

    started: float
    grace: float
    dry_run: bool
    duration: float = 0.0
    skipped: bool = False  # another collector holds the lock
    ecosystems: dict[str, EcosystemTally] = field(default_factory=dict)
    leftovers: LeftoverReport = field(default_factory=LeftoverReport)
    evicted: dict[str, Any] = field(default_factory=dict)  # ecosystem -> EvictionReport

    @property
    def removed(self) -> int:
        return sum(t.removed for t in self.ecosystems.values()) + self.leftovers.objects

    @property
    def removed_bytes(self) -> int:
        return sum(t.removed_bytes for t in self.ecosystems.values()) + self.leftovers.bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "duration": self.duration,
            "grace": self.grace,
            "dry_run": self.dry_run,
            "ecosystems": {name: asdict(t) for name, t in self.ecosystems.items()},
            "leftovers": asdict(self.leftovers),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectionReport:
        return cls(
            started=data["started"],
            grace=data["grace"],
            dry_run=data.get("dry_run", False),
            duration=data.get("duration", 0.0),
            ecosystems={k: EcosystemTally(**v) for k, v in data.get("ecosystems", {}).items()},
            leftovers=LeftoverReport(**data.get("leftovers", {})),
        )


Progress = Callable[[str, EcosystemTally], None]


def _listing_store(depot: Depot) -> BlobStore:
    store = depot.blob_store
    assert store is not None, "collect after depot.startup()"
    if not callable(getattr(store, "list", None)):
        raise ConfigError(
            f"the {depot.settings.storage_type!r} blob store cannot list its blobs; "
            "it cannot be garbage collected"
        )
    return store


async def collect(
    depot: Depot, *, grace: float = DEFAULT_GRACE, dry_run: bool = False,
    progress: Progress | None = None,
) -> CollectionReport:  # fmt: skip
    """Run one collection (see the module docstring); the report says what was removed.

    Returns a report with ``skipped`` set, removing nothing, while another collector runs.
    """
    store = _listing_store(depot)
    db = depot.database
    references = depot.blob_references()
    report = CollectionReport(started=time.time(), grace=grace, dry_run=dry_run)
    cutoff = report.started - grace
    clock = time.monotonic()
    async with db.connection(), collector_lock(db) as acquired:
        if not acquired:
            report.skipped = True
            log.info("another collector is running; skipped")
            return report
        log.info("collection started", extra={"grace": grace, "dry_run": dry_run})
        settings = depot.settings
        if settings.cache_max_size is not None or settings.cache_max_age is not None:
            from depot.core.retention import evict

            # Evicted items' blobs are released by their ecosystems, before the sweep.
            report.evicted = await evict(
                depot, settings.cache_max_size, settings.cache_max_age, dry_run
            )
        for name in depot.ecosystems:
            tally = report.ecosystems[name] = EcosystemTally()
            refs = references.get(name)
            tally.collected = refs is not None
            batch: list[BlobEntry] = []
            last_progress = time.monotonic()
            async for entry in store.list(f"{name}/"):
                tally.examined += 1
                tally.examined_bytes += entry.size
                if refs is not None and entry.modified < cutoff:
                    batch.append(entry)
                    if len(batch) >= BATCH:
                        await _sweep(db, store, refs, name, batch, cutoff, dry_run, tally)
                        batch = []
                if progress is not None and time.monotonic() - last_progress >= PROGRESS_EVERY:
                    last_progress = time.monotonic()
                    progress(name, tally)
            if batch and refs is not None:
                await _sweep(db, store, refs, name, batch, cutoff, dry_run, tally)
            if progress is not None:
                progress(name, tally)
        remove_leftovers = getattr(store, "remove_leftovers", None)
        if remove_leftovers is not None:
            report.leftovers = await remove_leftovers(cutoff, dry_run)
        report.duration = time.monotonic() - clock
        if not dry_run:
            await _record(db, report)
    log.info(
        "collection finished",
        extra={
            "dry_run": dry_run,
            "removed": report.removed,
            "removed_bytes": report.removed_bytes,
            "seconds": round(report.duration, 3),
        },
    )
    return report


async def _sweep(
    db: Database,
    store: BlobStore,
    refs: BlobReferences,
    ecosystem: str,
    batch: Sequence[BlobEntry],
    cutoff: float,
    dry_run: bool,
    tally: EcosystemTally | None = None,
) -> list[BlobEntry]:
    """Remove the blobs of ``batch`` (full keys) that no row references and nobody rewrote."""
    skip = len(ecosystem) + 1
    async with db.transaction():
        if not dry_run:
            await hold_reference_lock(db, exclusive=True)
        keys = [e.key[skip:] for e in batch]
        # The ecosystem's rows, and the core's rows of documents held for it.
        referenced = set(await refs.referenced(keys)) | await held.referenced(db, ecosystem, keys)
        doomed = [e for e in batch if e.key[skip:] not in referenced]
        if not dry_run and doomed:
            doomed = await _still_older(store, doomed, cutoff)
            if doomed:
                await _delete(store, [e.key for e in doomed])
    if tally is not None:
        tally.removed += len(doomed)
        tally.removed_bytes += sum(e.size for e in doomed)
    return doomed


async def _still_older(
    store: BlobStore, entries: Sequence[BlobEntry], cutoff: float
) -> list[BlobEntry]:
    """Those of ``entries`` that still exist and were not written since ``cutoff``.

    A backend may offer ``stat_many`` (the fs store: one thread hop for the batch); otherwise
    :data:`STAT_CONCURRENCY` stats run at once (HEAD requests on S3).
    """
    stat_many = getattr(store, "stat_many", None)
    if stat_many is not None:
        stats = await stat_many([e.key for e in entries])
    else:
        stats = []
        for start in range(0, len(entries), STAT_CONCURRENCY):
            chunk = entries[start : start + STAT_CONCURRENCY]
            stats += await asyncio.gather(*(store.stat(e.key) for e in chunk))
    return [
        BlobEntry(entry.key, stat.size, stat.modified)
        for entry, stat in zip(entries, stats, strict=True)
        if stat is not None and stat.modified is not None and stat.modified < cutoff
    ]


async def _delete(store: BlobStore, keys: Sequence[str]) -> None:
    delete_many = getattr(store, "delete_many", None)
    if delete_many is not None:
        await delete_many(keys)
    else:
        for key in keys:
            await store.delete(key)


async def release(
    depot: Depot, ecosystem: str, keys: Sequence[str], since: float
) -> list[BlobEntry]:
    """Remove those of ``keys`` (inside ``ecosystem``'s namespace) that no row references now,
    unless written again at or after ``since``; returns what was removed, keys as given.

    For removal on purpose: an ecosystem deletes its rows, commits, then calls this (through
    :meth:`depot.core.app.EcosystemContext.release_blobs`) rather than deleting blobs another
    row may share. Without reachability for ``ecosystem`` nothing is removed here; a collection
    would not take it either.
    """
    refs = depot.blob_references().get(ecosystem)
    store = depot.blob_store
    if refs is None or store is None or not keys:
        return []
    prefix = f"{ecosystem}/"
    entries = []
    for key in dict.fromkeys(keys):
        stat = await store.stat(prefix + key)
        if stat is not None:
            entries.append(BlobEntry(prefix + key, stat.size, stat.modified or since))
    removed = await _sweep(depot.database, store, refs, ecosystem, entries, since, dry_run=False)
    return [BlobEntry(e.key[len(prefix) :], e.size, e.modified) for e in removed]


async def _record(db: Database, report: CollectionReport) -> None:
    """Keep the report and add to the running totals (one collector at a time: no lost update)."""
    await write_state(db, LAST_COLLECTION, json.dumps(report.as_json()))
    totals = json.loads(await read_state(db, RECLAIMED_TOTAL) or "{}")
    for name, tally in report.ecosystems.items():
        total = totals.setdefault(name, {"objects": 0, "bytes": 0})
        total["objects"] += tally.removed
        total["bytes"] += tally.removed_bytes
    total = totals.setdefault("leftovers", {"objects": 0, "bytes": 0})
    total["objects"] += report.leftovers.objects
    total["bytes"] += report.leftovers.bytes
    await write_state(db, RECLAIMED_TOTAL, json.dumps(totals))
    if report.evicted:
        # Kept apart from the blobs: an evicted item's blobs are removed by the sweep that
        # follows (and counted above); these are the cached items retention chose to drop.
        evicted = json.loads(await read_state(db, EVICTED_TOTAL) or "{}")
        for name, eviction in report.evicted.items():
            total = evicted.setdefault(name, {"items": 0, "bytes": 0})
            total["items"] += eviction.items
            total["bytes"] += eviction.bytes
        await write_state(db, EVICTED_TOTAL, json.dumps(evicted))


async def last_collection(db: Database) -> CollectionReport | None:
    """The report of the last collection (by any process or replica), if there was one."""
    text = await read_state(db, LAST_COLLECTION)
    return None if text is None else CollectionReport.from_json(json.loads(text))


async def reclaimed_totals(db: Database) -> dict[str, dict[str, int]]:
    """Objects and bytes removed by all collections so far, per ecosystem (and ``leftovers``)."""
    return json.loads(await read_state(db, RECLAIMED_TOTAL) or "{}")


async def evicted_totals(db: Database) -> dict[str, dict[str, int]]:
    """Cached items and their bytes evicted by all collections so far, per ecosystem."""
    return json.loads(await read_state(db, EVICTED_TOTAL) or "{}")


async def collect_periodically(depot: Depot, interval: float, grace: float) -> None:
    """``depot serve --gc-interval``: collect every ``interval`` seconds until cancelled.

    The first run waits for what remains of the interval since the last collection recorded in
    the database (by any replica), so restarts neither skip nor repeat collections. Replicas all
    run this; the collector lock lets one of them collect and the others skip.
    """
    with contextlib.suppress(Exception):
        last = await last_collection(depot.database)
        if last is not None:
            await asyncio.sleep(max(0.0, last.started + interval - time.time()))
    while True:
        try:
            await collect(depot, grace=grace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged; the next interval tries again
            log.error("collection failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        await asyncio.sleep(interval)
