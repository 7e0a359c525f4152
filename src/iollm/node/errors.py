"""Every failure leaves the node as JSON with the right status; the node itself stays up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import IollmError, ProtocolError
from ..store import ChunkCorrupt, ChunkMissing

log = logging.getLogger("iollm.node")

# A router declares the shape of its errors (``iollm.protocol.server.MessageErrorRoute``). These paths
# decide it only where no route has declared one: a request refused before routing (a body declared
# too large) and paths no router claims, such as the Hugging Face catch-all (/{ns}/{name}/resolve/...).
_HF_API_PREFIXES = ("/api/models", "/api/datasets", "/api/spaces", "/api/repos/create", "/api/whoami-v2")
# Ollama's routes declare the message dialect (runtime/ollama_api.py); its paths are still listed for
# requests refused before routing (413 by Content-Length, json_too_deep in node/limits.py), which no
# route has claimed. tests/test_request_limits.py does not assert that body shape, but Ollama clients
# read it, so the list stays to keep their answer the same.
_OLLAMA_PATHS = (
    "/api/chat",
    "/api/generate",
    "/api/show",
    "/api/tags",
    "/api/ps",
    "/api/version",
    "/api/embed",
    "/api/embeddings",
)
_NATIVE_PREFIXES = ("/api/", "/v1/", "/ui")


def _message_path(path: str) -> bool:
    if path.startswith(_HF_API_PREFIXES) or path in _OLLAMA_PATHS:
        return True
    return not path.startswith(_NATIVE_PREFIXES)


def answers_message(scope: Mapping[str, Any]) -> bool:
    """Whether errors on this request are ``{"error": "<message>"}`` rather than iollm's error object:
    as its route declares, else by its path."""
    declared = getattr(scope.get("route"), "error_format", None)
    if declared is not None:
        return declared == "message"
    return _message_path(scope["path"])


def header_safe(text: str, limit: int = 1000) -> str:
    """An HTTP header value: ASCII, no control characters (a newline in one makes the server drop the
    connection instead of answering), bounded."""
    ascii_text = text.encode("ascii", "replace").decode()
    return "".join(c if " " <= c <= "~" else " " for c in ascii_text)[:limit]


def error_response(request: Request, error: IollmError) -> JSONResponse:
    headers = {
        "X-Error-Code": error.code,
        "X-Error-Message": header_safe(error.message),
    }
    commit = error.details.get("commit")
    if commit:
        headers["X-Repo-Commit"] = str(commit)
    body = {"error": error.message} if answers_message(request.scope) else error.to_json()
    return JSONResponse(body, status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IollmError)
    async def _iollm(request: Request, exc: IollmError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(
            request, ProtocolError(f"malformed request: {where}: {first.get('msg', 'invalid')}")
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        error = IollmError(str(exc.detail))
        error.status = exc.status_code
        error.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error.type = "invalid_request_error"
        return error_response(request, error)

    @app.exception_handler(ChunkMissing)
    async def _missing(request: Request, exc: ChunkMissing) -> JSONResponse:
        error = IollmError(f"{exc}; the store lost data: run `iollm store verify`")
        return error_response(request, error)

    @app.exception_handler(ChunkCorrupt)
    async def _corrupt(request: Request, exc: ChunkCorrupt) -> JSONResponse:
        log.error("store damage: %s", exc)
        error = IollmError(
            f"{exc}; this node's store is damaged: run `iollm store verify`, pull from another peer"
        )
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, IollmError(f"internal error: {exc.__class__.__name__}: {exc}"))
