"""What an Envfile's FROM names: a hub repository (``namespace/name@revision`` or Ollama's
``name:tag``), a local weights file or folder, or a model on an OpenAI-compatible or Ollama server."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .backends import registry
from .envfile_lexer import InvalidValue

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/:+-]{0,254}")
_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_PATH_PREFIXES = ("/", "./", "../", "~", "\\", ".\\", "..\\")


@dataclass(frozen=True)
class BaseRef:
    """What FROM names: a hub repository, a local file or folder, or a model on a remote server.

    ``kind`` is ``"hub"`` (``repo`` = ``namespace/name``, optional ``revision`` and ``registry``
    host), ``"path"`` (``path`` = absolute path) or ``"remote"`` (``url``, ``model`` and ``api``,
    ``"openai"`` or ``"ollama"``).
    """

    kind: str
    repo: str | None = None
    revision: str | None = None
    path: str | None = None
    url: str | None = None
    model: str | None = None
    api: str | None = None
    registry: str | None = None

    def __post_init__(self) -> None:
        required = {"hub": ("repo",), "path": ("path",), "remote": ("url", "model", "api")}
        if self.kind not in required:
            raise ValueError(f"BaseRef kind must be one of {', '.join(required)}, not {self.kind!r}")
        missing = [name for name in required[self.kind] if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.kind} BaseRef needs {', '.join(missing)}")
        if self.kind == "remote" and self.api not in ("openai", "ollama"):
            raise ValueError(f"remote api must be 'openai' or 'ollama', not {self.api!r}")

    @classmethod
    def from_hub(cls, repo: str, revision: str | None = None, registry: str | None = None) -> BaseRef:
        """A hub repository, checked the way FROM checks it."""
        spec = f"{registry}/{repo}" if registry else repo
        return _parse_hub(f"{spec}@{revision}" if revision else spec)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None
    ) -> BaseRef:
        """A local weights file or folder; relative paths are taken from ``base_dir`` (default: cwd)."""
        return cls(kind="path", path=resolve_path(os.fspath(path), base_dir))

    @classmethod
    def from_remote(cls, url: str, model: str, api: str = "openai") -> BaseRef:
        """A model served by an OpenAI-compatible (``api="openai"``) or Ollama server."""
        if api not in ("openai", "ollama"):
            raise ValueError(f"remote api must be 'openai' or 'ollama', not {api!r}")
        if api == "ollama":
            return _parse_ollama_url(url, model)
        return _parse_openai_url(url, model)

    @classmethod
    def parse(cls, spec: str, base_dir: str | os.PathLike[str] | None = None) -> BaseRef:
        """Read FROM's value; raises ValueError saying which forms are accepted."""
        spec = spec.strip()
        if not spec:
            raise InvalidValue(
                "FROM has no model", "write FROM namespace/name, FROM ./model.gguf or FROM <url> <model>"
            )
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", spec)
        if scheme:
            return _parse_remote(spec, scheme.group(1).lower())
        if _looks_like_path(spec, base_dir):
            return cls.from_path(spec, base_dir)
        return _parse_hub(spec)

    @property
    def is_pinned(self) -> bool:
        """True when the base cannot move: a hub revision that is a commit id."""
        return self.kind == "hub" and bool(self.revision and _COMMIT.fullmatch(self.revision))

    def with_revision(self, revision: str | None) -> BaseRef:
        """The same hub repository at another revision (e.g. the commit a tag resolved to)."""
        if self.kind != "hub":
            raise ValueError(f"only a hub base has a revision, not a {self.kind} base")
        return BaseRef.from_hub(self.repo or "", revision, self.registry)

    @property
    def spec(self) -> str:
        """The text FROM takes for this base."""
        if self.kind == "path":
            return self.path or ""
        if self.kind == "remote":
            return _remote_spec(self)
        name = f"{self.registry}/{self.repo}" if self.registry else (self.repo or "")
        return f"{name}@{self.revision}" if self.revision else name

    def __str__(self) -> str:
        return self.spec


def _parse_hub(spec: str) -> BaseRef:
    """``[registry/]namespace/name[@revision]``, or Ollama's ``[registry/][namespace/]name[:tag]``."""
    fix = "write FROM namespace/name[@revision], a path such as ./model.gguf, or FROM <url> <model>"
    if any(c.isspace() for c in spec):
        raise InvalidValue(f"{spec!r} is not a model reference", fix)
    name, revision = _split_revision(spec)
    parts = name.split("/")
    registry = None
    if len(parts) == 3 and re.search(r"[.:]|^localhost$", parts[0]):
        registry = parts.pop(0).lower()
    if len(parts) == 1:
        parts.insert(0, "library")  # Ollama's default namespace: FROM llama3.2 is library/llama3.2
    if len(parts) != 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise InvalidValue(f"{spec!r} is not a model reference", fix)
    if revision is not None and not _REVISION.fullmatch(revision):
        raise InvalidValue(f"{revision!r} is not a revision", "use a branch, a tag or a 40-hex commit id")
    if revision is not None and _COMMIT.fullmatch(revision):
        revision = revision.lower()
    return BaseRef(kind="hub", repo="/".join(parts), revision=revision, registry=registry)


