"""Change notification: how every depot process knows whether a cached document is still current.

A rendered packument, simple page or narinfo stays valid until something it shows is written.
Asking the database on every request whether that happened costs more than sending the document,
so instead every write names what it changed, a *topic* (``"npm:left-pad"``), after its commit:

- in the writing process :meth:`Changes.notify` moves the topic's *generation* at once, so the
  next request there renders afresh;
- it also appends the topic to the ``depot_changes`` table. One background task per process
  (:meth:`Changes.start`) reads the rows added since it last looked, every
  :data:`POLL_INTERVAL` seconds, and moves those topics' generations there. On PostgreSQL it
  also ``LISTEN``\\s, and ``notify`` sends ``NOTIFY`` on commit, so other processes usually
  hear of a change within milliseconds; the poll is the fallback that bounds the delay.

So a change is visible in every process sharing the database within :data:`BOUND` seconds
(the poll interval plus the time a poll takes), without a query per request. A cache remembers
the generation it rendered under (read *before* it reads the database) and reuses its bytes
while :meth:`Changes.generation` still returns it.

Topics are ``<scope>:<name>`` strings; an ecosystem uses its name as the scope (its
:class:`TopicFeed`, ``ctx.changes``, adds it). Every change to a topic also moves its scope's
generation (``"npm:"``), which suits documents that list a whole ecosystem.

A slow poll (a loaded machine, a busy database) is not a failure: the process keeps its
caches. But while the last completed poll began more than :data:`BOUND` seconds ago, the process
cannot vouch for the bound, so :meth:`Changes.generation` answers a new value on every call and
no cached document is reused until a poll completes again: requests read the database, which is
current, instead of serving what may be stale. Caches are not emptied for it; a document rendered
before simply matches again once the follower has caught up and nothing it shows changed.

When the poll fails (database unreachable, a query past :data:`POLL_TIMEOUT`) or the process
falls further behind than the table keeps rows, every generation moves: caches render afresh
from the database, which answers or fails like any other query, rather than serve what may be
stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from depot.core.database import Database, Schema, core_metadata

log = logging.getLogger("depot.core.changes")

#: Seconds between two reads of ``depot_changes`` by the background task of a process.
POLL_INTERVAL = 0.25
#: A poll that takes longer than this counts as failed (the query hangs). A slower poll than
#: usual is not a failure: see :meth:`Changes.generation` for what happens meanwhile.
POLL_TIMEOUT = 30.0
#: The promise: a change is visible in every process within this many seconds of its commit.
BOUND = 1.0
#: Rows older than this are deleted (by whichever process prunes first).
RETAIN_SECONDS = 3600.0
#: Seconds between two prunes by one process.
PRUNE_EVERY = 300.0
#: Seconds shutdown waits for the task to end.
STOP_TIMEOUT = 5.0
#: The PostgreSQL channel ``notify`` signals and the task listens on.
CHANNEL = "depot_changes"
# Any constant: the PostgreSQL advisory lock that makes change ids commit in order (see notify).
_CHANGES_LOCK = 0x6368616E676573

changes_table = sa.Table(
    "depot_changes",
    core_metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
        autoincrement=True,
    ),
    sa.Column("topic", sa.String(1024), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    # AUTOINCREMENT: SQLite must never hand out an id again once its row is pruned.
    sqlite_autoincrement=True,
)  # fmt: skip

#: The core's own table, migrated with the plugins' schemas.
CHANGES_SCHEMA = Schema(name="depot-core-changes", version=1, tables=[changes_table])

# A change-log row, run with values ``topic`` and ``at``: built and compiled once, since every
# write adds one (see depot.core.prepared).
_INSERT = changes_table.insert()
_INSERT_RETURNING_ID = _INSERT.returning(changes_table.c.id)
#: The rows added since ``last_seen``, which every process reads four times a second.
_SINCE = (
    sa.select(changes_table.c.id, changes_table.c.topic)
    .where(changes_table.c.id > sa.bindparam("last_seen"))
    .order_by(changes_table.c.id)
)


@dataclass(frozen=True)
class Recorded:
    """The change-log rows :meth:`Changes.record` added (None: nothing was, notify writes)."""

    ids: list[int] | None


def scope_of(topic: str) -> str:
    """``"npm:left-pad"`` -> ``"npm:"``; a topic without a scope is its own scope."""
    head, sep, _ = topic.partition(":")
    return head + sep


class Changes:
    """Per-topic generations of one process, kept current with every other process's writes."""

    def __init__(self) -> None:
        self._tick = 0
        self._generations: dict[str, int] = {}
        # Every generation is at least the floor; moving it invalidates everything at once.
        self._floor = 0
        self._database: Database | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_seen = 0
        self._own: set[int] = set()
        self._last_ok = time.monotonic()
        # When the last completed poll began: every change committed before it is applied.
        self._horizon = time.monotonic()
        self._failing = False

    # -- what caches and writers call ----------------------------------------------------------

    def generation(self, topic: str) -> int:
        """The topic's current generation: equal to an earlier answer while nothing changed.

        Read it *before* reading what a cached document is made of, and keep the document with
        it: a change committed meanwhile has moved the generation, so the document is not reused.
        """
        if self._database is not None and time.monotonic() - self._horizon > BOUND:
            # Behind (polls are slow, or failing): another process's change may be older than
            # the bound and not applied yet, so no cached rendering may be reused for now.
            self._tick += 1
            return -self._tick
        generation = self._generations.get(topic, 0)
        return generation if generation > self._floor else self._floor

    async def notify(self, *topics: str, recorded: Recorded | None = None) -> None:
        """Announce that ``topics`` changed; call it after the write is committed.

        This process sees the change at once; every other process sharing the database within
        :data:`BOUND` seconds. ``recorded``: what :meth:`record` wrote in the write's own
        transaction, which then needs no write of its own here.
        """
        if not topics:
            return
        self._bump(topics)
        database = self._database
        if database is None:
            return  # not started: no other process can have cached anything of ours yet
        if recorded is not None and recorded.ids is not None:
            self._own.update(i for i in recorded.ids if i > self._last_seen)
            return
        now = time.time()
        for topic in topics:
            own = await self._record(database, topic, now)
            if own is not None and own > self._last_seen:
                self._own.add(own)

    async def record(self, *topics: str) -> Recorded:
        """Inside a write's transaction (``db.write``): add the change-log rows of ``topics``
        there, so they commit with the write instead of in a commit of their own; pass the
        result to :meth:`notify` after the commit.

        On SQLite only: on PostgreSQL change ids must commit in order, under a lock that a
        whole write should not hold, so :meth:`notify` writes them as usual.
        """
        database = self._database
        if database is None or database.dialect_name == "postgresql":
            return Recorded(None)
        now = time.time()
        ids = [await database.execute(_INSERT, {"topic": t, "at": now}) for t in topics]
        return Recorded(ids)

    def observed(self, *topics: str) -> None:
        """Move ``topics``' generations in this process only, writing nothing: a write found its
        row already there, put by another process whose notification may not have arrived yet
        (a concurrent ``nix copy`` through another replica). The client was told its write
        succeeded, so its next read here must show it, not a document or absence remembered
        from before; the writer's own notification reaches every other process.
        """
        if topics:
            self._bump(topics)

    def invalidate_all(self) -> None:
        """Move every generation (a cache of this process can no longer be trusted)."""
        self._tick += 1
        self._floor = self._tick

    # -- the background task -------------------------------------------------------------------

    async def start(self, database: Database) -> None:
        """Note where the change log ends and start the task that follows it."""
        self._database = database
        row = await database.fetch_one(sa.select(sa.func.max(changes_table.c.id)))
        self._last_seen = int(row[0] or 0) if row is not None else 0
        self._last_ok = self._horizon = time.monotonic()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._follow(database), name="depot-changes")

    async def stop(self) -> None:
        """Stop the task and forget the database; what ``start`` began ends here."""
        task, self._task = self._task, None
        self._database = None
        if task is None:
            return
        task.cancel()
        if task.get_loop() is not asyncio.get_running_loop():
            return  # started under a loop that has ended: nothing of it runs any more
        await asyncio.wait({task}, timeout=STOP_TIMEOUT)
        if not task.done():
            log.warning("the change follower did not stop in time")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _follow(self, database: Database) -> None:
        """Poll (and on PostgreSQL listen) until cancelled; start over after failures.

        Polls borrow a pooled connection per query, as requests do; the PostgreSQL listener has
        a connection of its own, closed at once (``terminate``) however the task ends, so
        nothing it holds can delay the database's disconnection.
        """
        last_prune = time.monotonic()
        while True:
            listener = None
            try:
                if database.dialect_name == "postgresql":
                    listener = await database.connect_raw()
                    await listener.add_listener(CHANNEL, self._heard)
                while True:
                    began = time.monotonic()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the
                    # result of a poll that finished as the task was cancelled (reads can
                    # finish without suspending: depot.core.database._InlineReads) and the
                    # cancellation is lost, leaving a follower nobody can stop.
                    async with asyncio.timeout(POLL_TIMEOUT):
                        await self._poll(database)
                    self._recovered(began)
                    if time.monotonic() - last_prune > PRUNE_EVERY:
                        last_prune = time.monotonic()
                        await database.execute(
                            changes_table.delete().where(
                                changes_table.c.at < time.time() - RETAIN_SECONDS
                            )
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_INTERVAL):
                            await self._wake.wait()
                    self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the database: trust nothing, retry
                self._failed(exc)
                await asyncio.sleep(POLL_INTERVAL)
            finally:
                if listener is not None:
                    listener.terminate()

    def _heard(self, *_args: Any) -> None:
        self._wake.set()

    async def _poll(self, database: Database) -> None:
        if time.monotonic() - self._last_ok > RETAIN_SECONDS / 2:
            # Asleep long enough that rows this process never read may have been pruned.
            self.invalidate_all()
        rows = await database.fetch_all(_SINCE, {"last_seen": self._last_seen})
        topics = []
        for row in rows:
            change_id, topic = row._mapping[0], row._mapping[1]
            if change_id in self._own:
                self._own.discard(change_id)
            else:
                topics.append(topic)
            self._last_seen = change_id
        if topics:
            self._bump(topics)
        self._own = {i for i in self._own if i > self._last_seen}

    def _recovered(self, began: float) -> None:
        self._last_ok = time.monotonic()
        self._horizon = began
        if self._failing:
            self._failing = False
            self.invalidate_all()  # renders made while polls failed were never checked
            log.info("following changes again")

    def _failed(self, exc: BaseException) -> None:
        self.invalidate_all()
        if not self._failing:
            self._failing = True
            log.warning(
                "cannot follow changes; cached documents are not reused until it can",
                extra={"error": f"{type(exc).__name__}: {exc}".splitlines()[0]},
            )

    # -- internals -----------------------------------------------------------------------------

    def _bump(self, topics: Iterable[str]) -> None:
        self._tick += 1
        tick = self._tick
        generations = self._generations
        for topic in topics:
            generations[topic] = tick
            generations[scope_of(topic)] = tick

    async def _record(self, database: Database, topic: str, now: float) -> int | None:
        values = {"topic": topic, "at": now}
        if database.dialect_name != "postgresql":
            # SQLite has one writer at a time: ids are committed in the order they are given.
            # The row joins the group commit of whatever else is being written.
            return await database.write(lambda: database.execute(_INSERT, values))
        # Sequence values are taken before commit, so without the lock a reader could see id 6
        # commit before id 5 and, reading "after 6" next, never see 5. Under the lock, ids commit
        # in order; NOTIFY is delivered at commit.
        async with database.connection() as connection, connection.transaction():
            await connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_CHANGES_LOCK})"))
            # On the connection just entered: it is this task's (databases.Database.connection).
            change_id = await database.execute(_INSERT_RETURNING_ID, values)
            await connection.execute(sa.text(f"SELECT pg_notify('{CHANNEL}', '')"))
        return int(change_id) if change_id is not None else None


