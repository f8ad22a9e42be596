"""The SQL metadata layer: ``databases`` with SQLAlchemy Core, on SQLite or PostgreSQL.

Each plugin contributes a :class:`Schema` through the ``depot_schemas`` hook; at start-up the
missing tables are created, pending migrations run in order and each schema's version is recorded
in ``depot_schema_versions``. Rows reference blobs: write and verify the blob first, then insert
the row, so nothing points at bytes that are not there.

Writes that a request waits for go through :meth:`Database.write`: one transaction per write, and
on SQLite, which has one writer and makes every commit durable with an fsync, *group commit*:
the writes waiting at the same moment run one after another on one connection, each inside a
savepoint of a shared transaction, which then commits once. Each writer is answered only after
that commit, so an acknowledged write is as durable as before; a write that fails rolls back to
its savepoint and fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
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
    SQLiteTransaction,
)
from depot.core.blobs import BlockingCommit
from depot.core.errors import ConfigError
from depot.core.prepared import Prepared
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.cursor import CursorResultMetaData
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.ddl import DDLElement

log = logging.getLogger("depot.core.database")

# While PostgreSQL is down, asyncpg's pool logs a multi-line traceback at every attempt to restore
# its minimum size; depot already answers each affected request 503 with one JSON log line.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

#: SQLite waits this long (seconds) for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT = 30.0
#: At most this many writes share one SQLite commit (see :class:`GroupCommit`).
GROUP_COMMIT_MAX = 64
#: Compiled statement shapes kept per database (the cache starts over when full).
COMPILED_CACHE_SIZE = 1000
#: A read on the event loop's thread gives up after this long and runs on a connection's
#: thread instead (see :class:`_InlineReads`): the loop serves nothing while it runs. Seconds.
INLINE_READ_BUDGET = 0.002
#: Reads answered on the event loop between two turns it is given (see Database._read_inline).
INLINE_READS_PER_TURN = 16
#: SQLite virtual-machine steps between two looks at the clock in an inline read.
_INLINE_PROGRESS_STEPS = 1000

T = TypeVar("T")

#: A row to write (``ctx.group_commit``): a statement built once (a template, run as
#: ``db.execute(statement, parameters)``: see :mod:`depot.core.prepared`) and its parameters.
RowWrite = tuple[Any, Mapping[str, Any]]

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


def _run_script(connection: sqlite3.Connection, sql: str) -> None:
    connection.execute(sql).close()


_savepoint_numbers = itertools.count()


class _SQLiteTransaction(SQLiteTransaction):
    """A transaction or savepoint, each step one call into the connection's thread.

    ``db.transaction(immediate=True)`` begins with ``BEGIN IMMEDIATE``: the write lock is taken
    (or waited for, within the busy timeout) at once, so a transaction that reads before it
    writes cannot fail half-way because another process wrote meanwhile.
    """

    async def _run(self, sql: str) -> None:
        connection = self._connection._connection
        assert connection is not None, "Connection is not acquired"
        await connection._execute(_run_script, connection._conn, sql)

    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        self._is_root = is_root
        if is_root:
            await self._run("BEGIN IMMEDIATE" if extra_options.get("immediate") else "BEGIN")
        else:
            # Unique among the connection's open savepoints is enough: a counter, not a uuid.
            self._savepoint_name = f"depot_savepoint_{next(_savepoint_numbers)}"
            await self._run(f"SAVEPOINT {self._savepoint_name}")

    async def commit(self) -> None:
        await self._run("COMMIT" if self._is_root else f"RELEASE SAVEPOINT {self._savepoint_name}")

    async def rollback(self) -> None:
        await self._run(
            "ROLLBACK" if self._is_root else f"ROLLBACK TO SAVEPOINT {self._savepoint_name}"
        )


def _fetch(
    connection: sqlite3.Connection, sql: str, args: list[Any], one: bool
) -> tuple[Any, list[Any]]:
    cursor = connection.execute(sql, args)
    try:
        if one:
            row = cursor.fetchone()
            return cursor.description, [] if row is None else [row]
        return cursor.description, cursor.fetchall()
    finally:
        cursor.close()


def _execute(connection: sqlite3.Connection, sql: str, args: list[Any]) -> Any:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, args)
        return cursor.rowcount if cursor.lastrowid == 0 else cursor.lastrowid
    finally:
        cursor.close()


def _compiled_statements(dialect: sa.engine.Dialect) -> dict[Any, Any]:
    """The compiled-statement cache of one dialect object (one per database)."""
    cache: dict[Any, Any] | None = getattr(dialect, "_depot_compiled", None)
    if cache is None:
        cache = {}
        dialect._depot_compiled = cache  # type: ignore[attr-defined]
    return cache


class _SQLiteRecord(Record):
    """``databases``' record of a SQLite row, without its per-access work for PostgreSQL.

    ``Record.__getitem__`` looks up the column type's result processor on every access (two
    weak-dictionary lookups) and uses it only on PostgreSQL; here SQLAlchemy's row has already
    processed each value when it was made. Reading seven columns of a hundred version rows to
    render a packument spent more time there than in building the document.
    """

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        if not self._column_map:
            return self._row[key]
        # SQLAlchemy's row keeps its processed values in the tuple ``_data``.
        if isinstance(key, str):
            return self._row._data[self._column_map[key][0]]
        if isinstance(key, int):
            return self._row._data[self._column_map_int[key][0]]
        return self._row._data[self._column_map_full[str(key)][0]]


class _SQLiteConnection(SQLiteConnection):
    """``databases``' SQLite connection, each statement one call into the connection's thread.

    ``databases`` makes three (open a cursor, execute, close it) and each costs a turn of the
    event loop, which under load is several milliseconds: for a write holding the database's
    single write lock, that time is everyone's.
    """

    def transaction(self) -> _SQLiteTransaction:
        return _SQLiteTransaction(self)

    def _compile(self, query: Any) -> tuple[str, list[Any], Any, Any]:
        """``databases``' compilation, reusing the SQL compiled for the same statement shape.

        SQLAlchemy's cache key names a statement's structure apart from its literal values:
        a cached compilation takes the new values (``extracted_parameters``) as SQLAlchemy's
        own engine does. Compiling costs about twice as much as keying, on the event loop, for
        every query. Statements with values rendered into the SQL (``IN`` lists, literal
        binds) are compiled every time.
        """
        if isinstance(query, DDLElement):
            return super()._compile(query)
        key = query._generate_cache_key()
        if key is None:
            return super()._compile(query)
        cache: dict[Any, Any] = _compiled_statements(self._dialect)
        compiled = cache.get(key.key)
        if compiled is None:
            compiled = query.compile(
                dialect=self._dialect, cache_key=key, compile_kwargs={"render_postcompile": True}
            )
            if any(b.expanding or b.literal_execute for b in compiled.binds.values()):
                compiled = False
            if len(cache) >= COMPILED_CACHE_SIZE:
                cache.clear()
            cache[key.key] = compiled
        if compiled is False:
            return super()._compile(query)
        params = compiled.construct_params(extracted_parameters=key.bindparams)
        processors = compiled._bind_processors
        args = [
            processors[name](params[name]) if name in processors else params[name]
            for name in compiled.positiontup
        ]
        return compiled.string, args, compiled._result_columns, self._context(compiled)

    def _context(self, compiled: Any) -> CompilationContext:
        """What ``databases`` reads result rows with: an execution context of ``compiled``."""
        context = self._dialect.execution_ctx_cls()
        context.dialect = self._dialect
        context.result_column_struct = (
            compiled._result_columns,
            compiled._ordered_columns,
            compiled._textual_ordered_columns,
            compiled._ad_hoc_textual,
            compiled._loose_column_name_matching,
        )
        return CompilationContext(context)

    async def _fetch(self, query: Any, one: bool) -> list[Record]:
        connection = self._connection
        assert connection is not None, "Connection is not acquired"
        sql, args, result_columns, context = self._compile(query)
        description, rows = await connection._execute(_fetch, connection._conn, sql, args, one)
        metadata = CursorResultMetaData(context, description)
        return self._records(metadata, result_columns, create_column_maps(result_columns), rows)

    def _records(
        self, metadata: CursorResultMetaData, result_columns: Any, column_maps: Any, rows: list[Any]
    ) -> list[Record]:
        return [
            _SQLiteRecord(
                Row(metadata, metadata._processors, metadata._keymap, row),
                result_columns,
                self._dialect,
                column_maps,
            )
            for row in rows
        ]

    async def execute_prepared(self, prepared: Prepared, args: list[Any]) -> Any:
        """:meth:`execute` of a prepared statement (see :meth:`Database.execute`)."""
        connection = self._connection
        assert connection is not None, "Connection is not acquired"
        return await connection._execute(_execute, connection._conn, prepared.sql, args)

    async def fetch_prepared(self, prepared: Prepared, args: list[Any], one: bool) -> list[Record]:
        """:meth:`fetch_all` (or, ``one``, the first row) of a prepared statement."""
        connection = self._connection
        assert connection is not None, "Connection is not acquired"
        description, rows = await connection._execute(
            _fetch, connection._conn, prepared.sql, args, one
        )
        return self.prepared_records(prepared, description, rows)

    def prepared_records(
        self, prepared: Prepared, description: Any, rows: list[Any]
    ) -> list[Record]:
        """The records of rows a prepared statement read (with the cursor's ``description``)."""
        metadata = prepared.metadata
        if metadata is None or metadata[0] != description:
            # The same for every call of one statement: made once, as SQLAlchemy's own cache of
            # compiled statements keeps it.
            context = self._context(prepared.compiled)
            metadata = (description, CursorResultMetaData(context, description))
            prepared.metadata = metadata
        return self._records(metadata[1], prepared.result_columns, prepared.column_maps, rows)

    def compiled_records(self, query: Any, read: Callable[[str, list[Any]], Any]) -> Any:
        """The records of ``query`` as ``read(sql, args)`` reads them (``(description, rows)``,
        or None for nothing read)."""
        sql, args, result_columns, context = self._compile(query)
        found = read(sql, args)
        if found is None:
            return None
        metadata = CursorResultMetaData(context, found[0])
        return self._records(metadata, result_columns, create_column_maps(result_columns), found[1])

    async def fetch_all(self, query: Any) -> list[Record]:
        return await self._fetch(query, one=False)

    async def fetch_one(self, query: Any) -> Record | None:
        rows = await self._fetch(query, one=True)
        return rows[0] if rows else None

    async def execute(self, query: Any) -> Any:
        connection = self._connection
        assert connection is not None, "Connection is not acquired"
        sql, args, _, _ = self._compile(query)
        return await connection._execute(_execute, connection._conn, sql, args)

    async def iterate(self, query: Any) -> AsyncIterator[Record]:
        for record in await self._fetch(query, one=False):
            yield record


class _InlineReads:
    """SQLite reads on the event loop's own thread, outside transactions.

    A read through ``databases`` hands the statement to a connection's thread and waits for
    the answer: about 110 µs of CPU per query (a queue, a thread's wake-up, a future answered
    across threads), where SQLite finds a row by its key in about 4. In WAL mode a reader
    never waits for the writer, so a read on the loop blocks it only for the statement's own
    work, which is bounded: a statement still running after :data:`INLINE_READ_BUDGET` is
    interrupted and runs on a thread instead, as it always will from then on. SQLite answering
    busy (recovering the log after a crash, say) sends a read to a thread too: this connection
    waits for nothing (busy timeout 0). It only ever reads (``PRAGMA query_only``).

    Only the thread that connected reads here; any other (the group commit's) goes the usual
    way.
    """

    SLOW_REMEMBERED = 1000

    def __init__(self, database: str, options: Mapping[str, Any]) -> None:
        self._database = database
        self._options = {**options, "timeout": 0, "check_same_thread": False}
        self._thread = threading.get_ident()
        self._connection: sqlite3.Connection | None = None
        self._deadline = 0.0
        #: SQL that once ran over the budget: it runs on a thread.
        self.slow: set[str] = set()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._database, isolation_level=None, **self._options)
        connection.execute("PRAGMA query_only = ON").close()
        connection.set_progress_handler(self._over_budget, _INLINE_PROGRESS_STEPS)
        self._connection = connection
        return connection

    def _over_budget(self) -> bool:
        return time.perf_counter() > self._deadline

    def fetch(self, sql: str, args: list[Any], one: bool) -> tuple[Any, list[Any]] | None:
        """``(cursor description, rows)``; None when the read is to run on a thread."""
        if threading.get_ident() != self._thread or sql in self.slow:
            return None
        connection = self._connection or self._open()
        self._deadline = time.perf_counter() + INLINE_READ_BUDGET
        try:
            return _fetch(connection, sql, args, one)
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted":
                if len(self.slow) >= self.SLOW_REMEMBERED:
                    self.slow.clear()
                self.slow.add(sql)
            return None  # and on a thread it answers, or raises what it raises there

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _in_memory(database: str) -> bool:
    """Whether a SQLite database name opens a database in memory, not a file."""
    return database in ("", ":memory:") or "mode=memory" in database


