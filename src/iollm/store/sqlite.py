"""The local SQLite indexes (the chunk store's, the pull cache's, the call cache's) open their files
one way: a connection per thread, WAL journal, autocommit (a transaction is an explicit ``BEGIN``)."""

from __future__ import annotations

import os
import sqlite3
import threading


class SqlitePerThread:
    """Calling it returns this thread's connection to ``path``, opened on first use."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str | None = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous  # None keeps SQLite's default (FULL)
        self._local = threading.local()

    def __call__(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            if self.synchronous is not None:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
