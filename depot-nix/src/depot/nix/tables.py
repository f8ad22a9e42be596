"""The nix ecosystem's SQL tables: narinfo rows that point at verified NAR and listing blobs.

Signatures live in their own table so that two ``nix store sign`` runs adding signatures at the
same time both land (an insert each, no read-modify-write of the narinfo).
"""

from __future__ import annotations

import sqlalchemy as sa
from depot.core.database import Schema

metadata = sa.MetaData()

narinfos = sa.Table(
    "nix_narinfos",
    metadata,
    sa.Column("hash_part", sa.String(32), primary_key=True),
    sa.Column("store_path", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("compression", sa.String(16), nullable=False),
    sa.Column("file_hash", sa.String(128), nullable=False),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("nar_hash", sa.String(128), nullable=False),
    sa.Column("nar_size", sa.BigInteger, nullable=False),
    sa.Column("references", sa.Text, nullable=False),
    sa.Column("deriver", sa.Text),
    sa.Column("system", sa.Text),
    sa.Column("ca", sa.Text),
    # Blob keys inside the nix namespace: the NAR file as uploaded, and the listing depot wrote.
    sa.Column("nar_key", sa.Text, nullable=False),
    sa.Column("listing_key", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # A NAR file is served only when a verified narinfo points at it.
    sa.Index("nix_narinfos_nar_key", "nar_key"),
    # The garbage collector asks which listings (and, below, logs) rows still hold.
    sa.Index("nix_narinfos_listing_key", "listing_key"),
)

signatures = sa.Table(
    "nix_signatures",
    metadata,
    sa.Column("hash_part", sa.String(32), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("hash_part", "signature"),
)

realisations = sa.Table(
    "nix_realisations",
    metadata,
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
)

build_logs = sa.Table(
    "nix_build_logs",
    metadata,
    sa.Column("drv", sa.String(256), primary_key=True),
    sa.Column("log_key", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Index("nix_build_logs_log_key", "log_key"),
)

#: Narinfos fetched from a ``--nix-upstream`` and verified against ``--nix-upstream-key``: the
#: narinfo as the upstream signed it, the upstream it came from and when; ``nar_key`` and
#: ``listing_key`` are set once its NAR was fetched and verified (until then only the narinfo
#: is held). Pushed content lives in ``nix_narinfos``, cached content only here.
upstream_narinfos = sa.Table(
    "nix_upstream_narinfos",
    metadata,
    sa.Column("hash_part", sa.String(32), primary_key=True),
    sa.Column("upstream_url", sa.Text, nullable=False),
    sa.Column("narinfo", sa.Text, nullable=False),
    sa.Column("nar_url", sa.String(256), nullable=False),
    sa.Column("nar_key", sa.Text, nullable=True),
    sa.Column("listing_key", sa.Text, nullable=True),
    sa.Column("fetched_at", sa.Float, nullable=False),
    sa.Index("nix_upstream_narinfos_nar_url", "nar_url"),
)

SCHEMA = Schema(
    name="nix",
    version=2,
    tables=[narinfos, signatures, realisations, build_logs, upstream_narinfos],
)
