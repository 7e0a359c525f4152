"""How a ``route`` node picks its branch: one router per module here, each registering itself.

A route node names its router (``"router": "regex"``, the default); the graph check asks the router
whether the node's settings make sense and the executor asks it for the branch. Importing this package
imports every module in it, so a new router (a learned one, say) is one new module plus its tests.

Learned routers (``knn``, ``mf``) read features rather than text: they set ``choose_vector``, and the
executor first embeds the subject with the node's ``embed_model`` through the node's ``/v1/embeddings``.
Their trained state lives in the node (``state``), so a found path is published and served as it is.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_ROUTER = "regex"


class RouteSettings(Protocol):
    """What a router may read of its node: its id and settings (``Node.get``)."""

    id: str

    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class Router:
    """``check`` raises ValueError naming what is wrong with a node's settings; ``choose`` returns the
    name of the branch to take for ``subject`` (the node's rendered ``on`` text, by default the input)."""

    name: str
    description: str
    check: Any  # Callable[[RouteSettings], None]
    choose: Any  # Callable[[RouteSettings, str, Mapping[str, str]], str]
    choose_vector: Any = None  # Callable[[RouteSettings, list[float]], str]: routers on embeddings


_ROUTERS: dict[str, Router] = {}


def register_router(router: Router) -> Router:
    _ROUTERS[router.name] = router
    return router


def router_for(settings: RouteSettings) -> Router:
    name = str(settings.get("router") or DEFAULT_ROUTER)
    router = _ROUTERS.get(name)
    if router is None:
        raise ValueError(f"unknown router {name!r} (routers: {', '.join(sorted(_ROUTERS))})")
    return router


def routers() -> Mapping[str, Router]:
    return dict(_ROUTERS)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
