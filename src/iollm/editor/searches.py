"""Path searches launched from the editor: the search space is built from the models the drawn workflow
uses, and the drawn workflow itself joins the race as candidate ``drawn``, so the result says whether a
generated path beats it. Searches run in the node's event loop; each is a row of the node's database
(``search_store``), written as it starts, as it progresses and when it ends, so a restarted node still
shows it: one its node stopped while it ran is marked interrupted, with what it had found by then."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..database import Database
from ..errors import NotFound, ProtocolError
from ..hub import Hub, Identity
from ..paths.candidate import Candidate
from ..paths.clients import CachedClient, CallCache, SerialPerModel
from ..paths.evaluation import SearchError
from ..paths.graph import GraphError, parse_graph
from ..paths.search import Search, SearchConfig
from ..paths.serving import RuntimeClient
from ..paths.stats import pareto_front
from ..runtime import Runtime
from .prices import price_book
from .runs import served_models
from .search_store import INTERRUPTED, SearchStore
from .suites import suite_from_request

DRAWN = "drawn"
SAVE_EVERY_S = 1.0  # progress and findings are written at most this often while a search runs
CONFIG_KEYS = ("suite", "tasks", "budget", "seed", "max_tasks", "max_tokens")
log = logging.getLogger("iollm.editor")


class _RevisionedClient(RuntimeClient):
    """RuntimeClient plus ``revision`` (the model's content digest), so the call cache never mixes
    versions and still holds when the same model is published again."""

    async def revision(self, model: str) -> str:
        return self.runtime.resolve(self.caller, model).content_digest


def _count(body: dict[str, Any], key: str) -> int | None:
    """A whole number of at least 0 the request may send (absent, null, "" and 0 mean the default)."""
    value = body.get(key)
    if value in (None, "", 0):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key} must be a whole number of at least 0, not {value!r}", param=key)
    return value


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}


def findings(search: Search) -> dict[str, Any]:
    """What a running search has found so far, shaped like its final result (``candidates``, ``pareto``
    with graphs, ``best``) but from the search split only, and marked ``partial``."""
    tasks = search.split.search
    evaluator = search.evaluator
    seen = [(c, _rounded(evaluator.figures(c, tasks))) for c in search.space if evaluator.records(c, tasks)]
    front = [seen[i] for i in pareto_front([(f["quality"], f["cost"]) for _, f in seen])]

    def entry(c: Candidate, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": c.name,
            "template": c.template,
            "assignment": c.assignment,
            "params": c.params,
            "search": f,
            "graph": c.graph,
        }

    best = min(front, key=lambda cf: (-cf[1]["quality"], cf[1]["cost"], cf[0].name), default=None)
    return {
        "partial": True,
        "suite": search.config.suite.name,
        "models": list(search.config.models),
        "candidates": [{"name": c.name, "template": c.template, **f} for c, f in seen],
        "pareto": [entry(c, f) for c, f in front],
        "best": entry(*best) if best else None,
        "finalists": [],
    }


@dataclass
class SearchRun:
    """A search this process is running: the live figures the database row is written from."""

    id: str
    owner: str
    search: Search = field(repr=False)
    state: str = "running"  # running | done | failed | cancelled | interrupted
    phase: str = "search"
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    saved_at: float = 0.0
    task: asyncio.Task | None = field(default=None, repr=False)


class Searches:
    """The editor searches of one node: started and watched here, kept in the node's database."""

    def __init__(self, runtime: Runtime, hub: Hub, db: Database, node: str, cache_path: Path) -> None:
        self.runtime = runtime
        self.hub = hub
        self.cache_path = cache_path
        self.store = SearchStore(db, node)
        # This process has just begun serving searches: any row still "running" for this node belongs to
        # a process that is gone.
        self.store.interrupt_orphans()
        self.runs: dict[str, SearchRun] = {}

    def start(self, caller: Identity, body: dict[str, Any]) -> dict[str, Any]:
        owner = caller.require_user()
        self.runtime.caller_name(caller)  # the inference check: may this caller call models at all
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
            budget=_count(body, "budget"),
            workers=2,
            seed=_count(body, "seed") or 0,
            max_tasks=_count(body, "max_tasks"),
            max_tokens=_count(body, "max_tokens"),
            extra=[Candidate(DRAWN, DRAWN, {"models": models}, {}, graph.to_json())],
        )
        holder: list[SearchRun] = []

        def progress(phase: str, done: int, total: int) -> None:
            if holder:
                self._progress(holder[0], phase, done, total)

        search = Search(config, client, prices, progress)
        if search.budget < len(search.space):
            raise ProtocolError(
                f"a budget of {search.budget} cannot try each of the {len(search.space)} candidates once"
            )
        run = SearchRun(uuid.uuid4().hex[:12], owner, search)
        holder.append(run)
        asked = {k: body.get(k) for k in CONFIG_KEYS if body.get(k) not in (None, "", [])}
        self.store.insert(
            run.id, owner, {**asked, "graph": body["graph"], "models": models}, search.preview()
        )
        run.task = asyncio.get_running_loop().create_task(self._run(run))
        self.runs[run.id] = run
        return self._visible(caller, run.id)

    def _progress(self, run: SearchRun, phase: str, done: int, total: int) -> None:
        moved = phase != run.phase
        run.phase, run.done, run.total = phase, done, total
        if moved or time.monotonic() - run.saved_at >= SAVE_EVERY_S or done == total:
            self._save(run)

    def _save(self, run: SearchRun, finished: bool = False) -> None:
        result = run.result if run.result is not None else findings(run.search)
        try:
            self.store.save(
                run.id,
                state=run.state,
                phase=run.phase,
                done=run.done,
                total=run.total,
                result=result,
                error=run.error,
                finished=finished,
            )
        except Exception:  # a busy database must not kill the search; the next save catches up
            log.exception("cannot save the progress of search %s", run.id)
        run.saved_at = time.monotonic()

    async def _run(self, run: SearchRun) -> None:
        try:
            run.result = await run.search.run()
            run.state = "done"
        except asyncio.CancelledError:
            # Cancelled by its owner, or by the node shutting down (then it is interrupted, not cancelled).
            run.state = "cancelled" if run.cancel_requested else "interrupted"
            run.error = None if run.cancel_requested else INTERRUPTED
        except (SearchError, Exception) as exc:
            run.state, run.error = "failed", f"{exc.__class__.__name__}: {exc}"
        finally:
            self._save(run, finished=True)
            self.runs.pop(run.id, None)

    def _visible(self, caller: Identity, search_id: str) -> dict[str, Any]:
        name = caller.require_user()
        found = self.store.get(search_id)
        if found is None or (found["owner"] != name and not caller.is_admin):
            raise NotFound(f"no search {search_id!r} of yours on this node")
        return found

    def get(self, caller: Identity, search_id: str) -> dict[str, Any]:
        """A search the caller owns (admins: any), with its config, progress and result or findings."""
        return self._visible(caller, search_id)

    def list(self, caller: Identity) -> list[dict[str, Any]]:
        """The caller's searches, newest first (admins: everyone's); summaries without results."""
        name = caller.require_user()
        return self.store.list(None if caller.is_admin else name)

    async def cancel(self, caller: Identity, search_id: str) -> dict[str, Any]:
        """Stop a running search (in the event loop that runs it); what it found so far is kept."""
        self._visible(caller, search_id)
        run = self.runs.get(search_id)
        if run is not None and run.task is not None and not run.task.done():
            run.cancel_requested = True
            run.task.cancel()
            await asyncio.wait([run.task], timeout=10)
        return self._visible(caller, search_id)
