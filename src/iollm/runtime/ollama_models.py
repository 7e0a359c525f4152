"""The model-management side of the Ollama API, over the node's hub: pull, push, create, copy, delete.

Ollama keeps models in a local store fed by a registry. On a node the hub is both: a model is a
repository, its name is ``namespace/name`` (``:latest`` is the main branch), and what Ollama calls
layers are the commit's files. So

- *pull* makes a model's weights ready to load on this node: it resolves the name (pulling the
  repository through from an upstream node when this node follows some and lacks it) and writes each
  weights file out of the store, hashing every byte, with Ollama's progress lines;
- *push* has nothing to send: a model on this node is already in the registry its clients pull from
  (other nodes copy it by mirroring); a name on another host is refused, since the node holds no
  credentials for other registries;
- *create* writes an environment (``runtime.environments``) from the request's fields, rendered as an
  Envfile; uploaded blobs (``/api/blobs``) become the files of a new model;
- *copy* commits the source's files under the new name (no bytes are copied: the store is
  content-addressed); *delete* removes the name's branches and tags, so it no longer lists or resolves,
  while commits that other models were built on stay, as Ollama keeps layers other models share.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFound, ProtocolError, RepoNotFound
from ..hub import Hub, Identity
from ..protocol import FileEntry
from ..store import MappedFile
from ..store.reader import ChunkedFile
from .envfile import BaseRef, Envfile, Message
from .environments import Created, Environments, parse_for_node
from .resolve import ModelNotFound, ModelSpec, Resolver, split_model_id

Progress = Callable[[dict[str, Any]], None]
REPORT_EVERY = 8 * 1024 * 1024  # bytes between two progress lines of one file
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_LEGACY_BLOB_FROM = re.compile(r"^(\s*FROM\s+)@?sha256[:-]([0-9a-f]{64})\s*$", re.IGNORECASE | re.MULTILINE)
# Fields of Ollama's create request that iollm does not implement: refused by name, never ignored.
_UNSUPPORTED_CREATE = {
    "quantize": "quantizing is not supported: quantize the weights (llama.cpp's llama-quantize), "
    "upload the result as a file and create from it",
    "adapters": "LoRA adapters are not supported: merge the adapter into the weights and create from "
    "the merged model",
}


class UnknownBlob(NotFound):
    code = "blob_not_found"


def blob_sha256(digest: str) -> str:
    """``sha256:<hex>`` (Ollama's spelling; ``sha256-<hex>`` is its file name form) -> ``<hex>``."""
    match = _DIGEST.match(digest.strip().lower())
    if not match:
        raise ProtocolError(f"{digest!r} is not a blob digest: write sha256:<64 hex digits>", param="digest")
    return match.group(1)


def model_name(model: str, what: str = "model") -> tuple[str, str | None]:
    """An Ollama model name as (repository id, revision); a name on another host is refused, since
    this node serves its own hub and the nodes it follows, never another registry."""
    name, revision = split_model_id(model)
    if name.count("/") > 1:
        host = name.split("/", 1)[0]
        raise ProtocolError(
            f"{what} {model!r} names another registry ({host}): this node serves its own hub and the "
            "upstream nodes it follows (iollm up --upstream URL); use namespace/name[:latest]",
            param=what,
        )
    return name, revision


def unversioned(model: str, what: str = "model") -> str:
    """A name that a write may target: ``name``, ``ns/name`` or either with ``:latest``."""
    name, revision = model_name(model, what)
    if revision is not None:
        raise ProtocolError(
            f"{what} {model!r} has the tag {revision!r}: a node writes models on their main branch; "
            "name it without a tag (or with :latest), then tag it with `iollm tag`",
            param=what,
        )
    return name


# -- pull ----------------------------------------------------------------------------------------


def is_local(hub: Hub, caller: Identity, model: str) -> bool:
    """Whether ``model`` is in this node's hub already (so resolving it fetches nothing)."""
    name, _ = model_name(model)
    if "/" not in name:
        return True  # a bare name only ever means a local model
    try:
        hub.get_repo(caller, "model", name, pull_through=False)
    except RepoNotFound:
        return False
    return True


def materialize_with_progress(resolver: Resolver, spec: ModelSpec, report: Progress) -> None:
    """Write the model's weights out of the store as the engines load them, hashing every byte and
    reporting each file in Ollama's pull format; a file already written (and verified then) is
    reported complete at once."""
    for entry in spec.weights:
        status = {"status": f"pulling {entry.sha256[:12]}", "digest": f"sha256:{entry.sha256}"}
        blob = resolver.models_dir / "blobs" / entry.sha256
        if not (blob.exists() and blob.stat().st_size == entry.size):
            _write_blob(
                resolver,
                entry,
                blob,
                lambda done, s=status, e=entry: report({**s, "total": e.size, "completed": done}),
            )
        report({**status, "total": entry.size, "completed": entry.size})
    report({"status": "verifying sha256 digest"})
    if spec.weights:  # a remote model has none: nothing of it lives here
        resolver.materialize(spec)  # places the verified blobs where the engine looks
    report({"status": "writing manifest"})


def _write_blob(resolver: Resolver, entry: FileEntry, target: Path, progress: Callable[[int], None]) -> None:
    """One weights file, hashed as it is written; bytes that do not match their SHA-256 never land."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{target.name}.pull-{os.getpid()}-{os.urandom(4).hex()}.tmp")
    sha = hashlib.sha256()
    done = reported = 0
    try:
        with open(temp, "wb") as out:
            chunks = [(bytes.fromhex(d), n) for d, n in entry.chunks]
            for block in ChunkedFile(resolver.hub.store, chunks).iter_range(verify=True):
                sha.update(block)
                out.write(block)
                done += len(block)
                if done - reported >= REPORT_EVERY:
                    progress(done)
                    reported = done
        if sha.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{entry.path}: stored bytes do not match their SHA-256; run `iollm store verify`"
            )
        os.chmod(temp, 0o444)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


# -- push ----------------------------------------------------------------------------------------


def check_push(hub: Hub, resolver: Resolver, caller: Identity, model: str) -> ModelSpec:
    """What pushing ``model`` means here: it must be in this node's hub and the caller must be able to
    publish in its namespace; nothing is uploaded, because the hub is the registry."""
    model_name(model)
    spec = resolver.resolve(caller, model)
    repo = hub.get_repo(caller, "model", spec.repo, pull_through=False)
    caller.require_write(repo.namespace)
    return spec


# -- blobs ---------------------------------------------------------------------------------------


def ingest_blob(hub: Hub, caller: Identity, sha256: str, source: Path) -> None:
    """Store an uploaded blob whose bytes the node hashed to ``sha256`` while receiving them; the
    store hashes them again as it chunks them, and only that hash names the content."""
    with MappedFile(source) as mapped:
        digest = hub.ingest(caller.require_user(), mapped.view)
    if digest.sha256 != sha256:
        raise IntegrityError(f"blob changed while it was stored: sha256:{digest.sha256}, not sha256:{sha256}")


def blob_entry(hub: Hub, caller: Identity, path: str, digest: str) -> FileEntry:
    """The file entry for an uploaded blob, if the caller sent it or can read a model holding it."""
    sha256 = blob_sha256(digest)
    found = hub.content_for(caller, sha256)
    if found is None:
        raise UnknownBlob(
            f"blob sha256:{sha256} (file {path!r}) is not on this node for you: upload it first "
            "(POST /api/blobs/sha256:<hex>, the client's create_blob)"
        )
    size, chunks = found
    try:
        return FileEntry(path=path, size=size, sha256=sha256, chunks=chunks)
    except ValueError as exc:  # the file name: a relative path inside the model, no ".." or "/" first
        raise ProtocolError(f"files: {path!r} is not a valid file name ({exc})", param="files") from None


# -- create --------------------------------------------------------------------------------------


@dataclass
class CreatePlan:
    """A create request read and checked: the new model's name, its Envfile and the uploaded files."""

    name: str
    envfile: Envfile
    files: list[FileEntry]

    @property
    def text(self) -> str:
        return self.envfile.to_text()


def plan_create(hub: Hub, resolver: Resolver, caller: Identity, body: dict[str, Any]) -> CreatePlan:
    """Ollama's create request (0.5+ fields, or a legacy ``modelfile``) as an Envfile over this hub."""
    name = unversioned(body["model"])
    for key, why in _UNSUPPORTED_CREATE.items():
        if body.get(key):
            raise ProtocolError(f"{key}: {why}", param=key)
    files_raw = body.get("files") or {}
    if not isinstance(files_raw, dict) or not all(isinstance(v, str) for v in files_raw.values()):
        raise ProtocolError("files must map file names to blob digests (sha256:<hex>)", param="files")
    files = [blob_entry(hub, caller, str(path), digest) for path, digest in files_raw.items()]
    if isinstance(body.get("modelfile"), str) and body["modelfile"].strip():
        envfile, files = _legacy_envfile(hub, resolver, caller, body["modelfile"], files)
    else:
        envfile = _envfile_from_fields(resolver, caller, body, files)
    parse_for_node(envfile.to_text())  # every value checked as FROM, PARAMETER, MESSAGE... check it
    return CreatePlan(name, envfile, files)


def _base_of(resolver: Resolver, caller: Identity, model: str) -> BaseRef:
    """A model this node serves, pinned to the commit its name means now."""
    model_name(model, "from")
    spec = resolver.resolve(caller, model)
    return BaseRef.from_hub(spec.repo, spec.commit)


def _envfile_from_fields(
    resolver: Resolver, caller: Identity, body: dict[str, Any], files: list[FileEntry]
) -> Envfile:
    source = body.get("from")
    if source and files:
        raise ProtocolError("give either from (a model) or files (uploaded weights), not both", param="files")
    if source:
        if not isinstance(source, str):
            raise ProtocolError("from must be a model name", param="from")
        base = _base_of(resolver, caller, source)
    elif files:
        base = BaseRef(kind="path", path="/nonexistent/iollm-client")  # the uploads, as a folder
    else:
        raise ProtocolError("create needs from (an existing model) or files (uploaded weights)", param="from")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters must be an object", param="parameters")
    licenses = body.get("license") or []
    licenses = [licenses] if isinstance(licenses, str) else licenses
    raw_messages = body.get("messages") or []
    try:
        messages = [Message(str(m.get("role")), str(m.get("content") or "")) for m in raw_messages]
    except (AttributeError, ValueError) as exc:
        raise ProtocolError(f"messages: {exc}", param="messages") from None
    for key in ("template", "system"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ProtocolError(f"{key} must be a string", param=key)
    return Envfile(
        base,
        parameters={str(k): v for k, v in parameters.items() if v is not None},
        template=body.get("template"),
        system=body.get("system"),
        messages=messages,
        licenses=[str(text) for text in licenses],
    )


def _legacy_envfile(
    hub: Hub, resolver: Resolver, caller: Identity, text: str, files: list[FileEntry]
) -> tuple[Envfile, list[FileEntry]]:
    """A Modelfile as older clients send it: ``FROM @sha256:<hex>`` names an uploaded blob (a GGUF
    file), and a hub base is pinned to the commit its name means now (``:latest`` = the main branch)."""
    match = _LEGACY_BLOB_FROM.search(text)
    if match:
        files = [*files, blob_entry(hub, caller, "model.gguf", f"sha256:{match.group(2)}")]
        text = _LEGACY_BLOB_FROM.sub(lambda m: f"{m.group(1)}./model.gguf", text, count=1)
    envfile, _ = parse_for_node(text)
    if envfile.base.kind == "hub":
        revision = envfile.base.revision
        spec = envfile.base.repo or ""
        model = spec if revision in (None, "latest") else f"{spec}@{revision}"
        envfile = envfile.with_base(_base_of(resolver, caller, model))
    return envfile, files


def create_model(envs: Environments, caller: Identity, plan: CreatePlan) -> Created:
    return envs.create(caller, plan.name, plan.text, plan.files or None)


# -- copy and delete -----------------------------------------------------------------------------


def copy_model(hub: Hub, resolver: Resolver, caller: Identity, source: str, destination: str) -> str:
    """Commit the source's files under ``destination`` (the caller must read the one and write the
    other); the store is content-addressed, so no bytes are copied. Returns the new commit."""
    target = unversioned(destination, "destination")
    spec = resolver.resolve(caller, source)
    repo = hub.get_repo(caller, "model", spec.repo, pull_through=False)
    target_id = target if "/" in target else f"{caller.require_user()}/{target}"
    if target_id == repo.repo_id:
        raise ProtocolError("source and destination are the same model", param="destination")
    manifest = hub.manifest(spec.commit)
    copied, _ = hub.commit(
        caller,
        "model",
        target_id,
        list(manifest.files),
        message=f"Copy of {repo.repo_id}@{spec.commit}",
        card=dict(manifest.card),
        private=repo.private,
    )
    resolver.forget()
    return copied.commit_id


def delete_model(hub: Hub, resolver: Resolver, caller: Identity, model: str) -> str:
    """Remove the name (every branch and tag) if the caller may write its namespace; returns the
    repository id. A name the caller cannot read is not found, whoever owns it."""
    name = unversioned(model)
    try:
        repo_id = name if "/" in name else resolver.resolve(caller, name).repo
        repo = hub.get_repo(caller, "model", repo_id, pull_through=False)
    except (RepoNotFound, ModelNotFound):
        raise ModelNotFound(f"model {model!r} not found") from None
    refs = hub.refs(repo)
    if not refs["branches"] and not refs["tags"]:
        raise ModelNotFound(f"model {model!r} not found")
    caller.require_write(repo.namespace)  # 401 without a token, 403 read-only or another namespace
    hub.set_refs(repo, {}, {})
    resolver.forget()
    return repo.repo_id
