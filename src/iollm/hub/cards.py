"""Model cards from file headers: architecture, parameters, quantization, context, chat template, license.

The card is derived from the bytes themselves (GGUF metadata, safetensors headers, config.json), so it
cannot drift from the weights. ``gguf.GGUFReader`` needs the whole file memory-mapped; this reader
parses only the header, streaming it out of the chunk store, so a card costs a few MiB of reads.
"""

from __future__ import annotations

import json
import math
import struct
from typing import IO, Any

import gguf

from ..protocol import FileEntry
from ..store import ChunkStore
from ..store.reader import ChunkedFile
from .front_matter import MAX_FRONT_MATTER, readme_metadata

# GGUF value types (gguf.GGUFValueType) -> struct format of scalars
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_HEADER_ITEMS = 10_000_000
_SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024
_KEEP_ARRAYS = {"general.tags", "general.languages"}


class HeaderError(ValueError):
    """A file claims a format but its header cannot be parsed."""


def _read(handle: IO[bytes], size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise HeaderError("file ends inside its header")
    return data


def _unpack(handle: IO[bytes], fmt: str) -> Any:
    return struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]


def _string(handle: IO[bytes]) -> str:
    length = _unpack(handle, "<Q")
    if length > 64 * 1024 * 1024:
        raise HeaderError("implausible string length in GGUF header")
    return _read(handle, length).decode("utf-8", errors="replace")


