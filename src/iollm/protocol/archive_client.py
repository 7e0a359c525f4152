"""The client half of archives: download a node's export of REPO@REVISION to a file, and upload an
archive for the node to import. The node's half (the format, export, checks, import) is
``iollm.hub.archive``; this side only moves bytes, atomically, and lets ``NodeClient.stream`` map
every transport and status error.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ..errors import IollmError
from .client import NodeClient

UPLOAD_BLOCK = 4 << 20
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=600.0)
UPLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=None)  # the node verifies everything first

Progress = Callable[[str, int, int], None]  # (phase, done, total) in bytes
ListCommits = Callable[[Path], list[dict[str, Any]]]  # the commits an archive holds; raises if not one


class _HashingWriter:
    """Writes and hashes on a background thread, so the network, the disk and SHA-256 overlap."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(piece)
                    self.sha.update(piece)
                except BaseException as exc:  # surfaced on the next write or on close
                    self._error = exc

    def write(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def close(self, sync: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if sync:
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()


def download_export(
    client: NodeClient,
    repo_type: str,
    repo_id: str,
    revision: str,
    dest: Path,
    progress: Progress | None = None,
    *,
    list_commits: ListCommits,
) -> dict[str, Any]:
    """Write the node's archive of REPO@REVISION to ``dest`` atomically (temp file, then rename).

    ``list_commits`` reads the downloaded archive before it is moved into place
    (``iollm.hub.archive.list_archive``): what it returns is the result's ``commits``, and an
    archive it refuses is never written."""
    started = time.perf_counter()
    dest = dest.expanduser().absolute()
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    received = 0
    try:
        writer = _HashingWriter(partial)
        try:
            with client.stream(
                "GET",
                f"/api/export/{repo_type}/{repo_id}",
                params={"revision": revision},
                timeout=DOWNLOAD_TIMEOUT,
            ) as response:
                expected = int(response.headers.get("content-length") or -1)
                for piece in response.iter_raw(1 << 20):
                    writer.write(piece)
                    received += len(piece)
                    if progress:
                        progress("exporting", received, max(expected, received))
        finally:
            writer.close()
        if expected >= 0 and received != expected:
            raise IollmError(
                f"the node sent {received} of {expected} bytes (damaged store?); nothing was written"
            )
        commits = list_commits(partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "path": str(dest),
        "bytes": received,
        "sha256": writer.sha.hexdigest(),
        "commits": commits,
        "seconds": round(time.perf_counter() - started, 3),
    }


def upload_import(client: NodeClient, path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Send an archive to the node, streamed from disk; the node verifies it before storing anything."""
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        sent = 0
        with open(path, "rb") as handle:
            while piece := handle.read(UPLOAD_BLOCK):
                sent += len(piece)
                if progress:
                    progress("uploading", sent, size)
                yield piece

    started = time.perf_counter()
    with client.stream(
        "POST",
        "/api/import",
        content=body(),
        headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
        timeout=UPLOAD_TIMEOUT,
    ) as response:
        response.read()
        reply = response.json()
    return {
        **reply,
        "path": str(path),
        "server_seconds": reply.get("seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }
