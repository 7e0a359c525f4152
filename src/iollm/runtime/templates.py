"""Chat templates: turn a list of messages into the exact prompt text a model was trained on.

Three kinds: Hugging Face Jinja templates (what GGUF files carry in ``tokenizer.chat_template``), the
Go-template subset that Ollama Modelfiles use in ``TEMPLATE`` (so existing Modelfiles keep working),
and a plain fallback for base models that have no template at all (such as Gemma-3-270M base).

Tools: a Jinja template that reads ``tools`` renders OpenAI tool definitions itself, and assistant
turns with ``tool_calls`` and ``tool`` turns render through it too (so call -> result -> answer is the
conversation the model was trained on). Tool-call arguments arrive as JSON strings (OpenAI) but templates
such as Qwen's write ``arguments | tojson``, so they are handed over parsed, as transformers documents.
``tool_format`` says which tool-call text the model writes; only Hermes/Qwen ``<tool_call>`` is parsed
(runtime.tools), so a template without tools, or with another format, refuses ``tools``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .backends.base import ChatMessage


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class ChatTemplate:
    """A renderer plus the stop strings that end an assistant turn in this format."""

    kind: str  # "jinja" | "go" | "plain"
    source: str
    bos_token: str = ""
    eos_token: str = ""

    def render(
        self,
        messages: list[ChatMessage],
        system: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        if system and not any(m.role == "system" for m in messages):
            messages = [ChatMessage("system", system), *messages]
        if tools and self.tool_format is None:
            raise TemplateError("this model's chat template does not support tools")
        if self.kind == "jinja":
            return _render_jinja(self.source, messages, self.bos_token, self.eos_token, tools)
        if self.kind == "go":
            return render_go_template(self.source, messages)
        return _render_plain(messages)

    @property
    def tool_format(self) -> str | None:
        """``"hermes"`` when the template renders ``tools`` and its calls are ``<tool_call>`` blocks."""
        if self.kind == "jinja" and "tools" in self.source and "<tool_call>" in self.source:
            return "hermes"
        return None

    @property
    def stops(self) -> list[str]:
        if self.kind == "plain":
            return ["\nUser:", "\nuser:"]
        found = [
            tok for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>") if tok in self.source
        ]
        if self.eos_token and self.eos_token not in found:
            found.append(self.eos_token)
        return found


def pick_template(
    gguf_template: str | None, envfile_template: str | None, bos: str = "", eos: str = ""
) -> ChatTemplate:
    """The Envfile's TEMPLATE wins; then the model's own; a model with neither gets the plain format."""
    source = envfile_template or gguf_template
    if not source:
        return ChatTemplate("plain", "", bos, eos)
    kind = "jinja" if ("{%" in source or ("messages" in source and "{{ ." not in source)) else "go"
    return ChatTemplate(kind, source, bos, eos)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    """transformers' ``tojson``: keys in the order given (Jinja's own sorts them, which is not the text
    the model was trained on) and non-ASCII kept."""
    separators = kw.get("separators")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as templates read it: tool-call arguments parsed from their JSON string."""
    out = message.wire()
    calls = []
    for call in out.get("tool_calls") or []:
        function = dict(call.get("function") or {})
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments)
            except ValueError:
                pass  # rendered as the string it is
        calls.append({**call, "function": function})
    if calls:
        out["tool_calls"] = calls
    return out


def _render_jinja(
    source: str, messages: list[ChatMessage], bos: str, eos: str, tools: list[dict[str, Any]] | None = None
) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = _tojson
    env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
    try:
        extra = {"tools": tools} if tools else {}  # some templates test ``tools is defined``
        return env.from_string(source).render(
            messages=[template_message(m) for m in messages],
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
            **extra,
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template failed: {exc}") from exc


def _render_plain(messages: list[ChatMessage]) -> str:
    """For base models: a transcript they continue naturally."""
    lines = []
    for message in messages:
        label = {"system": "", "user": "User: ", "assistant": "Assistant: "}.get(
            message.role, f"{message.role}: "
        )
        lines.append(f"{label}{message.content}")
    return "\n".join(lines) + "\nAssistant:"


# -- the Go text/template subset of Ollama Modelfiles --------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(source: str) -> list[tuple[str, str]]:
    """Split into ("text", ...) and ("action", ...) honouring {{- and -}} whitespace trimming."""
    out: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            out.append(("text", text))
        out.append(("action", match.group(2)))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = source[position:]
    if trim_next:
        tail = tail.lstrip()
    if tail:
        out.append(("text", tail))
    return out


def _parse(
    tokens: list[tuple[str, str]], index: int = 0, closers: tuple[str, ...] = ()
) -> tuple[list, int, str]:
    """Nested nodes: ("text", s) | ("var", name) | ("if", cond, then, else) | ("range", name, body)."""
    nodes: list[Any] = []
    while index < len(tokens):
        kind, value = tokens[index]
        index += 1
        if kind == "text":
            nodes.append(("text", value))
            continue
        word = value.split()[0] if value else ""
        if word in closers:
            return nodes, index, word
        if word == "if":
            then, index, closer = _parse(tokens, index, ("else", "end"))
            other: list[Any] = []
            if closer == "else":
                other, index, _ = _parse(tokens, index, ("end",))
            nodes.append(("if", value[2:].strip(), then, other))
        elif word == "range":
            body, index, _ = _parse(tokens, index, ("end",))
            nodes.append(("range", value[5:].strip(), body))
        elif value.startswith("."):
            nodes.append(("var", value))
        elif value.startswith("/*") or not value:
            continue
        else:
            raise TemplateError(f"unsupported template action {{{{ {value} }}}}")
    if closers:
        raise TemplateError(f"template ends without {{{{ {closers[-1]} }}}}")
    return nodes, index, ""


def _lookup(name: str, scope: dict[str, Any]) -> Any:
    value: Any = scope
    for part in name.lstrip(".").split("."):
        if not part:
            continue
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value


def _truthy(condition: str, scope: dict[str, Any]) -> bool:
    words = condition.split()
    if words and words[0] in ("and", "or"):
        values = [_truthy(w, scope) for w in words[1:]]
        return all(values) if words[0] == "and" else any(values)
    if words and words[0] == "not":
        return not _truthy(" ".join(words[1:]), scope)
    if words and words[0] == "eq" and len(words) == 3:
        return str(_lookup(words[1], scope)) == words[2].strip('"')
    return bool(_lookup(condition, scope))


def _execute(nodes: list[Any], scope: dict[str, Any]) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "var":
            out.append(str(_lookup(node[1], scope)))
        elif node[0] == "if":
            out.append(_execute(node[2] if _truthy(node[1], scope) else node[3], scope))
        elif node[0] == "range":
            for item in _lookup(node[1], scope) or []:
                out.append(_execute(node[2], {**scope, **item}))
    return "".join(out)


def render_go_template(source: str, messages: list[ChatMessage]) -> str:
    """Render Ollama's variables: .System, .Prompt (last user message), .Response, .Messages."""
    nodes, _, _ = _parse(_tokens(source))
    system = "\n".join(m.content for m in messages if m.role == "system")
    users = [m.content for m in messages if m.role == "user"]
    scope = {
        "System": system,
        "Prompt": users[-1] if users else "",
        "Response": "",
        "Messages": [{"Role": m.role, "Content": m.content} for m in messages if m.role != "system"],
    }
    return _execute(nodes, scope)
