"""The joint-mining tables: an exact double-entry ledger, agreements, prices, billing and the log."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    # grant | charge | fee | reward_pool | investor | designer | ...
    Column("code", String(24), nullable=False),
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
    Column("state", String(12), nullable=False),  # pending | posted | voided | released
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


COPY_FROM = 64  # rows from which COPY beats one multi-row INSERT on PostgreSQL (it costs more round trips)


def insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys) through the driver: ``executemany`` on SQLite, one
    multi-row INSERT or a COPY on PostgreSQL. SQLAlchemy's per-row parameter processing (and
    psycopg's parsing of a huge multi-row VALUES) costs more than the insert itself when a
    10,000-way split writes its rows."""
    if not rows:
        return
    names = list(rows[0])
    values = list(map(itemgetter(*names), rows)) if len(names) > 1 else [(row[names[0]],) for row in rows]
    quote = conn.dialect.identifier_preparer.quote
    columns = f"{quote(table.name)} ({', '.join(quote(n) for n in names)})"
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(f"INSERT INTO {columns} VALUES ({', '.join('?' * len(names))})", values)
    elif len(values) <= COPY_FROM:
        one = "(" + ", ".join(["%s"] * len(names)) + ")"
        conn.exec_driver_sql(
            f"INSERT INTO {columns} VALUES {', '.join([one] * len(values))}",
            tuple(v for row in values for v in row),
        )
    else:
        raw = conn.connection.driver_connection  # same connection, same transaction
        with raw.cursor() as cursor, cursor.copy(f"COPY {columns} FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)


def select_in(
    conn: Connection, table: Table, columns: Sequence[str], key: str, keys: Collection[str]
) -> list[tuple]:
    """``SELECT columns WHERE key IN keys`` for thousands of keys in few round trips: one array
    parameter on PostgreSQL, chunks of 500 ``?`` on SQLite (far below its parameter limit)."""
    quote = conn.dialect.identifier_preparer.quote
    head = f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table.name)} WHERE {quote(key)}"
    ordered = sorted(keys)
    if conn.dialect.name == "postgresql":
        return [tuple(r) for r in conn.exec_driver_sql(f"{head} = ANY(%s)", (ordered,))] if ordered else []
    out: list[tuple] = []
    for start in range(0, len(ordered), 500):
        chunk = tuple(ordered[start : start + 500])
        out.extend(
            tuple(r) for r in conn.exec_driver_sql(f"{head} IN ({', '.join('?' * len(chunk))})", chunk)
        )
    return out
