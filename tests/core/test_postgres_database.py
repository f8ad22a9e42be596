"""The SQL layer behaves the same on SQLite and PostgreSQL: tables, migrations, conflicts, JSON.

PostgreSQL runs on the machine's server (``DEPOT_TEST_POSTGRES_URL``), one fresh database per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from depot.core.database import Database, Schema, json_value
from depot.core.errors import ConfigError


@pytest.fixture(params=["sqlite", "postgresql", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same database under each URL spelling depot accepts."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'depot.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return request.param + url[url.index("://") :]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.connect()
    await database.prepare()
    yield database
    await database.disconnect()


def widgets_schema(version: int = 1) -> tuple[Schema, sa.Table]:
    """A plugin's schema; version 2 adds a column through a migration."""
    metadata = sa.MetaData()
    columns = [
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("meta", sa.JSON, nullable=True),
    ]
    if version >= 2:
        columns.append(sa.Column("colour", sa.String(20), nullable=True))
    table = sa.Table("test_widgets", metadata, *columns, sa.Index("test_widgets_size", "size"))
    migrations = {2: ["ALTER TABLE test_widgets ADD COLUMN colour VARCHAR(20)"]}
    return Schema("widgets", version, [table], migrations), table


async def recorded_version(db: Database, name: str) -> int | None:
    return await db.fetch_val(
        sa.text("SELECT version FROM depot_schema_versions WHERE name = :n").bindparams(n=name)
    )


