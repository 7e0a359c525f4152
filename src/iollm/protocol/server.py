"""The node's side of the wire that every router shares: reading a JSON request body, with one set of
errors whichever API it arrives on, and declaring the shape a router's errors take.

Routers import this module directly; the client half of ``iollm.protocol`` never needs it.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeVar, overload

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from ..errors import ProtocolError

Model = TypeVar("Model", bound=BaseModel)


class HasBody(Protocol):
    """What a request must offer (a Starlette ``Request`` does)."""

    async def body(self) -> bytes: ...


def parse_json_body(raw: bytes, *, empty: bytes = b"{}") -> Any:
    """The JSON value of a request body; an empty body reads as ``empty``."""
    try:
        return json.loads(raw or empty)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from exc


def json_object(raw: bytes, *, empty: bytes = b"{}") -> dict[str, Any]:
    """A request body that must be a JSON object."""
    data = parse_json_body(raw, empty=empty)
    if not isinstance(data, dict):
        raise ProtocolError("request body must be a JSON object")
    return data


def validate_body(model: type[Model], data: Any) -> Model:
    """``data`` as ``model``; the first schema error becomes a 400 naming the field (``param``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError(f"malformed request: {where}: {first.get('msg')}", param=where or None) from exc


@overload
async def read_json_body(request: HasBody, model: None = None, *, empty: bytes = ...) -> dict[str, Any]: ...
@overload
async def read_json_body(request: HasBody, model: type[Model], *, empty: bytes = ...) -> Model: ...
async def read_json_body(
    request: HasBody, model: type[Model] | None = None, *, empty: bytes = b"{}"
) -> dict[str, Any] | Model:
    """A request's JSON object body, validated as ``model`` when one is given. An empty body reads as
    ``empty`` (``b"null"`` makes it an error)."""
    data = json_object(await request.body(), empty=empty)
    return data if model is None else validate_body(model, data)


class MessageErrorRoute(APIRoute):
    """A route whose errors are ``{"error": "<message>"}``, the shape the Hugging Face Hub and Ollama
    answer in, instead of iollm's error object. A router declares it for all its routes:
    ``APIRouter(route_class=MessageErrorRoute)``; the node's error handlers read ``error_format``."""

    error_format = "message"
