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

from .backends import registry
from .envfile_base import BaseRef, is_path_like, resolve_path
from .envfile_lexer import EnvfileError, Instruction, InvalidValue, lex, quote
from .envfile_requires import Requirement, merge_pins, parse_pins, parse_requires

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

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


class EnvfileWarning(UserWarning):
    """Something Ollama accepts but ignores (a deprecated PARAMETER): read, then dropped."""


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
            raise InvalidValue(
                f"MESSAGE role {self.role!r} is not valid", f"use one of {', '.join(MESSAGE_ROLES)}"
            )


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
        object.__setattr__(self, "requires", merge_pins(self.requires))
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
        lines = sorted(str(pin) for pin in merge_pins(self.requires))
        return hashlib.sha256(json.dumps(lines, separators=(",", ":")).encode()).hexdigest()

    def with_base(self, base: BaseRef) -> Envfile:
        """The same environment on another base, e.g. the commit a tag resolved to."""
        return dataclasses.replace(self, base=base)

    def with_requires(self, requires: Iterable[Requirement | str]) -> Envfile:
        """The same environment with these pins instead (strings are REQUIRES values)."""
        pins: list[Requirement] = []
        for item in requires:
            pins.extend([item] if isinstance(item, Requirement) else parse_pins(item.split()))
        return dataclasses.replace(self, requires=merge_pins(pins))

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
    raise InvalidValue(
        f"PARAMETER {name} must be {kind.__name__}, not {raw!r}", f"write e.g. PARAMETER {name} {example}"
    )


def _parse_backend(value: str) -> str:
    kind = registry.find(value)
    if kind is None:
        raise InvalidValue(f"unknown BACKEND {value!r}", f"use one of {', '.join(registry.names())}")
    return kind.name


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
        except InvalidValue as exc:
            raise EnvfileError(self.source, ins.line, exc.what, exc.fix) from None

    def set(self, name: str, value: Any) -> None:
        self.fields[name] = value  # like Ollama, a repeated single-valued instruction: the last wins

    def need(self, ins: Instruction) -> str:
        if ins.value is None:
            keyword = ins.keyword.upper()
            raise InvalidValue(f"{keyword} has no value", f"write {keyword} <value> on the same line")
        return ins.value

    def local(self, value: str) -> str:
        """Adapter and draft paths resolve like FROM's; other references are kept as written."""
        return resolve_path(value, self.base_dir) if is_path_like(value, self.base_dir) else value

    def on_from(self, ins: Instruction) -> None:
        if self.from_line is not None:
            raise InvalidValue(
                f"a second FROM (the first is on line {self.from_line})",
                "an Envfile has one base; remove one FROM",
            )
        self.fields["base"] = BaseRef.parse(self.need(ins), self.base_dir)
        self.from_line = ins.line

    def on_parameter(self, ins: Instruction) -> None:
        if ins.key is None:
            raise InvalidValue(
                "PARAMETER has no name", "write PARAMETER <name> <value>, e.g. PARAMETER temperature 0.7"
            )
        name = ins.key.lower()
        if ins.value is None:
            raise InvalidValue(
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
            raise InvalidValue(f"unknown PARAMETER {ins.key!r}", f"use one of {', '.join(valid)}")
        value = _typed_parameter(name, ins.value)
        parameters = self.fields["parameters"]
        if name == "stop":
            parameters.setdefault("stop", []).append(value)
        else:
            parameters[name] = value

    def on_message(self, ins: Instruction) -> None:
        if ins.key is None:
            raise InvalidValue("MESSAGE has no role", "write MESSAGE <system|user|assistant> <text>")
        self.fields["messages"].append(Message(ins.key.lower(), ins.value or ""))

    def on_requires(self, ins: Instruction) -> None:
        ollama, pins = parse_requires(self.need(ins))
        if ollama is not None:
            self.set("ollama_requires", ollama)
        merge_pins([*self.pins, *pins])  # report a conflicting pin on the line that introduces it
        self.pins += pins

    def build(self, first_line: int) -> Envfile:
        if self.from_line is None:
            raise EnvfileError(
                self.source, first_line, "no FROM instruction", "add FROM <model> to name the base model"
            )
        return Envfile(
            **self.fields, requires=merge_pins(self.pins), source=self.source, from_line=self.from_line
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
