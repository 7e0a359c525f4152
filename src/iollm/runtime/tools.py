"""Tool calling: OpenAI ``tools``/``tool_choice`` checked into a plan, and the model's own tool-call text
parsed back into OpenAI ``tool_calls``.

The model sees the tools through its chat template (runtime.templates) and answers in the format it was
trained on; for Qwen/Hermes templates that is ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n
</tool_call>``. ``auto`` lets it choose and parses what it wrote; ``required`` and a named function add a
grammar (runtime.structured) so it must write a call; ``none`` neither renders the tools nor parses.
Parsing is incremental, so a stream sends content as it comes and each call once it is complete.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from .structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, tool_call_grammar

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128  # OpenAI's limit


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tool parameters mean for one generation."""

    tools: list[dict[str, Any]] | None = None  # rendered by the template (None: no tools in the prompt)
    names: frozenset[str] = frozenset()  # calls to other names stay text
    grammar: str | None = None  # forces a call ("required" or a named function)
    several: bool = True  # parallel_tool_calls

    @property
    def active(self) -> bool:
        return self.tools is not None


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise ProtocolError(f"tools must be a list of 1 to {MAX_TOOLS} tools", param="tools")
    out = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise ProtocolError('each tool must be {"type": "function", "function": {...}}', param="tools")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProtocolError(f"tool name {name!r} must be 1 to 64 letters, digits, _ or -", param="tools")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise ProtocolError(f"tool {name}: parameters must be a JSON schema object", param="tools")
        out.append({"type": "function", "function": function})
    names = [t["function"]["name"] for t in out]
    if len(set(names)) != len(names):
        raise ProtocolError("tool names must be unique", param="tools")
    return out


def plan_tools(tools: Any, tool_choice: Any, parallel: Any) -> ToolPlan:
    """Check ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (400 naming the bad one)."""
    if parallel is not None and not isinstance(parallel, bool):
        raise ProtocolError("parallel_tool_calls must be true or false", param="parallel_tool_calls")
    several = parallel is not False
    if tools is None:
        if tool_choice not in (None, "none"):
            raise ProtocolError("tool_choice needs tools", param="tool_choice")
        return ToolPlan(several=several)
    checked = _check_tools(tools)
    names = frozenset(t["function"]["name"] for t in checked)
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return ToolPlan(several=several)
    if choice == "auto":
        return ToolPlan(checked, names, None, several)
    if choice == "required":
        return ToolPlan(checked, names, tool_call_grammar(checked, several), several)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise ProtocolError(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        forced = [t for t in checked if t["function"]["name"] == name]
        return ToolPlan(checked, frozenset([name]), tool_call_grammar(forced, False), False)
    raise ProtocolError(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def _call(body: str, names: frozenset[str]) -> ToolCall | None:
    """The call a ``<tool_call>`` block holds, or None when it is not one (then it stays text)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(data["name"], arguments)


class ToolCallParser:
    """Splits generated text into content and tool calls as it arrives.

    ``feed`` returns events, each a content string or a ``ToolCall``. Text that could be the start of a
    ``<tool_call>`` is held back, a call is returned once its block closes (or the text ends), and
    whitespace between calls is not content. Without ``several`` only the first call is kept.

    Small models (Qwen2.5-Coder-0.5B) often answer with the bare ``{"name": ..., "arguments": ...}``
    object and no tags; an answer that starts with ``{`` is therefore held to its end and is a call when
    all of it is one object naming a tool (else it is content, sent then)."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.buffer = ""
        self.inside = False
        self.calls: list[ToolCall] = []
        self._space = ""  # whitespace content held until something other than a call follows
        self._bare: bool | None = None  # None: undecided (only whitespace so far); True: answer is "{..."

    def _content(self, text: str) -> list[Any]:
        if not text:
            return []
        if not text.strip():
            self._space += text
            return []
        out, self._space = self._space + text, ""
        return [out]

    def _block(self, body: str, closed: bool) -> list[Any]:
        call = _call(body.strip(), self.plan.names)
        if call is None:
            return self._content(TOOL_CALL_OPEN + body + (TOOL_CALL_CLOSE if closed else ""))
        self._space = ""
        if self.calls and not self.plan.several:
            return []  # parallel_tool_calls=false: one call only
        self.calls.append(call)
        return [call]

    def feed(self, text: str) -> list[Any]:
        self.buffer += text
        if self._bare is None and self.buffer.strip():
            self._bare = self.buffer.lstrip().startswith("{")
        if self._bare is not False:
            return []  # undecided, or a bare object: wait for the end
        events: list[Any] = []
        while True:
            if self.inside:
                end = self.buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return events
                events += self._block(self.buffer[:end], True)
                self.buffer, self.inside = self.buffer[end + len(TOOL_CALL_CLOSE) :], False
                continue
            start = self.buffer.find(TOOL_CALL_OPEN)
            if start >= 0:
                events += self._content(self.buffer[:start])
                self.buffer, self.inside = self.buffer[start + len(TOOL_CALL_OPEN) :], True
                continue
            keep = next(
                (
                    n
                    for n in range(min(len(TOOL_CALL_OPEN) - 1, len(self.buffer)), 0, -1)
                    if TOOL_CALL_OPEN.startswith(self.buffer[-n:])
                ),
                0,
            )
            cut = len(self.buffer) - keep
            events += self._content(self.buffer[:cut])
            self.buffer = self.buffer[cut:]
            return events

    def flush(self) -> list[Any]:
        """The rest, at the end of the text: an unclosed block is a call if its JSON is complete."""
        rest, self.buffer = self.buffer, ""
        if self._bare:
            call = _call(rest.strip(), self.plan.names)
            if call is not None:
                self.calls.append(call)
                return [call]
            self._bare = False
            return self.feed(rest) + self.flush()
        if self.inside:
            self.inside = False
            return self._block(rest, False)
        events = self._content(rest)
        if not self.calls and self._space:
            events.append(self._space)
        self._space = ""
        return events


def split_tool_calls(text: str, plan: ToolPlan) -> tuple[str | None, list[ToolCall]]:
    """A whole answer as (content, calls); content is None when the answer is only calls."""
    parser = ToolCallParser(plan)
    events = parser.feed(text) + parser.flush()
    content = "".join(e for e in events if isinstance(e, str))
    calls = [e for e in events if isinstance(e, ToolCall)]
    return (content.strip() or None) if calls else content, calls
