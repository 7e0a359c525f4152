"""``GET /api/models|datasets|spaces``: the Hub's repository listing, as ``list_models`` and friends call it.

Filters (``search``, ``author``, ``filter`` tags), ``sort`` with ``direction``, ``limit`` as the page size
and cursor paging through ``Link: <...>; rel="next"`` headers, which the client follows. Only
repositories the caller can read are ever listed, so a listing reveals nothing private.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..errors import ProtocolError
from ..protocol.server import MessageErrorRoute
from .accounts import Identity
from .deps import caller, hub
from .front_matter import hub_tags
from .repos import Hub, Repo

router = APIRouter(route_class=MessageErrorRoute)

# The Hub pages listings by 1000 at most; IOLLM_HF_LIST_PAGE lowers it (operators, tests of paging).
LIST_PAGE = max(1, int(os.environ.get("IOLLM_HF_LIST_PAGE", "1000")))
SORT_KEYS = ("id", "createdAt", "lastModified", "downloads", "likes", "trendingScore")


def _time(iso: str) -> str:
    return iso[:23] + "Z" if len(iso) >= 23 else iso


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProtocolError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ProtocolError(f"{name} must be at least {minimum}, not {value}")
    return value


def _entry(h: Hub, repo: Repo, head: tuple[str, dict[str, Any]] | None, full: bool) -> dict[str, Any]:
    commit_id, card = head if head else (None, {})
    item: dict[str, Any] = {
        "_id": f"{repo.type}-{repo.id}",
        "id": repo.repo_id,
        "author": repo.namespace,
        "sha": commit_id,
        "createdAt": _time(repo.created_at),
        "lastModified": _time(repo.updated_at),
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "trendingScore": 0,
        "tags": hub_tags(card),
    }
    if repo.type == "model":
        item["modelId"] = repo.repo_id
        library = card.get("library_name") or {"gguf": "gguf", "safetensors": "transformers"}.get(
            card.get("format", "")
        )
        if library:
            item["library_name"] = library
        if card.get("pipeline_tag"):
            item["pipeline_tag"] = card["pipeline_tag"]
    if full:
        files = h.manifest(commit_id).files if commit_id else []
        item["siblings"] = [{"rfilename": f.path} for f in files]
        item["usedStorage"] = card.get("size", 0)
        declared = card.get("declared") or {}
        card_data = {**declared, "license": card.get("license"), "tags": card.get("tags")}
        item["cardData"] = {k: v for k, v in card_data.items() if v is not None}
    return item


def _sorted(found: list[Repo], sort: str | None, descending: bool) -> list[Repo]:
    by_id = sorted(found, key=lambda r: r.repo_id)
    if sort in (None, "id"):
        return list(reversed(by_id)) if sort and descending else by_id
    if sort == "createdAt":
        return sorted(by_id, key=lambda r: r.created_at, reverse=descending)
    if sort == "lastModified":
        return sorted(by_id, key=lambda r: r.updated_at, reverse=descending)
    return by_id  # downloads, likes and trending are all zero here: the order is by id


def _listing(request: Request, repo_type: str, who: Identity, h: Hub) -> JSONResponse:
    params = request.query_params
    sort = params.get("sort") or None
    if sort is not None and sort not in SORT_KEYS:
        raise ProtocolError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
    direction = params.get("direction") or "-1"
    if direction not in ("-1", "1"):
        raise ProtocolError(f"direction must be -1 (descending) or 1 (ascending), not {direction!r}")
    page_size = min(_int_param(request, "limit", LIST_PAGE, 1), LIST_PAGE)
    cursor = _int_param(request, "cursor", 0, 0)
    full = params.get("full", "").lower() in ("1", "true")
    searches = [s.lower() for s in params.getlist("search") if s]
    wanted_tags = [t for t in params.getlist("filter") if t]

    found = h.list_repos(who, repo_type, namespace=params.get("author") or None)
    found = [r for r in found if all(s in r.repo_id.lower() for s in searches)]
    heads = h.heads(found)
    if wanted_tags:
        found = [
            r for r in found if set(wanted_tags) <= set(hub_tags(heads[r.id][1] if r.id in heads else {}))
        ]
    ordered = _sorted(found, sort, direction == "-1")
    page = ordered[cursor : cursor + page_size]
    headers: dict[str, str] = {}
    if cursor + page_size < len(ordered):
        query = [(k, v) for k, v in params.multi_items() if k != "cursor"] + [
            ("cursor", str(cursor + page_size))
        ]
        if "limit" not in params:
            query.append(("limit", str(page_size)))
        base = str(request.base_url).rstrip("/")
        headers["Link"] = f'<{base}{request.url.path}?{urllib.parse.urlencode(query)}>; rel="next"'
    body = [_entry(h, r, heads.get(r.id), full) for r in page]
    return JSONResponse(body, headers=headers)


@router.get("/api/models")
async def hf_list_models(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> JSONResponse:
    return await run_in_threadpool(_listing, request, "model", who, h)


@router.get("/api/datasets")
async def hf_list_datasets(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> JSONResponse:
    return await run_in_threadpool(_listing, request, "dataset", who, h)


@router.get("/api/spaces")
async def hf_list_spaces(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> JSONResponse:
    return await run_in_threadpool(_listing, request, "space", who, h)
