"""Where a node keeps its state, and how it is started."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8700


def default_home() -> Path:
    """``IOLLM_HOME``, else ``~/.iollm``."""
    return Path(os.environ.get("IOLLM_HOME") or Path.home() / ".iollm").expanduser()


@dataclass
class NodeConfig:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    seed: bool = True
    upstreams: list[str] = field(default_factory=list)
    database: str | None = None  # URL; default SQLite file in the home
    anonymous_inference: bool = False  # allow inference without a token (local use)
    memory_budget: int | None = None  # bytes of model weights kept loaded; default: half the RAM
    context_length: int = 4096  # default context window for models that do not set num_ctx
    scheduler: str | None = None  # external Dask scheduler (tcp://...); default: one on loopback
    scheduler_port: int = 0  # port of the node's own scheduler (0 = any free port)
    audit_rate: float = 0.1  # share of path-eval units re-executed on another provider
    max_body_bytes: int | None = None  # JSON APIs; default IOLLM_MAX_BODY_BYTES, else 8 MiB
    max_upload_bytes: int | None = None  # one chunk batch; default IOLLM_MAX_UPLOAD_BYTES, else 256 MiB
    max_json_depth: int | None = None  # default IOLLM_MAX_JSON_DEPTH, else 64

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class HomeLayout:
    """The files of a node's home folder."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "node.sqlite"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def secret(self) -> Path:
        return self.root / "secret"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def prepare(self) -> None:
        for folder in (self.root, self.store, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def hmac_secret(self) -> bytes:
        """A per-node secret for signed upload URLs, created once (0600)."""
        if not self.secret.exists():
            fd = os.open(self.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return bytes.fromhex(self.secret.read_text().strip())

    def read_token(self) -> str | None:
        try:
            return self.token.read_text().strip() or None
        except FileNotFoundError:
            return None
