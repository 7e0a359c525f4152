"""Envfile: how to run a model, as a strict superset of Ollama's Modelfile.

Every Modelfile that Ollama accepts is an Envfile, read the way Ollama reads it: instructions are
case-insensitive, ``#`` starts a comment line, a value may be bare, ``"quoted"`` or ``\"\"\"triple
quoted\"\"\"`` (both quoted forms may span lines, and a quoted value ends at the first line whose end
closes the quote). iollm adds:

* ``FROM`` also takes a hub revision (``namespace/name@v1``, ``@<commit>``), a local path, or a remote
  server (``FROM http://host:8000/v1 model`` or ``FROM ollama://host:11434/model``);
* ``BACKEND llama.cpp|transformers|remote`` picks the engine (inferred when absent);
* ``REQUIRES`` lists pinned Python packages (``name==version`` plus pip's ``--hash=``), while a bare
  version (``REQUIRES 0.14.0``, Ollama's minimum version) is kept as ``ollama_requires``;
* inside triple quotes, ``\\\"\"\"`` stands for ``\"\"\"`` so any text can be written back.

The parsed :class:`Envfile` is frozen and renders back to canonical text with :meth:`Envfile.to_text`;
``parse_envfile(e.to_text()) == e`` holds for every parsed Envfile and every value without a carriage
return (``\r`` reads as a line break, as in Ollama).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as _PipRequirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .backends import registry
from .envfile_lexer import EnvfileError, Instruction, lex, quote

__all__ = [
    "INSTRUCTIONS",
    "MESSAGE_ROLES",
    "PARAMETER_ALIASES",
    "PARAMETER_TYPES",
    "BaseRef",
    "Envfile",
    "EnvfileError",
    "EnvfileWarning",
    "Message",
    "Requirement",
    "load_envfile",
    "parse_envfile",
]

# Ollama's instructions (parser.isValidCommand) plus iollm's BACKEND.
INSTRUCTIONS = (
    "from",
    "parameter",
    "template",
    "system",
    "adapter",
    "license",
    "message",
    "requires",
    "draft",
    "renderer",
    "parser",
    "backend",
)
MESSAGE_ROLES = ("system", "user", "assistant")

# Ollama's api.Options (their JSON names and Go types) plus iollm's extras; the order is the order
# to_text writes them in.
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int,
    "num_predict": int,
    "num_keep": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "num_thread": int,
    "use_mmap": bool,
    "seed": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_last_n": int,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "draft_num_predict": int,
    "stop": list,
}
# Other engines' names for the same knob; stored under the Ollama name so each knob has one key.
PARAMETER_ALIASES = {"max_tokens": "num_predict", "n_batch": "num_batch"}
# Ollama warns about these and drops them (parser.deprecatedParameters, plus removed options).
_DEPRECATED_PARAMETERS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
        "numa",
    }
)

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/:+-]{0,254}")
_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
_OLLAMA_VERSION = re.compile(r"v?\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})
_HASH_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HASH = re.compile(r"(sha256|sha384|sha512):([0-9a-fA-F]+)")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_PATH_PREFIXES = ("/", "./", "../", "~", "\\", ".\\", "..\\")


class EnvfileWarning(UserWarning):
    """Something Ollama accepts but ignores (a deprecated PARAMETER): read, then dropped."""


class _Invalid(ValueError):
    """A bad value, before the parser knows its line; turned into an EnvfileError by the parser."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}")


# --------------------------------------------------------------------------------------------
# Values of the data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One turn of the example conversation that MESSAGE puts before the user's messages."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in MESSAGE_ROLES:
            raise _Invalid(
                f"MESSAGE role {self.role!r} is not valid", f"use one of {', '.join(MESSAGE_ROLES)}"
            )


