"""The metadata layer: plugin tables created, migrated and versioned at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from depot.core.database import Database, Schema, json_value, schema_versions
from depot.core.errors import ConfigError


def notes_v1() -> Schema:
    metadata = sa.MetaData()
    table = sa.Table(
        "notes", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text)
    )
    return Schema("notes", 1, [table])


def notes_v2() -> Schema:
    metadata = sa.MetaData()
    table = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text),
        sa.Column("meta", sa.JSON),
    )
    tags = sa.Table(
        "note_tags", metadata, sa.Column("note_id", sa.Integer), sa.Column("tag", sa.Text)
    )
    return Schema("notes", 2, [table, tags], {2: ["ALTER TABLE notes ADD COLUMN meta JSON"]})


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'depot.db'}")
    await database.connect()
    await database.prepare()
    yield database
    await database.disconnect()


async def version_of(db: Database, name: str) -> int:
    return await db.fetch_val(
        sa.select(schema_versions.c.version).where(schema_versions.c.name == name)
    )


async def test_tables_are_created_and_version_recorded(db: Database) -> None:
    await db.migrate([notes_v1()])
    await db.execute("INSERT INTO notes (id, body) VALUES (1, 'kept')")
    assert await version_of(db, "notes") == 1
    await db.migrate([notes_v1()])  # idempotent at every start
    assert await db.fetch_val("SELECT body FROM notes WHERE id = 1") == "kept"


async def test_migration_brings_an_old_schema_up_to_date(db: Database) -> None:
    await db.migrate([notes_v1()])
    await db.execute("INSERT INTO notes (id, body) VALUES (1, 'kept')")
    schema = notes_v2()
    await db.migrate([schema])
    assert await version_of(db, "notes") == 2
    await db.execute(schema.tables[0].update().values(meta={"a": [1, 2]}))
    row = await db.fetch_one(sa.select(schema.tables[0]))
    assert row.body == "kept" and json_value(row.meta) == {"a": [1, 2]}
    await db.execute(schema.tables[1].insert().values(note_id=1, tag="new table"))


async def test_a_newer_database_is_refused(db: Database) -> None:
    await db.migrate([notes_v2()])
    with pytest.raises(ConfigError, match="newer than this depot"):
        await db.migrate([notes_v1()])


async def test_sqlite_runs_in_wal_mode(db: Database) -> None:
    assert (await db.fetch_val("PRAGMA journal_mode")).lower() == "wal"


async def test_insert_or_ignore_keeps_the_first_row(db: Database) -> None:
    schema = notes_v1()
    await db.migrate([schema])
    await db.execute(db.insert_or_ignore(schema.tables[0]).values(id=1, body="first"))
    await db.execute(db.insert_or_ignore(schema.tables[0]).values(id=1, body="second"))
    assert await db.fetch_val("SELECT body FROM notes WHERE id = 1") == "first"


async def test_connections_are_reused_and_never_inside_a_transaction(db: Database) -> None:
    schema = notes_v1()
    await db.migrate([schema])
    first = await db.fetch_val("SELECT 1")
    pool = db._sqlite_pool
    assert pool is not None and len(pool._idle) == 1
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.execute("INSERT INTO notes (id, body) VALUES (7, 'rolled back')")
            raise RuntimeError
    assert first == 1
    assert await db.fetch_val("SELECT count(*) FROM notes") == 0
    assert all(not c.in_transaction for c in pool._idle)


async def test_reads_see_their_own_transaction_and_every_commit(db: Database) -> None:
    schema = notes_v1()
    await db.migrate([schema])
    (notes,) = schema.tables
    body_of = sa.select(notes.c.body).where(notes.c.id == sa.bindparam("id"))
    async with db.transaction():
        await db.execute(notes.insert(), {"id": 1, "body": "inside"})
        # The transaction's task reads through its own connection, uncommitted rows included...
        assert await db.fetch_val(body_of, {"id": 1}) == "inside"
        assert await db.fetch_val(sa.select(sa.func.count()).select_from(notes)) == 1
        # ...and any other task reads what is committed, without waiting for the writer.
        assert await asyncio.create_task(db.fetch_val(body_of, {"id": 1})) is None
    assert await db.fetch_val(body_of, {"id": 1}) == "inside"

    async def grouped() -> None:
        await db.execute(notes.insert(), {"id": 2, "body": "grouped"})

    await db.write(grouped)  # committed by the group-commit thread's connection
    assert await db.fetch_val(body_of, {"id": 2}) == "grouped"
    rows = await db.fetch_all(sa.select(notes.c.id, notes.c.body).order_by(notes.c.id))
    assert [(r["id"], r["body"]) for r in rows] == [(1, "inside"), (2, "grouped")]


async def test_a_long_read_leaves_the_event_loop_serving(db: Database) -> None:
    # Reads are answered on the event loop's thread when they are quick; one that is not must
    # not hold the loop (every other request) until it ends.
    rows = 3_000_000
    slow = sa.text(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :last) "
        "SELECT count(*) FROM n"
    ).bindparams(last=rows)
    turns = 0

    async def other_requests() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    for _ in range(2):  # the first time, and once it is known to be slow
        others = asyncio.create_task(other_requests())
        await asyncio.sleep(0)
        before = turns
        assert await db.fetch_val(slow) == rows
        during = turns - before
        others.cancel()
        assert during > 100, f"the loop turned {during} times while a long read ran"


async def test_a_blob_committed_with_its_rows_is_there_before_them_or_neither_is(
    db: Database, tmp_path: Path
) -> None:
    from depot.core.blobs import ScopedBlobStore
    from depot.core.storage_fs import FSBlobStore

    schema = notes_v1()
    await db.migrate([schema])
    (notes,) = schema.tables
    store = FSBlobStore.open_sync(tmp_path / "blobs")
    blobs = ScopedBlobStore(store, "eco")
    (store.root / "eco").mkdir()
    (store.root / "eco" / "blocked").write_bytes(b"a file where a directory should be")

    async def save(note_id: int, key: str) -> None:
        async with blobs.upload("incoming/x") as upload:
            await upload.write(b"body %d" % note_id)
            await upload.complete()
            commit = upload.blocking_commit(key)
            assert commit is not None  # the fs store commits on the writer's thread

            async def row() -> None:
                # The blob is in place before the row that points at it is written.
                assert await blobs.stat(key) is not None
                await db.execute(notes.insert(), {"id": note_id, "body": key})

            await db.write(row, commit)

    await save(1, "notes/1")
    assert b"".join([c async for c in blobs.read("notes/1")]) == b"body 1"
    with pytest.raises(NotADirectoryError):
        await save(2, "blocked/2")
    ids = [r[0] for r in await db.fetch_all(sa.select(notes.c.id))]
    assert ids == [1]  # the row of the blob that failed was never written
    assert list(store.tmp_dir.iterdir()) == []