class TopicFeed:
    """An ecosystem's view of :class:`Changes`: topics named within its own scope.

    ``ctx.changes.notify("left-pad")`` announces ``"npm:left-pad"``;
    ``ctx.changes.generation("left-pad")`` reads it; ``ctx.changes.generation()`` is the whole
    ecosystem's generation, which moves with every change in it.
    """

    #: The name to announce for a write that only what shows the whole ecosystem follows (the
    #: package and search pages, which read the ecosystem's generation): a pull-through cache
    #: gaining a document or an artifact. What is remembered per name (published or not, where
    #: a cached file is) stays, since an added cached row makes none of it wrong; evictions,
    #: which remove rows, announce the names they touch.
    ECOSYSTEM = ""

    def __init__(self, changes: Changes, scope: str) -> None:
        self.changes = changes
        self.scope = scope + ":"

    def topic(self, name: str = "") -> str:
        return self.scope + name

    def generation(self, name: str = "") -> int:
        return self.changes.generation(self.scope + name)

    async def notify(self, *names: str, recorded: Recorded | None = None) -> None:
        await self.changes.notify(*(self.scope + name for name in names), recorded=recorded)

    def observed(self, *names: str) -> None:
        """A write found its row already there: see :meth:`Changes.observed`."""
        self.changes.observed(*(self.scope + name for name in names))

    async def record(self, *names: str) -> Recorded:
        """Inside a write: see :meth:`Changes.record`."""
        return await self.changes.record(*(self.scope + name for name in names))