def _split_revision(spec: str) -> tuple[str, str | None]:
    """Split off ``@revision`` (iollm) or ``:tag`` (Ollama, in the last path segment only)."""
    if "@" in spec:
        name, revision = spec.split("@", 1)
        if ":" in name.rsplit("/", 1)[-1]:
            raise InvalidValue(f"{spec!r} has both a :tag and an @revision", "keep one of them")
        return name, revision
    head, _, last = spec.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{head}/{last}" if head else last), tag
    return spec, None


def _parse_remote(spec: str, scheme: str) -> BaseRef:
    """``<http(s) url> <model>`` (OpenAI-compatible) or ``ollama://host:port/model``."""
    words = spec.split()
    if len(words) > 2:
        raise InvalidValue(f"FROM {spec} has too many words", "write FROM <url> <model>")
    model = words[1] if len(words) == 2 else None
    if scheme in ("http", "https"):
        return _parse_openai_url(words[0], model)
    if scheme in ("ollama", "ollama+http", "ollama+https"):
        return _parse_ollama_url(words[0], model)
    raise InvalidValue(f"{scheme}:// is not a supported server", "use http://, https:// or ollama://")


def _parse_openai_url(url: str, model: str | None) -> BaseRef:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidValue(f"{url!r} is not a server URL", "write FROM http://host:port/v1 <model>")
    if not model:
        raise InvalidValue(f"FROM {url} names no model", f"write FROM {url} <model name>")
    _check_model_name(model)
    return BaseRef(kind="remote", url=url.rstrip("/"), model=model, api="openai")


def _parse_ollama_url(url: str, model: str | None) -> BaseRef:
    """Ollama servers: the model is the URL's path (``ollama://host:11434/llama3.2:3b``) or a word."""
    parts = urlsplit(url)
    schemes = {
        "ollama": "http",
        "ollama+http": "http",
        "ollama+https": "https",
        "http": "http",
        "https": "https",
    }
    scheme = schemes.get(parts.scheme)
    if scheme is None or not parts.netloc or parts.query or parts.fragment:
        raise InvalidValue(f"{url!r} is not an Ollama server", "write FROM ollama://host:11434/<model>")
    in_path = parts.path.strip("/")
    if in_path and not parts.scheme.startswith("ollama"):
        raise InvalidValue(f"Ollama server URL {url!r} has a path", "give the server as http://host:port")
    if in_path and model:
        raise InvalidValue(f"FROM {url} {model} names two models", "keep the model in the URL or after it")
    model = in_path or model
    if not model:
        raise InvalidValue(f"FROM {url} names no model", "write FROM ollama://host:11434/<model>")
    _check_model_name(model)
    return BaseRef(kind="remote", url=f"{scheme}://{parts.netloc}", model=model, api="ollama")


def _check_model_name(model: str) -> None:
    if not model or any(c.isspace() for c in model):
        raise InvalidValue(f"{model!r} is not a model name", "name the model without spaces")


def _remote_spec(base: BaseRef) -> str:
    url = base.url or ""
    parts = urlsplit(url)
    if base.api == "ollama" and not parts.path.strip("/"):
        scheme = "ollama" if parts.scheme == "http" else "ollama+https"
        return f"{scheme}://{parts.netloc}/{base.model}"
    if base.api == "ollama":
        raise ValueError(f"an Ollama server URL cannot have a path: {url}")
    return f"{url} {base.model}"


def _looks_like_path(spec: str, base_dir: str | os.PathLike[str] | None) -> bool:
    """Ollama's test (explicit path prefix, or exists on disk) plus: names ending in a weights suffix."""
    if spec.startswith(_PATH_PREFIXES) or spec in (".", "..") or _DRIVE.match(spec):
        return True
    if spec.lower().endswith(registry.weight_suffixes()):
        return True
    try:
        return Path(base_dir or os.getcwd(), spec).exists()
    except (OSError, ValueError):
        return False


def resolve_path(path: str, base_dir: str | os.PathLike[str] | None) -> str:
    """Absolute path, with ``~`` expanded and relative paths taken from the Envfile's folder."""
    if _DRIVE.match(path):
        return path  # a Windows path read on another system: nothing to resolve it against
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.fspath(base_dir) if base_dir else os.getcwd(), expanded)
    return os.path.abspath(expanded)


def is_path_like(value: str, base_dir: str | os.PathLike[str] | None) -> bool:
    return "://" not in value and _looks_like_path(value, base_dir)
