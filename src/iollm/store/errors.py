"""Errors of the chunk store, each naming the chunk at fault."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for chunk store errors."""


class ChunkMissing(StoreError):
    def __init__(self, digest: bytes) -> None:
        self.digest = digest
        super().__init__(f"chunk {digest.hex()} is not in this store")


class ChunkCorrupt(StoreError):
    def __init__(self, digest: bytes, reason: str) -> None:
        self.digest = digest
        self.reason = reason
        where = f"chunk {digest.hex()}: " if digest else ""
        super().__init__(f"{where}{reason}")
