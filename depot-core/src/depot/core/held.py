"""Documents held from an upstream: the metadata of a pull-through cache that can grow.

An npm packument or a PyPI project page fetched from an upstream changes there (new versions,
yanks), unlike an artifact. Depot holds the last copy as a blob with one row in one core table,
:data:`upstream_documents`, keyed by ecosystem and name: the upstream it came from, its
validators (``ETag``, ``Last-Modified``) for conditional revalidation, when it was fetched and
when upstream last confirmed it. Every ecosystem uses the same rows and one freshness policy
(:meth:`HeldDocuments.current`), so a third-party ecosystem's pull-through behaves as npm's and
PyPI's do:

- held and fresh (``--upstream-max-age``, or ``--offline``) -> served as held;
- held and due -> refreshed by the ecosystem (conditionally), one upstream request however many
  clients ask; upstream failing, or failed a moment ago -> served stale, with a log line and a
  metric (offline-first: what was held stays installable);
- not held -> fetched, or the upstream's error.

What a document says, where it is fetched from and how it is verified stays the ecosystem's: it
passes a ``refresh`` callable and stores what it verified with :meth:`HeldDocuments.store`.

Rows are remembered per process under the change generation of the document's name
(:mod:`depot.core.changes`), so a warm install reads no row from the database. An eviction
(:meth:`HeldDocuments.forget`, then ``ctx.changes.notify(name)``) and a replaced copy
(:meth:`HeldDocuments.store` announces its name: the old copy's blob is no longer any row's,
and the collector may take it) reach every process within the notification's bound. A first
copy and a 304 announce nothing of the name: each process revalidates the copy it holds after
``--upstream-max-age``.
The name is the document's cached item for ``--cache-max-size``/``--cache-max-age``: an
ecosystem's other items (tarballs, files) must be named so that they cannot be taken for one
(npm's contain ``/-/``, PyPI's a ``/``). The garbage collector counts the blobs these rows name
as live (:func:`referenced`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from depot.core.changes import TopicFeed
from depot.core.database import Database, contains
from depot.core.errors import NotFound
from depot.core.upstream import UpstreamError

if TYPE_CHECKING:
    from depot.core.app import EcosystemContext

_metadata = sa.MetaData()

#: The documents held from upstreams, one per ecosystem and name; the blob is in the
#: ecosystem's namespace under ``upstream/documents/`` (content-addressed by sha256).
upstream_documents = sa.Table(
    "depot_upstream_documents",
    _metadata,
    sa.Column("ecosystem", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("upstream_url", sa.String(1024), nullable=False),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("etag", sa.String(256), nullable=True),
    sa.Column("last_modified", sa.String(64), nullable=True),
    sa.Column("fetched_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("checked_at", sa.Float, nullable=False),
    # The collector asks which blobs rows hold.
    sa.Index("depot_upstream_documents_blob_key", "ecosystem", "blob_key"),
)

#: Rows remembered per process (cleared when full: each is one query to read again).
REMEMBERED = 100_000
#: Parsed documents kept per process, by the size of their blobs: public packuments run to
#: megabytes, and most requests are answered from a rendering cached by the ecosystem.
PARSED_BYTES = 32 * 1024 * 1024
#: Blobs larger than this are parsed in a thread, off the event loop.
PARSE_INLINE = 64 * 1024

_COLUMNS = ["upstream_url", "blob_key", "etag", "last_modified", "fetched_at", "checked_at"]

# Statements run with values, compiled once (depot.core.prepared): a cold install asks for one
# row per package.
_KEY = sa.and_(
    upstream_documents.c.ecosystem == sa.bindparam("ecosystem"),
    upstream_documents.c.name == sa.bindparam("name"),
)
_HELD = sa.select(upstream_documents.c.name, *(upstream_documents.c[c] for c in _COLUMNS)).where(
    _KEY
)
_CONFIRM = upstream_documents.update().where(_KEY).values(checked_at=sa.bindparam("stamp"))


@dataclass(frozen=True, slots=True)
class HeldDocument:
    """One held document's row."""

    name: str
    upstream: str
    blob_key: str
    etag: str | None
    last_modified: str | None
    fetched_at: float
    checked_at: float


