"""The npm registry's SQL tables and the queries over them.

One row per package (its ``serial`` counts changes, for ``_rev``), per tarball, per
version and per dist-tag. A version row is inserted only after its tarball blob is written and
verified, and never replaced: the primary key refuses a second publish of a version.

Provenance is explicit: local versions and tarballs carry ``provenance`` (``published`` through
``npm publish``, ``pushed`` through ``depot npm push``); content cached from ``--npm-upstream``
lives elsewhere (packuments among the core's held documents, :mod:`depot.core.held`; tarballs
in :data:`cached_tarballs`), each row naming the upstream it came from and when it was fetched,
so that it is never mistaken for, or merged with, what was published here.

The package row holds the packument's top-level fields from the latest publish: description,
readme and readme file name in columns of their own (package pages read them, see
:func:`package_readme`), the others (homepage, repository, keywords, ...) in ``fields``.
Schema 2 added those columns and :data:`login_tokens` (``npm login`` on an open depot);
schema 3 the provenance columns and the tables of cached upstream content; schema 4 moved the
held packuments into the core's table.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from depot.core.database import Database, Schema, contains, json_value
from depot.core.held import migrate_from
from depot.npm.packument import PackageReadme, PackageRecord, VersionRecord, readme_of

metadata = sa.MetaData()

packages = sa.Table(
    "npm_packages",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("modified", sa.String(32), nullable=False),
    sa.Column("serial", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fields", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("readme", sa.Text, nullable=True),
    sa.Column("readme_filename", sa.String(256), nullable=True),
)

tarballs = sa.Table(
    "npm_tarballs",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("filename", sa.String(512), primary_key=True),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha1", sa.String(40), nullable=False),
    sa.Column("sha512", sa.String(100), nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("provenance", sa.String(16), nullable=False, server_default="published"),
    # The garbage collector asks which blob keys rows hold.
    sa.Index("npm_tarballs_blob_key", "blob_key"),
)

versions = sa.Table(
    "npm_versions",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("version", sa.String(256), primary_key=True),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("integrity", sa.String(100), nullable=False),
    sa.Column("shasum", sa.String(40), nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("deprecated", sa.Text, nullable=True),
    sa.Column("provenance", sa.String(16), nullable=False, server_default="published"),
)

dist_tags = sa.Table(
    "npm_dist_tags",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(256), nullable=False),
)

#: Tarballs fetched from the upstream and verified against its packument's integrity.
cached_tarballs = sa.Table(
    "npm_cached_tarballs",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("filename", sa.String(512), primary_key=True),
    sa.Column("upstream_url", sa.String(1024), nullable=False),
    sa.Column("source_url", sa.String(2048), nullable=False),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("integrity", sa.String(200), nullable=False),
    sa.Column("fetched_at", sa.Float, nullable=False),
)

login_tokens = sa.Table(
    "npm_login_tokens",
    metadata,
    # The sha256 of the token: a copy of the table gives no one a token to send.
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(256), nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
)

SCHEMA = Schema(
    name="npm",
    version=4,
    tables=[packages, tarballs, versions, dist_tags, login_tokens, cached_tarballs],
    migrations={
        2: [
            "ALTER TABLE npm_packages ADD COLUMN description TEXT",
            "ALTER TABLE npm_packages ADD COLUMN readme TEXT",
            "ALTER TABLE npm_packages ADD COLUMN readme_filename VARCHAR(256)",
        ],
        3: [
            "ALTER TABLE npm_tarballs ADD COLUMN provenance VARCHAR(16) NOT NULL "
            "DEFAULT 'published'",
            "ALTER TABLE npm_versions ADD COLUMN provenance VARCHAR(16) NOT NULL "
            "DEFAULT 'published'",
        ],
        4: migrate_from("npm_upstream_packuments", "npm", "name"),
    },
)
#: Top-level fields kept in a text column of their own, by packument key.
_TEXT_COLUMNS = {
    "description": "description",
    "readme": "readme",
    "readmeFilename": "readme_filename",
}


def now() -> str:
    """A timestamp as the public registry writes them: ``2024-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ParsedManifests:
    """Decoded version manifests by (name, version), reused while the stored text is the same.

    A packument is rendered anew after every change to its package, from every version's row;
    decoding each version's manifest again was most of that render's cost for a package with
    many versions. Bounded by the bytes of manifest text held (least recently used out); the
    decoded values are shared, so nothing may change them.
    """

    def __init__(self, budget: int = 8 * 1024 * 1024) -> None:
        self.budget = budget
        self.used = 0
        self._held: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()

    def parse(self, name: str, version: str, text: Any) -> Any:
        if not isinstance(text, str):  # a driver that decodes JSON itself
            return json_value(text)
        key = (name, version)
        held = self._held.get(key)
        if held is not None and held[0] == text:
            self._held.move_to_end(key)
            return held[1]
        value = json.loads(text)
        if held is not None:
            self.used -= len(held[0])
        self._held[key] = (text, value)
        self.used += len(text)
        while self.used > self.budget and self._held:
            _, (dropped, _) = self._held.popitem(last=False)
            self.used -= len(dropped)
        return value


