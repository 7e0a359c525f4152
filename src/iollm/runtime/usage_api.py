"""GET /api/usage: a caller's usage records and totals (an admin may see everyone's)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..hub import Identity
from ..hub.deps import caller

router = APIRouter(prefix="/api")


@router.get("/usage")
def list_usage(
    request: Request,
    model: str | None = None,
    since: str | None = None,
    user: str | None = None,
    limit: int = 1000,
    who: Identity = Depends(caller),
) -> dict[str, Any]:
    name = who.require_user()
    if user and user != name:
        who.require_admin()
    elif not user and not who.is_admin:
        user = name
    return request.app.state.runtime.usage.query(user, model, since, max(1, min(limit, 100_000)))
