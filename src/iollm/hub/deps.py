"""Request-scoped helpers shared by the hub's HTTP routers."""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ..errors import Unauthorized
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


async def caller(request: Request) -> Identity:
    """The identity behind the request's bearer token (anonymous when there is none).

    Async so the common case (a recently seen token) costs no thread hop; a cache miss queries the
    database on a worker thread."""
    cached = getattr(request.state, "identity", None)
    if cached is None:
        secret = bearer_token(request)
        book = accounts(request)
        cached = book.recent(secret)
        if cached is None:
            cached = await run_in_threadpool(book.identify, secret)
        request.state.identity = cached
    return cached


def hub(request: Request) -> Hub:
    return request.app.state.hub


def accounts(request: Request) -> Accounts:
    return request.app.state.accounts
