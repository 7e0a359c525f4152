"""Read a file back out of the store from its chunk list: whole, by byte range, or as a file object."""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from itertools import accumulate

from .chunkstore import ChunkStore


class ChunkedFile:
    """A file reassembled on the fly; a byte range touches only the chunks that overlap it."""

    def __init__(self, store: ChunkStore, chunks: list[tuple[bytes, int]]) -> None:
        self.store = store
        self.digests = [d for d, _ in chunks]
        self.lengths = [n for _, n in chunks]
        self.starts = [0, *accumulate(self.lengths)]
        self.size = self.starts[-1]

    def iter_range(
        self, start: int = 0, end: int | None = None, verify: bool = True, block: int = 4 << 20
    ) -> Iterator[bytes]:
        """Yield the bytes of [start, end) in blocks of about ``block`` bytes (few large socket writes)."""
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, end) - 1
        position = self.starts[first]
        pending: list[memoryview | bytes] = []
        pending_bytes = 0
        for data in self.store.read_many(self.digests[first : last + 1], verify=verify):
            lo = max(start - position, 0)
            hi = min(end - position, len(data))
            position += len(data)
            pending.append(memoryview(data)[lo:hi])
            pending_bytes += hi - lo
            if pending_bytes >= block:
                yield b"".join(pending)
                pending, pending_bytes = [], 0
        if pending:
            yield b"".join(pending)

    def digests_in(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """The chunks that bytes [start, end) touch."""
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return []
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, end) - 1
        return self.digests[first : last + 1]

    def read(self, start: int, length: int) -> bytes:
        return b"".join(self.iter_range(start, start + length))

    def open(self) -> io.BufferedReader:
        """A seekable binary file object (for header parsers)."""
        return io.BufferedReader(_RawChunkedFile(self), buffer_size=1 << 20)


class _RawChunkedFile(io.RawIOBase):
    def __init__(self, source: ChunkedFile) -> None:
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)
