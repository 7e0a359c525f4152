"""The YAML front matter of a README.md (the Hub's model/dataset card metadata): where users declare
``tags``, ``license``, ``library_name`` and ``pipeline_tag``, so listings can filter on them."""

from __future__ import annotations

from typing import Any

MAX_FRONT_MATTER = 64 * 1024
_KEYS = ("license", "library_name", "pipeline_tag", "base_model", "language", "datasets")


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items if isinstance(v, (str, int, float)) and str(v)][:100]


def readme_metadata(data: bytes) -> dict[str, Any]:
    """Card fields from ``---``-delimited YAML at the top of a README; {} when absent or malformed
    (a bad card never blocks a commit)."""
    text = data[:MAX_FRONT_MATTER].decode("utf-8", "replace").lstrip("\ufeff")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        import yaml

        meta = yaml.safe_load(text[3:end])
    except Exception:  # any YAML failure means "no metadata"
        return {}
    if not isinstance(meta, dict):
        return {}
    out: dict[str, Any] = {}
    tags = _strings(meta.get("tags") or [])
    if tags:
        out["tags"] = tags
    for key in _KEYS:
        value = meta.get(key)
        if value is None:
            continue
        strings = _strings(value)
        if strings:
            out[key] = strings if isinstance(value, list) else strings[0]
    return out


def hub_tags(card: dict[str, Any]) -> list[str]:
    """The tags the Hub shows and filters on, from a commit's card: format, architecture, library,
    task, ``license:<id>`` and the card's own tags, each once."""
    tags: list[str] = []
    for value in (
        card.get("format"),
        card.get("architecture"),
        card.get("library_name"),
        card.get("pipeline_tag"),
    ):
        if isinstance(value, str) and value:
            tags.append(value)
    if isinstance(card.get("license"), str) and card["license"]:
        tags.append(f"license:{card['license']}")
    declared = card.get("tags") or (card.get("declared") or {}).get("tags") or []
    tags.extend(_strings(declared))
    return list(dict.fromkeys(tags))