#: What an ecosystem passes to :meth:`HeldDocuments.current`: ask the upstream for the document
#: (conditionally when one is held, given), verify and :meth:`HeldDocuments.store` it, or
#: :meth:`HeldDocuments.confirm` the held one on a 304. Raises ``UpstreamError`` or ``NotFound``.
Refresh = Callable[["HeldDocument | None"], Awaitable[HeldDocument]]


class HeldDocuments:
    """The held upstream documents of one ecosystem (``ctx.held_documents``)."""

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self._where = upstream_documents.c.ecosystem == ctx.name
        # name -> (change generation of name, row)
        self._rows: dict[str, tuple[int, HeldDocument]] = {}
        # blob key -> (blob size, parsed document), least recently used first
        self._parsed: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._parsed_bytes = 0
        # name -> (row, body, write) of the document stored last and not committed yet
        self._unwritten: dict[str, tuple[HeldDocument, bytes, asyncio.Future[None]]] = {}

    # -- reading ---------------------------------------------------------------------------

    async def get(self, name: str) -> HeldDocument | None:
        """The held row of ``name``, remembered while ``name``'s change generation stands (and
        while this process is writing it, whatever the generation: the database lacks it)."""
        generation = self.ctx.changes.generation(name)
        known = self._known(name, generation)
        if known is not None:
            return known
        row = await self.ctx.db.fetch_one(_HELD, {"ecosystem": self.ctx.name, "name": name})
        # A fetch may have stored it while the query ran: its row is newer than the one read,
        # or committed since (the caller would otherwise fetch it again).
        known = self._known(name, generation)
        if known is not None:
            return known
        if row is None:  # about to be fetched: not worth remembering
            return None
        return self._remember(generation, _held(row))

    def _known(self, name: str, generation: int) -> HeldDocument | None:
        """The row this process is writing, or remembers under ``generation``."""
        unwritten = self._unwritten.get(name)
        if unwritten is not None:
            return unwritten[0]
        remembered = self._rows.get(name)
        if remembered is not None and remembered[0] == generation:
            return remembered[1]
        return None

    async def read(self, held: HeldDocument) -> Any:
        """The held document's blob as JSON (content-addressed, so kept by key per process)."""
        kept = self._parsed.get(held.blob_key)
        if kept is not None:
            self._parsed.move_to_end(held.blob_key)
            return kept[1]
        unwritten = self._unwritten.get(held.name)
        if unwritten is not None and unwritten[0].blob_key == held.blob_key:
            body: bytes | bytearray = unwritten[1]
        else:
            body = bytearray()
            async for chunk in self.ctx.blobs.read(held.blob_key):
                body += chunk
        if len(body) > PARSE_INLINE:
            document = await asyncio.to_thread(json.loads, body)
        else:
            document = json.loads(body)
        self._keep_parsed(held.blob_key, len(body), document)
        return document

    async def among(self, names: Collection[str]) -> set[str]:
        """Those of ``names`` with a held document."""
        if not names:
            return set()
        t = upstream_documents.c
        query = sa.select(t.name).where(self._where, t.name.in_(sorted(names)))
        return {row[0] for row in await self.ctx.db.fetch_all(query)}

    async def listed(
        self, *, containing: str, excluding: sa.Select[Any], limit: int
    ) -> list[HeldDocument]:
        """Held documents by name (those whose name contains ``containing``, if given), leaving
        out the names ``excluding`` selects (those published here: never served from upstream),
        for catalogs."""
        t = upstream_documents.c
        query = (
            sa.select(t.name, *(getattr(t, c) for c in _COLUMNS))
            .where(self._where, t.name.not_in(excluding))
            .order_by(t.name)
            .limit(limit)
        )
        if containing:
            query = query.where(contains(t.name, containing))
        return [_held(row) for row in await self.ctx.db.fetch_all(query)]

    # -- the freshness policy --------------------------------------------------------------

    async def current(
        self,
        name: str,
        upstream: str,
        refresh: Refresh,
        *,
        held: HeldDocument | None = None,
        read: bool = True,
        now: bool = False,
    ) -> HeldDocument:
        """``name``'s document as freshness requires (see the module docstring).

        ``upstream`` names the upstream asked first when nothing is held (for metrics); ``held``
        is the row when the caller has just read it (``read=False``). ``now`` refreshes even a
        fresh copy, for a caller that knows it lacks something (a version newer than the copy):
        then, as when nothing is held, the upstream's error is the caller's.
        """
        client = self.ctx.upstream
        if read:
            held = await self.get(name)
        if held is not None:
            self.ctx.record_use(name)  # --cache-max-size/-age: batched, no write
        flight = ("held", self.ctx.name, name)
        if held is None or now:
            client.miss(upstream if held is None else held.upstream)
            return await client.single_flight(flight, lambda: refresh(held))
        if client.is_fresh(held.checked_at):
            client.hit(held.upstream)
            return held
        if client.is_down(held.upstream):
            client.stale(held.upstream, name, UpstreamError(held.upstream, "recently failed"))
            return held
        client.miss(held.upstream)
        try:
            return await client.single_flight(flight, lambda: refresh(held))
        except (UpstreamError, NotFound) as exc:
            client.stale(held.upstream, name, exc)
            return held

    # -- writing ---------------------------------------------------------------------------

    async def store(
        self,
        name: str,
        upstream: str,
        body: bytes,
        *,
        etag: str | None,
        last_modified: str | None,
        replaces: HeldDocument | None,
        document: Any = None,
    ) -> HeldDocument:
        """Hold ``body`` (JSON the ecosystem verified; ``document``, its parsed form, is kept)
        as ``name``'s document from ``upstream``, in place of ``replaces`` (the copy the refresh
        was given, or None); returns its row at once.

        Written behind (:meth:`depot.core.upstream.UpstreamClient.write_behind`): the blob
        first, then the row, evictable, committed with the other writes of that moment, while
        this process already answers from the document in memory. The clients waiting for it
        (a tarball waiting for the packument to verify against, a resolver waiting for a page)
        do not wait for the fsyncs of a group commit shared with every artifact a cold install
        is storing (measured: a page took 120-160 ms to store during a cold ``uv pip install``,
        about 1 ms to fetch). If the write fails, this process forgets the row and the next
        request fetches again. The row is written whatever is there (last writer wins: every
        writer holds a complete verified document). The blob a replaced row named is left for
        the collector: another replica may be about to point at it again.

        A replacement announces ``name``, so every process drops the copy it remembers (whose
        blob the collector may take once no row names it); a first copy announces only
        ``TopicFeed.ECOSYSTEM`` (pages list what is held): no process remembers a row that was
        not there, and what each remembered about ``name`` (not published here, no tarball of
        its own) stays true, so a warm install after a cold one asks the database nothing."""
        generation = self.ctx.changes.generation(name)  # before the row: see get()
        if len(body) > PARSE_INLINE:
            digest = await asyncio.to_thread(_sha256, body)
        else:
            digest = _sha256(body)
        # Content-addressed: replicas storing the same document write the same key.
        key = f"upstream/documents/{digest}.json"
        stamp = time.time()
        held = HeldDocument(name, upstream, key, etag, last_modified, stamp, stamp)
        earlier = self._unwritten.get(name)
        write = self.ctx.upstream.write_behind(
            self._write(held, body, replaces, after=earlier[2] if earlier else None),
            f"{name} from {upstream}",
        )
        self._unwritten[name] = (held, body, write)
        if document is not None:
            self._keep_parsed(key, len(body), document)
        self._remember(generation, held)
        return held

    async def _write(
        self,
        held: HeldDocument,
        body: bytes,
        replaces: HeldDocument | None,
        after: asyncio.Future[None] | None,
    ) -> None:
        """The blob and row of a document :meth:`store` returned, ``after`` the write of the
        copy it replaces (the rows land in the order they were fetched); undone in memory on
        failure."""
        key = held.blob_key
        try:
            if after is not None:
                await asyncio.wait([after])
            async with self.ctx.blobs.upload(key, hashes=()) as upload:
                await upload.write(body)
                await upload.complete()
                statement = self.ctx.db.upsert(upstream_documents, ["ecosystem", "name"], _COLUMNS)
                # Committed just before its row, the blob is younger than any grace period.
                await self.ctx.group_commit(
                    [(statement, {"ecosystem": self.ctx.name, **_values(held)})],
                    cached=[(held.name, len(body))],
                    notify=[TopicFeed.ECOSYSTEM]
                    if replaces is None
                    else [held.name, TopicFeed.ECOSYSTEM],
                    blob=(upload, key),
                )
        except BaseException:
            remembered = self._rows.get(held.name)
            if remembered is not None and remembered[1] is held:
                del self._rows[held.name]
            raise
        finally:
            unwritten = self._unwritten.get(held.name)
            if unwritten is not None and unwritten[0] is held:
                del self._unwritten[held.name]

    async def confirm(self, held: HeldDocument) -> HeldDocument:
        """The upstream answered 304: the held document is current as of now."""
        generation = self.ctx.changes.generation(held.name)
        stamp = time.time()
        values = {"ecosystem": self.ctx.name, "name": held.name, "stamp": stamp}
        await self.ctx.db.execute(_CONFIRM, values)
        return self._remember(generation, dataclasses.replace(held, checked_at=stamp))

    async def forget(self, names: Sequence[str]) -> list[str]:
        """Delete the rows of ``names``; returns the blob keys they named. Run it inside the
        evicting transaction, then announce ``names`` and release the keys
        (``ctx.release_blobs``)."""
        if not names:
            return []
        db = self.ctx.db
        chosen = sa.and_(self._where, upstream_documents.c.name.in_(list(names)))
        rows = await db.fetch_all(sa.select(upstream_documents.c.blob_key).where(chosen))
        await db.execute(upstream_documents.delete().where(chosen))
        for name in names:
            self._rows.pop(name, None)
        return [row[0] for row in rows]

    # -- memory ----------------------------------------------------------------------------

    def _remember(self, generation: int, held: HeldDocument) -> HeldDocument:
        if len(self._rows) >= REMEMBERED:
            self._rows.clear()
        self._rows[held.name] = (generation, held)
        return held

    def _keep_parsed(self, key: str, size: int, document: Any) -> None:
        if key in self._parsed:
            return
        self._parsed[key] = (size, document)
        self._parsed_bytes += size
        while self._parsed_bytes > PARSED_BYTES and len(self._parsed) > 1:
            dropped, _ = self._parsed.popitem(last=False)
            self._parsed_bytes -= dropped


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _held(row: Any) -> HeldDocument:
    return HeldDocument(
        row["name"], row["upstream_url"], row["blob_key"], row["etag"], row["last_modified"],
        row["fetched_at"], row["checked_at"],
    )  # fmt: skip


