"""Content-defined chunking: cut bytes where their content says, name each piece by its BLAKE3 hash.

Cut points depend only on nearby bytes, so an edit in the middle of a file changes only the chunks
around it; every other chunk keeps its name and is never sent or stored twice. The parameters are
part of protocol ``iollm/1``: every node and client must cut identically for ids to agree.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
from pyfastcdc import FastCDC

CHUNK_MIN = 16 * 1024
CHUNK_AVG = 64 * 1024
CHUNK_MAX = 256 * 1024
CHUNKING_SPEC = {
    "algorithm": "fastcdc-2020",
    "min": CHUNK_MIN,
    "avg": CHUNK_AVG,
    "max": CHUNK_MAX,
    "normalization": 1,
    "hash": "blake3",
}

Progress = Callable[[int], None]


def chunk_id(data: bytes | memoryview) -> bytes:
    """The 32-byte BLAKE3 digest that names a chunk."""
    return blake3.blake3(data).digest()


def _chunker() -> FastCDC:
    return FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX, normalized_chunking=1)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One cut of a file: where it is and what it is called."""

    offset: int
    length: int
    digest: bytes


@dataclass(slots=True)
class FileDigest:
    """Everything the protocol needs to know about one file's bytes."""

    size: int
    sha256: str
    chunks: list[Chunk] = field(default_factory=list)

    def chunk_list(self) -> list[tuple[bytes, int]]:
        return [(c.digest, c.length) for c in self.chunks]


def cut(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, memoryview]]:
    """Yield (offset, view) for each content-defined chunk of an in-memory buffer."""
    if len(data) == 0:
        return
    for piece in _chunker().cut_buf(memoryview(data)):
        yield piece.offset, piece.data


def digest_buffer(
    data: bytes | bytearray | memoryview,
    on_chunk: Callable[[bytes, memoryview], None] | None = None,
    progress: Progress | None = None,
) -> FileDigest:
    """Chunk, BLAKE3 and SHA-256 a buffer; SHA-256 runs on a second thread (both release the GIL).

    ``on_chunk(digest, view)`` sees each chunk in file order, e.g. to store it.
    """
    view = memoryview(data)
    sha = hashlib.sha256()
    hasher = threading.Thread(target=sha.update, args=(view,), name="sha256")
    hasher.start()
    chunks: list[Chunk] = []
    try:
        for offset, piece in cut(view):
            digest = chunk_id(piece)
            chunks.append(Chunk(offset, len(piece), digest))
            if on_chunk is not None:
                on_chunk(digest, piece)
            if progress is not None:
                progress(len(piece))
    finally:
        hasher.join()
    return FileDigest(size=len(view), sha256=sha.hexdigest(), chunks=chunks)


class MappedFile:
    """A read-only memory map of a file (empty files map to an empty buffer)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def close(self) -> None:
        self.view.release()
        if self._map is not None:
            self._map.close()
        self._file.close()

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def digest_file(
    path: str | os.PathLike[str],
    on_chunk: Callable[[bytes, memoryview], None] | None = None,
    progress: Progress | None = None,
) -> FileDigest:
    """Chunk and hash a file without reading it into memory."""
    with MappedFile(path) as mapped:
        result = digest_buffer(mapped.view, on_chunk=on_chunk, progress=progress)
    return result


def iter_file_chunks(path: Path, chunks: list[Chunk]) -> Iterator[tuple[Chunk, bytes]]:
    """Re-read the bytes of known chunks of a file (used when uploading the ones a node lacks)."""
    with open(path, "rb") as handle:
        for chunk in chunks:
            handle.seek(chunk.offset)
            yield chunk, handle.read(chunk.length)
