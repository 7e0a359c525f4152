"""The joint-mining tables: an exact double-entry ledger, agreements, prices, billing and the log."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

# An account per user (wallet), designer (earnings), provider, model (revenue in transit), the platform
# fee, the reward pool, holds in escrow, and the issuance account that granted credits come from.
accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("balance", BigInteger, nullable=False),  # micro-credits; funded accounts never below zero
    Column("funded", Boolean, nullable=False),  # False only for issuance: it may go negative
    Column("created_at", String(32), nullable=False),
)

transfers = Table(
    "ledger_transfers",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # order of application
    Column("id", String(200), nullable=False, unique=True),  # caller-chosen: repeating it is a no-op
    Column("debit", String(200), nullable=False, index=True),
    Column("credit", String(200), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("code", String(24), nullable=False),  # grant | charge | fee | reward_pool | investor | designer | ...
    Column("ref_type", String(24), nullable=False),  # usage | meter | breakthrough | grant | hold | agreement
    Column("ref_id", String(200), nullable=False),
    Column("memo", Text, nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of the canonical content (idempotency check)
    Column("created_at", String(32), nullable=False),
)

holds = Table(
    "ledger_holds",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("account", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("state", String(12), nullable=False),  # pending | posted | voided
    Column("created_at", String(32), nullable=False),
)

agreements = Table(
    "mining_agreements",
    metadata,
    Column("id", String(40), nullable=False, primary_key=True),
    Column("version", Integer, nullable=False, primary_key=True),
    Column("model", String(200), nullable=False, index=True),
    Column("terms", Text, nullable=False),  # canonical JSON of the terms every party signs
    Column("signatures", Text, nullable=False),  # JSON {party key id: signature}
    Column("state", String(12), nullable=False),  # proposed | in_force | superseded
    Column("created_at", String(32), nullable=False),
)

prices = Table(
    "mining_prices",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("prompt_per_million", BigInteger, nullable=False),
    Column("completion_per_million", BigInteger, nullable=False),
    Column("designer", String(96), nullable=False),
    Column("updated_at", String(32), nullable=False),
)

billed = Table(
    "mining_billed",
    metadata,
    Column("ref_type", String(24), primary_key=True),  # usage | breakthrough
    Column("ref_id", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("state", String(12), nullable=False),  # billed | free | refused | paid | skipped
    Column("detail", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

log_entries = Table(
    "mining_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 0-based leaf index
    Column("kind", String(24), nullable=False),  # transfer | agreement | meter | breakthrough
    Column("ref", String(200), nullable=False),
    Column("entry", Text, nullable=False),  # canonical JSON: the leaf's data
    Column("leaf_hash", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("kind", "ref", name="mining_log_once"),
)

checkpoints = Table(
    "mining_checkpoints",
    metadata,
    Column("tree_size", Integer, primary_key=True),
    Column("root", String(64), nullable=False),
    Column("text", Text, nullable=False),  # the signed checkpoint body
    Column("signature", String(120), nullable=False),
    Column("created_at", String(32), nullable=False),
)

# A hub user's signing key (designers sign agreements with it), bound by a signed request.
keys = Table(
    "mining_keys",
    metadata,
    Column("key_id", String(80), primary_key=True),
    Column("user", String(96), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
)
