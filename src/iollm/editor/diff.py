"""What changed between two versions of a workflow, node by node and field by field, in the terms the
editor draws (added, removed and changed nodes; added and removed edges), not as a text diff."""

from __future__ import annotations

from typing import Any

LAYOUT_KEYS = ("position",)  # moving a node is not a change of what the workflow computes


def _nodes(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(n.get("id")): n for n in graph.get("nodes") or [] if isinstance(n, dict)}


def _edges(graph: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (
            str(e.get("from") or e.get("source")),
            str(e.get("to") or e.get("target")),
            str(e.get("branch") or ""),
        )
        for e in graph.get("edges") or []
        if isinstance(e, dict)
    }


def _edge_json(edge: tuple[str, str, str]) -> dict[str, str]:
    source, target, branch = edge
    return {"from": source, "to": target, **({"branch": branch} if branch else {})}


def diff_graphs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``{added, removed, changed, edges_added, edges_removed, moved, meta, same}`` from ``old`` to ``new``."""
    before, after = _nodes(old), _nodes(new)
    changed = []
    moved = []
    for node_id in sorted(before.keys() & after.keys()):
        a, b = before[node_id], after[node_id]
        fields = {}
        for key in sorted((a.keys() | b.keys()) - {"id", *LAYOUT_KEYS}):
            if a.get(key) != b.get(key):
                fields[key] = {"old": a.get(key), "new": b.get(key)}
        if fields:
            changed.append({"id": node_id, "fields": fields})
        if a.get("position") != b.get("position"):
            moved.append(node_id)
    edges_before, edges_after = _edges(old), _edges(new)
    meta = {
        key: {"old": old.get(key), "new": new.get(key)}
        for key in ("name", "description")
        if old.get(key) != new.get(key)
    }
    result = {
        "added": [after[i] for i in sorted(after.keys() - before.keys())],
        "removed": [before[i] for i in sorted(before.keys() - after.keys())],
        "changed": changed,
        "edges_added": [_edge_json(e) for e in sorted(edges_after - edges_before)],
        "edges_removed": [_edge_json(e) for e in sorted(edges_before - edges_after)],
        "moved": moved,
        "meta": meta,
    }
    result["same"] = not any(
        result[k] for k in ("added", "removed", "changed", "edges_added", "edges_removed", "meta")
    )
    return result
