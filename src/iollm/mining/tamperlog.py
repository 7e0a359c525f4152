"""The tamper-evident log: every transfer, agreement version, meter record and breakthrough becomes a
leaf of an RFC 9162 Merkle tree, appended in the same database transaction as the change it records.
Checkpoints (tree size, root, time) are signed by the node key, so anyone holding the node's public key
can check an inclusion proof, and ``verify`` detects any change, deletion, reordering or truncation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, func, select

from .. import signing
from ..database import Database, utc_now_iso
from .checkpoint import Checkpoint, utc_timestamp
from .merkle import MerkleLog, inclusion_proof, leaf_hash, verify_inclusion
from .tables import checkpoints, insert_many, log_entries

CHECKPOINT_EVERY = 1000  # entries between automatic signed checkpoints


_ENTRY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # one encoder, not one per entry


def entry_bytes(kind: str, ref: str, body: dict[str, Any]) -> bytes:
    """Canonical JSON: the leaf's data, byte for byte what the tree hashes."""
    return _ENTRY_JSON.encode({"kind": kind, "ref": ref, "body": body}).encode()


class TamperLog:
    """The Merkle tree lives in memory (rebuilt from stored leaf hashes at start); leaves live in the DB."""

    def __init__(self, db: Database, key: Ed25519PrivateKey) -> None:
        self.db = db
        self.key = key
        self.key_id = signing.public_key_id(key)
        self.origin = f"iollm ledger {self.key_id[8:24]}"
        self._lock = threading.Lock()
        with db.read() as conn:
            hashes = [
                bytes.fromhex(h)
                for (h,) in conn.execute(select(log_entries.c.leaf_hash).order_by(log_entries.c.seq))
            ]
        self.tree = MerkleLog(hashes)

    def append(self, conn: Connection, kind: str, ref: str, body: dict[str, Any]) -> int:
        """Add a leaf inside the caller's write transaction (which serialises writers)."""
        return self.append_many(conn, [(kind, ref, body)])[0]

    def append_many(self, conn: Connection, entries: Sequence[tuple[str, str, dict[str, Any]]]) -> list[int]:
        """Add leaves ``(kind, ref, body)`` in order with one multi-row insert; returns their indexes."""
        return self.append_encoded(
            conn, [(kind, ref, entry_bytes(kind, ref, body).decode()) for kind, ref, body in entries]
        )

    def append_encoded(self, conn: Connection, entries: Sequence[tuple[str, str, str]]) -> list[int]:
        """``append_many`` for callers that already hold each entry's canonical JSON text (exactly
        ``entry_bytes(kind, ref, body)``), made faster than a generic encoder can."""
        if not entries:
            return []
        first = self._next_seq(conn)
        now = utc_now_iso()
        rows, leaves = [], []
        for seq, (kind, ref, text) in enumerate(entries, start=first):
            digest = leaf_hash(text.encode())
            rows.append(
                {
                    "seq": seq,
                    "kind": kind,
                    "ref": ref,
                    "entry": text,
                    "leaf_hash": digest.hex(),
                    "created_at": now,
                }
            )
            leaves.append((seq, digest))
        insert_many(conn, log_entries, rows)
        conn.info["iollm_next_seq"] = first + len(rows)
        conn.info.setdefault("iollm_log_leaves", []).extend(leaves)
        return [seq for seq, _ in leaves]

    @staticmethod
    def _next_seq(conn: Connection) -> int:
        """Read once per transaction; writers are serialised, so it cannot change under us."""
        seq = conn.info.get("iollm_next_seq")
        if seq is None:
            seq = conn.execute(select(func.coalesce(func.max(log_entries.c.seq), -1))).scalar_one() + 1
        return seq

    @staticmethod
    def mark(conn: Connection) -> tuple[int | None, int]:
        """Where this transaction's appends stand (to ``rewind`` to after rolling back a savepoint)."""
        return conn.info.get("iollm_next_seq"), len(conn.info.get("iollm_log_leaves", []))

    @staticmethod
    def rewind(conn: Connection, mark: tuple[int | None, int]) -> None:
        """Forget the leaves appended since ``mark``: their savepoint was rolled back."""
        seq, count = mark
        if seq is None:
            conn.info.pop("iollm_next_seq", None)
        else:
            conn.info["iollm_next_seq"] = seq
        del conn.info.get("iollm_log_leaves", [])[count:]

    def take(self, conn: Connection) -> list[tuple[int, bytes]]:
        """The leaves this transaction appended (call just before it commits)."""
        conn.info.pop("iollm_next_seq", None)
        return conn.info.pop("iollm_log_leaves", [])

    def committed(self, leaves: list[tuple[int, bytes]]) -> None:
        """After the transaction committed: extend the in-memory tree, and checkpoint when due."""
        due = False
        with self._lock:
            for seq, digest in sorted(leaves):
                if seq != self.tree.size:  # another process wrote entries in between: read them first
                    self._catch_up()
                if seq == self.tree.size:
                    self.tree.append_leaf_hash(digest)
                due = due or self.tree.size % CHECKPOINT_EVERY == 0
        if due:
            self.checkpoint()

    def _catch_up(self) -> None:
        with self.db.read() as conn:
            rows = conn.execute(
                select(log_entries.c.leaf_hash)
                .where(log_entries.c.seq >= self.tree.size)
                .order_by(log_entries.c.seq)
            ).all()
        for (digest,) in rows:
            self.tree.append_leaf_hash(bytes.fromhex(digest))

    def refresh(self) -> None:
        """Pick up entries other processes appended."""
        with self._lock:
            self._catch_up()

    # -- checkpoints and proofs ------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Sign the current tree head and store it (idempotent per tree size)."""
        with self._lock:
            self._catch_up()
            size, root = self.tree.size, self.tree.root()
        made = Checkpoint(self.origin, size, root, utc_timestamp())
        signature = made.sign(self.key)
        with self.db.write() as conn:
            existing = conn.execute(select(checkpoints).where(checkpoints.c.tree_size == size)).first()
            if existing is None:
                conn.execute(
                    checkpoints.insert().values(
                        tree_size=size,
                        root=root.hex(),
                        text=made.to_text(),
                        signature=signature,
                        created_at=utc_now_iso(),
                    )
                )
            else:
                return dict(existing._mapping)
        return {"tree_size": size, "root": root.hex(), "text": made.to_text(), "signature": signature}

    def latest_checkpoint(self) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)).first()
        with self._lock:
            size = self.tree.size
        if row is None or row.tree_size < size:
            return self.checkpoint()
        return dict(row._mapping)

    def prove(self, seq: int) -> dict[str, Any]:
        """An inclusion proof of entry ``seq`` against the latest signed checkpoint."""
        head = self.latest_checkpoint()
        with self.db.read() as conn:
            row = conn.execute(select(log_entries).where(log_entries.c.seq == seq)).first()
        if row is None or seq >= head["tree_size"]:
            from ..protocol import NotFound

            raise NotFound(f"log entry {seq} does not exist (the log has {head['tree_size']} entries)")
        with self._lock:
            proof = inclusion_proof(seq, head["tree_size"], self.tree)
        return {
            "entry": row.entry,
            "index": seq,
            "tree_size": head["tree_size"],
            "leaf_hash": row.leaf_hash,
            "proof": [p.hex() for p in proof],
            "root": head["root"],
            "checkpoint": head["text"],
            "signature": head["signature"],
            "node_key": self.key_id,
        }


def check_proof(proof: dict[str, Any]) -> tuple[bool, str]:
    """Offline check of a proof from ``prove``: the checkpoint is signed by the given node key, the
    entry hashes to the leaf, and the leaf is in the tree the checkpoint names."""
    try:
        head = Checkpoint.from_text(proof["checkpoint"])
    except (KeyError, ValueError) as exc:
        return False, f"malformed checkpoint: {exc}"
    if not head.verify(proof["node_key"], proof["signature"]):
        return False, "the checkpoint is not signed by that node key"
    if head.tree_size != proof["tree_size"] or head.root_hash.hex() != proof["root"]:
        return False, "the proof does not match the signed checkpoint"
    leaf = leaf_hash(proof["entry"].encode())
    if leaf.hex() != proof["leaf_hash"]:
        return False, "the entry does not hash to the leaf"
    ok = verify_inclusion(
        leaf, proof["index"], proof["tree_size"], [bytes.fromhex(p) for p in proof["proof"]], head.root_hash
    )
    return (True, "entry is in the signed log") if ok else (False, "the inclusion proof does not verify")