@dataclass(frozen=True)
class Requirement:
    """A Python package pinned to one version (and optionally to pip hashes), for reproducible runs.

    Fields are normalised on creation (PEP 503 name, canonical version, lowercase sorted hashes), so
    two spellings of the same pin compare equal and hash to the same requirements key.
    """

    name: str
    version: str
    hashes: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            version = str(Version(self.version))
        except InvalidVersion:
            raise _Invalid(f"{self.version!r} is not a version", "pin a release such as 2.4.6") from None
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", self.name):
            raise _Invalid(f"{self.name!r} is not a package name", "use the name as published on PyPI")
        object.__setattr__(self, "name", canonicalize_name(self.name))
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "hashes", tuple(sorted({_check_hash(h) for h in self.hashes})))
        object.__setattr__(self, "extras", tuple(sorted({canonicalize_name(e) for e in self.extras})))

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """One pin as pip writes it: ``name[extras]==version [--hash=algo:hex ...]``."""
        pins = _parse_pins(text.split())
        if len(pins) != 1:
            raise _Invalid(f"{text!r} is not one requirement", "write name==version [--hash=sha256:...]")
        return pins[0]

    def __str__(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        hashes = "".join(f" --hash={h}" for h in self.hashes)
        return f"{self.name}{extras}=={self.version}{hashes}"


def _check_hash(value: str) -> str:
    """A pip hash ``algo:hex``, lowercased; the hex length must match the algorithm."""
    match = _HASH.fullmatch(value.strip())
    if not match or len(match.group(2)) != _HASH_LENGTHS[match.group(1)]:
        raise _Invalid(f"{value!r} is not a pip hash", "write --hash=sha256:<64 hex digits>")
    return value.strip().lower()


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
        return cls(kind="path", path=_resolve_path(os.fspath(path), base_dir))

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
            raise _Invalid(
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
        raise _Invalid(f"{spec!r} is not a model reference", fix)
    name, revision = _split_revision(spec)
    parts = name.split("/")
    registry = None
    if len(parts) == 3 and re.search(r"[.:]|^localhost$", parts[0]):
        registry = parts.pop(0).lower()
    if len(parts) == 1:
        parts.insert(0, "library")  # Ollama's default namespace: FROM llama3.2 is library/llama3.2
    if len(parts) != 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise _Invalid(f"{spec!r} is not a model reference", fix)
    if revision is not None and not _REVISION.fullmatch(revision):
        raise _Invalid(f"{revision!r} is not a revision", "use a branch, a tag or a 40-hex commit id")
    if revision is not None and _COMMIT.fullmatch(revision):
        revision = revision.lower()
    return BaseRef(kind="hub", repo="/".join(parts), revision=revision, registry=registry)


def _split_revision(spec: str) -> tuple[str, str | None]:
    """Split off ``@revision`` (iollm) or ``:tag`` (Ollama, in the last path segment only)."""
    if "@" in spec:
        name, revision = spec.split("@", 1)
        if ":" in name.rsplit("/", 1)[-1]:
            raise _Invalid(f"{spec!r} has both a :tag and an @revision", "keep one of them")
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
        raise _Invalid(f"FROM {spec} has too many words", "write FROM <url> <model>")
    model = words[1] if len(words) == 2 else None
    if scheme in ("http", "https"):
        return _parse_openai_url(words[0], model)
    if scheme in ("ollama", "ollama+http", "ollama+https"):
        return _parse_ollama_url(words[0], model)
    raise _Invalid(f"{scheme}:// is not a supported server", "use http://, https:// or ollama://")


def _parse_openai_url(url: str, model: str | None) -> BaseRef:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Invalid(f"{url!r} is not a server URL", "write FROM http://host:port/v1 <model>")
    if not model:
        raise _Invalid(f"FROM {url} names no model", f"write FROM {url} <model name>")
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
        raise _Invalid(f"{url!r} is not an Ollama server", "write FROM ollama://host:11434/<model>")
    in_path = parts.path.strip("/")
    if in_path and not parts.scheme.startswith("ollama"):
        raise _Invalid(f"Ollama server URL {url!r} has a path", "give the server as http://host:port")
    if in_path and model:
        raise _Invalid(f"FROM {url} {model} names two models", "keep the model in the URL or after it")
    model = in_path or model
    if not model:
        raise _Invalid(f"FROM {url} names no model", "write FROM ollama://host:11434/<model>")
    _check_model_name(model)
    return BaseRef(kind="remote", url=f"{scheme}://{parts.netloc}", model=model, api="ollama")


def _check_model_name(model: str) -> None:
    if not model or any(c.isspace() for c in model):
        raise _Invalid(f"{model!r} is not a model name", "name the model without spaces")


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


def _resolve_path(path: str, base_dir: str | os.PathLike[str] | None) -> str:
    """Absolute path, with ``~`` expanded and relative paths taken from the Envfile's folder."""
    if _DRIVE.match(path):
        return path  # a Windows path read on another system: nothing to resolve it against
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        expanded = os.path.join(os.fspath(base_dir) if base_dir else os.getcwd(), expanded)
    return os.path.abspath(expanded)


def _is_path_like(value: str, base_dir: str | os.PathLike[str] | None) -> bool:
    return "://" not in value and _looks_like_path(value, base_dir)


# --------------------------------------------------------------------------------------------
# The Envfile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envfile:
    """A parsed Envfile; compare, render (:meth:`to_text`) and derive (:meth:`with_base`) freely."""

    base: BaseRef
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    adapters: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    backend: str | None = None
    requires: list[Requirement] = field(default_factory=list)
    ollama_requires: str | None = None
    source: str = field(default="<Envfile>", compare=False)
    # Ollama instructions outside iollm's brief, kept so that no Modelfile loses information.
    draft: str | None = None
    renderer: str | None = None
    parser: str | None = None
    # Where FROM was, so later errors about the base (resolved_backend) can point at it.
    from_line: int = field(default=1, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Keep the canonical forms however the Envfile was built, so rendering and comparing agree.
        object.__setattr__(self, "requires", _merge_pins(self.requires))
        if self.backend is not None:
            object.__setattr__(self, "backend", _parse_backend(self.backend))

    def resolved_backend(self, file_names: list[str] | None = None) -> str:
        """BACKEND if given, else the engine the base's weights need.

        ``file_names`` lists the hub repository's files (or overrides a local folder's listing):
        a ``.gguf`` means llama.cpp, ``.safetensors`` means transformers, a server means remote.
        """
        if self.backend:
            return self.backend
        if self.base.kind == "remote":
            return "remote"
        names = file_names if file_names is not None else self._local_file_names()
        kind = registry.for_files(names)
        if kind is None and file_names is None and self.base.kind == "path":
            kind = registry.for_magic(self.base.path or "")  # Ollama's blobs have no suffix
        if kind is not None:
            return kind.name
        suffixes = " or ".join(registry.weight_suffixes())
        options = [f"BACKEND {name}" for name in registry.names()]
        raise EnvfileError(
            self.source,
            self.from_line,
            f"cannot tell which backend runs {self.base.spec}: no {suffixes} file",
            f"add {', '.join(options[:-1])} or {options[-1]}",
        )

    def _local_file_names(self) -> list[str]:
        if self.base.kind != "path" or not self.base.path:
            return []
        path = Path(self.base.path)
        if path.is_dir():
            return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        return [path.name]

    def requirements_key(self) -> str:
        """SHA-256 of the pinned package set, to name (and share) the Python environment it needs.

        The key is ``sha256(json.dumps(sorted(lines), separators=(",", ":")))`` where each line is
        ``name[extras]==version --hash=...`` in canonical form (PEP 503 name, normalised version,
        sorted lowercase hashes), so order and case do not matter; no REQUIRES gives ``sha256(b"[]")``.
        """
        lines = sorted(str(pin) for pin in _merge_pins(self.requires))
        return hashlib.sha256(json.dumps(lines, separators=(",", ":")).encode()).hexdigest()

    def with_base(self, base: BaseRef) -> Envfile:
        """The same environment on another base, e.g. the commit a tag resolved to."""
        return dataclasses.replace(self, base=base)

    def with_requires(self, requires: Iterable[Requirement | str]) -> Envfile:
        """The same environment with these pins instead (strings are REQUIRES values)."""
        pins: list[Requirement] = []
        for item in requires:
            pins.extend([item] if isinstance(item, Requirement) else _parse_pins(item.split()))
        return dataclasses.replace(self, requires=_merge_pins(pins))

    def to_text(self, pinned: bool = False) -> str:
        """Canonical Envfile text, which parses back to an equal Envfile.

        With ``pinned=True`` a hub base must already name a commit id (the caller resolves it), so
        the text can never drift to another revision.
        """
        if pinned and self.base.kind == "hub" and not self.base.is_pinned:
            raise ValueError(
                f"base {self.base.spec} is not pinned to a commit id; resolve it with with_base()"
            )
        lines = [f"FROM {quote(self.base.spec)}"]
        lines += _optional("DRAFT", self.draft)
        lines += [f"ADAPTER {quote(a)}" for a in self.adapters]
        lines += _optional("BACKEND", self.backend)
        lines += _optional("REQUIRES", self.ollama_requires)
        lines += [f"REQUIRES {r}" for r in self.requires]
        lines += _parameter_lines(self.parameters)
        lines += _optional("TEMPLATE", self.template)
        lines += _optional("SYSTEM", self.system)
        lines += _optional("RENDERER", self.renderer)
        lines += _optional("PARSER", self.parser)
        lines += [f"MESSAGE {m.role} {quote(m.content)}" for m in self.messages]
        lines += [f"LICENSE {quote(text)}" for text in self.licenses]
        return "\n".join(lines) + "\n"


def _optional(keyword: str, value: str | None) -> list[str]:
    return [] if value is None else [f"{keyword} {quote(value)}"]


def _parameter_lines(parameters: dict[str, Any]) -> list[str]:
    """PARAMETER lines in PARAMETER_TYPES order, one line per stop sequence."""
    order = {name: i for i, name in enumerate(PARAMETER_TYPES)}
    lines = []
    for name in sorted(parameters, key=lambda n: (order.get(n, len(order)), n)):
        value = parameters[name]
        values = value if isinstance(value, list) else [value]
        lines += [f"PARAMETER {name} {_format_parameter(v)}" for v in values]
    return lines


def _format_parameter(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return quote(str(value), prefer_quotes=True)


# --------------------------------------------------------------------------------------------
# Meaning: instructions -> Envfile
# --------------------------------------------------------------------------------------------


def _typed_parameter(name: str, raw: str) -> Any:
    """Parse a PARAMETER value with its Ollama type (Go's strconv rules, finite floats only)."""
    kind = PARAMETER_TYPES[name]
    if kind is int and _INT.fullmatch(raw):
        return int(raw)
    if kind is float and _FLOAT.fullmatch(raw):
        return float(raw)
    if kind is bool and raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    if kind in (str, list):
        return raw
    example = {int: "4096", float: "0.7", bool: "true"}[kind]
    raise _Invalid(
        f"PARAMETER {name} must be {kind.__name__}, not {raw!r}", f"write e.g. PARAMETER {name} {example}"
    )


def _parse_backend(value: str) -> str:
    kind = registry.find(value)
    if kind is None:
        raise _Invalid(f"unknown BACKEND {value!r}", f"use one of {', '.join(registry.names())}")
    return kind.name


def _parse_requires(value: str) -> tuple[str | None, list[Requirement]]:
    """A REQUIRES value: Ollama's bare minimum version, or pinned packages with their hashes."""
    words = value.split()
    if len(words) == 1 and _OLLAMA_VERSION.fullmatch(words[0]):
        return words[0].removeprefix("v"), []
    return None, _parse_pins(words)


def _parse_pins(words: list[str]) -> list[Requirement]:
    """``name==version`` words, each followed by any number of ``--hash=algo:hex`` (pip's syntax)."""
    pins: list[tuple[_PipRequirement, list[str]]] = []
    words = list(words)
    while words:
        word = words.pop(0)
        if word == "--hash" or word.startswith("--hash="):
            digest = word[len("--hash=") :] if "=" in word else (words.pop(0) if words else "")
            if not pins:
                raise _Invalid(f"--hash={digest} follows no package", "put it after name==version")
            pins[-1][1].append(_check_hash(digest))
        elif word.startswith("-"):
            raise _Invalid(
                f"REQUIRES option {word!r} is not supported", "only --hash=algo:hex may follow a pin"
            )
        elif _OLLAMA_VERSION.fullmatch(word):
            raise _Invalid(
                f"{word!r} looks like Ollama's minimum version among packages",
                f"put REQUIRES {word} on its own line, or write name=={word}",
            )
        else:
            pins.append((_pip_requirement(word), []))
    return [_pinned(requirement, hashes) for requirement, hashes in pins]


def _pip_requirement(word: str) -> _PipRequirement:
    try:
        requirement = _PipRequirement(word)
    except InvalidRequirement:
        raise _Invalid(
            f"{word!r} is not a package requirement", "write name==version, e.g. numpy==2.4.6"
        ) from None
    if requirement.url or requirement.marker:
        raise _Invalid(f"{word!r} has a URL or environment marker", "write a plain name==version pin")
    return requirement


def _pinned(requirement: _PipRequirement, hashes: list[str]) -> Requirement:
    """A Requirement, refusing ranges: an Envfile must run with exactly the packages it was made with."""
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith(".*"):
        shown = f"{requirement.name}{requirement.specifier}"
        raise _Invalid(
            f"REQUIRES {shown} is not pinned",
            f"pin it to one exact version with ==, e.g. REQUIRES {requirement.name}==<version>",
        )
    return Requirement(requirement.name, specs[0].version, tuple(hashes), tuple(requirement.extras))


def _merge_pins(pins: Iterable[Requirement]) -> list[Requirement]:
    """One pin per package, sorted by name; the same pin twice merges its hashes and extras."""
    merged: dict[str, Requirement] = {}
    for pin in pins:
        merged[pin.name] = _merge_pin(merged.get(pin.name), pin)
    return [merged[name] for name in sorted(merged)]


def _merge_pin(old: Requirement | None, new: Requirement) -> Requirement:
    if old is None:
        return new
    if old.version != new.version:
        raise _Invalid(
            f"{new.name} is pinned twice, to {old.version} and {new.version}",
            f"keep one REQUIRES {new.name}==...",
        )
    return Requirement(new.name, new.version, old.hashes + new.hashes, old.extras + new.extras)


class _Builder:
    """Collects instructions into Envfile fields, knowing the file's name and folder for errors/paths."""

    def __init__(self, source: str, base_dir: str | os.PathLike[str] | None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.fields: dict[str, Any] = {"parameters": {}, "adapters": [], "messages": [], "licenses": []}
        self.pins: list[Requirement] = []
        self.from_line: int | None = None
        self.handlers: dict[str, Callable[[Instruction], None]] = {
            "from": self.on_from,
            "parameter": self.on_parameter,
            "message": self.on_message,
            "requires": self.on_requires,
            "backend": lambda ins: self.set("backend", _parse_backend(self.need(ins))),
            "adapter": lambda ins: self.fields["adapters"].append(self.local(self.need(ins))),
            "draft": lambda ins: self.set("draft", self.local(self.need(ins))),
            "license": lambda ins: self.fields["licenses"].append(ins.value or ""),
            "template": lambda ins: self.set("template", ins.value or ""),
            "system": lambda ins: self.set("system", ins.value or ""),
            "renderer": lambda ins: self.set("renderer", self.need(ins)),
            "parser": lambda ins: self.set("parser", self.need(ins)),
        }

    def apply(self, ins: Instruction) -> None:
        try:
            self.handlers[ins.keyword](ins)
        except _Invalid as exc:
            raise EnvfileError(self.source, ins.line, exc.what, exc.fix) from None

    def set(self, name: str, value: Any) -> None:
        self.fields[name] = value  # like Ollama, a repeated single-valued instruction: the last wins

    def need(self, ins: Instruction) -> str:
        if ins.value is None:
            keyword = ins.keyword.upper()
            raise _Invalid(f"{keyword} has no value", f"write {keyword} <value> on the same line")
        return ins.value

    def local(self, value: str) -> str:
        """Adapter and draft paths resolve like FROM's; other references are kept as written."""
        return _resolve_path(value, self.base_dir) if _is_path_like(value, self.base_dir) else value

    def on_from(self, ins: Instruction) -> None:
        if self.from_line is not None:
            raise _Invalid(
                f"a second FROM (the first is on line {self.from_line})",
                "an Envfile has one base; remove one FROM",
            )
        self.fields["base"] = BaseRef.parse(self.need(ins), self.base_dir)
        self.from_line = ins.line

    def on_parameter(self, ins: Instruction) -> None:
        if ins.key is None:
            raise _Invalid(
                "PARAMETER has no name", "write PARAMETER <name> <value>, e.g. PARAMETER temperature 0.7"
            )
        name = ins.key.lower()
        if ins.value is None:
            raise _Invalid(
                f"PARAMETER {name} has no value", f"write PARAMETER {name} <value> on the same line"
            )
        if name in _DEPRECATED_PARAMETERS:
            warnings.warn(
                f"{self.source}:{ins.line}: PARAMETER {name} is deprecated in Ollama and is ignored",
                EnvfileWarning,
                stacklevel=4,
            )
            return
        name = PARAMETER_ALIASES.get(name, name)
        if name not in PARAMETER_TYPES:
            valid = sorted([*PARAMETER_TYPES, *PARAMETER_ALIASES])
            raise _Invalid(f"unknown PARAMETER {ins.key!r}", f"use one of {', '.join(valid)}")
        value = _typed_parameter(name, ins.value)
        parameters = self.fields["parameters"]
        if name == "stop":
            parameters.setdefault("stop", []).append(value)
        else:
            parameters[name] = value

    def on_message(self, ins: Instruction) -> None:
        if ins.key is None:
            raise _Invalid("MESSAGE has no role", "write MESSAGE <system|user|assistant> <text>")
        self.fields["messages"].append(Message(ins.key.lower(), ins.value or ""))

    def on_requires(self, ins: Instruction) -> None:
        ollama, pins = _parse_requires(self.need(ins))
        if ollama is not None:
            self.set("ollama_requires", ollama)
        _merge_pins([*self.pins, *pins])  # report a conflicting pin on the line that introduces it
        self.pins += pins

    def build(self, first_line: int) -> Envfile:
        if self.from_line is None:
            raise EnvfileError(
                self.source, first_line, "no FROM instruction", "add FROM <model> to name the base model"
            )
        return Envfile(
            **self.fields, requires=_merge_pins(self.pins), source=self.source, from_line=self.from_line
        )


def _default_base_dir(source: str, base_dir: str | os.PathLike[str] | None) -> str:
    if base_dir is not None:
        return os.fspath(base_dir)
    if source and not source.startswith("<"):
        return os.path.dirname(os.path.abspath(source))
    return os.getcwd()


def parse_envfile(
    text: str, source: str = "<Envfile>", *, base_dir: str | os.PathLike[str] | None = None
) -> Envfile:
    """Parse Envfile (or Ollama Modelfile) text.

    ``source`` names the text in errors; relative paths are taken from ``base_dir``, by default the
    folder of ``source`` when it is a file name, else the current directory.
    """
    instructions = lex(text, source, INSTRUCTIONS)
    if not instructions:
        raise EnvfileError(source, 1, "the Envfile is empty", "start it with FROM <model>")
    builder = _Builder(source, _default_base_dir(source, base_dir))
    for instruction in instructions:
        builder.apply(instruction)
    return builder.build(instructions[0].line)


def load_envfile(path: str | os.PathLike[str]) -> Envfile:
    """Read and parse an Envfile; its relative paths are taken from its own folder."""
    source = os.fspath(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-16") if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise EnvfileError(source, line, "the file is not UTF-8 text", "save it as UTF-8") from None
    return parse_envfile(text, source=source, base_dir=Path(path).resolve().parent)
