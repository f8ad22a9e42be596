"""The SQL metadata layer: ``databases`` with SQLAlchemy Core, on SQLite or PostgreSQL.

Each plugin contributes a :class:`Schema` through the ``depot_schemas`` hook; at start-up the
missing tables are created, pending migrations run in order and each schema's version is recorded
in ``depot_schema_versions``. Rows reference blobs: write and verify the blob first, then insert
the row, so nothing points at bytes that are not there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiosqlite
import databases
import sqlalchemy as sa
from databases import DatabaseURL
from databases.backends.common.records import Record, Row, create_column_maps
from databases.backends.sqlite import (
    CompilationContext,
    SQLiteBackend,
    SQLiteConnection,
    SQLitePool,
)
from depot.core.errors import ConfigError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.cursor import CursorResultMetaData
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ClauseElement

log = logging.getLogger("depot.core.database")

# While PostgreSQL is down, asyncpg's pool logs a multi-line traceback at every attempt to restore
# its minimum size; depot already answers each affected request 503 with one JSON log line.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

#: SQLite waits this long (seconds) for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT = 30.0

core_metadata = sa.MetaData()

schema_versions = sa.Table(
    "depot_schema_versions",
    core_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# Any constant: the PostgreSQL advisory lock that serialises migrations across replicas.
_MIGRATION_LOCK = 0x6465706F74


@dataclass(frozen=True)
class Schema:
    """A plugin's tables at ``version``.

    ``migrations[n]`` holds the SQL statements that take version ``n - 1`` to ``n``; tables new in
    a version need no statement (missing tables are created after migrations run). Write
    statements both SQLite and PostgreSQL accept.
    """

    name: str
    version: int
    tables: Sequence[sa.Table]
    migrations: Mapping[int, Sequence[str]] = field(default_factory=dict)


def contains(column: sa.ColumnElement[Any], text: str) -> sa.ColumnElement[bool]:
    """``column`` contains ``text`` literally, case-insensitively.

    Use this instead of SQLAlchemy's ``.contains()``: ``databases`` formats compiled SQL with
    ``%`` and breaks on the literal ``'%'`` that ``.contains()`` renders.
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


def json_value(value: Any) -> Any:
    """Normalise a JSON column: SQLite hands back the decoded value, asyncpg a string."""
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


class _ReusingSQLitePool(SQLitePool):
    """Keeps released SQLite connections for the next query.

    ``databases`` opens a fresh aiosqlite connection, and with it a fresh thread, for every
    connection it acquires: the largest cost of an uncached lookup. A connection goes back to
    the idle list only when no transaction is open on it.
    """

    MAX_IDLE = 8

    def __init__(self, url: DatabaseURL, **options: Any) -> None:
        super().__init__(url, **options)
        self._idle: list[aiosqlite.Connection] = []

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle:
            return self._idle.pop()
        return await super().acquire()

    async def release(self, connection: aiosqlite.Connection) -> None:
        if len(self._idle) < self.MAX_IDLE and not connection.in_transaction:
            self._idle.append(connection)
        else:
            await super().release(connection)

    async def close_idle(self) -> None:
        while self._idle:
            await super().release(self._idle.pop())


def _fetch_sync(
    connection: sqlite3.Connection, sql: str, args: Sequence[Any], one: bool
) -> tuple[list[Any], Any]:
    cursor = connection.execute(sql, args)
    try:
        return (cursor.fetchmany(1) if one else cursor.fetchall()), cursor.description
    finally:
        cursor.close()


