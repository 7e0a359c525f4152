"""Creating environments: an Envfile becomes a model repository that runs its base the way it says.

An environment repository holds ``Envfile`` (as written) and ``environment.json`` (everything resolved:
the base's exact commit, the backend, parameters, template, system prompt, messages, the pinned package
closure and its key, and the fully pinned Envfile that rebuilds it elsewhere). A hub base is referred to
by commit, so no weight bytes are copied; a local-path base is uploaded by the client and its files
become part of the environment repository itself (``"base": {"self": true}``); a remote base records
the server's URL, model and API.

``environment.json`` depends only on the Envfile and on the base's content, so creating the same
pinned Envfile against the same base commit on another node writes the same bytes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, ProtocolError
from ..hub import Hub, Identity
from ..protocol import FileEntry, split_repo_id
from .backends import registry
from .envfile import BaseRef, Envfile, EnvfileError, EnvfileWarning, Requirement, parse_envfile
from .resolve import ENVFILE, ENVIRONMENT_FILE, NotRunnable, Resolver
from .venvs import VenvManager, requirements_key

# Paths in an Envfile are the client's; the node must never look for them on its own disk.
_CLIENT_DIR = "/nonexistent/iollm-client"
_RESERVED = (ENVFILE, ENVIRONMENT_FILE)
_LICENSE_ID_MAX = 64


class EnvfileInvalid(ProtocolError):
    code = "invalid_envfile"


class NotAnEnvironment(NotFound):
    code = "not_an_environment"


@dataclass
class Created:
    """What ``create`` did: the new commit and the resolved environment."""

    name: str
    commit: str
    environment: dict[str, Any]
    venv: str | None
    venv_created: bool
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        env = self.environment
        return {
            "name": self.name,
            "commit": self.commit,
            "backend": env["backend"],
            "base": env["base"],
            "requires": env["requires"],
            "requires_key": env["requires_key"],
            "venv": self.venv,
            "venv_created": self.venv_created,
            "warnings": self.warnings,
            "environment": env,
        }


def parse_for_node(text: str) -> tuple[Envfile, list[str]]:
    """Parse the client's text on the node (errors carry the line); warnings are returned, not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EnvfileWarning)
        try:
            envfile = parse_envfile(text, source="Envfile", base_dir=_CLIENT_DIR)
        except EnvfileError as exc:
            raise EnvfileInvalid(str(exc), line=exc.line) from None
    return envfile, [str(w.message) for w in caught if issubclass(w.category, EnvfileWarning)]


def _at(envfile: Envfile, line: int, message: str) -> EnvfileInvalid:
    return EnvfileInvalid(f"{envfile.source}:{line}: {message}", line=line)