def _values(held: HeldDocument) -> dict[str, Any]:
    return {
        "name": held.name, "upstream_url": held.upstream, "blob_key": held.blob_key,
        "etag": held.etag, "last_modified": held.last_modified, "fetched_at": held.fetched_at,
        "checked_at": held.checked_at,
    }  # fmt: skip


async def referenced(db: Database, ecosystem: str, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` (inside ``ecosystem``'s namespace) a held document's row names."""
    candidates = [key for key in keys if key.startswith("upstream/")]
    if not candidates:
        return set()
    t = upstream_documents.c
    query = (
        sa.select(t.blob_key).where(t.ecosystem == ecosystem, t.blob_key.in_(candidates)).distinct()
    )
    return {row[0] for row in await db.fetch_all(query)}


def migrate_from(table: str, ecosystem: str, name_column: str) -> list[str]:
    """Statements for an ecosystem's schema migration that move the rows of its own former
    table of held documents (the same columns, keyed by ``name_column``) into the core's table,
    then drop it. The core's schema is migrated first, so its table is there; a database from
    before the former table existed gets it empty first, so every path reads the same."""
    columns = ", ".join(_COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({name_column} VARCHAR(256) PRIMARY KEY, "
        "upstream_url VARCHAR(1024) NOT NULL, blob_key VARCHAR(1024) NOT NULL, "
        "etag VARCHAR(256), last_modified VARCHAR(64), fetched_at FLOAT NOT NULL, "
        "checked_at FLOAT NOT NULL)",
        f"INSERT INTO depot_upstream_documents (ecosystem, name, {columns}) "
        f"SELECT '{ecosystem}', {name_column}, {columns} FROM {table}",
        f"DROP TABLE {table}",
    ]
