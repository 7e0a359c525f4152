"""``iollm ledger verify``: recompute everything from the log and check it against what is stored.

From the log alone: every leaf hash, the tree root at every signed checkpoint (and its signature), and
every balance (by replaying the transfers). Then against the tables: each stored transfer must be in
the log with the same content, each balance must equal the replayed one, and all balances sum to zero.
A changed, deleted, reordered or truncated entry breaks at least one of these.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from .merkle import Checkpoint, MerkleLog, leaf_hash
from .tables import accounts, checkpoints, log_entries, transfers
from .tamperlog import TamperLog

MAX_PROBLEMS = 50


def verify_ledger(log: TamperLog) -> dict[str, Any]:
    started = time.perf_counter()
    db = log.db
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    tree = MerkleLog()
    replayed: dict[str, int] = {}
    logged_transfers: dict[str, dict[str, Any]] = {}
    expected_seq = 0
    with db.read() as conn:
        for seq, entry, stored_hash in conn.execute(
            select(log_entries.c.seq, log_entries.c.entry, log_entries.c.leaf_hash).order_by(log_entries.c.seq)
        ).yield_per(10_000):
            if seq != expected_seq:
                problem(f"log entries {expected_seq}..{seq - 1} are missing (deleted)")
                expected_seq = seq
            expected_seq += 1
            data = entry.encode()
            digest = leaf_hash(data)
            if digest.hex() != stored_hash:
                problem(f"log entry {seq} was changed: its content no longer matches its leaf hash")
            tree.append_leaf_hash(digest)
            try:
                parsed = json.loads(data)
            except json.JSONDecodeError:
                problem(f"log entry {seq} is not valid JSON")
                continue
            if parsed.get("kind") == "transfer":
                body = parsed["body"]
                logged_transfers[body["id"]] = body
                replayed[body["debit"]] = replayed.get(body["debit"], 0) - int(body["amount"])
                replayed[body["credit"]] = replayed.get(body["credit"], 0) + int(body["amount"])
        heads = [dict(r._mapping) for r in conn.execute(select(checkpoints).order_by(checkpoints.c.tree_size))]
        stored_balances = {r.id: int(r.balance) for r in conn.execute(select(accounts.c.id, accounts.c.balance))}
        funded = {r.id: bool(r.funded) for r in conn.execute(select(accounts.c.id, accounts.c.funded))}
        transfer_rows = {
            r.id: r for r in conn.execute(select(transfers)).yield_per(10_000)
        }
    size = tree.size
    for head in heads:
        text = head["text"]
        try:
            checkpoint = Checkpoint.from_text(text)
        except ValueError as exc:
            problem(f"checkpoint at size {head['tree_size']} is malformed: {exc}")
            continue
        if not checkpoint.verify(log.key_id, head["signature"]):
            problem(f"checkpoint at size {checkpoint.tree_size} is not signed by this node's key")
        if checkpoint.tree_size > size:
            problem(f"the log has {size} entries but a signed checkpoint covers {checkpoint.tree_size}: truncated")
        elif tree.root_at(checkpoint.tree_size) != checkpoint.root_hash:
            problem(f"the first {checkpoint.tree_size} entries do not hash to the signed root: changed or reordered")
    for transfer_id, row in transfer_rows.items():
        logged = logged_transfers.get(transfer_id)
        content = {k: getattr(row, k) for k in ("id", "debit", "credit", "amount", "code", "ref_type", "ref_id", "memo")}
        if logged is None:
            problem(f"transfer {transfer_id} is stored but not in the log")
        elif {k: logged.get(k) for k in content} != content:
            problem(f"transfer {transfer_id} differs from its log entry")
    for transfer_id in logged_transfers.keys() - transfer_rows.keys():
        problem(f"transfer {transfer_id} is in the log but missing from the table")
    for account in stored_balances.keys() | replayed.keys():
        if stored_balances.get(account, 0) != replayed.get(account, 0):
            problem(f"balance of {account} is {stored_balances.get(account, 0)} but the log says {replayed.get(account, 0)}")
        if funded.get(account, True) and stored_balances.get(account, 0) < 0:
            problem(f"funded account {account} is negative")
    total = sum(stored_balances.values())
    if total != 0:
        problem(f"balances sum to {total}, not zero")
    return {
        "ok": not problems,
        "entries": size,
        "transfers": len(transfer_rows),
        "accounts": len(stored_balances),
        "checkpoints": len(heads),
        "root": tree.root().hex(),
        "node_key": log.key_id,
        "problems": problems,
        "seconds": round(time.perf_counter() - started, 3),
    }