class Environments:
    """The node side of ``iollm create`` and ``iollm env export``."""

    def __init__(self, hub: Hub, resolver: Resolver, venvs: VenvManager | None = None) -> None:
        self.hub = hub
        self.resolver = resolver
        self.venvs = venvs

    # -- create ----------------------------------------------------------------------------------

    def create(self, caller: Identity, name: str, text: str, files: list[FileEntry] | None = None) -> Created:
        repo_id = name if "/" in name else f"{caller.require_user()}/{name}"
        namespace, _ = split_repo_id(repo_id)
        caller.require_write(namespace)  # before the slow parts (pinning, building)
        envfile, notes = parse_for_node(text)
        self._refuse_unsupported(envfile)
        uploads = list(files or [])
        base, names, private = self._base(caller, envfile, uploads)
        backend = self._backend(envfile, base, names)
        pins: list[Requirement] = []
        venv_path, venv_created = None, False
        if envfile.requires:
            if self.venvs is None:
                raise NotRunnable("this node cannot build Python environments for REQUIRES")
            pins = self.venvs.pin(envfile.requires)
            info = self.venvs.ensure(pins)  # now, so the first request does not wait for pip
            venv_path, venv_created = str(info.path), info.created
        environment = self._environment(envfile, base, backend, pins)
        card = self._card(envfile, base, backend, environment["requires_key"])
        written = [self._file(ENVFILE, text.encode()), self._file(ENVIRONMENT_FILE, _canonical(environment))]
        weights = uploads if base.get("self") else []
        manifest, _ = self.hub.commit(
            caller,
            "model",
            repo_id,
            [*weights, *written],
            message=f"Create environment from {environment['base_spec']}",
            card=card,
            private=private,
        )
        self.resolver.forget()
        return Created(repo_id, manifest.commit_id, environment, venv_path, venv_created, notes)

    def _refuse_unsupported(self, envfile: Envfile) -> None:
        if envfile.adapters:
            raise _at(
                envfile,
                envfile.from_line,
                "ADAPTER is not supported yet: iollm cannot apply LoRA adapters at run time; merge the "
                "adapter into the weights, push them, and use FROM with the merged model",
            )
        if envfile.draft:
            raise _at(
                envfile, envfile.from_line, "DRAFT (speculative decoding) is not supported yet; remove it"
            )

    def _base(
        self, caller: Identity, envfile: Envfile, uploads: list[FileEntry]
    ) -> tuple[dict[str, Any], list[str], bool]:
        """The resolved base (as stored in environment.json), its file names, and whether it is private."""
        ref = envfile.base
        if ref.kind == "remote":
            if uploads:
                raise ProtocolError("files were uploaded, but FROM names a remote server")
            return {"url": ref.url, "model": ref.model, "api": ref.api}, [], False
        if ref.kind == "path":
            if not uploads:
                raise _at(
                    envfile,
                    envfile.from_line,
                    f"FROM names a local path ({ref.path}): upload its files with the request "
                    "(`iollm create` does this)",
                )
            clash = [f.path for f in uploads if f.path in _RESERVED]
            if clash:
                raise ProtocolError(
                    f"uploaded files may not be named {', '.join(clash)}: the node writes those"
                )
            return {"self": True}, [f.path for f in uploads], False
        if uploads:
            raise ProtocolError("files were uploaded, but FROM names a hub repository")
        if ref.registry:
            raise _at(
                envfile,
                envfile.from_line,
                f"FROM {ref.spec} names another registry; mirror the model to this node first (iollm mirror)",
            )
        try:
            repo = self.hub.get_repo(caller, "model", ref.repo or "")
            commit = self.hub.resolve(repo, ref.revision)
        except NotFound as exc:
            raise _at(envfile, envfile.from_line, f"base {ref.spec}: {exc.message}") from exc
        names = [f.path for f in self.hub.manifest(commit).files]
        return {"repo": repo.repo_id, "commit": commit}, names, repo.private

    def _backend(self, envfile: Envfile, base: dict[str, Any], names: list[str]) -> str:
        if "repo" in base and ENVIRONMENT_FILE in names and not envfile.backend:
            try:  # the base is itself an environment: run what it runs
                return self.resolver.spec_for(base["repo"], base["commit"]).backend
            except NotRunnable as exc:
                raise _at(envfile, envfile.from_line, exc.message) from exc
        try:
            return envfile.resolved_backend(names if base.get("self") or "repo" in base else None)
        except EnvfileError as exc:
            raise EnvfileInvalid(str(exc), line=exc.line) from None

    def _environment(
        self, envfile: Envfile, base: dict[str, Any], backend: str, pins: list[Requirement]
    ) -> dict[str, Any]:
        if "repo" in base:
            pinned_base = BaseRef.from_hub(base["repo"], base["commit"])
        elif base.get("self"):
            pinned_base = BaseRef(kind="path", path=".")  # "the weights in this repository"
        else:
            pinned_base = envfile.base
        pinned = envfile.with_base(pinned_base).with_requires(pins)
        return {
            "format": 1,
            "base": base,
            "base_spec": pinned_base.spec,
            "backend": backend,
            "parameters": dict(envfile.parameters),
            "template": envfile.template,
            "system": envfile.system,
            "messages": [{"role": m.role, "content": m.content} for m in envfile.messages],
            "adapters": list(envfile.adapters),
            "licenses": list(envfile.licenses),
            "requires": [str(p) for p in pins],
            "requires_key": requirements_key(pins) if pins else "",
            "pinned_envfile": pinned.to_text(pinned=True),
        }

    def _card(self, envfile: Envfile, base: dict[str, Any], backend: str, key: str) -> dict[str, Any]:
        """Declared metadata; ``base_model``/``base_commit``/``relation`` are what lineage and export follow."""
        card: dict[str, Any] = {"relation": "environment", "backend": backend}
        if "repo" in base:
            card.update(base_model=base["repo"], base_commit=base["commit"])
            base_license = (self.hub.card(base["commit"]) or {}).get("license")
            if base_license:
                card["license"] = base_license
        elif "url" in base:
            card["source"] = f"{base['url']} {base['model']}"
        first = envfile.licenses[0].strip() if envfile.licenses else ""
        if first and "\n" not in first and len(first) <= _LICENSE_ID_MAX:
            card["license"] = first  # a license identifier; full license texts stay in the Envfile
        if key:
            card["requires_key"] = key
        return card

    def _file(self, path: str, data: bytes) -> FileEntry:
        digest, _ = self.hub.store.ingest_bytes(data)
        return FileEntry.from_digest(path, digest)

    # -- export ----------------------------------------------------------------------------------

    def envfile(self, caller: Identity, repo_id: str, revision: str | None, pinned: bool) -> dict[str, Any]:
        """The Envfile of an environment (as written, or fully pinned); a plain model exports FROM itself."""
        repo = self.hub.get_repo(caller, "model", repo_id)
        commit = self.hub.resolve(repo, revision)
        manifest = self.hub.manifest(commit)
        env_entry, text_entry = manifest.file(ENVIRONMENT_FILE), manifest.file(ENVFILE)
        itself = BaseRef.from_hub(repo.repo_id, commit)
        if env_entry is None:
            if registry.for_files(f.path for f in manifest.files) is None:
                raise NotAnEnvironment(f"{repo.repo_id}@{commit[:12]} is neither an environment nor a model")
            text = Envfile(itself).to_text(pinned=True)
            return {"name": repo.repo_id, "commit": commit, "pinned": True, "envfile": text}
        if not pinned:
            source = text_entry or env_entry
            raw = self.resolver.read_file(source).decode()
            text = raw if text_entry else json.loads(raw)["pinned_envfile"]
            return {"name": repo.repo_id, "commit": commit, "pinned": False, "envfile": text}
        env = json.loads(self.resolver.read_file(env_entry))
        text = env["pinned_envfile"]
        if (env.get("base") or {}).get("self"):
            # The weights live in this repository: elsewhere, build on this very commit.
            envfile, _ = parse_for_node(text)
            text = envfile.with_base(itself).to_text(pinned=True)
        return {"name": repo.repo_id, "commit": commit, "pinned": True, "envfile": text}


def _canonical(value: Any) -> bytes:
    """Stable bytes for environment.json: the same environment is the same file on every node."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
