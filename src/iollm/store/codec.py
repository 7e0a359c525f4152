"""Per-chunk compression, used only where it pays (bf16/fp16 weights, text; not quantized GGUF)."""

from __future__ import annotations

import threading

import zstandard

RAW = 0
ZSTD = 1
MIN_SAVING = 0.10  # compress only when it saves at least 10 %

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_local, "comp", None)
    if comp is None:
        comp = _local.comp = zstandard.ZstdCompressor(level=1)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "dec", None)
    if dec is None:
        dec = _local.dec = zstandard.ZstdDecompressor()
    return dec


def compress(data: bytes | memoryview) -> bytes:
    return _compressor().compress(data)


def decompress(data: bytes | memoryview, raw_length: int) -> bytes:
    return _decompressor().decompress(data, max_output_size=raw_length)


def encode(data: bytes | memoryview, try_compress: bool) -> tuple[int, bytes | memoryview]:
    """Return (codec, payload): zstd only when it shrinks the chunk by MIN_SAVING."""
    if try_compress:
        packed = compress(data)
        if len(packed) <= len(data) * (1 - MIN_SAVING):
            return ZSTD, packed
    return RAW, data


def decode(codec: int, payload: bytes | memoryview, raw_length: int) -> bytes | memoryview:
    if codec == RAW:
        return payload
    if codec == ZSTD:
        return decompress(payload, raw_length)
    raise ValueError(f"unknown chunk codec {codec}")


class AdaptiveEncoder:
    """Encodes a stream of chunks, re-deciding every 32nd chunk whether compression pays.

    Incompressible data (quantized weights) then costs one trial compression in 32 chunks.
    """

    def __init__(self) -> None:
        self._seen = 0
        self._pays = False

    def encode(self, data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
        probe = self._seen % 32 == 0
        self._seen += 1
        if not (probe or self._pays):
            return RAW, data
        codec, payload = encode(data, try_compress=True)
        if probe:
            self._pays = codec == ZSTD
        return codec, payload
