"""Body-size and JSON-depth limits for every API, enforced once, in front of every route.

A request whose ``Content-Length`` is over its route's limit is answered 413 before any of its body is
read; a chunked body is counted as it streams and stopped at the limit. A JSON body nested deeper than
the depth limit is answered 400 while it streams, before any route parses it (a deep array would
otherwise make ``json.loads`` recurse until it fails). Upload routes carry large binary bodies: their
own limits apply (the chunk-batch limit; the signed LFS ticket's size; the import limit) and their
bodies are not scanned as JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..errors import PayloadTooLarge, ProtocolError
from .errors import answers_message

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MiB = 1 << 20
DEFAULT_MAX_BODY_BYTES = 8 * MiB  # JSON APIs: chat, completions, accounts, editor, jobs, ledger...
DEFAULT_MAX_MANIFEST_BYTES = 64 * MiB  # commits and chunk lists (a manifest of a large model)
DEFAULT_MAX_UPLOAD_BYTES = 256 * MiB  # one batch of chunks on POST /api/chunks
DEFAULT_MAX_JSON_DEPTH = 64
MIN_UPLOAD_BYTES = 17 * MiB  # the push client sends chunks in batches of up to 16 MiB plus frame headers


class JsonTooDeep(ProtocolError):
    code = "json_too_deep"


@dataclass(frozen=True)
class BodyLimits:
    body: int = DEFAULT_MAX_BODY_BYTES
    manifest: int = DEFAULT_MAX_MANIFEST_BYTES
    upload: int = DEFAULT_MAX_UPLOAD_BYTES
    depth: int = DEFAULT_MAX_JSON_DEPTH

    @classmethod
    def from_env(cls, **given: int | None) -> BodyLimits:
        """Explicit values (``iollm up`` options), else ``IOLLM_MAX_BODY_BYTES``,
        ``IOLLM_MAX_MANIFEST_BYTES``, ``IOLLM_MAX_UPLOAD_BYTES``, ``IOLLM_MAX_JSON_DEPTH``, else defaults."""
        values: dict[str, int] = {}
        for name in ("body", "manifest", "upload", "depth"):
            value = given.get(name)
            if value is None:
                env = os.environ.get(
                    "IOLLM_MAX_JSON_DEPTH" if name == "depth" else f"IOLLM_MAX_{name.upper()}_BYTES"
                )
                value = int(env) if env else None
            if value is not None:
                if value <= 0:
                    raise ValueError(f"the {name} limit must be positive, not {value}")
                values[name] = value
        limits = cls(**values)
        if limits.upload < MIN_UPLOAD_BYTES:
            raise ValueError(f"the upload limit must be at least {MIN_UPLOAD_BYTES} bytes (one push batch)")
        return limits


_MANIFEST_ROUTE = re.compile(
    r"^/api/(chunks/(missing|fetch)|repos/[^/]+/[^/]+/[^/]+/commits"
    r"|(models|datasets|spaces)/[^/]+/[^/]+/(commit|preupload|paths-info)/.*)$"
    r"|\.git/info/lfs/objects/batch$"
)
# These routes check their own bound: the signed LFS ticket's size, the import limit, Xet's 64 MiB
# xorb and shard limits (binary bodies, never scanned as JSON); Ollama's blobs are whole weights
# files, bounded like an import.
_ROUTE_LIMITED = re.compile(
    r"^/api/(lfs/upload/[^/]+|import|blobs/[^/]+)$|^/v1/(xorbs/[^/]+/[^/]+|shards)$|^/shards$"
)


_HINTS = {
    "upload": "iollm up --max-upload-bytes / IOLLM_MAX_UPLOAD_BYTES",
    "manifest": "IOLLM_MAX_MANIFEST_BYTES",
    "body": "iollm up --max-body-bytes / IOLLM_MAX_BODY_BYTES",
}


def route_limit(method: str, path: str, limits: BodyLimits) -> tuple[int | None, str, bool]:
    """The byte limit for a request (None: the route enforces its own), which limit it is, and whether
    to scan the body as JSON."""
    if method == "POST" and path == "/api/chunks":
        return limits.upload, "upload", False
    if _ROUTE_LIMITED.match(path):
        return None, "", False
    if _MANIFEST_ROUTE.search(path):
        return limits.manifest, "manifest", True
    return limits.body, "body", True


_STRUCTURE = re.compile(rb'[\[\]{}"\\\n]')


class DepthScanner:
    """Tracks JSON nesting depth across the pieces of a streamed body (strings are skipped).

    Most bodies open fewer brackets in all than the limit allows, and then cannot be too deep: until
    the count of ``[`` and ``{`` (a C-speed upper bound on the depth) passes the limit, pieces are only
    counted and kept, and the exact scan runs over them only once it does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the previous piece ended with a backslash inside a string
        self._opened = 0  # brackets opened so far, while under the limit
        self._unscanned: list[bytes] | None = []

    def feed(self, data: bytes) -> None:
        if self._unscanned is not None:
            self._opened += data.count(b"[") + data.count(b"{")
            if self._opened <= self.limit:
                self._unscanned.append(data)
                return
            unscanned, self._unscanned = self._unscanned, None
            for piece in unscanned:
                self._scan(piece)
        self._scan(data)

    def _scan(self, data: bytes) -> None:
        skip = 0 if self.escaped else -1
        self.escaped = False
        for match in _STRUCTURE.finditer(data):
            at = match.start()
            if at == skip:
                continue
            char = data[at]
            if char == 0x0A:  # a raw newline never occurs inside a JSON string (ndjson: a new value)
                self.in_string = False
            elif self.in_string:
                if char == 0x5C:  # backslash: the next byte is escaped
                    skip = at + 1
                    if skip == len(data):
                        self.escaped = True
                elif char == 0x22:
                    self.in_string = False
            elif char == 0x22:
                self.in_string = True
            elif char in (0x5B, 0x7B):
                self.depth += 1
                if self.depth > self.limit:
                    raise JsonTooDeep(f"request body is nested deeper than {self.limit} levels")
            elif char in (0x5D, 0x7D):
                self.depth = max(0, self.depth - 1)


def _error_body(scope: Scope, error: ProtocolError) -> bytes:
    body: Any = {"error": error.message} if answers_message(scope) else error.to_json()
    return json.dumps(body).encode()


class BodyLimitMiddleware:
    """ASGI middleware: 413 over the size limit (before reading, when declared), 400 over the depth."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit, kind, scan = route_limit(scope["method"], path, self.limits)
        if limit is not None:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _answer(send, scope, _too_large(declared, limit, kind))
                return
        scanner = DepthScanner(self.limits.depth) if scan else None
        state: dict[str, Any] = {"received": 0, "error": None, "started": False, "replaced": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                state["received"] += len(chunk)
                if limit is not None and state["received"] > limit:
                    state["error"] = _too_large(None, limit, kind)
                    raise state["error"]
                if scanner is not None and chunk:
                    try:
                        scanner.feed(chunk)
                    except JsonTooDeep as exc:
                        state["error"] = exc
                        raise
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever a route answers after its body was refused, the client gets the refusal.
            if state["error"] is not None and not state["started"]:
                state["started"] = state["replaced"] = True
                await _answer(send, scope, state["error"])
                return
            if state["replaced"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if state["error"] is None or state["started"]:
                raise
            await _answer(send, scope, state["error"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(declared: int | None, limit: int, kind: str) -> PayloadTooLarge:
    size = f"of {declared} bytes " if declared is not None else ""
    return PayloadTooLarge(
        f"request body {size}exceeds this node's limit of {limit} bytes for this API "
        f"(set by the node's operator: {_HINTS[kind]}; see SECURITY.md)",
        limit=limit,
    )


async def _answer(send: Send, scope: Scope, error: ProtocolError) -> None:
    body = _error_body(scope, error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-error-code", error.code.encode()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
