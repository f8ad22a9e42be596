"""Reading and writing the cache's rows: narinfos with their signatures, logs, realisations."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import Database
from depot.nix import tables
from depot.nix.narinfo import NarInfo
from depot.nix.nixbase32 import Hash
from depot.nix.signing import Signature

# Statements run with values (``db.execute(statement, values)``): built and compiled once, which
# on an upload's and a lookup's path costs a fraction of building each per call (see
# depot.core.prepared).
_NARINFO_WITH_SIGNATURES = (
    sa.select(tables.narinfos, tables.signatures.c.signature)
    .select_from(
        tables.narinfos.outerjoin(
            tables.signatures, tables.signatures.c.hash_part == tables.narinfos.c.hash_part
        )
    )
    .where(tables.narinfos.c.hash_part == sa.bindparam("hash_part"))
)
_PUBLISHED_NAR = (
    sa.select(tables.narinfos.c.hash_part)
    .where(tables.narinfos.c.nar_key == sa.bindparam("nar_key"))
    .limit(1)
)


async def get_narinfo(db: Database, hash_part: str) -> tuple[NarInfo, str] | None:
    """The stored narinfo under ``hash_part`` and its listing's blob key, or None.

    One query (a row per signature) rather than two: a lookup is the hottest path of a cache.
    """
    rows = await db.fetch_all(_NARINFO_WITH_SIGNATURES, {"hash_part": hash_part})
    if not rows:
        return None
    row = rows[0]
    info = NarInfo(
        store_path=row.store_path,
        url=row.url,
        compression=row.compression,
        nar_hash=Hash.parse(row.nar_hash),
        nar_size=row.nar_size,
        file_hash=Hash.parse(row.file_hash),
        file_size=row.file_size,
        references=tuple(row.references.split()),
        deriver=row.deriver,
        system=row.system,
        ca=row.ca,
        signatures=tuple(
            sorted((Signature.parse(r.signature) for r in rows if r.signature), key=str)
        ),
    )
    return info, row.listing_key


async def nar_is_published(db: Database, nar_key: str) -> bool:
    """True when a verified narinfo points at this NAR file (only those are served)."""
    return await db.fetch_one(_PUBLISHED_NAR, {"nar_key": nar_key}) is not None


async def insert_narinfo(db: Database, info: NarInfo, nar_key: str, listing_key: str) -> bool:
    """Insert a verified narinfo; False when another request published this hash part first."""
    assert info.file_hash is not None and info.file_size is not None
    async with db.transaction():
        result = await db.fetch_one(
            db.insert_or_ignore(tables.narinfos, returning=[tables.narinfos.c.hash_part]),
            {
                "hash_part": info.hash_part, "store_path": info.store_path, "url": info.url,
                "compression": info.compression, "file_hash": str(info.file_hash),
                "file_size": info.file_size, "nar_hash": str(info.nar_hash),
                "nar_size": info.nar_size, "references": " ".join(info.references),
                "deriver": info.deriver, "system": info.system, "ca": info.ca,
                "nar_key": nar_key, "listing_key": listing_key,
            },
        )  # fmt: skip
        if result is None:
            return False
        await add_signatures(db, info.hash_part, info.signatures)
    return True


async def add_signatures(db: Database, hash_part: str, signatures: tuple[Signature, ...]) -> None:
    """Add signatures to a narinfo; ones it already has are left alone."""
    for signature in signatures:
        await db.execute(
            db.insert_or_ignore(tables.signatures),
            {"hash_part": hash_part, "signature": str(signature)},
        )


async def put_build_log(db: Database, drv: str, log_key: str, size: int) -> None:
    await db.execute(
        db.upsert(tables.build_logs, ["drv"], ["log_key", "size"]),
        {"drv": drv, "log_key": log_key, "size": size},
    )


async def build_log_key(db: Database, drv: str) -> str | None:
    row = await db.fetch_one(
        sa.select(tables.build_logs.c.log_key).where(tables.build_logs.c.drv == drv)
    )
    return None if row is None else row.log_key


async def put_realisation(db: Database, realisation_id: str, document: str) -> None:
    await db.execute(
        db.upsert(tables.realisations, ["id"], ["document"]),
        {"id": realisation_id, "document": document},
    )


async def get_realisation(db: Database, realisation_id: str) -> str | None:
    row = await db.fetch_one(
        sa.select(tables.realisations.c.document).where(tables.realisations.c.id == realisation_id)
    )
    return None if row is None else row.document


async def delete_narinfo(db: Database, hash_part: str) -> bool:
    """Delete a narinfo and its signatures in one transaction; False if there was none."""
    async with db.transaction():
        await db.execute(
            tables.signatures.delete().where(tables.signatures.c.hash_part == hash_part)
        )
        deleted = await db.fetch_one(
            tables.narinfos.delete()
            .where(tables.narinfos.c.hash_part == hash_part)
            .returning(tables.narinfos.c.hash_part)
        )
    return deleted is not None


async def nar_and_listing_keys(db: Database, hash_part: str) -> tuple[str, str] | None:
    row = await db.fetch_one(
        sa.select(tables.narinfos.c.nar_key, tables.narinfos.c.listing_key).where(
            tables.narinfos.c.hash_part == hash_part
        )
    )
    return None if row is None else (row[0], row[1])


async def referenced_blob_keys(db: Database, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` a narinfo (NAR, listing) or a build log row points at."""
    n, logs = tables.narinfos, tables.build_logs
    found: set[str] = set()
    for prefix, column in (
        ("nar/", n.c.nar_key),
        ("listing/", n.c.listing_key),
        ("log/", logs.c.log_key),
        # Cached from --nix-upstream (depot.nix.pullthrough).
        ("upstream/nar/", tables.upstream_narinfos.c.nar_key),
        ("upstream/listing/", tables.upstream_narinfos.c.listing_key),
    ):
        wanted = [k for k in keys if k.startswith(prefix)]
        if wanted:
            rows = await db.fetch_all(sa.select(column).where(column.in_(wanted)).distinct())
            found.update(row[0] for row in rows)
    return found


class NixBlobReferences:
    """The nix ecosystem's reachability for the garbage collector (``depot_blob_references``)."""

    ecosystem = "nix"

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx

    async def referenced(self, keys: Sequence[str]) -> set[str]:
        return await referenced_blob_keys(self.ctx.db, keys)