class _SQLiteReader:
    """Reads outside transactions, gathered: one thread with a connection of its own, and one
    hop there for all the reads of an event-loop turn.

    ``databases`` runs execute, fetch and close of a query's cursor as three calls into
    aiosqlite's thread, each a queue put, a thread wake-up and a wake-up of the event loop back;
    on a busy depot (a cold pull-through cache answering fifteen requests at once) those hops,
    not SQLite, were most of a lookup's cost. Here the reads submitted during one loop turn go
    to the reader thread in one put, run there one after the other (each statement its own
    read transaction in WAL mode, so it sees every commit made before it was submitted), and
    come back in one wake-up of the loop.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._gathered: list[tuple[str, Sequence[Any], bool, asyncio.Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def read(self, sql: str, args: Sequence[Any], one: bool) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._thread is None or self._loop is not loop or not self._thread.is_alive():
            self._queue.put(None)  # a reader started under another event loop ends
            self._queue, self._gathered, self._loop = queue.SimpleQueue(), [], loop
            self._thread = threading.Thread(
                target=self._serve, args=(self._queue, loop), name="depot-sqlite-reader",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
        future = loop.create_future()
        if not self._gathered:
            loop.call_soon(self._send)
        self._gathered.append((sql, args, one, future))
        return future

    def _send(self) -> None:
        gathered, self._gathered = self._gathered, []
        self._queue.put(gathered)

    def _serve(
        self, requests: queue.SimpleQueue[list[Any] | None], loop: asyncio.AbstractEventLoop
    ) -> None:
        connection = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            while (gathered := requests.get()) is not None:
                results: list[tuple[bool, Any]] = []
                for sql, args, one, _ in gathered:
                    try:
                        results.append((True, _fetch_sync(connection, sql, args, one)))
                    except Exception as exc:
                        results.append((False, exc))
                try:
                    loop.call_soon_threadsafe(self._deliver, gathered, results)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return
        finally:
            connection.close()

    @staticmethod
    def _deliver(gathered: list[Any], results: list[tuple[bool, Any]]) -> None:
        for (_, _, _, future), (ok, value) in zip(gathered, results, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None


class _GatheringSQLiteConnection(SQLiteConnection):
    """Reads outside a transaction go to the :class:`_SQLiteReader`; inside one (where they
    must see the transaction's own writes), to the connection as ``databases`` sends them."""

    reader: _SQLiteReader
    #: SELECTs compiled once per shape (SQLAlchemy's cache key, as its engines cache them):
    #: compiling was most of the remaining cost of a lookup. Shared by the connections.
    compiled: dict[Any, Any]

    def _compile(self, query: ClauseElement) -> tuple[str, list[Any], Any, Any]:
        cache_key = query._generate_cache_key() if isinstance(query, sa.Select) else None
        if cache_key is None:
            return super()._compile(query)
        compiled = self.compiled.get(cache_key.key)
        if compiled is None:
            compiled = query.compile(
                dialect=self._dialect, cache_key=cache_key,
                compile_kwargs={"render_postcompile": True},
            )  # fmt: skip
            if compiled.post_compile_params or compiled.literal_execute_params:
                return super()._compile(query)  # IN (...) rendered per length: not reusable
            if len(self.compiled) >= 2000:
                self.compiled.clear()
            self.compiled[cache_key.key] = compiled
        params = compiled.construct_params(extracted_parameters=cache_key.bindparams)
        processors = compiled._bind_processors
        args = [
            processors[key](params[key]) if key in processors else params[key]
            for key in compiled.positiontup
        ]
        context = self._dialect.execution_ctx_cls()
        context.dialect = self._dialect
        context.result_column_struct = (
            compiled._result_columns, compiled._ordered_columns,
            compiled._textual_ordered_columns, compiled._ad_hoc_textual,
            compiled._loose_column_name_matching,
        )  # fmt: skip
        return compiled.string, args, compiled._result_columns, CompilationContext(context)

    async def _rows(self, query: ClauseElement, one: bool) -> list[Record] | None:
        raw = self._connection
        if raw is None or raw._conn.in_transaction:
            return None
        query_str, args, result_columns, context = self._compile(query)
        column_maps = create_column_maps(result_columns)
        rows, description = await self.reader.read(query_str, args, one)
        metadata = CursorResultMetaData(context, description)
        return [
            Record(
                Row(metadata, metadata._processors, metadata._keymap, row),
                result_columns,
                self._dialect,
                column_maps,
            )
            for row in rows
        ]

    async def fetch_all(self, query: ClauseElement) -> list[Record]:
        rows = await self._rows(query, one=False)
        return await super().fetch_all(query) if rows is None else rows

    async def fetch_one(self, query: ClauseElement) -> Record | None:
        rows = await self._rows(query, one=True)
        if rows is None:
            return await super().fetch_one(query)
        return rows[0] if rows else None


class Database(databases.Database):
    """``databases.Database`` that knows its dialect and depot's conventions."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.dialect_name = "sqlite" if parts.scheme == "sqlite" else "postgresql"
        if parts.scheme in ("postgres", "postgresql+asyncpg"):
            url = urlunsplit(("postgresql", *parts[1:]))
        options: dict[str, Any] = {}
        if self.dialect_name == "sqlite":
            options["timeout"] = SQLITE_BUSY_TIMEOUT
        else:
            # Options given here override the URL's, so the defaults yield to ?min_size=/max_size=.
            query = dict(parse_qsl(parts.query))
            options["min_size"] = int(query.get("min_size", 1))
            options["max_size"] = int(query.get("max_size", 10))
            # libpq's ?sslmode= is what operators write; databases only reads ?ssl= and would
            # silently connect in plain text. asyncpg takes the same mode names.
            if "sslmode" in query and "ssl" not in query:
                options["ssl"] = query["sslmode"]
        super().__init__(url, **options)
        self._sqlite_pool: _ReusingSQLitePool | None = None
        self._sqlite_reader: _SQLiteReader | None = None
        self._templates: dict[tuple[Any, ...], Any] = {}
        if self.dialect_name == "sqlite":
            backend = self._backend
            assert isinstance(backend, SQLiteBackend)
            self._sqlite_pool = _ReusingSQLitePool(backend._database_url, **options)
            backend._pool = self._sqlite_pool
            path = DatabaseURL(url).database
            if path and path != ":memory:" and hasattr(aiosqlite.Connection, "_conn"):
                self._sqlite_reader = _SQLiteReader(path)
                connection_class = type(
                    "SQLiteConnection", (_GatheringSQLiteConnection,),
                    {"reader": self._sqlite_reader, "compiled": {}},
                )  # fmt: skip
                backend.connection = lambda: connection_class(  # type: ignore[method-assign]
                    backend._pool, backend._dialect
                )

    async def disconnect(self) -> None:
        await super().disconnect()
        if self._sqlite_pool is not None:
            await self._sqlite_pool.close_idle()
        if self._sqlite_reader is not None:
            await self._sqlite_reader.close()

    async def connect_raw(self) -> Any:
        """A PostgreSQL connection of its own, outside the pool (for ``LISTEN``); the caller
        closes it."""
        import asyncpg

        url = self.url
        backend = self._backend
        options = {
            k: v
            for k, v in backend._get_connection_kwargs().items()  # type: ignore[attr-defined]
            if k not in ("min_size", "max_size")
        }
        return await asyncpg.connect(
            host=url.hostname, port=url.port, user=url.username, password=url.password,
            database=url.database, **options,
        )  # fmt: skip

    @property
    def sqlalchemy_dialect(self) -> sa.engine.Dialect:
        return sqlite.dialect() if self.dialect_name == "sqlite" else postgresql.dialect()

    def insert_or_ignore(self, table: sa.Table) -> Any:
        """An INSERT that does nothing when a unique key already exists (both dialects).

        The same statement object each time (statements are immutable: ``.values()`` makes a
        new one), so that it can serve as a template compiled once (:mod:`.groupcommit`)."""
        cache_key = ("insert_or_ignore", table)
        statement = self._templates.get(cache_key)
        if statement is None:
            module = sqlite if self.dialect_name == "sqlite" else postgresql
            statement = module.insert(table).on_conflict_do_nothing()
            self._templates[cache_key] = statement
        return statement

    def upsert(self, table: sa.Table, key: Sequence[str], update: Sequence[str]) -> Any:
        """An INSERT that updates the ``update`` columns when the ``key`` columns exist (the
        same statement object for the same arguments, as :meth:`insert_or_ignore`)."""
        cache_key = ("upsert", table, tuple(key), tuple(update))
        statement = self._templates.get(cache_key)
        if statement is None:
            module = sqlite if self.dialect_name == "sqlite" else postgresql
            stmt = module.insert(table)
            statement = stmt.on_conflict_do_update(
                index_elements=list(key), set_={c: stmt.excluded[c] for c in update}
            )
            self._templates[cache_key] = statement
        return statement

    async def prepare(self) -> None:
        """Connection-level settings that must hold before any table is touched."""
        if self.dialect_name == "sqlite":
            # WAL lets readers go on while one writer commits; it is a property of the file.
            await self.execute("PRAGMA journal_mode=WAL")

    async def migrate(self, schemas: Sequence[Schema]) -> None:
        """Create and migrate every schema's tables, recording versions."""
        names = [s.name for s in schemas]
        if len(set(names)) != len(names):
            raise ConfigError(f"two plugins contribute a schema of the same name: {names}")
        async with self.connection() as conn, conn.transaction():
            if self.dialect_name == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await self._create_tables(conn, [schema_versions])
            for schema in schemas:
                await self._migrate_one(conn, schema)

    async def _create_tables(
        self, conn: databases.core.Connection, tables: Sequence[sa.Table]
    ) -> None:
        dialect = self.sqlalchemy_dialect
        for table in tables:
            await conn.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
            for index in table.indexes:
                ddl = CreateIndex(index, if_not_exists=True).compile(dialect=dialect)
                await conn.execute(str(ddl))

    async def _migrate_one(self, conn: databases.core.Connection, schema: Schema) -> None:
        row = await conn.fetch_one(
            sa.select(schema_versions.c.version).where(schema_versions.c.name == schema.name)
        )
        recorded = None if row is None else row[0]
        if recorded is not None and recorded > schema.version:
            raise ConfigError(
                f"database schema {schema.name!r} is at version {recorded}, newer than this "
                f"depot's {schema.version}: upgrade depot"
            )
        if recorded is not None:
            for version in range(recorded + 1, schema.version + 1):
                for statement in schema.migrations.get(version, ()):
                    await conn.execute(statement)
                log.info("migrated schema", extra={"schema": schema.name, "version": version})
        await self._create_tables(conn, schema.tables)
        if recorded is None:
            # Another replica may be migrating too; the first to record the version wins.
            await conn.execute(
                self.insert_or_ignore(schema_versions).values(
                    name=schema.name, version=schema.version
                )
            )
        elif recorded != schema.version:
            await conn.execute(
                schema_versions.update()
                .where(schema_versions.c.name == schema.name)
                .values(version=schema.version)
            )
