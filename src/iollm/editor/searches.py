"""Path searches launched from the editor: the search space is built from the models the drawn workflow
uses, and the drawn workflow itself joins the race as candidate ``drawn``, so the result says whether a
generated path beats it. Searches run in the node's event loop; the editor polls their progress."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFound, ProtocolError
from ..hub import Hub, Identity
from ..paths.clients import CachedClient, CallCache, SerialPerModel
from ..paths.evaluation import SearchError
from ..paths.graph import GraphError, parse_graph
from ..paths.search import Search, SearchConfig
from ..paths.serving import RuntimeClient
from ..paths.space import Candidate
from ..runtime import Runtime
from .prices import price_book
from .runs import served_models
from .suites import suite_from_request

DRAWN = "drawn"


class _RevisionedClient(RuntimeClient):
    """RuntimeClient plus ``revision`` (the model's commit), so the call cache never mixes versions."""

    async def revision(self, model: str) -> str:
        return self.runtime.resolve(self.caller, model).commit


@dataclass
class SearchRun:
    id: str
    owner: str
    preview: dict[str, Any]
    state: str = "running"  # running | done | failed | cancelled
    phase: str = "search"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "state": self.state,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "started": self.started,
            "finished": self.finished,
            "preview": self.preview,
            "result": self.result,
            "error": self.error,
        }


class Searches:
    """The searches of this node process (they are not persisted: a restarted node forgets them)."""

    def __init__(self, runtime: Runtime, hub: Hub, cache_path: Path) -> None:
        self.runtime = runtime
        self.hub = hub
        self.cache_path = cache_path
        self.runs: dict[str, SearchRun] = {}

    def start(self, caller: Identity, body: dict[str, Any]) -> dict[str, Any]:
        owner = self.runtime.caller_name(caller)
        if not isinstance(body.get("graph"), dict):
            raise ProtocolError('send {"graph": {...}, "suite": NAME, "budget": N}')
        try:
            graph = parse_graph(body["graph"], known_models=served_models(self.hub, caller))
        except GraphError as exc:
            raise ProtocolError(f"the workflow cannot seed a search: {exc}", param=exc.node) from exc
        models = graph.models()
        if not models:
            raise ProtocolError("the workflow calls no model, so there is nothing to search over")
        suite = suite_from_request(body)
        prices = price_book(self.hub, caller, models)
        client = CachedClient(
            SerialPerModel(_RevisionedClient(self.runtime, caller)), CallCache(self.cache_path)
        )
        config = SearchConfig(
            models=models,
            suite=suite,
            budget=int(body["budget"]) if body.get("budget") else None,
            workers=2,
            seed=int(body.get("seed") or 0),
            max_tasks=int(body["max_tasks"]) if body.get("max_tasks") else None,
            max_tokens=int(body["max_tokens"]) if body.get("max_tokens") else None,
            extra=[Candidate(DRAWN, DRAWN, {"models": models}, {}, graph.to_json())],
        )
        run = SearchRun(uuid.uuid4().hex[:12], owner, {})

        def progress(phase: str, done: int, total: int) -> None:
            run.phase, run.done, run.total = phase, done, total

        search = Search(config, client, prices, progress)
        if search.budget < len(search.space):
            raise ProtocolError(
                f"a budget of {search.budget} cannot try each of the {len(search.space)} candidates once"
            )
        run.preview = search.preview()
        run.task = asyncio.get_running_loop().create_task(self._run(run, search))
        self.runs[run.id] = run
        return run.as_dict()

    async def _run(self, run: SearchRun, search: Search) -> None:
        try:
            run.result = await search.run()
            run.state = "done"
        except asyncio.CancelledError:
            run.state = "cancelled"
        except (SearchError, Exception) as exc:
            run.state, run.error = "failed", f"{exc.__class__.__name__}: {exc}"
        finally:
            run.finished = time.time()

    def get(self, caller: Identity, search_id: str) -> SearchRun:
        run = self.runs.get(search_id)
        if run is None or (run.owner != self.runtime.caller_name(caller) and not caller.is_admin):
            raise NotFound(f"no search {search_id!r} on this node (searches are forgotten when it restarts)")
        return run

    def list(self, caller: Identity) -> list[dict[str, Any]]:
        name = self.runtime.caller_name(caller)
        return [r.as_dict() for r in self.runs.values() if r.owner == name or caller.is_admin]

    def cancel(self, caller: Identity, search_id: str) -> dict[str, Any]:
        run = self.get(caller, search_id)
        if run.task is not None and not run.task.done():
            run.task.cancel()
        return run.as_dict()
