"""Answers for Hub API routes the node does not serve: a 501 whose message names the route, which
``huggingface_hub`` raises as an ``HfHubHTTPError`` carrying that message (never a 404, which the
client would turn into RepositoryNotFoundError for a repository that exists)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from fastapi import Request

from ..errors import IollmError, ProtocolError, RepoNotFound

if TYPE_CHECKING:
    from .accounts import Identity
    from .repos import Hub

PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}


class NotServed(IollmError):
    """A route or option of the Hugging Face Hub API this node does not implement."""

    status = 501
    code = "NotServed"
    type = "invalid_request_error"


def not_served(method: str, path: str, why: str = "") -> NotServed:
    reason = f": {why}" if why else ""
    return NotServed(f"iollm does not serve {method} {path}{reason}")


def unserved(request: Request, h: Hub, who: Identity, repo_type: str, parts: list[str]) -> NoReturn:
    """A route no router serves. Under /api/ and on a repository the caller can see it is a 501 that
    names the route (huggingface_hub raises HfHubHTTPError with that message); a repository the caller
    cannot see stays RepoNotFound, so unserved routes reveal nothing about private repositories."""
    method, path = request.method, request.url.path
    api = bool(parts) and parts[0] == "api"
    if api and len(parts) >= 4 and parts[1] in PLURAL:
        repo_type, parts = PLURAL[parts[1]], parts[2:]
    elif api:
        raise not_served(method, path)
    if len(parts) < 2:
        raise RepoNotFound(f"nothing is served at {path}")
    try:
        h.get_repo(who, repo_type, f"{parts[0]}/{parts[1]}", pull_through=False)
    except ProtocolError:  # not a repository name at all
        raise RepoNotFound(f"nothing is served at {path}") from None
    raise not_served(method, path, "see docs/hf-protocol-notes.md for the Hub API this node speaks")
