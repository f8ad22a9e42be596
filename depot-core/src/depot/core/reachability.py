"""Which blobs are live, and how writers and the garbage collector stay out of each other's way.

A blob is live while a row of its ecosystem points at it. Ecosystems say which keys their rows
hold through the ``depot_blob_references`` hook (:class:`BlobReferences`); the collector
(:mod:`depot.core.collector`) asks them in batches of at most :data:`BATCH` keys.

Two locks, both in the shared database so that every process and replica sees them:

- The *collector lock* lets one collection run at a time across replicas: a PostgreSQL
  session advisory lock (released by the server if the process dies), or on SQLite, whose
  database is a local file, an ``flock`` on a file beside it (released by the kernel likewise).
- The *reference lock* closes the race between "no row points at this old blob" and "delete it".
  Writers hold it shared from the moment they check a blob exists until the row pointing at it
  commits (:meth:`depot.core.app.EcosystemContext.reference_blobs`); the collector holds it
  exclusively while it checks a batch of keys and deletes the unreferenced ones. Either the
  writer's row is committed first and the collector sees it, or the blob is gone first and the
  writer's existence check fails and nothing is inserted. On PostgreSQL it is a transaction-level
  advisory lock (shared vs. exclusive); on SQLite, which has one writer at a time, it is an
  UPDATE of a row of :data:`gc_state`, which takes the database's write lock for the transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa
from depot.core.database import Database, Schema
from depot.core.held import upstream_documents

#: Keys asked about in one call of :meth:`BlobReferences.referenced` (and deleted per S3 call).
BATCH = 1000

# PostgreSQL advisory lock keys: "depot" followed by "gc" and "rf".
COLLECTOR_LOCK = 0x6465706F746763
REFERENCE_LOCK = 0x6465706F747266

_metadata = sa.MetaData()

#: Small records of the collector: the SQLite reference-lock row and the last collection's report.
gc_state = sa.Table(
    "depot_gc_state",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: Content fetched from upstreams, evictable by --cache-max-size/--cache-max-age
#: (see :mod:`depot.core.retention`); published content is never here.
cache_items = sa.Table(
    "depot_cache_items",
    _metadata,
    sa.Column("ecosystem", sa.String(32), primary_key=True),
    sa.Column("item", sa.String(1024), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("last_used", sa.Float, nullable=False),
    sa.Index("depot_cache_items_last_used", "last_used"),
)

#: Version 2 added the held upstream documents (:mod:`depot.core.held`); the ecosystems' own
#: schemas move their rows there.
CORE_SCHEMA = Schema(name="core", version=2, tables=[gc_state, cache_items, upstream_documents])

_LOCK_ROW = "reference-lock"
#: What takes SQLite's write lock: an UPDATE of the lock row that changes nothing. Built and
#: compiled once (run with no values), since every write that points at a blob runs it.
_TAKE_LOCK = gc_state.update().where(gc_state.c.name == _LOCK_ROW).values(value=gc_state.c.value)


class BlobReferences(Protocol):
    """An ecosystem's answer to "which of these blob keys do your rows hold?".

    ``ecosystem`` names the blob namespace it speaks for. The keys are relative to that namespace
    (``nar/1abc....nar.zst``, as the ecosystem wrote them). An ecosystem that registers none is
    never collected: the core cannot know what is live there.
    """

    ecosystem: str

    async def referenced(self, keys: Sequence[str]) -> Collection[str]:
        """The subset of ``keys`` some row points at (at most :data:`BATCH` keys a call).

        Called inside the collector's database transaction, from its task: query through
        ``ctx.db`` as usual (an indexed ``WHERE key IN (...)``); do not start tasks.
        """


async def ensure_lock_row(db: Database) -> None:
    """The row SQLite writers update to take the write lock; created once at start-up."""
    await db.execute(db.insert_or_ignore(gc_state).values(name=_LOCK_ROW, value=""))


async def hold_reference_lock(db: Database, exclusive: bool) -> None:
    """Take the reference lock until the current transaction ends (see the module docstring)."""
    if db.dialect_name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await db.fetch_val(sa.text(f"SELECT {fn}({REFERENCE_LOCK})"))
    else:
        await db.execute(_TAKE_LOCK, {})


def _sqlite_lock_path(db: Database) -> Path:
    return Path(urlsplit(str(db.url)).path + ".gc-lock")


@contextlib.asynccontextmanager
async def collector_lock(db: Database) -> AsyncIterator[bool]:
    """Try to become the only collector; yields whether this process is.

    Must be entered inside ``async with db.connection()`` on PostgreSQL: the session lock lives
    on that connection, and the collection's queries run on it too.
    """
    if db.dialect_name == "postgresql":
        acquired = bool(
            await db.fetch_val(sa.text(f"SELECT pg_try_advisory_lock({COLLECTOR_LOCK})"))
        )
        try:
            yield acquired
        finally:
            if acquired:
                await db.fetch_val(sa.text(f"SELECT pg_advisory_unlock({COLLECTOR_LOCK})"))
        return
    path = _sqlite_lock_path(db)
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            acquired = True
        except BlockingIOError:
            acquired = False
        yield acquired
    finally:
        os.close(fd)  # releases the flock


async def read_state(db: Database, name: str) -> str | None:
    row = await db.fetch_one(sa.select(gc_state.c.value).where(gc_state.c.name == name))
    return None if row is None else row[0]


async def write_state(db: Database, name: str, value: str) -> None:
    await db.execute(db.upsert(gc_state, ["name"], ["value"]).values(name=name, value=value))
