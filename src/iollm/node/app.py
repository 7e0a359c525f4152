"""Builds one node: opens the database and the store, wires each layer's router onto one FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__
from ..compute import ComputeParts, build_compute, node_key
from ..compute.api import router as compute_router
from ..database import Database, open_database
from ..editor import router as editor_router
from ..hub import Accounts, Hub, PullThrough, ensure_local_admin, hf_catch_all, hf_router, native_router
from ..hub import metadata as hub_metadata
from ..hub.oci_api import router as oci_router
from ..hub.xet import router as xet_router
from ..mining.api import router as mining_router
from ..mining.service import Mining, MiningConfig, submission_lookup
from ..paths.api import router as paths_leaderboard_router
from ..paths.leaderboard import margin_from_env
from ..paths.leaderboard import metadata as paths_metadata
from ..paths.publish_api import router as paths_publish_router
from ..paths.serving import NAMESPACE, PathModels
from ..runtime import (
    ModelManager,
    Resolver,
    Runtime,
    UsageLog,
    make_factory,
    metrics_router,
    ollama_router,
    openai_hot_routes,
    openai_router,
    responses_router,
)
from ..runtime.environments import Environments
from ..runtime.environments_api import router as environments_router
from ..runtime.ollama_models_api import router as ollama_models_router
from ..runtime.usage_api import router as usage_router
from ..runtime.venvs import VenvManager
from ..runtime.workers import WorkerPool
from ..store import ChunkStore
from .config import HomeLayout, NodeConfig
from .errors import install_error_handlers
from .limits import BodyLimitMiddleware, BodyLimits

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
    runtime: Runtime
    workers: WorkerPool | None = None  # processes for environments that pin packages (REQUIRES)
    compute: ComputeParts | None = None  # providers, jobs and the Dask pool
    mining: Mining | None = None  # ledger, agreements, billing, rewards, tamper-evident log


def open_node(config: NodeConfig) -> NodeParts:
    """Open (or initialise) the node's home: database schema, chunk store, local admin and token."""
    layout = HomeLayout(config.home)
    layout.prepare()
    db = open_database(config.database or layout.database)
    db.create(hub_metadata)
    db.create(paths_metadata)
    store = ChunkStore(layout.store)
    accounts = Accounts(db)
    hub = Hub(db, store)
    if config.upstreams:
        hub.on_missing_repo = PullThrough(hub, config.upstreams)
    ensure_local_admin(accounts, layout.token)
    resolver = Resolver(hub, layout.models)
    budget = config.memory_budget or _half_of_ram()
    workers = WorkerPool(VenvManager(layout.root / "venvs"), layout.root)
    manager = ModelManager(resolver, make_factory(resolver, config.context_length, workers), budget)
    runtime = Runtime(resolver, manager, UsageLog(db), anonymous_inference=config.anonymous_inference)
    from ..paths import cluster_eval  # noqa: F401 - registers the path-eval job kind

    key = node_key(layout.root)
    compute = build_compute(
        db, hub, accounts, key, config.url, config.scheduler, config.scheduler_port, config.audit_rate
    )
    mining = Mining(db, hub, runtime.usage, key, MiningConfig.from_env(), compute, submission_lookup(db))
    runtime.admission.append(mining.billing.admit)  # priced models refuse callers without credits
    runtime.reservation = mining.billing.reserve  # and hold each call's most cost before its first token
    return NodeParts(config, layout, db, store, accounts, hub, runtime, workers, compute, mining)


def _half_of_ram() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def create_app(parts: NodeParts) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if parts.compute is not None:
            await parts.compute.start()  # the Dask scheduler and the job dispatcher share this event loop
        if parts.mining is not None:
            parts.mining.start()
        yield
        if parts.compute is not None:
            await parts.compute.close()
        if parts.mining is not None:
            parts.runtime.usage.flush()
            parts.mining.stop()
        parts.runtime.close()  # drains pending usage records before the process exits
        if parts.workers is not None:
            parts.workers.close()

    app = FastAPI(
        title="iollm node",
        version=__version__,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        # No OpenTelemetry on the request path unless someone wires a provider in: it costs latency.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.parts = parts
    app.state.hub = parts.hub
    app.state.store = parts.store
    app.state.accounts = parts.accounts
    app.state.runtime = parts.runtime
    app.state.compute = parts.compute
    app.state.mining = parts.mining
    app.state.workers = parts.workers
    app.state.environments = Environments(
        parts.hub, parts.runtime.resolver, parts.workers.venvs if parts.workers else None
    )
    app.state.path_models = PathModels(parts.hub, parts.runtime)
    parts.runtime.virtual_models[NAMESPACE] = app.state.path_models  # path/NAME: served by no engine
    app.state.secret = parts.layout.hmac_secret()
    app.state.tmp_dir = parts.layout.tmp
    app.state.node_info = {"version": __version__, "url": parts.config.url}
    app.state.leaderboard_margin = margin_from_env()  # IOLLM_LEADERBOARD_MARGIN, default 0.02
    install_error_handlers(app)
    config = parts.config
    app.state.body_limits = BodyLimits.from_env(
        body=config.max_body_bytes, upload=config.max_upload_bytes, depth=config.max_json_depth
    )
    app.add_middleware(BodyLimitMiddleware, limits=app.state.body_limits)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/agent-harnesses", include_in_schema=False)
    def no_harnesses() -> JSONResponse:
        return JSONResponse({"standardEnvVars": [], "harnesses": {}})

    app.include_router(openai_router)
    app.include_router(responses_router)  # POST /v1/responses, on the chat route's checks and calls
    app.include_router(ollama_router)
    app.include_router(ollama_models_router)  # pull, push, create, blobs, copy, delete
    app.include_router(usage_router)
    app.include_router(metrics_router)  # GET /metrics: Prometheus
    app.include_router(paths_publish_router)
    app.include_router(paths_leaderboard_router)
    app.include_router(environments_router)
    app.include_router(compute_router)
    app.include_router(mining_router)
    app.include_router(editor_router)  # the web UI at /ui and its APIs under /api/editor
    app.include_router(native_router)
    app.include_router(oci_router)
    app.include_router(xet_router)  # Xet CAS (/v1/...) and xet-*-token routes; before hf_router
    app.include_router(hf_router)
    # Must stay last: Hugging Face paths start with the namespace (/{ns}/{name}/resolve/...).
    app.add_api_route("/{path:path}", hf_catch_all, methods=["GET", "HEAD", "POST"], include_in_schema=False)
    app.router.routes[:0] = openai_hot_routes()  # matched before any other route (see hot_routes)
    return app
