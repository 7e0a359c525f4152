"""HTTP routes of the leaderboard: submit a held-out result, read a suite's board, list breakthroughs.

Suite names contain "/" (``mmlu/anatomy``, ``evals/bigrams``), so the suite is a path parameter that may span
segments: ``POST /api/leaderboard/evals/bigrams/submissions``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..database import Database
from ..errors import Forbidden, NotFound
from ..hub import Identity
from ..hub.deps import caller
from . import leaderboard as board

router = APIRouter(prefix="/api")


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graph: dict[str, Any]
    scores: list[float] = Field(description="held-out per-task scores, in the split's task order")
    fingerprint: str = Field(description="sha256 of the held-out split's task ids (SuiteSplit.fingerprint)")
    cost_per_task: float = Field(ge=0, description="micro-credits per task on the held-out split")
    idempotency_key: str | None = Field(default=None, max_length=128)
    jobs: list[str] | None = Field(
        default=None, description="compute jobs (path-eval) that evaluated it; their providers share rewards"
    )


def _db(request: Request) -> Database:
    return request.app.state.parts.db


def _margin(request: Request) -> float:
    margin = getattr(request.app.state, "leaderboard_margin", None)
    return board.margin_from_env() if margin is None else float(margin)


@router.post("/leaderboard/{suite:path}/submissions")
async def submit(
    suite: str, body: Submission, request: Request, who: Identity = Depends(caller)
) -> dict[str, Any]:
    """Record a result; the designer is the caller. A new record by the margin is a breakthrough."""
    designer = who.require_user()
    if who.scope != "write":
        raise Forbidden("this token is read-only; submitting a result needs a write token")
    key = body.idempotency_key or request.headers.get("idempotency-key")
    return await run_in_threadpool(
        board.submit,
        _db(request),
        suite,
        designer,
        body.graph,
        body.scores,
        body.fingerprint,
        body.cost_per_task,
        _margin(request),
        key,
        body.jobs,
    )


@router.get("/leaderboard/{suite:path}")
def get_board(suite: str, request: Request, fingerprint: str | None = None) -> dict[str, Any]:
    """The holder and ranked submissions of a suite's held-out split (default: the latest split used)."""
    return {**board.leaderboard(_db(request), suite, fingerprint), "margin": _margin(request)}


@router.get("/breakthroughs")
def get_breakthroughs(
    request: Request, since_id: int | None = None, suite: str | None = None
) -> dict[str, Any]:
    return {"breakthroughs": board.list_breakthroughs(_db(request), since_id, suite)}


@router.get("/leaderboard-submissions/{submission_id}")
def get_submission(submission_id: int, request: Request) -> dict[str, Any]:
    found = board.get_submission(_db(request), submission_id)
    if found is None:
        raise NotFound(f"no submission {submission_id}")
    return found
