"""A package's public names, imported when first used (PEP 562).

Why: a package's ``__init__`` is its one public face, but importing it eagerly pulled the whole layer into
every process that touched one module of it: ``iollm push`` loaded FastAPI, SQLAlchemy and the node's
routers to read an environment file, and spent ~3 s of CPU importing before doing anything. With the
names resolved on first access, ``from iollm.runtime import Envfile`` imports ``runtime.envfile`` alone.
(``lazy_loader`` does the same but cannot rename, and our faces export ``router as openai_router``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``exports`` maps each public name to ``"module"`` (same name there) or ``"module:name"``, the
    module relative to ``package``. Returns ``__getattr__``, ``__dir__`` and ``__all__`` for it."""

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attribute or name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