#: The version columns with the manifest as its stored text, for :class:`ParsedManifests`.
_VERSION_COLUMNS = [
    sa.type_coerce(column, sa.Text).label("manifest") if column.name == "manifest" else column
    for column in versions.c
]

# Statements run with values (``db.execute(statement, values)``): built and compiled once, which
# on a publish's path costs a fraction of building each per call (see depot.core.prepared).
_NAME = sa.bindparam("name")
_PACKAGE = sa.select(packages).where(packages.c.name == _NAME)
_PACKAGE_README = sa.select(
    packages.c.description, packages.c.readme, packages.c.readme_filename
).where(packages.c.name == _NAME)
_VERSIONS = sa.select(versions).where(versions.c.name == _NAME)
_VERSIONS_AS_TEXT = sa.select(*_VERSION_COLUMNS).where(versions.c.name == _NAME)
_VERSION_NUMBERS = sa.select(versions.c.version).where(versions.c.name == _NAME)
_ANY_VERSION = _VERSION_NUMBERS.limit(1)
_VERSION = sa.select(versions).where(
    versions.c.name == _NAME, versions.c.version == sa.bindparam("version")
)
_VERSION_NUMBER = sa.select(versions.c.version).where(
    versions.c.name == _NAME, versions.c.version == sa.bindparam("version")
)
_DIST_TAGS = sa.select(dist_tags.c.tag, dist_tags.c.version).where(dist_tags.c.name == _NAME)
_REMOVE_DIST_TAG = dist_tags.delete().where(
    dist_tags.c.name == _NAME, dist_tags.c.tag == sa.bindparam("tag")
)
_TARBALL = sa.select(tarballs).where(
    tarballs.c.name == _NAME, tarballs.c.filename == sa.bindparam("filename")
)
#: Bumps the serial in the statement (no read-modify-write); the top-level fields, when given,
#: are column values of the call.
_TOUCH = (
    packages.update()
    .where(packages.c.name == _NAME)
    .values(serial=packages.c.serial + 1, modified=sa.bindparam("modified"))
)


async def load_package(
    db: Database, name: str, manifests: ParsedManifests | None = None
) -> tuple[int, PackageRecord, list[VersionRecord]] | None:
    """The package row, its dist-tags and versions, or None if no such package.

    ``manifests``: decoded manifests to reuse (the registry's, for rendering packuments).
    """
    row = await db.fetch_one(_PACKAGE, {"name": name})
    if row is None:
        return None
    tags = await stored_dist_tags(db, name)
    if manifests is None:
        version_rows = await db.fetch_all(_VERSIONS, {"name": name})
        records = [_version(r) for r in version_rows]
    else:
        version_rows = await db.fetch_all(_VERSIONS_AS_TEXT, {"name": name})
        records = [
            _version(r, manifests.parse(name, r["version"], r["manifest"])) for r in version_rows
        ]
    package = PackageRecord(
        name=name,
        created=row["created"],
        modified=row["modified"],
        fields=_package_fields(row),
        dist_tags=tags,
    )
    return int(row["serial"]), package, records


async def package_readme(db: Database, name: str) -> PackageReadme | None:
    """The description and readme of ``name`` as its latest publish sent them; None if no package.

    For package pages: one row read, unless the package was written before schema 2 kept these
    at the top level (then they come from the latest version's manifest).
    """
    row = await db.fetch_one(_PACKAGE_README, {"name": name})
    if row is None:
        return None
    if row[0] is None and row[1] is None:
        loaded = await load_package(db, name)
        if loaded is None:
            return None
        return readme_of(loaded[1], loaded[2])
    return PackageReadme(name, row[0], row[1], row[2])


def _package_fields(row: Any) -> dict[str, Any]:
    fields = dict(json_value(row["fields"]) or {})
    for key, column in _TEXT_COLUMNS.items():
        if row[column] is not None:
            fields[key] = row[column]
    return fields


