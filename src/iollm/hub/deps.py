"""Request-scoped helpers shared by the hub's HTTP routers."""

from __future__ import annotations

from fastapi import Request

from ..protocol import Unauthorized
from .accounts import Accounts, Identity
from .repos import Hub


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return value.strip()


def caller(request: Request) -> Identity:
    """The identity behind the request's bearer token (anonymous when there is none)."""
    cached = getattr(request.state, "identity", None)
    if cached is None:
        cached = accounts(request).identify(bearer_token(request))
        request.state.identity = cached
    return cached


def hub(request: Request) -> Hub:
    return request.app.state.hub


def accounts(request: Request) -> Accounts:
    return request.app.state.accounts
