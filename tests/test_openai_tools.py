"""OpenAI ``tools``/``tool_choice`` through a real node, Qwen2.5-Coder's GGUF and the unmodified openai
client: a call -> tool result -> answer round trip, streamed ``delta.tool_calls``, forced calls
(``required``, a named function) and ``none``, exact metering of tool-call tokens, and refusals that name
the parameter (a template without tools, parameters this node does not implement)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from nodes import Node

QWEN = "local/qwen-tools"
SMOL = "local/smol-tools"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def qwen_gguf() -> Path:
    from iollm import assets

    return assets.ensure_model("qwen-coder", progress=False)


@pytest.fixture(scope="module")
def served(node_factory, qwen_gguf: Path, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(qwen_gguf), QWEN)
    node.cli_json("push", str(smollm2_gguf), SMOL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)


def usage_record(node: Node, ident: str) -> dict:
    time.sleep(0.5)  # the record lands as the call ends
    reply = httpx.get(
        f"{node.url}/api/usage", params={"model": QWEN}, headers={"Authorization": f"Bearer {node.token}"}
    )
    return next(r for r in reply.json()["records"] if ident.endswith(r["id"]))


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=QWEN, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=60
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()
    result = {"city": "Paris", "temperature_celsius": 31, "sky": "thunderstorms"}
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    final = client.chat.completions.create(
        model=QWEN, messages=history, tools=[WEATHER], temperature=0, max_tokens=60
    )
    answer = final.choices[0]
    assert answer.finish_reason == "stop" and not answer.message.tool_calls
    # only the tool's answer can tell the model this
    assert "31" in answer.message.content or "thunder" in answer.message.content.lower()


def test_streamed_tool_calls_and_metering(client: openai.OpenAI, served: Node) -> None:
    stream = client.chat.completions.create(
        model=QWEN,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
    )
    calls: dict[int, dict] = {}
    finish, usage, ident, scored = None, None, "", 0
    for chunk in stream:
        ident = chunk.id
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if choice.logprobs and choice.logprobs.content:
                scored += len(choice.logprobs.content)
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                if delta.function:
                    entry["name"] += delta.function.name or ""
                    entry["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert list(calls) == [0] or sorted(calls) == list(range(len(calls)))
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] in ("get_weather", "get_time")
    assert "city" in json.loads(calls[0]["arguments"])
    # every generated token (tool-call tokens too, under a grammar) is billed, as the engine counted
    record = usage_record(served, ident)
    assert usage.completion_tokens == record["completion_tokens"] == scored > 0


def test_named_function_and_none(client: openai.OpenAI) -> None:
    named = client.chat.completions.create(
        model=QWEN,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=60,
    )
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    none = client.chat.completions.create(
        model=QWEN, messages=ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=12
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
    assert none.choices[0].finish_reason in ("stop", "length")
    single = client.chat.completions.create(
        model=QWEN,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    assert len(single.choices[0].message.tool_calls) == 1


def test_refusals_name_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as no_tools:  # SmolLM2's template cannot render tools
        client.chat.completions.create(model=SMOL, messages=ASK, tools=[WEATHER], max_tokens=4)
    assert no_tools.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as unknown_tool:
        client.chat.completions.create(
            model=QWEN,
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
            max_tokens=4,
        )
    assert unknown_tool.value.body["param"] == "tool_choice"
    for extra in ({"logit_bias": {"1": 5}}, {"functions": [WEATHER["function"]]}, {"suffix": "x"}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=SMOL, messages=ASK, max_tokens=2, extra_body=extra)
        assert refused.value.body["param"] == next(iter(extra)), extra
    with pytest.raises(openai.BadRequestError) as stored:
        client.chat.completions.create(model=SMOL, messages=ASK, max_tokens=2, store=True)
    assert stored.value.body["param"] == "store"
    harmless = client.chat.completions.create(
        model=SMOL, messages=ASK, max_tokens=2, user="u1", metadata={"k": "v"}, store=False
    )
    assert harmless.choices[0].message.content is not None


@pytest.mark.slow
def test_tools_grammar_and_logprobs_survive_the_worker_process(
    client: openai.OpenAI, served: Node, tmp_path: Path
) -> None:
    """An environment with REQUIRES runs its model in a worker process: tools, grammars, chat logprobs
    and refusals cross it unchanged."""
    envfile = tmp_path / "Envfile"
    envfile.write_text(f"FROM {QWEN}\nREQUIRES python-slugify==9.0.0\n")
    served.cli_json("create", "local/qwen-tools-worker", "-f", str(envfile))
    forced = client.chat.completions.create(
        model="local/qwen-tools-worker",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
        logprobs=True,
        top_logprobs=2,
    )
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert len(choice.logprobs.content) == forced.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 for e in choice.logprobs.content)
    envfile.write_text(f"FROM {SMOL}\nREQUIRES python-slugify==9.0.0\n")
    served.cli_json("create", "local/smol-tools-worker", "-f", str(envfile))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="local/smol-tools-worker", messages=ASK, tools=[WEATHER])
    assert refused.value.body["param"] == "tools"
