"""Named versions of a workflow, kept in the hub as the space repository ``OWNER/NAME`` holding one
``workflow.json``: each save is a commit (so versions are shared, mirrored and exported like any
repository), a version name also becomes a tag, and restoring commits the old content as the new head."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import NotFound, ProtocolError
from ..hub import Hub, Identity
from ..protocol import FileEntry, check_name
from ..store.reader import ChunkedFile
from .diff import diff_graphs

REPO_TYPE = "space"
WORKFLOW_FILE = "workflow.json"
KIND = "workflow"


def _tag_for(version: str) -> str | None:
    """A tag name for a version name, or None when it cannot be one (the name still lives in the card)."""
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", version.strip()).strip("-.")
    return tag[:100] or None


class Versions:
    """Save, list, read, diff and restore versions of a caller's workflows."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def _repo_id(self, caller: Identity, workflow: str) -> str:
        if "/" in workflow:
            namespace, _, name = workflow.partition("/")
            check_name(namespace, "namespace")
        else:
            namespace, name = caller.require_user(), workflow
        check_name(name, "workflow name")
        return f"{namespace}/{name}"

    def save(
        self, caller: Identity, workflow: str, graph: dict[str, Any], version: str, message: str = ""
    ) -> dict[str, Any]:
        caller.require_user()
        if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
            raise ProtocolError('send {"graph": {...workflow with nodes and edges...}, "version": NAME}')
        version = version.strip() or "untitled"
        repo_id = self._repo_id(caller, workflow)
        data = json.dumps(graph, indent=2, sort_keys=True).encode()
        digest, _ = self.hub.store.ingest_bytes(data)
        entry = FileEntry.from_digest(WORKFLOW_FILE, digest)
        card = {"kind": KIND, "version": version, "nodes": len(graph["nodes"])}
        manifest, repo = self.hub.commit(
            caller, REPO_TYPE, repo_id, [entry], message=message or f"Version {version}", card=card
        )
        tag = _tag_for(version)
        if tag:
            self.hub.tag(caller, repo, manifest.commit_id, tag, force=True)
        return {"workflow": repo_id, "commit": manifest.commit_id, "version": version, "tag": tag}

    def list(self, caller: Identity, workflow: str, limit: int = 200) -> dict[str, Any]:
        repo = self.hub.get_repo(caller, REPO_TYPE, self._repo_id(caller, workflow), pull_through=False)
        tags: dict[str, list[str]] = {}
        for tag, commit in self.hub.refs(repo)["tags"].items():
            tags.setdefault(commit, []).append(tag)
        versions = []
        for info in self.hub.log(repo, limit=limit):
            declared = self.hub.manifest(info.id).card
            versions.append(
                {
                    **info.as_dict(),
                    "version": declared.get("version") or info.message,
                    "nodes": declared.get("nodes"),
                    "tags": sorted(tags.get(info.id, [])),
                }
            )
        return {"workflow": repo.repo_id, "versions": versions}

    def read(self, caller: Identity, workflow: str, revision: str | None = None) -> dict[str, Any]:
        repo = self.hub.get_repo(caller, REPO_TYPE, self._repo_id(caller, workflow), pull_through=False)
        commit = self.hub.resolve(repo, revision)
        entry = self.hub.manifest(commit).file(WORKFLOW_FILE)
        if entry is None:
            raise NotFound(f"{repo.repo_id}@{commit[:12]} has no {WORKFLOW_FILE}; it is not a workflow")
        chunks = [(bytes.fromhex(d), n) for d, n in entry.chunks]
        raw = ChunkedFile(self.hub.store, chunks).read(0, entry.size)
        return {"workflow": repo.repo_id, "commit": commit, "graph": json.loads(raw)}

    def diff(self, caller: Identity, workflow: str, old: str, new: str) -> dict[str, Any]:
        a, b = self.read(caller, workflow, old), self.read(caller, workflow, new)
        return {"old": a["commit"], "new": b["commit"], **diff_graphs(a["graph"], b["graph"])}

    def restore(self, caller: Identity, workflow: str, revision: str) -> dict[str, Any]:
        """Make ``revision`` the newest version again (history is kept: nothing is rewritten)."""
        found = self.read(caller, workflow, revision)
        repo = self.hub.get_repo(caller, REPO_TYPE, found["workflow"], pull_through=False)
        declared = self.hub.manifest(found["commit"]).card
        name = str(declared.get("version") or found["commit"][:12])
        saved = self.save(
            caller,
            found["workflow"],
            found["graph"],
            f"{name} (restored)",
            f"Restore {name} ({found['commit'][:12]})",
        )
        return {**saved, "restored_from": found["commit"], "graph": found["graph"], "repo": repo.repo_id}

    def workflows(self, caller: Identity) -> list[dict[str, Any]]:
        """The workflows the caller can see, newest first."""
        out = []
        for repo in self.hub.list_repos(caller, REPO_TYPE):
            head = self.hub.head(repo)
            if not head:
                continue
            declared = self.hub.manifest(head).card
            if declared.get("kind") != KIND:
                continue
            out.append(
                {
                    "workflow": repo.repo_id,
                    "head": head,
                    "version": declared.get("version"),
                    "updated_at": repo.updated_at,
                }
            )
        return sorted(out, key=lambda w: w["updated_at"], reverse=True)
