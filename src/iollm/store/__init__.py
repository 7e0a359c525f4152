"""Bytes layer of the sharing protocol: content-defined chunks, BLAKE3 ids, pack files, integrity."""

from .chunking import (
    CHUNKING_SPEC,
    Chunk,
    FileDigest,
    MappedFile,
    chunk_id,
    cut,
    digest_buffer,
    digest_file,
    iter_file_chunks,
)
from .chunkstore import ChunkStore, VerifyReport, forget_ingested, ingested_here
from .errors import ChunkCorrupt, ChunkMissing, StoreError
from .sqlite import SqlitePerThread

__all__ = [
    "CHUNKING_SPEC",
    "Chunk",
    "ChunkCorrupt",
    "ChunkMissing",
    "ChunkStore",
    "FileDigest",
    "MappedFile",
    "SqlitePerThread",
    "StoreError",
    "VerifyReport",
    "chunk_id",
    "cut",
    "digest_buffer",
    "digest_file",
    "forget_ingested",
    "ingested_here",
    "iter_file_chunks",
]
