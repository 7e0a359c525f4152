"""Builds one node: opens the database and the store, wires each layer's router onto one FastAPI app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__
from ..database import Database, open_database
from ..hub import Accounts, Hub, PullThrough, ensure_local_admin, hf_catch_all, hf_router, native_router
from ..hub import metadata as hub_metadata
from ..store import ChunkStore
from .config import HomeLayout, NodeConfig
from .errors import install_error_handlers

log = logging.getLogger("iollm.node")


@dataclass
class NodeParts:
    """What a running node is made of (also handy for tests and the CLI's offline commands)."""

    config: NodeConfig
    layout: HomeLayout
    db: Database
    store: ChunkStore
    accounts: Accounts
    hub: Hub


def open_node(config: NodeConfig) -> NodeParts:
    """Open (or initialise) the node's home: database schema, chunk store, local admin and token."""
    layout = HomeLayout(config.home)
    layout.prepare()
    db = open_database(config.database or layout.database)
    db.create(hub_metadata)
    store = ChunkStore(layout.store)
    accounts = Accounts(db)
    hub = Hub(db, store)
    if config.upstreams:
        hub.on_missing_repo = PullThrough(hub, config.upstreams)
    ensure_local_admin(accounts, layout.token)
    return NodeParts(config, layout, db, store, accounts, hub)


def create_app(parts: NodeParts) -> FastAPI:
    app = FastAPI(
        title="iollm node", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    app.state.parts = parts
    app.state.hub = parts.hub
    app.state.store = parts.store
    app.state.accounts = parts.accounts
    app.state.secret = parts.layout.hmac_secret()
    app.state.tmp_dir = parts.layout.tmp
    app.state.node_info = {"version": __version__, "url": parts.config.url}
    install_error_handlers(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/agent-harnesses", include_in_schema=False)
    def no_harnesses() -> JSONResponse:
        return JSONResponse({"standardEnvVars": [], "harnesses": {}})

    app.include_router(native_router)
    app.include_router(hf_router)
    # Must stay last: Hugging Face paths start with the namespace (/{ns}/{name}/resolve/...).
    app.add_api_route("/{path:path}", hf_catch_all, methods=["GET", "HEAD", "POST"], include_in_schema=False)
    return app
