"""Which commit last changed a file or folder: the ``lastCommit`` that ``list_repo_tree`` and
``get_paths_info`` return with ``expand=True`` (HfFileSystem shows it as ``last_commit``).

Walks first-parent history from the listed commit, comparing each path's content with the parent's,
and stops as soon as every path is placed (or after ``MAX_STEPS`` commits: older changes are then
attributed to the oldest commit examined).
"""

from __future__ import annotations

from typing import Any

from ..errors import RevisionNotFound
from ..protocol import Manifest
from .repos import CommitInfo, Hub

MAX_STEPS = 1000


def _states(manifest: Manifest | None, paths: list[str], folders: set[str]) -> dict[str, Any]:
    if manifest is None:
        return dict.fromkeys(paths)
    by_path = {f.path: (f.sha256, f.size) for f in manifest.files}
    out: dict[str, Any] = {}
    for path in paths:
        if path in folders:
            prefix = path + "/"
            out[path] = tuple(sorted((p, v) for p, v in by_path.items() if p.startswith(prefix)))
        else:
            out[path] = by_path.get(path)
    return out


def last_commits(h: Hub, commit_id: str, paths: list[str], folders: set[str]) -> dict[str, CommitInfo]:
    """path -> the newest commit (at or before ``commit_id``) that changed it."""
    pending = list(dict.fromkeys(paths))
    current_states = _states(h.manifest(commit_id), pending, folders)
    out: dict[str, CommitInfo] = {}
    current: str | None = commit_id
    info: CommitInfo | None = None
    for _ in range(MAX_STEPS):
        if not pending or current is None:
            break
        info = h.commit_info(current)
        parent = info.parents[0] if info.parents else None
        try:
            parent_manifest = h.manifest(parent) if parent else None
        except RevisionNotFound:  # an imported commit whose parent this node lacks
            parent_manifest, parent = None, None
        parent_states = _states(parent_manifest, pending, folders)
        for path in list(pending):
            if parent_states[path] != current_states[path]:
                out[path] = info
                pending.remove(path)
        current_states, current = parent_states, parent
    for path in pending:
        if info is not None:
            out[path] = info
    return out


def as_hf(info: CommitInfo) -> dict[str, str]:
    """The ``lastCommit`` object huggingface_hub parses (id, title, date)."""
    date = info.created_at[:23] + "Z" if len(info.created_at) >= 23 else info.created_at
    return {"id": info.id, "title": info.message.split("\n", 1)[0], "date": date}


def add_last_commits(h: Hub, commit_id: str, items: list[dict[str, Any]]) -> None:
    """``expand=True``: each entry's ``lastCommit`` (the newest commit that changed it)."""
    folders = {i["path"] for i in items if i["type"] == "directory"}
    found = last_commits(h, commit_id, [i["path"] for i in items], folders)
    for item in items:
        if item["path"] in found:
            item["lastCommit"] = as_hf(found[item["path"]])


# -- repository info ---------------------------------------------------------------------------
