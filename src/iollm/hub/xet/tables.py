"""Tables of the Xet side of the hub (on the hub's metadata, so they are created with it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, LargeBinary, String, Table

from ..tables import metadata

# A xorb the node received and verified. ``chunks``: 36-byte records (Xet chunk hash, u32 length),
# computed from the bytes. ``places``: 40-byte records per chunk (SHA-256 of a stored file holding
# it, u64 offset there), all zero while the chunk lives only in the xorb's staging file.
xorbs = Table(
    "hub_xet_xorbs",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("chunks", LargeBinary, nullable=False),
    Column("places", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Who sent a xorb's bytes: they may reference it in a shard.
xorb_uploads = Table(
    "hub_xet_xorb_uploads",
    metadata,
    Column("user_name", String(96), primary_key=True),
    Column("xorb", String(64), primary_key=True),
)

# A file a shard recorded, after the node checked its Merkle hash and computed its SHA-256 from the
# assembled bytes (which it stored as native chunks). ``terms``: 44-byte records (xorb hash, u32
# first chunk, u32 end chunk, u32 bytes).
files = Table(
    "hub_xet_files",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("terms", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Which recorded files reference a xorb: whoever may read one of those files may reference the xorb.
xorb_files = Table(
    "hub_xet_xorb_files",
    metadata,
    Column("xorb", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),
)

# The global dedup index (GET /v1/chunks/...): chunks hf_xet asks about, each with a xorb holding it.
# Indexed are the chunks it asks about: those whose hash passes Xet's eligibility rule (last 8 bytes
# as a little-endian u64 divisible by 1024), filled when a xorb is stored, and each recorded file's
# first chunk, filled when the file is recorded. Who may learn of a xorb is decided per query.
dedup_chunks = Table(
    "hub_xet_dedup_chunks",
    metadata,
    Column("chunk", String(64), primary_key=True),
    Column("xorb", String(64), primary_key=True),
)
