"""The client's local cache of pulled files: each file body once, by SHA-256, plus where its chunks are.

The chunk index is what makes the second version of a model cheap to pull: any chunk already present
in some cached file is copied locally (and re-verified) instead of fetched.

A blob is handed out only after it has been verified. Hashing each blob in full on every pull would
take seconds per gigabyte, so the cache records each blob's size, mtime, ctime, inode and device
once it has checked the SHA-256 (:meth:`LocalCache.has_blob`). When a blob still shows the
recorded values, the cache reuses it without hashing again. If any value differs, the cache hashes
the blob in full. A blob that no longer matches its name leaves the cache and the pull fetches it
again: only its damaged chunks when nothing else links to it (it becomes the partial file of its
own re-download), all of it otherwise.
What fools the check: an edit that leaves all five values as recorded. A normal write changes mtime.
Putting mtime back (``touch -d``, ``os.utime``) changes ctime, which no system call sets. So beating
the check takes changing the clock, writing to the raw device, or media damage (bit rot).
A blob last changed within ``SETTLE_NS`` of being recorded is hashed in full once more on its next
use (the "racily clean" case: an edit in the same timestamp tick would leave mtime unchanged).

Pulled files are placed so that editing one cannot change the cache (see ``pull.place_file``): an
independent copy, cloned copy-on-write (reflink) where the file system supports it. A hard link
(sharing the blob's inode) is used only for the cache's own snapshot folders, or when a caller asks
for it; an edit through such a link is caught by the check above.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from pathlib import Path

from ..store.sqlite import SqlitePerThread

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SETTLE_NS = 2_000_000_000  # coarser than any file system's timestamp granularity (FAT: 2 s)

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
CREATE TABLE IF NOT EXISTS verified (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    device INTEGER NOT NULL,
    checked_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes as they are on disk now."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return EMPTY_SHA256
        with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class LocalCache:
    """Blobs by SHA-256 under ``root/blobs`` and a SQLite index of the chunks inside them."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._db = SqlitePerThread(self.root / "index.sqlite")
        self._db().executescript(_SCHEMA)

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def incomplete_path(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.incomplete"

    def snapshot_path(self, repo_type: str, repo_id: str, commit_id: str) -> Path:
        namespace, name = repo_id.split("/", 1)
        return self.root / "snapshots" / f"{repo_type}s--{namespace}--{name}" / commit_id

    def has_blob(self, sha256: str, size: int) -> bool:
        """Whether a blob of ``size`` bytes with this SHA-256 is present and verified. The check is
        quick when the blob looks exactly as recorded and a full hash otherwise. A blob that fails
        the check is removed (see :meth:`discard_blob`)."""
        path = self.blob_path(sha256)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        if not path.is_file():
            return False
        row = (
            self._db()
            .execute(
                "SELECT size, mtime_ns, ctime_ns, inode, device, checked_ns FROM verified WHERE sha256 = ?",
                (sha256,),
            )
            .fetchone()
        )
        settled = row is not None and tuple(row[:5]) == _signature(st) and row[1] + SETTLE_NS < row[5]
        if not settled:
            if sha256_file(path) != sha256:
                self.discard_blob(sha256)
                return False
            if _signature(os.stat(path)) == _signature(st):  # not changed while it was hashed
                self._record(sha256, st)
        return st.st_size == size

    def _record(self, sha256: str, st: os.stat_result) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sha256, *_signature(st), time.time_ns()),
        )

    def linked(self, sha256: str, before: os.stat_result) -> None:
        """A pull has just hard-linked a verified blob, which changes only its ctime (and link count):
        record the new ctime, so that the link alone does not cost a full hash on the next use."""
        row = (
            self._db()
            .execute(
                "SELECT size, mtime_ns, ctime_ns, inode, device FROM verified WHERE sha256 = ?", (sha256,)
            )
            .fetchone()
        )
        if row is None or tuple(row) != _signature(before):
            return
        now = os.stat(self.blob_path(sha256))
        if (now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev) == (row[0], row[1], row[3], row[4]):
            self._db().execute(
                "UPDATE verified SET ctime_ns = ? WHERE sha256 = ? AND ctime_ns = ?",
                (now.st_ctime_ns, sha256, row[2]),
            )

    def discard_blob(self, sha256: str) -> None:
        """Forget a blob that does not match its name. If nothing else links to it, it becomes the
        partial file of its own re-download: a pull then keeps the chunks that still match and
        fetches only the damaged ones. Otherwise it is unlinked from the cache only, because other
        links (an edited snapshot file) belong to someone else and are left alone."""
        db = self._db()
        db.execute("BEGIN")
        db.execute("DELETE FROM verified WHERE sha256 = ?", (sha256,))
        db.execute("DELETE FROM chunks WHERE sha256 = ?", (sha256,))
        db.execute("COMMIT")
        path = self.blob_path(sha256)
        try:
            if os.stat(path).st_nlink == 1 and not self.incomplete_path(sha256).exists():
                os.replace(path, self.incomplete_path(sha256))
            else:
                path.unlink()
        except FileNotFoundError:
            pass

    def locate(self, digests: list[bytes]) -> dict[bytes, tuple[Path, int, int]]:
        """Chunks already present in complete blobs: digest -> (blob path, offset, length). The
        blobs are not verified here; the caller must check each chunk it reads against its digest
        (``pull._copy_local`` does)."""
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
        """Index a blob that was just written and verified: its chunks and how it looks on disk."""
        rows = []
        offset = 0
        for digest, length in chunks:
            rows.append((digest, sha256, offset, length))
            offset += length
        st = os.stat(self.blob_path(sha256))
        db = self._db()
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)", rows)
        self._record(sha256, st)
        db.execute("COMMIT")

    def remember_ref(self, repo: str, revision: str, commit_id: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", (repo, revision, commit_id))

    def close(self) -> None:
        self._db.close()
