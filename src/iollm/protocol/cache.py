"""The client's local cache of pulled files: each file body once, by SHA-256, plus where its chunks are.

The chunk index is what makes the second version of a model cheap to pull: any chunk already present
in some cached file is copied locally (and re-verified) instead of fetched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    digest BLOB PRIMARY KEY,
    sha256 TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refs (
    repo TEXT NOT NULL,
    revision TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, revision)
);
"""


class LocalCache:
    """Blobs by SHA-256 under ``root/blobs`` and a SQLite index of the chunks inside them."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.root / "index.sqlite", timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def incomplete_path(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.incomplete"

    def snapshot_path(self, repo_type: str, repo_id: str, commit_id: str) -> Path:
        namespace, name = repo_id.split("/", 1)
        return self.root / "snapshots" / f"{repo_type}s--{namespace}--{name}" / commit_id

    def has_blob(self, sha256: str, size: int) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and path.stat().st_size == size

    def locate(self, digests: list[bytes]) -> dict[bytes, tuple[Path, int, int]]:
        """Chunks already present in complete blobs: digest -> (blob path, offset, length)."""
        found: dict[bytes, tuple[Path, int, int]] = {}
        db = self._db()
        for start in range(0, len(digests), 900):
            batch = digests[start : start + 900]
            marks = ",".join("?" * len(batch))
            for digest, sha256, offset, length in db.execute(
                f"SELECT digest, sha256, offset, length FROM chunks WHERE digest IN ({marks})", batch
            ):
                path = self.blob_path(sha256)
                if path.is_file():
                    found[digest] = (path, offset, length)
        return found

    def add_blob(self, sha256: str, chunks: list[tuple[bytes, int]]) -> None:
        rows = []
        offset = 0
        for digest, length in chunks:
            rows.append((digest, sha256, offset, length))
            offset += length
        db = self._db()
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")

    def remember_ref(self, repo: str, revision: str, commit_id: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", (repo, revision, commit_id))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