def _package_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values for a package's top-level fields: the text columns, the rest as JSON."""
    values: dict[str, Any] = {}
    for key, column in _TEXT_COLUMNS.items():
        value = fields.get(key)
        values[column] = value if isinstance(value, str) else None
    values["fields"] = {
        k: v for k, v in fields.items() if not (k in _TEXT_COLUMNS and isinstance(v, str))
    }
    return values


def _version(row: Any, manifest: Any = None) -> VersionRecord:
    return VersionRecord(
        version=row["version"],
        manifest=json_value(row["manifest"]) if manifest is None else manifest,
        filename=row["filename"],
        integrity=row["integrity"],
        shasum=row["shasum"],
        created=row["created"],
        deprecated=row["deprecated"],
    )


async def version_numbers(db: Database, name: str) -> list[str]:
    """The published versions of a package, without their manifests (cheap)."""
    rows = await db.fetch_all(_VERSION_NUMBERS, {"name": name})
    return [r[0] for r in rows]


async def has_versions(db: Database, name: str) -> bool:
    """Whether ``name`` has any published version (one indexed row read, however many)."""
    return await db.fetch_one(_ANY_VERSION, {"name": name}) is not None


async def published_among(db: Database, name: str, wanted: Sequence[str]) -> tuple[list[str], bool]:
    """Which of ``wanted`` are published versions of ``name``, and whether it has any version.

    What a publish needs to know, without reading every version of a package with thousands
    in the write's transaction, which holds the database's write lock (reading 2,000 of them
    cost more than the whole rest of the publish).
    """
    if len(wanted) == 1:  # nearly every publish: a statement prepared once
        rows = await db.fetch_all(_VERSION_NUMBER, {"name": name, "version": wanted[0]})
    else:
        column = versions.c.version
        rows = await db.fetch_all(
            sa.select(column).where(versions.c.name == name, column.in_(wanted))
        )
    if rows:
        return [r[0] for r in rows], True
    return [], await has_versions(db, name)


async def stored_dist_tags(db: Database, name: str) -> dict[str, str]:
    rows = await db.fetch_all(_DIST_TAGS, {"name": name})
    return {r[0]: r[1] for r in rows}


async def get_version(db: Database, name: str, version: str) -> VersionRecord | None:
    row = await db.fetch_one(_VERSION, {"name": name, "version": version})
    return None if row is None else _version(row)


async def get_tarball(db: Database, name: str, filename: str) -> Any:
    return await db.fetch_one(_TARBALL, {"name": name, "filename": filename})


async def ensure_package(
    db: Database, name: str, fields: dict[str, Any] | None = None, created: str | None = None
) -> None:
    """The package row, if none exists yet; ``created`` is its first version's publish time."""
    stamp = created or now()
    await db.execute(
        db.insert_or_ignore(packages),
        {"name": name, "created": stamp, "modified": stamp, "serial": 0}
        | _package_values(fields or {}),
    )


async def touch(db: Database, name: str, fields: dict[str, Any] | None = None) -> None:
    """Record a change: bump the serial (atomically, no read-modify-write) and ``modified``.

    ``fields``, when given, replace the package's top-level fields (a publish's).
    """
    values: dict[str, Any] = {"name": name, "modified": now()}
    if fields is not None:
        values.update(_package_values(fields))
    await db.execute(_TOUCH, values)


async def add_tarball(
    db: Database,
    name: str,
    filename: str,
    key: str,
    size: int,
    sha1: str,
    sha512: str,
    provenance: str = "published",
) -> bool:
    """Record a stored tarball; False if one of that file name is already recorded.

    One statement: the insert returns its row only when it inserted one.
    """
    inserted = await db.fetch_one(
        db.insert_or_ignore(tarballs, returning=[tarballs.c.filename]),
        {
            "name": name, "filename": filename, "blob_key": key, "size": size, "sha1": sha1,
            "sha512": sha512, "created": now(), "provenance": provenance,
        },
    )  # fmt: skip
    return inserted is not None


async def add_version(
    db: Database, name: str, record: VersionRecord, provenance: str = "published"
) -> bool:
    """Insert a version row; False if the version exists (published versions never change).

    One statement: the insert returns its row only when it inserted one.
    """
    inserted = await db.fetch_one(
        db.insert_or_ignore(versions, returning=[versions.c.version]),
        {
            "provenance": provenance, "name": name, "version": record.version,
            "filename": record.filename, "manifest": dict(record.manifest),
            "integrity": record.integrity, "shasum": record.shasum, "created": record.created,
            "deprecated": record.deprecated,
        },
    )  # fmt: skip
    return inserted is not None


