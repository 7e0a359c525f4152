"""``iollm ledger verify``: recompute everything from the log and check it against what is stored.

From the log alone: every leaf hash, the tree root at every signed checkpoint (and its signature), and
every balance (by replaying the transfers). Then against the tables: each stored transfer must be in
the log with the same content, each balance must equal the replayed one, and all balances sum to zero.
A changed, deleted, reordered or truncated entry breaks at least one of these.

It streams: one pass over the log in large batches, hashing with hashlib and folding the Merkle tree
on a stack of O(log n) hashes, while the transfers table is read alongside in the same order (the
ledger writes both in one order under one lock) and compared row by row. Only if that pairing breaks
is the slower id-by-id comparison run, to say exactly what differs. Everything is read in one snapshot.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Select, select

from .checkpoint import Checkpoint
from .merkle import EMPTY_ROOT
from .tables import accounts, checkpoints, log_entries, transfers
from .tamperlog import TamperLog

MAX_PROBLEMS = 50
BATCH = 20_000  # rows per fetch
FIELDS = ("id", "debit", "credit", "amount", "code", "ref_type", "ref_id", "memo")
_content = itemgetter(*FIELDS)
_decode = json.JSONDecoder().decode
_TRANSFER_COLUMNS = [transfers.c[name] for name in FIELDS]


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(text)


def _stream(conn: Connection, query: Select) -> Iterator[Sequence[Any]]:
    """Rows in batches (a server-side cursor on PostgreSQL), without building them all in memory."""
    yield from conn.execution_options(yield_per=BATCH).execute(query).partitions()


def _fold(stack: list[bytes]) -> bytes:
    """The RFC 6962 root of a right frontier (complete subtrees, left to right)."""
    if not stack:
        return EMPTY_ROOT
    acc = stack[-1]
    for h in reversed(stack[:-1]):
        acc = hashlib.sha256(b"\x01" + h + acc).digest()
    return acc


class _Paired:
    """The stored transfers in order, matched one by one against the logged transfers."""

    def __init__(self, conn: Connection) -> None:
        query = select(*_TRANSFER_COLUMNS).order_by(transfers.c.seq)
        self._rows = (tuple(row) for rows in _stream(conn, query) for row in rows)
        self.aligned = True
        self.count = 0

    def match(self, logged: tuple) -> None:
        if self.aligned and next(self._rows, None) != logged:
            self.aligned = False
        self.count += 1

    def finish(self) -> None:
        if self.aligned and next(self._rows, None) is not None:
            self.aligned = False


@dataclass
class _Scan:
    size: int = 0
    roots: dict[int, bytes] = field(default_factory=dict)
    root: bytes = EMPTY_ROOT
    replayed: dict[str, int] = field(default_factory=dict)


def _scan_log(conn: Connection, sizes: set[int], paired: _Paired, problem: _Problems) -> _Scan:
    """One pass over the log: leaf hashes, roots at checkpoint sizes, replayed balances, pairing."""
    sha = hashlib.sha256
    scan = _Scan(roots={0: EMPTY_ROOT} if 0 in sizes else {})
    stack: list[bytes] = []
    count = expected = 0
    query = select(log_entries.c.seq, log_entries.c.entry, log_entries.c.leaf_hash).order_by(
        log_entries.c.seq
    )
    for rows in _stream(conn, query):
        for seq, entry, stored_hash in rows:
            if seq != expected:
                problem(f"log entries {expected}..{seq - 1} are missing (deleted)")
            expected = seq + 1
            data = entry.encode()
            h = sha(b"\x00" + data).digest()
            if h.hex() != stored_hash:
                problem(f"log entry {seq} was changed: its content no longer matches its leaf hash")
            count += 1
            m = count
            while not m & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                m >>= 1
            stack.append(h)
            if count in sizes:
                scan.roots[count] = _fold(stack)
            _replay(seq, entry, scan.replayed, paired, problem)
    scan.size, scan.root = count, _fold(stack)
    return scan


def _replay(seq: int, entry: str, replayed: dict[str, int], paired: _Paired, problem: _Problems) -> None:
    try:
        parsed = _decode(entry)
    except json.JSONDecodeError:
        problem(f"log entry {seq} is not valid JSON")
        return
    if not isinstance(parsed, dict) or parsed.get("kind") != "transfer":
        return
    try:
        logged = _content(parsed["body"])
    except (KeyError, TypeError):
        problem(f"log entry {seq} is not a well-formed transfer")
        return
    amount, debit, credit = logged[3], logged[1], logged[2]
    if not isinstance(amount, int) or isinstance(amount, bool):
        problem(f"log entry {seq} has a non-integer amount")
        return
    replayed[debit] = replayed.get(debit, 0) - amount
    replayed[credit] = replayed.get(credit, 0) + amount
    paired.match(logged)


def _compare_exactly(conn: Connection, problem: _Problems) -> int:
    """Id by id (slow, memory-hungry): only when stored and logged transfers do not pair up in order.
    Returns the number of stored transfers."""
    logged: dict[str, tuple] = {}
    for rows in _stream(conn, select(log_entries.c.entry).order_by(log_entries.c.seq)):
        for (entry,) in rows:
            try:
                parsed = json.loads(entry)
                if parsed.get("kind") == "transfer":
                    content = _content(parsed["body"])
                    logged[content[0]] = content
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # reported by the scan
    stored = 0
    for rows in _stream(conn, select(*_TRANSFER_COLUMNS).order_by(transfers.c.seq)):
        stored += len(rows)
        for row in rows:
            content = logged.pop(row[0], None)
            if content is None:
                problem(f"transfer {row[0]} is stored but not in the log")
            elif content != tuple(row):
                problem(f"transfer {row[0]} differs from its log entry")
    for transfer_id in logged:
        problem(f"transfer {transfer_id} is in the log but missing from the table")
    return stored


def _check_heads(heads: list[Any], log: TamperLog, scan: _Scan, problem: _Problems) -> None:
    for head in heads:
        try:
            checkpoint = Checkpoint.from_text(head.text)
        except ValueError as exc:
            problem(f"checkpoint at size {head.tree_size} is malformed: {exc}")
            continue
        if not checkpoint.verify(log.key_id, head.signature):
            problem(f"checkpoint at size {checkpoint.tree_size} is not signed by this node's key")
        if checkpoint.tree_size > scan.size:
            problem(
                f"the log has {scan.size} entries but a signed checkpoint covers {checkpoint.tree_size}: truncated"
            )
        elif scan.roots.get(checkpoint.tree_size) != checkpoint.root_hash:
            problem(
                f"the first {checkpoint.tree_size} entries do not hash to the signed root: changed or reordered"
            )


def _check_balances(
    stored: dict[str, tuple[int, bool]], replayed: dict[str, int], problem: _Problems
) -> None:
    for account in stored.keys() | replayed.keys():
        balance, funded = stored.get(account, (0, True))
        if balance != replayed.get(account, 0):
            problem(f"balance of {account} is {balance} but the log says {replayed.get(account, 0)}")
        if funded and balance < 0:
            problem(f"funded account {account} is negative")
    total = sum(balance for balance, _ in stored.values())
    if total != 0:
        problem(f"balances sum to {total}, not zero")


def _sizes(heads: list[Any]) -> set[int]:
    sizes = set()
    for head in heads:
        try:
            sizes.add(Checkpoint.from_text(head.text).tree_size)
        except ValueError:
            continue
    return sizes


def verify_ledger(log: TamperLog) -> dict[str, Any]:
    started = time.perf_counter()
    problem = _Problems()
    with log.db.read() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for every query, as SQLite's read transaction
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        heads = conn.execute(select(checkpoints).order_by(checkpoints.c.tree_size)).all()
        paired = _Paired(conn)
        scan = _scan_log(conn, _sizes(heads), paired, problem)
        paired.finish()
        stored_transfers = paired.count if paired.aligned else _compare_exactly(conn, problem)
        query = select(accounts.c.id, accounts.c.balance, accounts.c.funded)
        stored = {row.id: (int(row.balance), bool(row.funded)) for row in conn.execute(query)}
    _check_heads(heads, log, scan, problem)
    _check_balances(stored, scan.replayed, problem)
    return {
        "ok": not problem.items,
        "entries": scan.size,
        "transfers": stored_transfers,
        "accounts": len(stored),
        "checkpoints": len(heads),
        "root": scan.root.hex(),
        "node_key": log.key_id,
        "problems": problem.items,
        "seconds": round(time.perf_counter() - started, 3),
    }
