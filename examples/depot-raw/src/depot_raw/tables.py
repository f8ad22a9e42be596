"""depot-raw's one table: a name points at a content-addressed blob."""

import sqlalchemy as sa

metadata = sa.MetaData()

raw_files = sa.Table(
    "raw_files",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    # The garbage collector asks which blobs rows point at.
    sa.Index("raw_files_sha256", "sha256"),
)
