"""From a model id (``iollm/smollm2-135m-instruct@v1``, an environment's name, ``smollm2``) to a runnable
spec: which backend, which exact commit and files, which parameters.

Resolution follows environments to their base by commit, so an environment always runs the exact
weights it was created against, and merges parameters (request > environment > base environment).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import IollmError, NotFound, ProtocolError, RepoNotFound
from ..hub import Hub, Identity
from ..protocol import FileEntry, is_commit_id
from ..protocol.pull import place_file
from ..store import ChunkStore
from ..store.reader import ChunkedFile
from .backends import registry
from .backends.registry import BackendType

ENVIRONMENT_FILE = "environment.json"
ENVFILE = "Envfile"
_FOLDER_BACKEND = "transformers"  # what runs an uploaded folder whose weights no engine claims
_CACHE_SECONDS = 1.0


class ModelNotFound(NotFound):
    code = "model_not_found"
    type = "invalid_request_error"


class NotRunnable(ProtocolError):
    code = "model_not_runnable"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load a model and answer requests the way its environment says."""

    model_id: str  # the id callers use, without revision
    repo: str
    commit: str
    backend: str  # a name in backends.registry ("llama.cpp", "transformers", "remote"), or "path"
    weights: tuple[FileEntry, ...] = ()  # GGUF file, or the files of a transformers folder
    base_repo: str = ""
    base_commit: str = ""
    parameters: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    template: str | None = None
    system: str | None = None
    messages: tuple[tuple[str, str], ...] = ()
    remote_url: str | None = None
    remote_model: str | None = None
    remote_api: str = "openai"
    requires: tuple[str, ...] = ()
    requires_key: str = ""
    card: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    environment: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    @cached_property
    def load_key(self) -> str:
        """Same weights + same loading options = one loaded engine shared by every alias. Asked on
        every call, so it is computed once per spec (specs are immutable)."""
        if self.backend == "remote":
            return f"remote:{self.remote_url}:{self.remote_model}"
        options = json.dumps(
            {
                "ctx": self.parameters.get("num_ctx"),
                "threads": self.parameters.get("num_thread"),
                "t": self.template,
                "s": self.system,
                "r": self.requires_key,
            },
            sort_keys=True,
        )
        return f"{self.backend}:{self.base_commit or self.commit}:{options}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.weights)

    @cached_property
    def content_digest(self) -> str:
        """What decides this model's answers (weight digests, backend, parameters, prompt template,
        system prompt and messages, remote endpoint), hashed: the same model published again, on this
        node or another, under a new commit keeps it, so a cache of its answers stays valid. A path
        (no weights, no endpoint) is its commit."""
        if not self.weights and self.backend != "remote":
            return self.commit
        body = {
            "backend": self.backend,
            "weights": sorted((f.path, f.sha256) for f in self.weights),
            "parameters": self.parameters,
            "template": self.template,
            "system": self.system,
            "messages": self.messages,
            "remote": [self.remote_url, self.remote_model, self.remote_api],
            "requires": [list(self.requires), self.requires_key],
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def split_model_id(model: str) -> tuple[str, str | None]:
    """``ns/name@rev`` or Ollama's ``ns/name:tag`` -> (id, revision); ``:latest`` means the main branch."""
    if not model or len(model) > 300:
        raise ProtocolError("a model id is required, e.g. 'iollm/smollm2-135m-instruct'")
    repo, _, revision = model.partition("@")
    if not revision and ":" in repo.rsplit("/", 1)[-1]:
        repo, _, revision = repo.rpartition(":")
        if revision == "latest":
            revision = ""
    return repo, revision or None


class Resolver:
    """Resolves ids against the hub, with a short cache so the hot path costs no database query."""

    def __init__(self, hub: Hub, models_dir: Path) -> None:
        self.hub = hub
        self.models_dir = models_dir
        self._cache: dict[tuple[str, str | None], tuple[float, ModelSpec, str, bool]] = {}
        self._lock = threading.Lock()
        self._materialize_lock = threading.Lock()

    # -- ids -------------------------------------------------------------------------------------

    def _find_repo(self, caller: Identity, name: str):
        if "/" in name:
            return self.hub.get_repo(caller, "model", name)
        try:
            return self.hub.get_repo(caller, "model", f"iollm/{name}", pull_through=False)
        except RepoNotFound:
            matches = [r for r in self.hub.list_repos(caller, "model") if r.name == name]
            if len(matches) == 1:
                return matches[0]
            if matches:
                options = ", ".join(r.repo_id for r in matches)
                raise ProtocolError(f"model {name!r} is ambiguous: use one of {options}") from None
            raise

    def resolve(self, caller: Identity, model: str) -> ModelSpec:
        """The spec for ``model`` as ``caller`` may see it (ModelNotFound otherwise)."""
        name, revision = split_model_id(model)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((name, revision))
        if hit is not None and now - hit[0] < _CACHE_SECONDS:
            _, spec, namespace, private = hit
            if not private or caller.can_read(namespace):
                return spec
        try:
            repo = self._find_repo(caller, name)
            commit = self.hub.resolve(repo, revision)
        except NotFound as exc:
            raise ModelNotFound(
                f"model {model!r} does not exist or you cannot read it: {exc.message} "
                "(list models with GET /v1/models or `iollm ls`)"
            ) from exc
        spec = self.spec_for(repo.repo_id, commit)
        with self._lock:
            self._cache[(name, revision)] = (now, spec, repo.namespace, repo.private)
        return spec

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- specs -----------------------------------------------------------------------------------

    def read_file(self, entry: FileEntry) -> bytes:
        chunks = [(bytes.fromhex(d), n) for d, n in entry.chunks]
        return ChunkedFile(self.hub.store, chunks).read(0, entry.size)

    def spec_for(self, repo_id: str, commit: str, depth: int = 0) -> ModelSpec:
        if depth > 8:
            raise NotRunnable(f"{repo_id}: environments refer to each other more than 8 levels deep")
        manifest = self.hub.manifest(commit)
        card = self.hub.card(commit)
        env_entry = manifest.file(ENVIRONMENT_FILE)
        if env_entry is not None:
            return self._environment_spec(repo_id, commit, json.loads(self.read_file(env_entry)), card, depth)
        for kind in registry.known():
            if any(kind.runs(f.path) for f in manifest.files) and all(manifest.file(n) for n in kind.needs):
                return ModelSpec(
                    repo_id, repo_id, commit, kind.name, _weights(kind, manifest.files), card=card
                )
        missing = "".join(f"no {kind.weights}, " for kind in registry.known() if kind.weights)
        raise NotRunnable(
            f"{repo_id}@{commit[:12]} has {missing.removesuffix(', ')} and no environment.json: "
            "nothing to run. Push weights, or create an environment with `iollm create NAME -f Envfile`."
        )

    def _environment_spec(
        self, repo_id: str, commit: str, env: dict[str, Any], card: dict[str, Any], depth: int
    ) -> ModelSpec:
        base = env.get("base") or {}
        requires = tuple(env.get("requires") or ())
        common: dict[str, Any] = {
            "template": env.get("template"),
            "system": env.get("system"),
            "messages": tuple((m["role"], m["content"]) for m in env.get("messages") or ()),
            "requires": requires,
            "requires_key": env.get("requires_key", ""),
            "card": card,
            "environment": env,
        }
        if "url" in base:
            return ModelSpec(
                repo_id,
                repo_id,
                commit,
                "remote",
                parameters=dict(env.get("parameters") or {}),
                remote_url=base["url"],
                remote_model=base.get("model"),
                remote_api=base.get("api", "openai"),
                **common,
            )
        if base.get("self"):  # FROM a local path: the uploaded weights are in this very commit
            files = [f for f in self.hub.manifest(commit).files if f.path not in (ENVFILE, ENVIRONMENT_FILE)]
            named = env.get("backend")
            kind = (
                registry.find(named) if named else registry.for_files(f.path for f in files)
            ) or registry.named(_FOLDER_BACKEND)
            return ModelSpec(
                repo_id,
                repo_id,
                commit,
                named or kind.name,
                _weights(kind, files),
                base_repo=repo_id,
                base_commit=commit,
                parameters=dict(env.get("parameters") or {}),
                **common,
            )
        base_repo, base_commit = base.get("repo"), base.get("commit")
        if not base_repo or not base_commit or not is_commit_id(base_commit):
            raise NotRunnable(f"{repo_id}: environment.json has no base repository and commit")
        try:
            inner = self.spec_for(base_repo, base_commit, depth + 1)
        except IollmError as exc:
            raise NotRunnable(
                f"{repo_id}: its base {base_repo}@{base_commit[:12]} cannot be loaded: {exc}"
            ) from exc
        merged = {**inner.parameters, **(env.get("parameters") or {})}
        backend = env.get("backend") or inner.backend
        return ModelSpec(
            repo_id,
            repo_id,
            commit,
            backend,
            inner.weights,
            base_repo=inner.base_repo or base_repo,
            base_commit=inner.base_commit or base_commit,
            parameters=merged,
            **{
                **common,
                "template": common["template"] or inner.template,
                "system": common["system"] or inner.system,
                "messages": common["messages"] or inner.messages,
                "requires": requires or inner.requires,
                "requires_key": common["requires_key"] or inner.requires_key,
            },
        )

    # -- files on disk ---------------------------------------------------------------------------

    def materialize(self, spec: ModelSpec) -> Path:
        """Weights as real files (engines need paths): one verified copy per file body, shared by
        every commit that contains it. Returns the GGUF path or the model folder."""
        store: ChunkStore = self.hub.store
        with self._materialize_lock:
            folder = self.models_dir / "snapshots" / (spec.base_commit or spec.commit)
            for entry in spec.weights:
                blob = self.models_dir / "blobs" / entry.sha256
                if not (blob.exists() and blob.stat().st_size == entry.size):
                    _write_verified(store, entry, blob)
                place_file(blob, folder / entry.path)
        kind = registry.find(spec.backend)
        if kind is not None and kind.single_file:
            return folder / spec.weights[0].path
        return folder


def _weights(kind: BackendType, files: list[FileEntry]) -> tuple[FileEntry, ...]:
    """What an engine loads of a repository: its largest weights file, or every file (a folder)."""
    if kind.single_file:
        ours = [f for f in files if kind.runs(f.path)]
        if ours:
            return (max(ours, key=lambda f: f.size),)
    return tuple(files)


def _write_verified(store: ChunkStore, entry: FileEntry, target: Path) -> None:
    import hashlib
    import os

    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".tmp")
    sha = hashlib.sha256()
    with open(temp, "wb") as out:
        for block in ChunkedFile(store, [(bytes.fromhex(d), n) for d, n in entry.chunks]).iter_range(
            verify=True
        ):
            sha.update(block)
            out.write(block)
    if sha.hexdigest() != entry.sha256:
        temp.unlink(missing_ok=True)
        raise IollmError(f"{entry.path}: stored bytes do not match their SHA-256; run `iollm store verify`")
    os.chmod(temp, 0o444)
    os.replace(temp, target)
