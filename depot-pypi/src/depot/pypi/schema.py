"""The pypi ecosystem's SQL table: one row per distribution file.

A row is inserted only after the file's blob (and, for wheels, its core metadata blob) is written
and verified, so every row points at bytes that are there. Blobs are content-addressed
(:func:`blob_key`), so two uploads racing for one filename cannot overwrite each other's bytes:
the first row wins and the loser gets 409.
"""

from __future__ import annotations

import sqlalchemy as sa
from depot.core.database import Schema
from depot.core.held import migrate_from

metadata = sa.MetaData()

pypi_files = sa.Table(
    "pypi_files",
    metadata,
    sa.Column("filename", sa.String(255), primary_key=True),
    sa.Column("project", sa.String(255), nullable=False),  # PEP 503 normalised
    sa.Column("version", sa.String(128), nullable=False),
    sa.Column("packagetype", sa.String(16), nullable=False),  # bdist_wheel | sdist
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("requires_python", sa.Text, nullable=True),
    sa.Column("metadata_sha256", sa.String(64), nullable=True),  # PEP 658, wheels only
    sa.Column("upload_time", sa.String(32), nullable=False),  # ISO 8601 UTC, "...Z" (PEP 700)
    sa.Column("yanked", sa.Text, nullable=True),  # PEP 592: NULL, "" or the reason
    # Bumped by every change of ``yanked`` (schema v2). Cached pages follow yanks through the
    # core's change notification instead (depot.core.changes); this stays a per-file count.
    sa.Column("yank_changes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("blake2_256", sa.String(64), nullable=False),
    sa.Column("fields", sa.JSON, nullable=True),  # the upload form's metadata fields (summary, ...)
    sa.Index("pypi_files_project", "project"),
    # The garbage collector asks which content-addressed blobs rows hold.
    sa.Index("pypi_files_sha256", "sha256"),
    sa.Index("pypi_files_metadata_sha256", "metadata_sha256"),
)

#: Files fetched from an upstream, verified against its page's sha256. Cached content lives
#: only here (provenance: which upstream, from which URL, when), never in ``pypi_files``.
cached_files = sa.Table(
    "pypi_cached_files",
    metadata,
    sa.Column("filename", sa.String(255), primary_key=True),
    sa.Column("project", sa.String(255), nullable=False),
    sa.Column("upstream_url", sa.String(1024), nullable=False),
    sa.Column("source_url", sa.String(2048), nullable=False),
    sa.Column("blob_key", sa.String(1024), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("fetched_at", sa.Float, nullable=False),
)

SCHEMA = Schema(
    name="pypi",
    # Version 4 moved the held project pages into the core's table (depot.core.held).
    version=4,
    tables=[pypi_files, cached_files],
    migrations={
        2: ["ALTER TABLE pypi_files ADD COLUMN yank_changes INTEGER NOT NULL DEFAULT 0"],
        4: migrate_from("pypi_upstream_pages", "pypi", "project"),
    },
)


def blob_key(sha256: str) -> str:
    """Where the bytes with this sha256 live in the ecosystem's blob namespace."""
    return f"sha256/{sha256[:2]}/{sha256}"