async def test_migrate_creates_tables_and_records_version(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    await db.migrate([schema])  # a restart: nothing to do, no error
    await db.execute(widgets.insert().values(name="a", size=1, meta={"k": [1, "x"]}))
    row = await db.fetch_one(widgets.select())
    assert json_value(row.meta) == {"k": [1, "x"]}
    assert await recorded_version(db, "widgets") == 1


async def test_migration_adds_column_and_keeps_rows(db: Database) -> None:
    v1, widgets = widgets_schema(1)
    await db.migrate([v1])
    await db.execute(widgets.insert().values(name="kept", size=3))
    v2, widgets2 = widgets_schema(2)
    await db.migrate([v2])
    await db.execute(widgets2.update().where(widgets2.c.name == "kept").values(colour="red"))
    row = await db.fetch_one(widgets2.select())
    assert (row.name, row.size, row.colour) == ("kept", 3, "red")
    assert await recorded_version(db, "widgets") == 2


async def test_database_newer_than_depot_is_refused(db: Database) -> None:
    await db.migrate([widgets_schema(2)[0]])
    with pytest.raises(ConfigError, match="newer than this depot's 1"):
        await db.migrate([widgets_schema(1)[0]])


async def test_insert_or_ignore_keeps_the_first_row(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    await db.execute(db.insert_or_ignore(widgets).values(name="a", size=1))
    await db.execute(db.insert_or_ignore(widgets).values(name="a", size=2))
    assert await db.fetch_val(sa.select(widgets.c.size)) == 1


async def test_upsert_updates_only_named_columns(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    await db.execute(db.upsert(widgets, ["name"], ["size"]).values(name="a", size=1, meta={"v": 1}))
    await db.execute(db.upsert(widgets, ["name"], ["size"]).values(name="a", size=5, meta={"v": 2}))
    row = await db.fetch_one(widgets.select())
    assert (row.size, json_value(row.meta)) == (5, {"v": 1})


# Statements prepared once (``db.execute(template, values)``, depot.core.prepared): the same
# rows, results and errors as the statement built per call.


async def test_a_template_insert_answers_as_the_statement_built_per_call(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    built = await db.execute(widgets.insert().values(name="a", size=1, meta={"k": [1]}))
    template = widgets.insert()
    prepared = await db.execute(template, {"name": "b", "size": 2, "meta": {"k": [2]}})
    # SQLite: the new row's id; PostgreSQL: the first column of the first row (none here).
    assert (built, prepared) == ((1, 2) if db.dialect_name == "sqlite" else (None, None))
    await db.execute(template, {"name": "c", "size": 3})  # another set of columns
    rows = await db.fetch_all(sa.select(widgets).order_by(widgets.c.name))
    assert [(r.name, r.size, json_value(r.meta)) for r in rows] == [
        ("a", 1, {"k": [1]}), ("b", 2, {"k": [2]}), ("c", 3, None),
    ]  # fmt: skip
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await db.execute(template, {"name": "a", "size": 9})


async def test_a_template_insert_or_ignore_returns_only_the_row_it_inserted(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    template = db.insert_or_ignore(widgets, returning=[widgets.c.name])
    assert db.insert_or_ignore(widgets, returning=[widgets.c.name]) is template
    row = await db.fetch_one(template, {"name": "a", "size": 1})
    assert row is not None and (row["name"], row[0], row.name) == ("a", "a", "a")
    assert await db.fetch_one(template, {"name": "a", "size": 2}) is None
    assert await db.fetch_val(sa.select(widgets.c.size)) == 1


async def test_a_template_binds_its_parameters_and_keeps_its_constants(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    for name, size in (("a", 1), ("b", 2), ("c", 3)):
        await db.execute(db.upsert(widgets, ["name"], ["size"]), {"name": name, "size": size})
    # ``size + 10`` and the LIMIT are constants of the template; ``meta`` a column value.
    grow = (
        widgets.update()
        .where(widgets.c.name == sa.bindparam("name"))
        .values(size=widgets.c.size + 10)
    )
    await db.execute(grow, {"name": "b", "meta": {"grown": True}})
    await db.execute(grow, {"name": "c"})
    largest = (
        sa.select(widgets)
        .where(widgets.c.size > sa.bindparam("least"))
        .order_by(widgets.c.size.desc())
        .limit(1)
    )
    row = await db.fetch_one(largest, {"least": 0})
    assert row is not None and (row.name, row.size) == ("c", 13)
    assert await db.fetch_one(largest, {"least": 100}) is None
    rows = await db.fetch_all(
        sa.select(widgets).where(widgets.c.name != sa.bindparam("name")).order_by(widgets.c.name),
        {"name": "a"},
    )
    assert [(r.name, r.size, json_value(r.meta)) for r in rows] == [
        ("b", 12, {"grown": True}), ("c", 13, None),
    ]  # fmt: skip
    size_of = sa.select(widgets.c.size).where(widgets.c.name == sa.bindparam("n"))
    assert await db.fetch_val(size_of, {"n": "a"}) == 1


async def test_a_template_inside_a_write_runs_in_its_transaction(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    template = db.insert_or_ignore(widgets, returning=[widgets.c.name])

    async def write(i: int) -> bool:
        async def rows() -> bool:
            inserted = await db.fetch_one(template, {"name": f"w{i % 5}", "size": i})
            if i == 3:
                raise Refused("roll this one back")
            return inserted is not None

        return await db.write(rows)

    results = await asyncio.gather(*(write(i) for i in range(10)), return_exceptions=True)
    assert isinstance(results[3], Refused)
    assert sum(r is True for r in results) == 5
    count = sa.select(sa.func.count()).select_from(widgets)
    assert await db.fetch_val(count) == 5


async def test_what_cannot_be_templated_is_refused(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    with pytest.raises(ValueError, match="rendered per call"):
        await db.fetch_all(
            sa.select(widgets).where(widgets.c.name.in_(sa.bindparam("names", expanding=True))),
            {"names": ["a"]},
        )
    with pytest.raises(ValueError, match="name no bind parameter"):
        await db.fetch_all(sa.select(widgets), {"name": "a"})
    with pytest.raises(KeyError, match="size"):
        await db.fetch_all(sa.select(widgets).where(widgets.c.size == sa.bindparam("size")), {})


async def test_replicas_starting_and_writing_together_lose_nothing(database_url: str) -> None:
    """Two connection pools (two depot processes) migrate at once, then write rows concurrently."""
    schema, widgets = widgets_schema()
    replicas = [Database(database_url), Database(database_url)]
    for replica in replicas:
        await replica.connect()
        await replica.prepare()
    try:
        await asyncio.gather(*(r.migrate([schema]) for r in replicas))

        async def publish(replica: Database, start: int) -> None:
            for i in range(start, start + 40):
                await replica.execute(
                    replica.insert_or_ignore(widgets).values(name=f"w{i}", size=i)
                )

        await asyncio.gather(publish(replicas[0], 0), publish(replicas[1], 20))
        names = {row.name for row in await replicas[1].fetch_all(sa.select(widgets.c.name))}
        assert names == {f"w{i}" for i in range(60)}
    finally:
        for replica in replicas:
            await replica.disconnect()


class Refused(Exception):
    """What one write of a group raises on purpose."""


async def test_concurrent_writes_commit_and_a_failing_one_fails_alone(database_url: str) -> None:
    """``db.write`` from many tasks at once (on SQLite one group commit): every write is
    committed when it is answered, and one that raises half-way leaves nothing and fails no
    other."""
    schema, widgets = widgets_schema()
    db, other = Database(database_url), Database(database_url)
    for database in (db, other):
        await database.connect()
        await database.prepare()
    try:
        await db.migrate([schema])

        async def write(i: int) -> str:
            async def rows() -> str:
                await db.execute(widgets.insert().values(name=f"w{i}", size=i))
                await db.execute(widgets.insert().values(name=f"w{i}-twin", size=i))
                row = await db.fetch_one(sa.select(widgets.c.name).where(widgets.c.size == i))
                if i == 7:
                    raise Refused(f"write {i}")
                return str(row.name)

            name = await db.write(rows)
            # Answered means committed: another pool (another process) sees it at once.
            assert (
                await other.fetch_val(
                    sa.select(sa.func.count()).select_from(widgets).where(widgets.c.size == i)
                )
                == 2
            )
            return name

        results = await asyncio.gather(*(write(i) for i in range(40)), return_exceptions=True)
        assert [type(r) for r in results if isinstance(r, BaseException)] == [Refused]
        assert isinstance(results[7], Refused)
        names = {row.name for row in await other.fetch_all(sa.select(widgets.c.name))}
        assert names == {f"w{i}{twin}" for i in range(40) if i != 7 for twin in ("", "-twin")}
        # A conflict inside a write is that write's error too; the next writes go on.
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            await db.write(lambda: db.execute(widgets.insert().values(name="w1", size=0)))
        await db.write(lambda: db.execute(widgets.insert().values(name="w7", size=7)))
        assert await other.fetch_val(sa.select(widgets.c.size).where(widgets.c.name == "w7")) == 7
    finally:
        for database in (db, other):
            await database.disconnect()


async def test_a_write_inside_a_transaction_is_part_of_it(db: Database) -> None:
    schema, widgets = widgets_schema()
    await db.migrate([schema])
    with pytest.raises(Refused):
        async with db.transaction():
            await db.write(lambda: db.execute(widgets.insert().values(name="gone", size=1)))
            raise Refused("roll back the whole transaction")
    assert await db.fetch_val(sa.select(sa.func.count()).select_from(widgets)) == 0


async def test_sslmode_in_the_url_is_honoured(postgres_url: str) -> None:
    """?sslmode=require never falls back to plain text (the test server has no TLS: refused)."""
    plain = Database(postgres_url + "?sslmode=disable&max_size=2")
    await plain.connect()
    try:
        assert await plain.fetch_val("SELECT 1") == 1
    finally:
        await plain.disconnect()
    required = Database(postgres_url + "?sslmode=require")
    with pytest.raises(ConnectionError, match="SSL"):
        await required.connect()
