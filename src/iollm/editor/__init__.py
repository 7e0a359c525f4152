"""The node's web UI: the workflow graphical editor and the pages over the hub, leaderboard, compute
pool and ledger. ``router`` serves the built app at ``/ui`` and the few APIs it needs at
``/api/editor`` (runs streamed as server-sent events, versions in the hub, exports, evaluations and
searches); everything else the app reads from the node's existing APIs."""

from fastapi import APIRouter

from .api import router as api_router
from .site import STATIC_DIR, built
from .site import router as site_router

router = APIRouter()
router.include_router(api_router)
router.include_router(site_router)

__all__ = ["STATIC_DIR", "built", "router"]
