"""Names the node keeps for itself."""

from __future__ import annotations

from ..errors import ProtocolError

# First path segments of the node's own routes: a namespace with one of these names could not be
# served by the Hugging Face style /{namespace}/{name}/resolve/... routes.
RESERVED_NAMESPACES = frozenset(
    {"api", "v1", "ui", "datasets", "spaces", "models", "health", "static", "path"}
)


def check_namespace(namespace: str) -> str:
    if namespace.lower() in RESERVED_NAMESPACES:
        raise ProtocolError(f"{namespace!r} is reserved for the node's own routes; choose another name")
    return namespace