class _DirectSQLite:
    """Stands in for an aiosqlite connection on the group-commit thread: calls run inline.

    That thread exists to run writes; blocking it on SQLite is what it is for, and each
    statement then costs no handover between threads.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    async def _execute(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


class _DirectPool:
    def __init__(self, connection: _DirectSQLite) -> None:
        self.connection = connection

    async def acquire(self) -> _DirectSQLite:
        return self.connection

    async def release(self, connection: _DirectSQLite) -> None:
        pass


#: A queued write: the write, its caller's future and loop, and the blob commit to run first.
_Pending = tuple[
    Callable[[], Awaitable[Any]],
    asyncio.Future[Any],
    asyncio.AbstractEventLoop,
    "BlockingCommit | None",
]


def _settle(
    pending: _Pending, result: Any = None, error: BaseException | None = None, cancel: bool = False
) -> None:
    """Answer a waiting writer on its own event loop."""
    _, future, loop, before = pending
    if before is not None:
        before.discard()  # unless it ran: then nothing

    def answer() -> None:
        if future.done():
            return
        if cancel:
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    # A closed loop raises RuntimeError: nobody waits for the answer any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(answer)


class GroupCommit:
    """Runs SQLite writes in shared transactions: one commit, one fsync, for all that wait.

    :meth:`submit` queues a write and waits for its result. A thread with an event loop of its
    own takes every queued write, opens a ``BEGIN IMMEDIATE`` transaction on its connection,
    runs each write in a savepoint (a write that raises is rolled back to it and answered with
    its exception; the others go on) and commits; then answers each writer. Writes that arrive
    during a commit form the next group, so the group grows with the load and a lone write
    waits for nothing. A failed ``BEGIN`` or ``COMMIT`` fails the whole group: nothing of it
    was committed.

    Why a loop of its own: every statement is a round trip to SQLite's thread, and on the
    serving loop each one waits for a whole turn of that loop, which under load is milliseconds
    of other requests' work; the write lock is held meanwhile, so that time was every writer's.

    A write runs on that loop, so its ``db.execute()`` calls use the shared connection. It must
    only query the database (and, for ``reference_blobs``, check a blob exists), never stream
    bytes, wait on the network or touch objects bound to the serving loop.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Pending] = []  # touched on the writer loop only
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._local = threading.local()  # the writer thread's connection

    async def submit(
        self, write: Callable[[], Awaitable[T]], before: BlockingCommit | None = None
    ) -> T:
        caller = asyncio.get_running_loop()
        future: asyncio.Future[T] = caller.create_future()
        self._writer_loop().call_soon_threadsafe(self._enqueue, (write, future, caller, before))
        return await future

    async def close(self) -> None:
        """Commit (or fail) what is queued, then end the thread; a later write starts anew."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._drain(), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)

    def _writer_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name="depot-group-commit", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(self._drain())  # writes queued while it was stopping
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            connection = getattr(self._local, "sqlite", None)
            if connection is not None:
                connection.close()

    def _writer_connection(self) -> databases.core.Connection:
        """The thread's own SQLite connection, as the current task's ``databases`` connection
        (so that a write's ``db.execute()`` runs on it)."""
        local = self._local
        if getattr(local, "connection", None) is None:
            pool = self.db._sqlite_pool
            assert pool is not None
            local.sqlite = sqlite3.connect(pool._database, isolation_level=None, **pool._options)
            local.connection = databases.core.Connection(self.db, self.db._backend)
            local.connection._connection = _SQLiteConnection(
                _DirectPool(_DirectSQLite(local.sqlite)),  # type: ignore[arg-type]
                self.db._backend._dialect,  # type: ignore[attr-defined]
            )
        self.db._connection = local.connection
        connection: databases.core.Connection = local.connection
        return connection

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _drain(self) -> None:
        while self._task is not None:
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        try:
            while self._queue:
                group = self._queue[:GROUP_COMMIT_MAX]
                del self._queue[:GROUP_COMMIT_MAX]
                await self._commit(group)
        finally:
            # No await between the empty check and this: a write queued later starts a new task.
            self._task = None
            for pending in self._queue:  # only when this task itself was cancelled
                _settle(pending, cancel=True)
            self._queue.clear()

    async def _commit(self, group: list[_Pending]) -> None:
        group = self._commit_blobs(group)
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        # A lone write needs no savepoint: if it fails, the transaction is rolled back whole.
        alone = len(group) == 1
        try:
            conn = self._writer_connection()
            async with conn, conn.transaction(immediate=True):
                for pending in group:
                    write = pending[0]
                    try:
                        if alone:
                            result = await write()
                        else:
                            async with conn.transaction():
                                result = await write()
                    except Exception as exc:
                        if alone:
                            raise
                        outcomes.append((pending, None, exc))
                    else:
                        outcomes.append((pending, result, None))
        except BaseException as exc:
            for pending in group:
                if isinstance(exc, Exception):
                    _settle(pending, error=exc)
                else:
                    _settle(pending, cancel=True)
            if not isinstance(exc, Exception):
                raise
            return
        for pending, result, error in outcomes:
            _settle(pending, result, error)

    def _commit_blobs(self, group: list[_Pending]) -> list[_Pending]:
        """Commit the blobs the group's rows will point at, before its transaction (holding no
        lock meanwhile); the writes whose caller stopped waiting, or whose blob failed, leave
        the group (answered, or discarded, here)."""
        kept = []
        for pending in group:
            _, future, _, before = pending
            if future.cancelled():  # its caller stopped waiting before it began: not written
                _settle(pending)
                continue
            if before is not None:
                try:
                    before()
                except Exception as exc:
                    _settle(pending, error=exc)
                    continue
            kept.append(pending)
        return kept


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
        self._templates: dict[tuple[Any, ...], Any] = {}
        self._prepared: dict[tuple[int, tuple[str, ...]], Prepared] = {}
        self._sqlite_pool: _ReusingSQLitePool | None = None
        if self.dialect_name == "sqlite":
            backend = self._backend
            assert isinstance(backend, SQLiteBackend)
            self._sqlite_pool = _ReusingSQLitePool(backend._database_url, **options)
            backend._pool = self._sqlite_pool
            pool, dialect = self._sqlite_pool, backend._dialect
            backend.connection = lambda: _SQLiteConnection(pool, dialect)  # type: ignore[method-assign]
        self._group_commit = GroupCommit(self)
        #: Reads on the event loop's thread (SQLite files; made by :meth:`connect`).
        self._inline: _InlineReads | None = None
        self._record_reader: _SQLiteConnection | None = None
        self._inline_reads = 0

    async def connect(self) -> None:
        await super().connect()
        pool = self._sqlite_pool
        if pool is None or pool._memref is not None or _in_memory(pool._database):
            return  # an in-memory database is one per connection
        self._inline = _InlineReads(pool._database, pool._options)
        self._record_reader = _SQLiteConnection(pool, self._backend._dialect)  # type: ignore[attr-defined]

    def in_transaction(self) -> bool:
        """Whether the current task is inside a transaction (``db.transaction()``, a write)."""
        connection = self._global_connection
        if connection is None:
            task = asyncio.current_task()
            connection = None if task is None else self._connection_map.get(task)
        return connection is not None and bool(connection._transaction_stack)

    async def _read_inline(self, query: Any, values: Mapping[str, Any] | None, one: bool) -> Any:
        """The records of a read answered on the event loop's thread (:class:`_InlineReads`),
        or None: the read is to go to a connection's thread.

        Every :data:`INLINE_READS_PER_TURN` reads, the reader lets the loop turn first: a task
        reading row after row (a sweep over thousands) would otherwise hold it throughout,
        where each read through a thread let other requests in.
        """
        inline = self._inline
        if inline is None or isinstance(query, str) or self.in_transaction():
            return None
        self._inline_reads += 1
        if self._inline_reads % INLINE_READS_PER_TURN == 0:
            await asyncio.sleep(0)
        reader = self._record_reader
        assert reader is not None
        if values is None:
            return reader.compiled_records(query, lambda sql, args: inline.fetch(sql, args, one))
        prepared = self.prepared(query, values)
        found = inline.fetch(prepared.sql, prepared.args(values), one)
        return None if found is None else reader.prepared_records(prepared, *found)

    def prepared(self, template: Any, values: Mapping[str, Any]) -> Prepared:
        """``template`` compiled for this database and values with the keys of ``values``: once,
        then reused while the same statement object is passed (see :mod:`depot.core.prepared`)."""
        names = tuple(values)
        key = (id(template), names)
        prepared = self._prepared.get(key)
        # The entry holds its template, so an id is not reused while it is cached.
        if prepared is None or prepared.source is not template:
            prepared = Prepared(template, names, self._backend._dialect)  # type: ignore[attr-defined]
            if len(self._prepared) >= COMPILED_CACHE_SIZE:
                self._prepared.clear()
            self._prepared[key] = prepared
        return prepared

    async def execute(self, query: Any, values: Mapping[str, Any] | None = None) -> Any:
        """Run a statement; with ``values``, a statement prepared once (a *template*: see
        :mod:`depot.core.prepared`), which costs a fraction of building one per call.

        Returns what ``databases`` returns: on SQLite the new row's id for an INSERT (else the
        rows changed), on PostgreSQL the first column of the first row.
        """
        if values is None or isinstance(query, str):
            return await super().execute(query, values)  # type: ignore[arg-type]
        prepared = self.prepared(query, values)
        args = prepared.args(values)
        async with self.connection() as connection, connection._query_lock:
            backend = connection._connection
            if self._sqlite_pool is not None:
                return await backend.execute_prepared(prepared, args)  # type: ignore[attr-defined]
            return await backend.raw_connection.fetchval(prepared.sql, *args)  # type: ignore[attr-defined]

    async def fetch_all(self, query: Any, values: Mapping[str, Any] | None = None) -> list[Record]:
        """Every row of a statement; with ``values``, of a template (as :meth:`execute`)."""
        records = await self._read_inline(query, values, one=False)
        if records is not None:
            return records  # type: ignore[no-any-return]
        if values is None or isinstance(query, str):
            return await super().fetch_all(query, values)  # type: ignore[arg-type, return-value]
        return await self._fetch_prepared(query, values, one=False)

    async def fetch_one(self, query: Any, values: Mapping[str, Any] | None = None) -> Record | None:
        """The first row of a statement or None; with ``values``, of a template (as
        :meth:`execute`)."""
        rows = await self._read_inline(query, values, one=True)
        if rows is None:
            if values is None or isinstance(query, str):
                return await super().fetch_one(query, values)  # type: ignore[arg-type, return-value]
            rows = await self._fetch_prepared(query, values, one=True)
        return rows[0] if rows else None

    async def fetch_val(
        self, query: Any, values: Mapping[str, Any] | None = None, column: Any = 0
    ) -> Any:
        """A column of the first row of a statement (None without rows); with ``values``, of a
        template (as :meth:`execute`)."""
        if isinstance(query, str):
            return await super().fetch_val(query, values, column=column)
        row = await self.fetch_one(query, values)
        return None if row is None else row[column]

    async def _fetch_prepared(
        self, template: Any, values: Mapping[str, Any], one: bool
    ) -> list[Record]:
        prepared = self.prepared(template, values)
        args = prepared.args(values)
        async with self.connection() as connection, connection._query_lock:
            backend = connection._connection
            if self._sqlite_pool is not None:
                return await backend.fetch_prepared(prepared, args, one)  # type: ignore[attr-defined]
            # What databases' asyncpg backend does with the SQL it compiles, minus compiling.
            raw = backend.raw_connection  # type: ignore[attr-defined]
            dialect = self._backend._dialect  # type: ignore[attr-defined]
            if one:
                row = await raw.fetchrow(prepared.sql, *args)
                rows = [] if row is None else [row]
            else:
                rows = await raw.fetch(prepared.sql, *args)
            return [Record(r, prepared.result_columns, dialect, prepared.column_maps) for r in rows]

    async def write(
        self, write: Callable[[], Awaitable[T]], before: BlockingCommit | None = None
    ) -> T:
        """Run ``write`` (an ``async`` function of database statements through this object) in a
        transaction and return its result once that transaction is committed.

        On SQLite the write joins a group commit (:class:`GroupCommit`): it runs in another task
        on a shared connection, so it must only query the database. Already inside a
        transaction, it runs there, as part of it.

        ``before``: a blob's commit the rows point at (``blocking_commit``), run first on the
        writer's thread, outside the transaction: one hand-over between threads instead of two,
        each costing the event loop context switches for the GIL. If it fails, so does the
        write, and nothing of it is written.
        """
        if before is not None and (self.in_transaction() or self._sqlite_pool is None):
            job = asyncio.get_running_loop().run_in_executor(None, before)
            await asyncio.shield(job)  # once started, it ends (and then cleans up)
        if self.in_transaction():
            return await write()
        if self._sqlite_pool is None:
            async with self.transaction():
                return await write()
        return await self._group_commit.submit(write, before)

    async def disconnect(self) -> None:
        await self._group_commit.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        await super().disconnect()
        if self._sqlite_pool is not None:
            await self._sqlite_pool.close_idle()

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

    def insert_or_ignore(self, table: sa.Table, returning: Sequence[sa.Column[Any]] = ()) -> Any:
        """An INSERT that does nothing when a unique key already exists (both dialects),
        ``RETURNING`` the ``returning`` columns of the row it inserted (none when it did not).

        The same statement object each time (statements are immutable: ``.values()`` makes a
        new one), so that rows built on it share one compilation, and it serves as a template
        for :meth:`execute` with values."""
        cache_key = ("insert_or_ignore", table, tuple(returning))
        statement = self._templates.get(cache_key)
        if statement is None:
            module = sqlite if self.dialect_name == "sqlite" else postgresql
            statement = module.insert(table).on_conflict_do_nothing()
            if returning:
                statement = statement.returning(*returning)
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
