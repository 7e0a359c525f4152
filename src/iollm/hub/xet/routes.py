"""HTTP side of Xet: token routes under /api (as the Hub has them) and the CAS API under /v1.

Tokens are short-lived, signed by the node, and name one repository and a mode (read or write);
the CAS routes take nothing else. Xorb ranges are fetched from URLs the node signs for a few
minutes (like presigned object-store URLs), since hf_xet sends no token with them.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import Forbidden, NotFound, PayloadTooLarge, Unauthorized
from ..accounts import ANONYMOUS, Identity
from ..deps import accounts, caller, hub
from ..repos import Hub
from .format import MAX_XORB_BYTES, from_hex, to_hex
from .service import XetStore

TOKEN_SECONDS = 3600
FETCH_SECONDS = 900
MAX_SHARD_BYTES = 64 * 1024 * 1024
PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}

router = APIRouter()


def xet_store(request: Request) -> XetStore:
    return xet_store_of(request.app.state.hub)


def xet_store_of(h: Hub) -> XetStore:
    """The Xet store of a hub, for routes outside this package (resolve headers, tree listings)."""
    store = getattr(h, "_xet_store", None)
    if store is None:
        store = XetStore(h)
        h._xet_store = store  # type: ignore[attr-defined]
    return store


def _sign(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class XetToken:
    user: str
    repo_pk: int
    repo_type: str
    repo_id: str
    mode: str  # "read" | "write"
    expires: int


def issue_token(user: str, repo_pk: int, repo_type: str, repo_id: str, mode: str) -> XetToken:
    return XetToken(user, repo_pk, repo_type, repo_id, mode, int(time.time()) + TOKEN_SECONDS)


def encode_token(secret: bytes, token: XetToken) -> str:
    payload = json.dumps(
        [token.user, token.repo_pk, token.repo_type, token.repo_id, token.mode, token.expires],
        separators=(",", ":"),
    )
    body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    return f"xet_{body}.{_sign(secret, 'xet-token|' + body)}"


def decode_token(secret: bytes, header: str) -> XetToken:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith("xet_") or "." not in value:
        raise Unauthorized(
            "this Xet route needs a Xet access token (GET .../xet-read-token or xet-write-token)"
        )
    body, _, signature = value[4:].rpartition(".")
    if not hmac.compare_digest(_sign(secret, "xet-token|" + body), signature):
        raise Unauthorized("the Xet access token is not one this node issued")
    user, repo_pk, repo_type, repo_id, mode, expires = json.loads(base64.urlsafe_b64decode(body + "=" * 4))
    if expires < time.time():
        raise Unauthorized("the Xet access token has expired: ask for a new one")
    return XetToken(user, int(repo_pk), repo_type, repo_id, mode, int(expires))


async def xet_caller(request: Request) -> tuple[XetToken, Identity]:
    token = decode_token(request.app.state.secret, request.headers.get("authorization", ""))
    if not token.user:
        return token, ANONYMOUS
    who = await run_in_threadpool(accounts(request).identity_for, token.user)
    return token, who if token.mode == "write" else replace(who, scope="read")


def _writer(token: XetToken, who: Identity) -> Identity:
    namespace = token.repo_id.split("/", 1)[0]
    if token.mode != "write" or not who.can_write(namespace):
        raise Forbidden("this Xet token may only read: uploads need a token from xet-write-token")
    return who


# -- tokens ------------------------------------------------------------------------------------


def _token_response(
    request: Request, h: Hub, who: Identity, plural: str, repo_id: str, mode: str
) -> Response:
    if plural not in PLURAL:
        raise NotFound(f"unknown repository kind {plural!r}: use models, datasets or spaces")
    repo = h.get_repo(who, PLURAL[plural], repo_id)  # RepoNotFound (404) when it cannot be read
    if mode == "write":
        who.require_write(repo.namespace)
    token = issue_token(who.name or "", repo.id, repo.type, repo.repo_id, mode)
    secret = encode_token(request.app.state.secret, token)
    cas = str(request.base_url).rstrip("/")
    headers = {
        "X-Xet-Cas-Url": cas,
        "X-Xet-Access-Token": secret,
        "X-Xet-Token-Expiration": str(token.expires),
    }
    return JSONResponse({"casUrl": cas, "accessToken": secret, "exp": token.expires}, headers=headers)


for _mode in ("read", "write"):

    def _make(mode: str):
        async def token_route(
            request: Request,
            plural: str,
            namespace: str,
            name: str,
            who: Identity = Depends(caller),
            h: Hub = Depends(hub),
        ) -> Response:
            return await run_in_threadpool(
                _token_response, request, h, who, plural, f"{namespace}/{name}", mode
            )

        return token_route

    router.add_api_route(
        f"/api/{{plural}}/{{namespace}}/{{name}}/xet-{_mode}-token/{{revision:path}}",
        _make(_mode),
        methods=["GET"],
        include_in_schema=False,
    )
    router.add_api_route(
        f"/api/{{plural}}/{{namespace}}/{{name}}/xet-{_mode}-token",
        _make(_mode),
        methods=["GET"],
        include_in_schema=False,
    )


def xet_headers(
    request: Request, repo_type: str, repo_id: str, revision: str, xet_hash: str
) -> dict[str, str]:
    """Headers on resolve that send hf_xet to this node's CAS for a file stored through Xet."""
    plural = {"model": "models", "dataset": "datasets", "space": "spaces"}[repo_type]
    route = f"{str(request.base_url).rstrip('/')}/api/{plural}/{repo_id}/xet-read-token/{revision}"
    return {"X-Xet-Hash": xet_hash, "X-Xet-Refresh-Route": route, "Link": f'<{route}>; rel="xet-auth"'}


