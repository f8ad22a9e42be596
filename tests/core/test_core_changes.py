"""The core change notification (depot.core.changes): what one process writes, every process
sharing its database sees within the bound, on SQLite and on PostgreSQL; the task that follows
the log starts with the depot and stops with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from depot.core import create_app
from depot.core.changes import BOUND, CHANGES_SCHEMA, POLL_INTERVAL, Changes
from depot.core.database import Database

WITHIN = BOUND + POLL_INTERVAL + 0.75


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'depot.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def two_processes(database_url: str) -> AsyncIterator[tuple[Changes, Changes]]:
    """Two Changes, each on a connection of its own to one database, as two workers have."""
    databases = [Database(database_url), Database(database_url)]
    followers = [Changes(), Changes()]
    for database in databases:
        await database.connect()
        await database.migrate([CHANGES_SCHEMA])
    for changes, database in zip(followers, databases, strict=True):
        await changes.start(database)
    yield followers[0], followers[1]
    for changes, database in zip(followers, databases, strict=True):
        await changes.stop()
        await database.disconnect()


async def seen_within(changes: Changes, topic: str, before: int) -> float:
    start = time.monotonic()
    while changes.generation(topic) == before:
        if time.monotonic() - start > WITHIN:
            pytest.fail(f"{topic} unchanged after {WITHIN:.2f} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_the_writer_sees_its_change_at_once(two_processes: tuple[Changes, Changes]) -> None:
    writer, _ = two_processes
    before = writer.generation("npm:left-pad")
    await writer.notify("npm:left-pad")
    assert writer.generation("npm:left-pad") != before
    assert writer.generation("npm:") != before  # the ecosystem's scope moved with it


async def test_another_process_sees_the_change_within_the_bound(
    two_processes: tuple[Changes, Changes],
) -> None:
    writer, reader = two_processes
    untouched = reader.generation("npm:other")
    for _ in range(3):
        before = reader.generation("npm:left-pad")
        await writer.notify("npm:left-pad")
        await seen_within(reader, "npm:left-pad", before)
    assert reader.generation("npm:other") == untouched  # only the named topic moved


async def test_an_observed_change_moves_only_the_observing_process(
    two_processes: tuple[Changes, Changes],
) -> None:
    """A write that found its row already there (another process's) re-reads here at once; it
    announces nothing, since the process that wrote the row does."""
    observer, other = two_processes
    before, elsewhere = observer.generation("nix:abc"), other.generation("nix:abc")
    observer.observed("nix:abc")
    assert observer.generation("nix:abc") != before
    await asyncio.sleep(2 * POLL_INTERVAL + 0.1)  # two polls of the other process
    assert other.generation("nix:abc") == elsewhere


async def test_the_follower_task_lives_and_dies_with_the_depot(tmp_path: Path) -> None:
    app = create_app(store_path=tmp_path / "store")
    depot = app.state.depot
    await depot.startup()
    assert depot.changes.running
    await depot.shutdown()
    assert not depot.changes.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "depot-changes"]


async def test_a_depot_that_cannot_follow_changes_trusts_no_cached_generation(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'depot.db'}")
    await database.connect()
    await database.migrate([CHANGES_SCHEMA])
    changes = Changes()
    await changes.start(database)
    try:
        before = changes.generation("pypi:demo")
        await database.execute("DROP TABLE depot_changes")  # every poll now fails
        start = time.monotonic()
        while changes.generation("pypi:demo") == before:
            assert time.monotonic() - start < WITHIN, "a failing poll left caches trusted"
            await asyncio.sleep(0.01)
    finally:
        await changes.stop()
        await database.disconnect()


async def trusted_again(changes: Changes, topic: str, generation: int) -> None:
    """Wait (with a deadline) until ``topic`` answers ``generation`` again.

    A poll's rows come back a loop turn before the follower records when that poll began, and
    in that turn the last recorded poll began more than the bound ago: :meth:`Changes.generation`
    answers a fresh negative value, which a cache never matches. What must not happen is that
    the generation moves for good, as a poll counted as failed would make it.
    """
    deadline = time.monotonic() + 5
    while (current := changes.generation(topic)) != generation:
        assert current < 0, f"{topic} moved to {current}: the caches were emptied"
        assert time.monotonic() < deadline, f"{topic} never trusted again"
        await asyncio.sleep(0.01)


async def test_a_slow_poll_keeps_the_caches(tmp_path: Path) -> None:
    """A poll slower than usual (a loaded machine) is not a failure: generations of untouched
    topics stay put, so cached documents are reused, and changes are still followed."""
    url = f"sqlite:///{tmp_path / 'depot.db'}"
    writer_db, reader_db = Database(url), Database(url)
    for database in (writer_db, reader_db):
        await database.connect()
        await database.migrate([CHANGES_SCHEMA])
    polls = 0
    fetch_all = reader_db.fetch_all

    async def slow_fetch_all(*args: object, **kwargs: object) -> object:
        nonlocal polls
        await asyncio.sleep(0.6)  # slower than the 0.5 s that used to count as a failure
        rows = await fetch_all(*args, **kwargs)  # type: ignore[arg-type]
        polls += 1
        return rows

    reader_db.fetch_all = slow_fetch_all  # type: ignore[method-assign]
    writer, reader = Changes(), Changes()
    await writer.start(writer_db)
    await reader.start(reader_db)
    try:
        untouched = reader.generation("npm:other")
        seen = polls
        deadline = time.monotonic() + 30
        while polls < seen + 3:  # three slow polls completed
            assert time.monotonic() < deadline, "the follower stopped polling"
            await asyncio.sleep(0.01)
        await trusted_again(reader, "npm:other", untouched)
        before = reader.generation("npm:left-pad")
        await writer.notify("npm:left-pad")
        while (after := reader.generation("npm:left-pad")) == before or after < 0:
            assert time.monotonic() < deadline, "a change was never seen"
            await asyncio.sleep(0.01)
        await trusted_again(reader, "npm:other", untouched)
    finally:
        await writer.stop()
        await reader.stop()
        await writer_db.disconnect()
        await reader_db.disconnect()


async def test_a_follower_behind_the_bound_reuses_nothing(tmp_path: Path) -> None:
    """Polls slower than the bound: the process cannot vouch for other processes' changes, so
    no generation is reused (documents are read afresh) until a poll completes again."""
    database = Database(f"sqlite:///{tmp_path / 'depot.db'}")
    await database.connect()
    await database.migrate([CHANGES_SCHEMA])
    fetch_all = database.fetch_all

    async def stuck_fetch_all(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(BOUND * 3)
        return await fetch_all(*args, **kwargs)  # type: ignore[arg-type]

    changes = Changes()
    await changes.start(database)
    database.fetch_all = stuck_fetch_all  # type: ignore[method-assign]
    try:
        before = changes.generation("pypi:demo")
        deadline = time.monotonic() + 30
        while changes.generation("pypi:demo") == before:
            assert time.monotonic() < deadline, "a follower far behind left caches trusted"
            await asyncio.sleep(0.01)
        assert changes.generation("pypi:demo") != changes.generation("pypi:demo")
    finally:
        await changes.stop()
        await database.disconnect()
