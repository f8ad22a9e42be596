"""Group commit: the row writes of many concurrent requests in one database transaction.

A pull-through cache that is filling writes a few rows per object it stores (the object's row,
its retention entry) while a client such as ``npm ci`` asks for fifteen objects at once. Each in
a transaction of its own, those writers queue for SQLite's single write lock (and a writer that
finds it taken sleeps in SQLite's busy handler, whatever the moment the lock frees), and each
commit costs an fsync. :class:`GroupCommit` runs the writes waiting at a moment in one
transaction: one writer, one lock, one fsync for all of them, with no timer (a write submitted
while a batch commits goes into the next batch, so batches grow with the load and a lone write
is committed at once).

Each batch transaction holds the reference lock shared and checks that the blobs its writes
point at exist (as :meth:`depot.core.app.EcosystemContext.reference_blobs` does): a write whose
blob is missing fails with :class:`BlobMissing` and the others go on. If a write raises, the
batch is rolled back and its writes are run again one transaction each, so one bad write fails
alone. A caller's ``await`` returns once its rows are committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from depot.core.reachability import hold_reference_lock

if TYPE_CHECKING:
    from depot.core.app import Depot
    from depot.core.blobs import ScopedBlobStore

log = logging.getLogger("depot.core.groupcommit")

#: Writes committed in one transaction at most (the rest go into the next).
MAX_BATCH = 256

# Both dialects take this upsert as written; text is compiled far more cheaply than a
# SQLAlchemy insert construct, and this runs for every cached object.
_CACHE_ITEM_UPSERT = sa.text(
    "INSERT INTO depot_cache_items (ecosystem, item, size, last_used) "
    "VALUES (:ecosystem, :item, :size, :last_used) "
    "ON CONFLICT (ecosystem, item) DO UPDATE SET size = excluded.size, "
    "last_used = excluded.last_used"
)


@dataclass
class _Write:
    write: Callable[[], Awaitable[None]]
    blobs: ScopedBlobStore | None
    keys: Sequence[str]
    ecosystem: str
    cached: Sequence[tuple[str, int]]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """The depot's group committer (``depot.group_commit``); see the module docstring."""

    def __init__(self, depot: Depot) -> None:
        self.depot = depot
        self._pending: list[_Write] = []
        self._task: asyncio.Task[None] | None = None

    async def write(
        self,
        write: Callable[[], Awaitable[None]],
        *,
        ecosystem: str,
        blobs: ScopedBlobStore | None = None,
        keys: Sequence[str] = (),
        cached: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Run ``write()`` (statements through the depot's database) in a shared transaction
        and return once it is committed; ``keys`` (in ``blobs``) must exist, ``cached`` items
        ``(item, size)`` are declared evictable in the same transaction. Raises what the write
        raised, or :class:`depot.core.app.BlobMissing`."""
        entry = _Write(write, blobs, keys, ecosystem, cached)
        self._pending.append(entry)
        if self._task is None or self._task.done():
            # A context of its own: the database connection and transaction are this task's,
            # never a caller's.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="depot: group commit", context=contextvars.Context()
            )
        # The batch runs in its own task: a caller that goes away does not undo its write.
        await asyncio.shield(entry.done)

    async def close(self) -> None:
        """Let the writes already submitted commit (before the database closes)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                committed = await self._commit(batch)
            except Exception as exc:
                committed = []
                if len(batch) == 1:
                    _fail(batch[0], exc)
                else:
                    # One write failed the batch: run each alone, so it fails alone.
                    for entry in batch:
                        try:
                            committed += await self._commit([entry])
                        except Exception as alone:
                            _fail(entry, alone)
            except BaseException as exc:  # cancelled at shutdown: nobody's rows were written
                for entry in batch + self._pending:
                    _fail(entry, exc)
                self._pending = []
                raise
            for entry in committed:
                if not entry.done.done():
                    entry.done.set_result(None)

    async def _commit(self, batch: list[_Write]) -> list[_Write]:
        from depot.core.app import BlobMissing

        db = self.depot.database
        written: list[_Write] = []
        async with db.transaction():
            await hold_reference_lock(db, exclusive=False)
            stats = await asyncio.gather(
                *(e.blobs.stat(k) for e in batch if e.blobs is not None for k in e.keys)
            )
            found = iter(stats)
            now = time.time()
            for entry in batch:
                missing = [k for k in entry.keys if entry.blobs and next(found) is None]
                if missing:
                    _fail(entry, BlobMissing(missing[0]))
                    continue
                await entry.write()
                for item, size in entry.cached:
                    await db.execute(
                        _CACHE_ITEM_UPSERT.bindparams(
                            ecosystem=entry.ecosystem, item=item, size=size, last_used=now
                        )
                    )
                written.append(entry)
        return written


def _fail(entry: _Write, exc: BaseException) -> None:
    if not entry.done.done():
        entry.done.set_exception(exc)
        entry.done.exception()  # retrieved: the caller may be gone