def _value(handle: IO[bytes], kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        return _unpack(handle, _SCALARS[kind])
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item_kind = _unpack(handle, "<I")
        count = _unpack(handle, "<Q")
        if count > _MAX_HEADER_ITEMS:
            raise HeaderError("implausible array length in GGUF header")
        if not keep and item_kind in _SCALARS:
            handle.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
            return count
        items = [_value(handle, item_kind, keep) for _ in range(count)]
        return items if keep else count
    raise HeaderError(f"unknown GGUF value type {kind}")


def read_gguf_header(handle: IO[bytes]) -> tuple[dict[str, Any], list[tuple[str, list[int], int]]]:
    """Metadata (arrays other than tags replaced by their length) and tensor infos (name, dims, type)."""
    if _read(handle, 4) != b"GGUF":
        raise HeaderError("not a GGUF file (bad magic)")
    version = _unpack(handle, "<I")
    if version not in (2, 3):
        raise HeaderError(f"unsupported GGUF version {version}")
    n_tensors = _unpack(handle, "<Q")
    n_kv = _unpack(handle, "<Q")
    if n_tensors > _MAX_HEADER_ITEMS or n_kv > _MAX_HEADER_ITEMS:
        raise HeaderError("implausible GGUF header counts")
    meta: dict[str, Any] = {"GGUF.version": version}
    for _ in range(n_kv):
        key = _string(handle)
        kind = _unpack(handle, "<I")
        meta[key] = _value(handle, kind, keep=key in _KEEP_ARRAYS)
    tensors = []
    for _ in range(n_tensors):
        name = _string(handle)
        n_dims = _unpack(handle, "<I")
        dims = [_unpack(handle, "<Q") for _ in range(n_dims)]
        ggml_type = _unpack(handle, "<I")
        _unpack(handle, "<Q")  # offset
        tensors.append((name, dims, ggml_type))
    return meta, tensors


def size_label(params: int) -> str:
    """135_000_000 -> '135M', like the sizes people use in model names."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            value = params / scale
            return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"
    return str(params)


def _quantization_name(file_type: int | None, tensors: list[tuple[str, list[int], int]]) -> str | None:
    if file_type is not None:
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for _, dims, kind in tensors:
        try:
            name = gguf.GGMLQuantizationType(kind).name
        except ValueError:
            name = str(kind)
        counts[name] = counts.get(name, 0) + math.prod(dims)
    return max(counts, key=counts.__getitem__) if counts else None


def gguf_card(handle: IO[bytes]) -> dict[str, Any]:
    meta, tensors = read_gguf_header(handle)
    arch = meta.get("general.architecture")
    params = sum(math.prod(dims) for _, dims, _ in tensors)
    tensor_types: dict[str, int] = {}
    for _, _, kind in tensors:
        try:
            name = gguf.GGMLQuantizationType(kind).name
        except ValueError:
            name = str(kind)
        tensor_types[name] = tensor_types.get(name, 0) + 1
    card = {
        "format": "gguf",
        "gguf_version": meta.get("GGUF.version"),
        "architecture": arch,
        "name": meta.get("general.name"),
        "parameters": params,
        "parameter_size": meta.get("general.size_label") or size_label(params),
        "quantization": _quantization_name(meta.get("general.file_type"), tensors),
        "tensor_types": tensor_types,
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "block_count": meta.get(f"{arch}.block_count"),
        "chat_template": "tokenizer.chat_template" in meta,
        "license": meta.get("general.license"),
        "vocab_size": meta.get("tokenizer.ggml.tokens"),
    }
    return {k: v for k, v in card.items() if v is not None}


def safetensors_card(handle: IO[bytes]) -> dict[str, Any]:
    length = _unpack(handle, "<Q")
    if length > _SAFETENSORS_HEADER_LIMIT:
        raise HeaderError("safetensors header larger than 100 MB")
    try:
        header = json.loads(_read(handle, length))
    except json.JSONDecodeError as exc:
        raise HeaderError(f"safetensors header is not JSON: {exc}") from exc
    params = 0
    dtypes: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = math.prod(info.get("shape", []))
        params += count
        dtypes[info.get("dtype", "?")] = dtypes.get(info.get("dtype", "?"), 0) + count
    card = {
        "format": "safetensors",
        "parameters": params,
        "parameter_size": size_label(params),
        "dtype": max(dtypes, key=dtypes.__getitem__) if dtypes else None,
    }
    return {k: v for k, v in card.items() if v is not None}


def config_card(data: bytes) -> dict[str, Any]:
    """Fields of a Hugging Face config.json that belong on a card."""
    try:
        config = json.loads(data)
    except json.JSONDecodeError:
        return {}
    if not isinstance(config, dict):
        return {}
    archs = config.get("architectures") or []
    card = {
        "architecture": config.get("model_type"),
        "architectures": archs,
        "context_length": config.get("max_position_embeddings"),
        "embedding_length": config.get("hidden_size"),
        "block_count": config.get("num_hidden_layers"),
    }
    return {k: v for k, v in card.items() if v}


# Fields an author may declare at push time that the card takes when the files do not say otherwise.
_CARD_KEYS_FROM_DECLARED = ("license", "base_model", "lineage", "description", "tags", "source", "upstream")


def _reader(store: ChunkStore, entry: FileEntry) -> ChunkedFile:
    return ChunkedFile(store, [(bytes.fromhex(d), n) for d, n in entry.chunks])


def derive_card(store: ChunkStore, files: list[FileEntry], declared: dict[str, Any]) -> dict[str, Any]:
    """Card from the headers of the largest GGUF (else all safetensors shards) and config.json,
    plus the fields the author declared."""
    card: dict[str, Any] = {}
    by_path = {f.path: f for f in files}
    ggufs = sorted((f for f in files if f.path.endswith(".gguf") and f.size > 8), key=lambda f: -f.size)
    shards = [f for f in files if f.path.endswith(".safetensors") and f.size > 8]
    current = ""
    try:
        if ggufs:
            current = ggufs[0].path
            with _reader(store, ggufs[0]).open() as handle:
                card.update(gguf_card(handle))
            card["weights_file"] = current
        elif shards:
            parts = []
            for shard in shards:
                current = shard.path
                with _reader(store, shard).open() as handle:
                    parts.append(safetensors_card(handle))
            card.update(parts[0])
            card["parameters"] = sum(p["parameters"] for p in parts)
            card["parameter_size"] = size_label(card["parameters"])
            card["weights_file"] = shards[0].path
    except HeaderError as exc:
        card["card_error"] = f"{current}: {exc}"
    if "config.json" in by_path and by_path["config.json"].size < 1_000_000:
        config = by_path["config.json"]
        raw = _reader(store, config).read(0, config.size)
        for key, value in config_card(raw).items():
            card.setdefault(key, value)
    readme = by_path.get("README.md")
    if readme is not None and 0 < readme.size <= MAX_FRONT_MATTER * 4:
        meta = readme_metadata(_reader(store, readme).read(0, min(readme.size, MAX_FRONT_MATTER)))
        for key, value in meta.items():
            card.setdefault(key, value)
    for key in _CARD_KEYS_FROM_DECLARED:
        if declared.get(key) is not None and not card.get(key):
            card[key] = declared[key]
    card.setdefault("license", declared.get("license"))
    card["files"] = len(files)
    card["size"] = sum(f.size for f in files)
    if declared:
        card["declared"] = declared
    return card