# -- CAS: uploads ------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise PayloadTooLarge(f"this body may be at most {limit} bytes, not {declared}")
    parts: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(f"this body may be at most {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


@router.post("/v1/xorbs/{prefix}/{hash_hex}")
async def upload_xorb(request: Request, prefix: str, hash_hex: str) -> dict[str, Any]:
    token, who = await xet_caller(request)
    _writer(token, who)
    from_hex(hash_hex)
    body = await _read_body(request, MAX_XORB_BYTES + (1 << 20))
    inserted = await run_in_threadpool(xet_store(request).put_xorb, who, hash_hex, body)
    return {"was_inserted": inserted}


@router.head("/v1/xorbs/{prefix}/{hash_hex}")
async def head_xorb(request: Request, prefix: str, hash_hex: str) -> Response:
    _token, who = await xet_caller(request)
    store = xet_store(request)
    found = await run_in_threadpool(
        lambda: store.xorb(hash_hex) is not None and store.may_use_xorb(who, hash_hex)
    )
    return Response(status_code=200 if found else 404)


async def _upload_shard(request: Request) -> dict[str, Any]:
    token, who = await xet_caller(request)
    _writer(token, who)
    body = await _read_body(request, MAX_SHARD_BYTES)
    recorded = await run_in_threadpool(xet_store(request).put_shard, who, body, request.app.state.tmp_dir)
    return {"result": 1 if recorded else 0}


router.add_api_route("/v1/shards", _upload_shard, methods=["POST"], include_in_schema=False)
router.add_api_route("/shards", _upload_shard, methods=["POST"], include_in_schema=False)


def _not_served(what: str):
    async def route(request: Request) -> Response:
        message = f"{what} is not served by this node; use the v1 API"
        return JSONResponse({"error": message}, status_code=404, headers={"X-Error-Message": message})

    return route


# The v2 shard upload (streamed NDJSON progress) and v2 reconstruction (multi-range URLs) are
# optional: hf_xet falls back to v1 on a 404. Direct-to-bucket xorb grants likewise.
router.add_api_route("/v2/shards", _not_served("v2 shard upload"), methods=["POST"], include_in_schema=False)
router.add_api_route(
    "/v2/reconstructions/{file_id}",
    _not_served("v2 reconstruction"),
    methods=["GET"],
    include_in_schema=False,
)


@router.get("/v1/chunks/{prefix}/{hash_hex}")
async def global_dedup(request: Request, prefix: str, hash_hex: str) -> Response:
    """Global dedup: a shard listing xorbs that hold this chunk and that the caller may reference (chunk
    hashes keyed with a fresh HMAC key), or 404 (the spec's "no dedup") when there is none."""
    _token, who = await xet_caller(request)
    from_hex(hash_hex)
    shard = await run_in_threadpool(xet_store(request).dedup_shard, who, hash_hex.lower())
    if shard is None:
        return Response(status_code=404)
    return Response(content=shard, media_type="application/octet-stream")


# -- CAS: downloads ----------------------------------------------------------------------------


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' -> [a, b+1) clipped to size; None for no header; ValueError when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, _, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or "," in spec or not first:
        raise ValueError("only one 'bytes=a-b' range is served")
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise ValueError("range not satisfiable")
    return start, end


@router.get("/v1/reconstructions/{file_id}")
async def reconstruction(request: Request, file_id: str) -> Response:
    token, _who = await xet_caller(request)
    store = xet_store(request)
    secret: bytes = request.app.state.secret
    base = str(request.base_url).rstrip("/")
    expires = int(time.time()) + FETCH_SECONDS

    def fetch_url(xorb: str) -> str:
        query = urllib.parse.urlencode({"e": expires, "s": _sign(secret, f"xet-fetch|{xorb}|{expires}")})
        return f"{base}/v1/xet-fetch/{xorb}?{query}"

    def work() -> Response:
        item = store.file(file_id.lower())
        # A token reads files of its own repository only; any other file is "not found", whether it
        # exists or not.
        if item is None or not store.repo_holds(token.repo_pk, item.sha256):
            raise NotFound(f"no file {file_id} in {token.repo_id}")
        try:
            span = _byte_range(request.headers.get("range", ""), item.size)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{item.size}"})
        return JSONResponse(store.reconstruction(item, span, fetch_url))

    return await run_in_threadpool(work)


@router.get("/v1/xet-fetch/{xorb}")
async def fetch_xorb(request: Request, xorb: str) -> Response:
    """Bytes of a xorb as the node serves it (uncompressed chunks), by a URL this node signed."""
    try:
        expires = int(request.query_params.get("e", "0"))
    except ValueError:
        expires = 0
    expected = _sign(request.app.state.secret, f"xet-fetch|{xorb}|{expires}")
    if expires < time.time() or not hmac.compare_digest(expected, request.query_params.get("s", "")):
        return Response(status_code=403)  # hf_xet asks for a fresh reconstruction on 403
    store = xet_store(request)
    record = await run_in_threadpool(store.xorb, xorb)
    if record is None:
        raise NotFound(f"xorb {xorb} is not on this node")
    served = record.served_starts
    try:
        span = _byte_range(request.headers.get("range", ""), served[-1])
    except ValueError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{served[-1]}"})
    start, end = span if span else (0, served[-1])
    first = bisect.bisect_left(served, start)
    last = bisect.bisect_left(served, end)
    if first >= len(served) or served[first] != start or last >= len(served) or served[last] != end:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{served[-1]}"})
    headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{served[-1]}"
    pieces = store.serve_range(record, first, last)
    return StreamingResponse(
        pieces, status_code=206 if span else 200, headers=headers, media_type="application/octet-stream"
    )


@router.get("/api/xet/stats")
async def xet_stats(request: Request, who: Identity = Depends(caller)) -> dict[str, int]:
    """Counters of what Xet clients sent (admin only): benchmarks read bytes-on-the-wire here."""
    who.require_admin()
    return dict(xet_store(request).counters)


# Anything else under /v1 or /v2 (direct-to-bucket xorb grants and commits, file chunk hashes,
# telemetry, ...) is a feature this node does not offer: 404, which hf_xet takes as "use the
# plain path", never the hub's 401 for a token it does not know.
router.add_api_route(
    "/v1/{rest:path}", _not_served("this Xet API"), methods=["GET", "POST", "HEAD"], include_in_schema=False
)
router.add_api_route(
    "/v2/{rest:path}", _not_served("this Xet API"), methods=["GET", "POST", "HEAD"], include_in_schema=False
)


__all__ = ["from_hex", "router", "to_hex", "xet_headers", "xet_store", "xet_store_of"]