async def set_dist_tag(db: Database, name: str, tag: str, version: str) -> None:
    await db.execute(
        db.upsert(dist_tags, ["name", "tag"], ["version"]),
        {"name": name, "tag": tag, "version": version},
    )


async def remove_dist_tag(db: Database, name: str, tag: str) -> None:
    await db.execute(_REMOVE_DIST_TAG, {"name": name, "tag": tag})


async def set_deprecated(db: Database, name: str, version: str, message: str | None) -> None:
    await db.execute(
        versions.update()
        .where(versions.c.name == name, versions.c.version == version)
        .values(deprecated=message)
    )


async def remove_versions(db: Database, name: str, doomed: Sequence[str]) -> list[str]:
    """Delete version rows, their tags and tarball rows; returns the blob keys now unreferenced."""
    keys: list[str] = []
    for version in doomed:
        record = await get_version(db, name, version)
        if record is None:
            continue
        tarball = await get_tarball(db, name, record.filename)
        await db.execute(
            versions.delete().where(versions.c.name == name, versions.c.version == version)
        )
        await db.execute(
            dist_tags.delete().where(dist_tags.c.name == name, dist_tags.c.version == version)
        )
        await db.execute(
            tarballs.delete().where(tarballs.c.name == name, tarballs.c.filename == record.filename)
        )
        if tarball is not None:
            keys.append(tarball["blob_key"])
    return keys


async def remove_package(db: Database, name: str) -> list[str]:
    """Delete every row of a package; returns the blob keys to delete afterwards."""
    rows = await db.fetch_all(sa.select(tarballs.c.blob_key).where(tarballs.c.name == name))
    for table in (versions, dist_tags, tarballs, packages):
        await db.execute(table.delete().where(table.c.name == name))
    return [r[0] for r in rows]


async def search(db: Database, text: str, size: int, offset: int) -> tuple[int, list[Any]]:
    """Packages whose name contains ``text`` (case-insensitive), by name."""
    condition = contains(packages.c.name, text)
    total = await db.fetch_val(sa.select(sa.func.count()).select_from(packages).where(condition))
    rows = await db.fetch_all(
        sa.select(packages).where(condition).order_by(packages.c.name).limit(size).offset(offset)
    )
    return int(total or 0), list(rows)


# -- content cached from the upstream ----------------------------------------------------------


_CACHED_TARBALL = sa.select(cached_tarballs).where(
    cached_tarballs.c.name == _NAME, cached_tarballs.c.filename == sa.bindparam("filename")
)


async def cached_tarball(db: Database, name: str, filename: str) -> Any:
    """A cached tarball's row (asked once per tarball by a cold install: prepared)."""
    return await db.fetch_one(_CACHED_TARBALL, {"name": name, "filename": filename})


def tarball_row(
    db: Database,
    name: str,
    filename: str,
    upstream_url: str,
    source_url: str,
    blob_key: str,
    size: int,
    integrity: str,
) -> tuple[Any, dict[str, Any]]:
    """A verified cached tarball as a row for ``ctx.group_commit``; a row another replica
    wrote first stays (same bytes)."""
    return db.insert_or_ignore(cached_tarballs), {
        "name": name, "filename": filename, "upstream_url": upstream_url,
        "source_url": source_url, "blob_key": blob_key, "size": size, "integrity": integrity,
        "fetched_at": time.time(),
    }  # fmt: skip


async def forget_cached_tarball(db: Database, name: str, filename: str) -> None:
    await db.execute(
        cached_tarballs.delete().where(
            cached_tarballs.c.name == name, cached_tarballs.c.filename == filename
        )
    )


async def referenced_blob_keys(db: Database, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` a tarball row points at, published or cached from the upstream (the
    core counts the held packuments' blobs itself)."""
    found: set[str] = set()
    for column in (tarballs.c.blob_key, cached_tarballs.c.blob_key):
        rows = await db.fetch_all(sa.select(column).where(column.in_(list(keys))).distinct())
        found.update(row[0] for row in rows)
    return found


class NpmBlobReferences:
    """The npm ecosystem's reachability for the garbage collector (``depot_blob_references``)."""

    ecosystem = "npm"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def referenced(self, keys: Sequence[str]) -> set[str]:
        return await referenced_blob_keys(self.ctx.db, keys)
