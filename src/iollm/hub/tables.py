"""The hub's tables. Only modules of ``iollm.hub`` touch them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "hub_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(96), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # "user" | "org"
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
)

memberships = Table(
    "hub_memberships",
    metadata,
    Column("org_id", Integer, ForeignKey("hub_users.id"), primary_key=True),
    Column("user_id", Integer, ForeignKey("hub_users.id"), primary_key=True),
    Column("role", String(8), nullable=False),  # "admin" | "write" | "read"
)

tokens = Table(
    "hub_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("hub_users.id"), nullable=False),
    Column("name", String(96), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),  # sha256 of the secret
    Column("scope", String(8), nullable=False),  # "read" | "write"
    Column("created_at", String(32), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("revoked_at", String(32), nullable=True),  # set once, when revoked; never cleared
)

repos = Table(
    "hub_repos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("type", String(8), nullable=False),
    Column("namespace", String(96), nullable=False),
    Column("name", String(96), nullable=False),
    Column("private", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    UniqueConstraint("type", "namespace", "name", name="hub_repos_unique"),
)

commits = Table(
    "hub_commits",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("repo_id", Integer, ForeignKey("hub_repos.id"), nullable=False, index=True),
    Column("manifest", LargeBinary, nullable=False),  # zstd of the canonical manifest JSON
    Column("parents", Text, nullable=False),  # JSON list, copied out of the manifest for history walks
    Column("message", Text, nullable=False),
    Column("author", String(96), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("card", Text, nullable=False),  # JSON card derived from file headers + declared metadata
)

refs = Table(
    "hub_refs",
    metadata,
    Column("repo_id", Integer, ForeignKey("hub_repos.id"), primary_key=True),
    Column("kind", String(8), primary_key=True),  # "branch" | "tag"
    Column("name", String(255), primary_key=True),
    Column("commit_id", String(40), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# File bodies by SHA-256, written only after the node hashed the bytes itself (an upload it received,
# a file it chunked, or a manifest entry it re-read from its chunks): never from a client's claim.
# Hugging Face LFS commits name content by this SHA-256, and a commit whose entry matches a row here
# needs no second hashing pass. (Nodes before this table kept ``hub_blobs``, filled from claims: unused.)
contents = Table(
    "hub_contents",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", LargeBinary, nullable=False),  # 36-byte records: blake3 digest + u32 length
    Column("created_at", String(32), nullable=False),
)

# Which chunks each repository's commits reference: a chunk may be read (fetched, or named in a new
# commit) by whoever can read one of these repositories.
repo_chunks = Table(
    "hub_repo_chunks",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("repo_id", Integer, ForeignKey("hub_repos.id"), primary_key=True),
)

# Chunks a user has proven to hold by sending their bytes (any upload route). Together with
# ``repo_chunks`` this is all a user may name in a commit or learn the existence of.
chunk_uploads = Table(
    "hub_chunk_uploads",
    metadata,
    Column("user_name", String(96), primary_key=True),
    Column("digest", LargeBinary(32), primary_key=True),
)

# Small facts about this database's hub schema (one-time migrations that ran).
hub_meta = Table(
    "hub_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
