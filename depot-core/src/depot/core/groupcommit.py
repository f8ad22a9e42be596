"""Group commit: the row writes of many concurrent requests in one database transaction.

A pull-through cache that is filling writes a few rows per object it stores (the object's row,
its retention entry) while a client such as ``npm ci`` asks for fifteen objects at once. Each in
a transaction of its own, those writers queue for SQLite's single write lock (a writer that
finds it taken sleeps in SQLite's busy handler, whatever the moment the lock frees), each
statement is compiled by SQLAlchemy and makes a thread hop, and each commit costs an fsync.
:class:`GroupCommit` runs the writes waiting at a moment in one transaction, with no timer: a
write submitted while a batch commits goes into the next batch, so batches grow with the load
and a lone write is committed at once.

A write is a list of rows: ``(statement, parameters)``, the statement a template built once
(``db.insert_or_ignore(table)``, ``db.upsert(...)``, without ``.values()``) and compiled once per
set of parameter names. On SQLite a batch runs in one thread hop on a connection of its own
(``BEGIN IMMEDIATE``, the rows, ``COMMIT``); on PostgreSQL through the pool, in one transaction.

Each batch transaction holds the reference lock (see :mod:`depot.core.reachability`) and checks
that the blobs its writes name in ``keys`` exist, as
:meth:`depot.core.app.EcosystemContext.reference_blobs` does: a write whose blob is missing
fails with :class:`BlobMissing` and the others go on. If a row fails, the batch is rolled back
and its writes run again one transaction each, so a bad write fails alone. A caller's ``await``
returns once its rows are committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from depot.core.changes import changes_table
from depot.core.reachability import gc_state, hold_reference_lock
from sqlalchemy.dialects import sqlite

if TYPE_CHECKING:
    from depot.core.app import Depot
    from depot.core.blobs import ScopedBlobStore

log = logging.getLogger("depot.core.groupcommit")

#: Writes committed in one transaction at most (the rest go into the next).
MAX_BATCH = 256

#: A row to write: a statement template and its parameters.
Row = tuple[sa.Executable, Mapping[str, Any]]

# Both dialects take this upsert as written.
_CACHE_ITEM_UPSERT = (
    "INSERT INTO depot_cache_items (ecosystem, item, size, last_used) VALUES ({0}, {1}, {2}, {3}) "
    "ON CONFLICT (ecosystem, item) DO UPDATE SET size = excluded.size, "
    "last_used = excluded.last_used"
)

_CACHE_ITEM_TEXT = sa.text(_CACHE_ITEM_UPSERT.format(":ecosystem", ":item", ":size", ":last_used"))

# SQLite hands out change ids in commit order (one writer at a time), as Changes._record says.
_CHANGE_INSERT = f"INSERT INTO {changes_table.name} (topic, at) VALUES (?, ?)"


@dataclass
class _Write:
    rows: Sequence[Row]
    blobs: ScopedBlobStore | None
    keys: Sequence[str]
    ecosystem: str
    cached: Sequence[tuple[str, int]]
    topics: Sequence[str]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """The depot's group committer (``depot.group_commit``); see the module docstring."""

    def __init__(self, depot: Depot) -> None:
        self.depot = depot
        self._pending: list[_Write] = []
        self._task: asyncio.Task[None] | None = None
        self._compiled: dict[
            tuple[sa.Executable, tuple[str, ...]], tuple[str, tuple[str, ...], Any]
        ] = {}
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def write(
        self,
        rows: Sequence[Row],
        *,
        ecosystem: str,
        blobs: ScopedBlobStore | None = None,
        keys: Sequence[str] = (),
        cached: Sequence[tuple[str, int]] = (),
        topics: Sequence[str] = (),
    ) -> None:
        """Write ``rows`` in a shared transaction and return once it is committed; ``keys`` (in
        ``blobs``) must exist, ``cached`` items ``(item, size)`` are declared evictable and
        change ``topics`` announced (:mod:`depot.core.changes`) in the same transaction. Raises
        what the database raised, or :class:`depot.core.app.BlobMissing`."""
        entry = _Write(rows, blobs, keys, ecosystem, cached, topics)
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
        """Let the writes already submitted commit, then close (before the database closes)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)
        if self._thread is not None:
            connection, self._sqlite = self._sqlite, None
            if connection is not None:
                await asyncio.get_running_loop().run_in_executor(self._thread, connection.close)
            self._thread.shutdown(wait=False)
            self._thread = None

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

    async def _missing(self, batch: list[_Write]) -> list[_Write]:
        """The writes of ``batch`` whose blobs exist; the others are failed."""
        from depot.core.app import BlobMissing

        checks = [(e, k) for e in batch if e.blobs is not None for k in e.keys]
        stats = await asyncio.gather(*(e.blobs.stat(k) for e, k in checks))  # type: ignore[union-attr]
        for (entry, key), stat in zip(checks, stats, strict=True):
            if stat is None:
                _fail(entry, BlobMissing(key))
        return [e for e in batch if not e.done.done()]

    async def _commit(self, batch: list[_Write]) -> list[_Write]:
        db = self.depot.database
        if db.dialect_name == "sqlite" and db.url.database not in ("", ":memory:"):
            return await self._commit_sqlite(batch)
        async with db.transaction():
            await hold_reference_lock(db, exclusive=False)
            batch = await self._missing(batch)
            now = time.time()
            for entry in batch:
                for statement, parameters in entry.rows:
                    await db.execute(statement.values(**parameters))  # type: ignore[attr-defined]
                for item, size in entry.cached:
                    await db.execute(
                        _CACHE_ITEM_TEXT.bindparams(
                            ecosystem=entry.ecosystem, item=item, size=size, last_used=now
                        )
                    )
        # PostgreSQL orders change ids under a lock of their own (Changes.notify).
        await self.depot.changes.notify(*(t for entry in batch for t in entry.topics))
        return batch

    # -- SQLite: one thread hop per batch --------------------------------------------------

    def _compile(
        self, statement: sa.Executable, names: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...], Any]:
        """``statement`` as SQLite SQL with ``?`` placeholders, compiled once per names."""
        cache_key = (statement, names)
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            done = statement.compile(dialect=sqlite.dialect(), column_keys=list(names))  # type: ignore[attr-defined]
            order = tuple(done.positiontup or ())
            compiled = (done.string, order, done._bind_processors)
            self._compiled[cache_key] = compiled
        return compiled

    def _sqlite_rows(self, entry: _Write, now: float) -> list[tuple[str, tuple[Any, ...]]]:
        rows = []
        for statement, parameters in entry.rows:
            sql, order, processors = self._compile(statement, tuple(sorted(parameters)))
            values = []
            for name in order:
                value = parameters[name]
                processor = processors.get(name)
                values.append(processor(value) if processor else value)
            rows.append((sql, tuple(values)))
        upsert = _CACHE_ITEM_UPSERT.format("?", "?", "?", "?")
        rows += [(upsert, (entry.ecosystem, item, size, now)) for item, size in entry.cached]
        rows += [(_CHANGE_INSERT, (topic, now)) for topic in entry.topics]
        return rows

    def _connection(self) -> sqlite3.Connection:
        if self._sqlite is None:
            from depot.core.database import SQLITE_BUSY_TIMEOUT

            self._sqlite = sqlite3.connect(
                self.depot.database.url.database,
                timeout=SQLITE_BUSY_TIMEOUT,
                isolation_level=None,  # transactions as written below
                check_same_thread=False,  # used from the one thread of self._thread only
            )
        return self._sqlite

    def _begin_sync(self) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")  # the write lock: the reference lock on SQLite
        try:
            connection.execute(
                f"UPDATE {gc_state.name} SET value = value WHERE name = 'reference-lock'"
            )
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _write_sync(self, rows: list[tuple[str, tuple[Any, ...]]], begun: bool) -> list[int]:
        """Write and commit; the ids of the change rows written."""
        connection = self._connection()
        if not begun:
            self._begin_sync()
        changes = []
        try:
            for sql, values in rows:
                cursor = connection.execute(sql, values)
                if sql is _CHANGE_INSERT and cursor.lastrowid is not None:
                    changes.append(cursor.lastrowid)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return changes

    def _rollback_sync(self) -> None:
        self._connection().execute("ROLLBACK")

    async def _commit_sqlite(self, batch: list[_Write]) -> list[_Write]:
        # The process's SQLite writers queue on the event loop, not in SQLite's busy handler
        # (see EcosystemContext.reference_blobs).
        async with self.depot.sqlite_writer:
            return await self._commit_sqlite_locked(batch)

    async def _commit_sqlite_locked(self, batch: list[_Write]) -> list[_Write]:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="depot-group-commit")
        begun = any(e.keys for e in batch)
        if begun:
            # Blobs are checked while the lock is held, so no collection removes one between
            # the check and the commit.
            await loop.run_in_executor(self._thread, self._begin_sync)
            try:
                batch = await self._missing(batch)
            except BaseException:
                await loop.run_in_executor(self._thread, self._rollback_sync)
                raise
        now = time.time()
        rows = [row for entry in batch for row in self._sqlite_rows(entry, now)]
        changes = await loop.run_in_executor(self._thread, self._write_sync, rows, begun)
        topics = [t for entry in batch for t in entry.topics]
        if topics:
            self.depot.changes.recorded(topics, changes)
        return batch


def _fail(entry: _Write, exc: BaseException) -> None:
    if not entry.done.done():
        entry.done.set_exception(exc)
        entry.done.exception()  # retrieved: the caller may be gone
