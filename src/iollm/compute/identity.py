"""Who a provider is: an Ed25519 key kept in the provider's home (0600), named by its public key.

The node knows a provider only by that public key, so every registration, every worker connection and
every meter record can be checked against it, and nothing a provider claims needs to be taken on trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import signing
from ..errors import Conflict, NotFound, ProtocolError

KEY_FILE = "provider.key"
INFO_FILE = "provider.json"


@dataclass(frozen=True)
class ProviderIdentity:
    id: str
    name: str
    key: Ed25519PrivateKey

    def sign(self, payload: Any) -> str:
        return signing.sign_json(self.key, payload)


def provider_dir(home: Path) -> Path:
    return home / "provider"


def init_identity(home: Path, name: str | None = None, overwrite: bool = False) -> ProviderIdentity:
    """Create the provider key (refusing to replace an existing one unless told to)."""
    folder = provider_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key_path = folder / KEY_FILE
    if key_path.exists() and not overwrite:
        raise Conflict(
            f"{key_path} already exists: this home already has a provider identity (use --force to replace)"
        )
    key = signing.generate_key()
    signing.save_private_key(key, key_path, overwrite=overwrite)
    identity = ProviderIdentity(
        signing.public_key_id(key), name or f"provider-{signing.public_key_id(key)[8:16]}", key
    )
    (folder / INFO_FILE).write_text(json.dumps({"id": identity.id, "name": identity.name}, indent=2) + "\n")
    return identity


def load_identity(home: Path) -> ProviderIdentity:
    folder = provider_dir(home)
    try:
        key = signing.load_private_key(folder / KEY_FILE)
        info = json.loads((folder / INFO_FILE).read_text())
    except FileNotFoundError as exc:
        raise NotFound(f"no provider identity in {folder}: run `iollm provider init` first") from exc
    if info.get("id") != signing.public_key_id(key):
        raise ProtocolError(
            f"{folder / INFO_FILE} does not match {folder / KEY_FILE}; re-run `iollm provider init --force`"
        )
    return ProviderIdentity(info["id"], info["name"], key)


def check_signed(provider_id: str, payload: Any, signature: str, what: str) -> None:
    """Refuse a payload that the provider's key did not sign."""
    if not isinstance(signature, str) or not signing.verify_json(provider_id, payload, signature):
        raise ProtocolError(
            f"{what}: the signature does not match provider {provider_id}; nothing was recorded"
        )
