"""Structured output: JSON schemas turned into llama.cpp grammars (GBNF) that the sampler must follow.

OpenAI's ``response_format`` (``json_object``, ``json_schema``), Ollama's ``format`` and a forced tool
call (``tool_choice`` "required" or a named function) all become one grammar, built with the
JSON-schema converter that ships with llama-cpp-python. An answer that follows the grammar parses, and
validates against the schema, only if the converter understands every keyword in it: it silently drops
the ones it does not (``minimum``, ``not``, ``uniqueItems``...). So schemas are checked against the
keywords it enforces first, and anything else is refused with a 400 naming the request parameter,
never loosened in silence.
"""

from __future__ import annotations

import json
from typing import Any

from .backends.base import Unsupported

# Keywords that only describe: they never change which documents are valid.
_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
# Keywords the converter turns into grammar rules (with the limits ``_check`` adds).
_ENFORCED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "minLength",
    "maxLength",
    "pattern",
    "format",
}
_TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
_FORMATS = {"date", "time", "date-time", "uuid"}
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def _refuse(param: str, where: str, what: str) -> Unsupported:
    return Unsupported(
        f"{param}: {what} at {where or 'the top of the schema'} cannot be enforced by the grammar; "
        "supported: type, properties, required, additionalProperties, items, prefixItems, minItems, "
        "maxItems, enum, const, anyOf, $ref/$defs, minLength, maxLength, anchored pattern, "
        "format (date, time, date-time, uuid)",
        param=param,
    )


def check_schema(schema: Any, param: str, where: str = "") -> None:
    """Refuse (Unsupported naming ``param``) a schema the grammar would not enforce exactly."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise Unsupported(f"{param}: a schema must be a JSON object (at {where or 'top'})", param=param)
    unknown = sorted(set(schema) - _ANNOTATIONS - _ENFORCED)
    if unknown:
        raise _refuse(param, where, f"the keyword {unknown[0]!r}")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if any(k not in _TYPES for k in kinds):
        raise _refuse(param, where, f"the type {kind!r}")
    if ("minLength" in schema or "maxLength" in schema) and kind != "string":
        raise _refuse(param, where, "minLength/maxLength without type string")
    if "format" in schema and (schema["format"] not in _FORMATS or kind not in (None, "string")):
        raise _refuse(param, where, f"the format {schema['format']!r}")
    pattern = schema.get("pattern")
    if pattern is not None and not (
        isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
    ):
        raise _refuse(param, where, "a pattern not anchored with ^ and $")
    if "prefixItems" in schema and ("minItems" in schema or "maxItems" in schema):
        raise _refuse(param, where, "minItems/maxItems with prefixItems")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise _refuse(param, where, f"the non-local $ref {ref!r}")
    properties = schema.get("properties") or {}
    missing = [name for name in schema.get("required") or [] if name not in properties]
    if missing:
        raise _refuse(param, where, f"required {missing[0]!r} without a schema in properties")
    for name, sub in properties.items():
        check_schema(sub, param, f"{where}/properties/{name}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        check_schema(extra, param, f"{where}/additionalProperties")
    items = schema.get("items")
    for i, sub in enumerate(items if isinstance(items, list) else [items] if items is not None else []):
        if sub is not False:
            check_schema(sub, param, f"{where}/items/{i}")
    for i, sub in enumerate(schema.get("prefixItems") or []):
        check_schema(sub, param, f"{where}/prefixItems/{i}")
    for i, sub in enumerate(schema.get("anyOf") or []):
        check_schema(sub, param, f"{where}/anyOf/{i}")
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            check_schema(sub, param, f"{where}/{key}/{name}")


def _converter() -> Any:
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError as exc:  # the runtime extra is missing: nothing here can constrain tokens
        raise Unsupported("structured output needs llama-cpp-python", param="response_format") from exc
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: Any, schema: Any, name: str, param: str) -> str:
    """The rule name for ``schema`` (``name`` "" makes it ``root``); converter errors name ``param``."""
    try:
        schema = converter.resolve_refs(schema if isinstance(schema, dict) else {}, "input")
        return converter.visit(schema, name)
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise Unsupported(
            f"{param}: the schema cannot be turned into a grammar ({exc})", param=param
        ) from exc


# The converter's string characters include raw control characters, which JSON forbids in strings.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x00-\\x1f] |'


def _format(converter: Any) -> str:
    return converter.format_grammar().replace(_LOOSE_CHAR, _JSON_CHAR)


def schema_grammar(schema: Any, param: str = "response_format") -> str:
    """GBNF for JSON documents valid against ``schema`` (checked first)."""
    check_schema(schema, param)
    converter = _converter()
    _visit(converter, schema, "", param)
    return _format(converter)


def response_format_grammar(value: Any) -> str | None:
    """The grammar for OpenAI's ``response_format``; None for ``text``; 400 for anything else."""
    param = "response_format"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Unsupported("response_format must be an object with a type", param=param)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return schema_grammar({"type": "object"}, param)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise Unsupported("response_format.json_schema needs a name and a schema", param=param)
        schema = spec.get("schema")
        return schema_grammar({"type": "object"} if schema is None else schema, param)
    raise Unsupported(
        f"response_format type {kind!r} is not supported (text, json_object, json_schema)", param=param
    )


def tool_call_grammar(tools: list[dict[str, Any]], several: bool, param: str = "tools") -> str:
    """GBNF for Hermes/Qwen tool calls (``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``)
    to ``tools``: one call, or with ``several`` one or more, and nothing else."""
    branches = []
    for tool in tools:
        function = tool["function"]
        arguments = function.get("parameters") or {"type": "object", "properties": {}}
        check_schema(arguments, param, f"/{function['name']}/parameters")
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
            }
        )
    converter = _converter()
    call = _visit(converter, branches[0] if len(branches) == 1 else {"anyOf": branches}, "call", param)
    grammar = _format(converter)
    block = f"{json.dumps(TOOL_CALL_OPEN + chr(10))} {call} {json.dumps(chr(10) + TOOL_CALL_CLOSE)}"
    root = 'root ::= tool-block ("\\n" tool-block)*' if several else "root ::= tool-block"
    return f"{root}\ntool-block ::= {block}\n{grammar}"
