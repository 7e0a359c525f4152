"""The engines this node can run: their names, the weight files each runs, and how each is loaded.

Every module of this package that defines ``BACKEND`` (a :class:`BackendType`) adds an engine, so a
new engine is one file: its Backend class, a ``load`` function and ``BACKEND = BackendType(...)``. The
engine factory, worker processes, the Envfile's ``BACKEND`` and the resolver (which engine runs a
repository's weights) all read this registry. Its modules are imported the first time it is asked; an
engine's heavy packages (llama_cpp, torch) are imported by its ``load``, when a model first needs it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .base import Backend

log = logging.getLogger("iollm.runtime")


@dataclass(frozen=True)
class LoadOptions:
    """What an engine is loaded with: the weights on disk, or the server that runs them."""

    location: Path | None = None  # the weights file (``single_file`` engines) or the model folder
    context: int = 4096
    template: str | None = None
    system: str | None = None
    batch: int = 512
    threads: int | None = None  # None: the engine's own default
    url: str = ""  # remote engines: the server, the model's name there, and its API
    model: str = ""
    api: str = "openai"


@dataclass(frozen=True)
class BackendType:
    """One engine as the rest of the runtime sees it."""

    name: str  # what an Envfile's BACKEND, a ModelSpec and a usage record say
    load: Callable[[LoadOptions], Backend]
    aliases: tuple[str, ...] = ()  # other spellings BACKEND accepts, lower case
    suffixes: tuple[str, ...] = ()  # weight files it runs, lower case, e.g. (".gguf",)
    weights: str = ""  # what messages call those files, e.g. "GGUF file"
    magic: bytes = b""  # how such a file starts, to know it without its suffix (Ollama's blobs)
    needs: tuple[str, ...] = ()  # files a repository needs besides its weights, e.g. ("config.json",)
    single_file: bool = False  # loads the largest weights file, not the whole folder
    remote: bool = False  # runs on a server named by URL: nothing on disk, no worker process
    precedence: int = 50  # lower wins when a repository holds weights for several engines

    def runs(self, path: str) -> bool:
        """Whether ``path`` names a weights file of this engine."""
        return bool(self.suffixes) and path.lower().endswith(self.suffixes)


class UnknownBackend(ValueError):
    pass


_lock = threading.RLock()  # a backend module may register while the registry imports it
_known: dict[str, BackendType] | None = None
_broken: dict[str, str] = {}  # module -> why it could not be imported


def _table() -> dict[str, BackendType]:
    global _known
    with _lock:
        if _known is None:
            _known = {}
            package = importlib.import_module(__package__ or "")
            for module in pkgutil.iter_modules(package.__path__):
                if module.name in ("base", "registry"):
                    continue
                try:
                    loaded = importlib.import_module(f"{__package__}.{module.name}")
                except ImportError as exc:  # one broken engine must not take the others down
                    _broken[module.name] = f"{exc.__class__.__name__}: {exc}"
                    log.warning("backend module %s cannot be imported: %s", module.name, exc)
                    continue
                kind = getattr(loaded, "BACKEND", None)
                if isinstance(kind, BackendType):
                    _known[kind.name] = kind
        return _known


def known() -> list[BackendType]:
    """Every engine, in precedence order."""
    return sorted(_table().values(), key=lambda k: (k.precedence, k.name))


def names() -> list[str]:
    return [kind.name for kind in known()]


def find(name: str) -> BackendType | None:
    """The engine called ``name`` or one of its aliases (case and surrounding blanks do not matter)."""
    wanted = name.strip().lower()
    for kind in known():
        if wanted == kind.name.lower() or wanted in kind.aliases:
            return kind
    return None


def named(name: str) -> BackendType:
    """The engine called ``name``; UnknownBackend names the ones there are."""
    kind = find(name)
    if kind is None:
        broken = "".join(f"; module {m} could not be imported ({why})" for m, why in sorted(_broken.items()))
        raise UnknownBackend(f"unknown backend {name!r}: use one of {', '.join(names())}{broken}")
    return kind


def for_files(paths: Iterable[str]) -> BackendType | None:
    """The engine that runs the weights among ``paths`` (by precedence when several could)."""
    listed = list(paths)
    return next((kind for kind in known() if any(kind.runs(p) for p in listed)), None)


def for_magic(path: str | Path) -> BackendType | None:
    """The engine whose weights file ``path`` is, known by its first bytes (a file without a suffix)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    return next((kind for kind in known() if kind.magic and head.startswith(kind.magic)), None)


def weight_suffixes() -> tuple[str, ...]:
    return tuple(suffix for kind in known() for suffix in kind.suffixes)


def register(kind: BackendType) -> None:
    """Add (or replace) an engine from outside this package, e.g. in a test."""
    _table()[kind.name] = kind


def unregister(name: str) -> None:
    _table().pop(name, None)
