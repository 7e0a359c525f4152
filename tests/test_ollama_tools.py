"""Ollama ``tools`` and ``format`` through a real node, Qwen2.5-Coder's GGUF and the unmodified ``ollama``
client: a call -> tool result -> answer round trip with ``tool_calls`` in Ollama's shape (arguments as an
object), a streamed tool call, ``format`` as a pydantic model's schema (validated with jsonschema) and as
``"json"`` on /api/chat and /api/generate, logprobs, and refusals that name the field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import ollama
import pytest
from pydantic import BaseModel, Field

from nodes import Node

QWEN = "local/qwen-ollama-tools"
SMOL = "local/smol-ollama-tools"
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
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
GREEDY = {"temperature": 0, "num_predict": 60}


class Country(BaseModel):
    name: str = Field(max_length=32)
    capital: str = Field(max_length=32)
    languages: list[str] = Field(max_length=3)
    population_millions: float
    landlocked: bool


COUNTRIES = ["France", "Japan", "Brazil", "Switzerland", "Kenya"]


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
def client(served: Node) -> ollama.Client:
    return ollama.Client(host=served.url, headers={"Authorization": f"Bearer {served.token}"}, timeout=600)


def usage_records(node: Node, since: str) -> list[dict]:
    time.sleep(0.5)  # records land as each call ends
    reply = httpx.get(
        f"{node.url}/api/usage",
        params={"model": QWEN, "since": since},
        headers={"Authorization": f"Bearer {node.token}"},
    )
    return reply.json()["records"]


def test_tool_call_round_trip(client: ollama.Client) -> None:
    first = client.chat(model=QWEN, messages=ASK, tools=[WEATHER], options=GREEDY, stream=False)
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict)  # an object, as Ollama sends it
    assert "paris" in call.function.arguments["city"].lower()
    assert first.done and first.done_reason == "stop" and first.eval_count
    result = {"city": "Paris", "temperature_celsius": 31, "sky": "thunderstorms"}
    history = [
        *ASK,
        first.message,  # the assistant's tool call, as the client hands it back
        {"role": "tool", "content": json.dumps(result), "tool_name": "get_weather"},
    ]
    final = client.chat(model=QWEN, messages=history, tools=[WEATHER], options=GREEDY)
    assert not final.message.tool_calls
    # only the tool's answer can tell the model this
    assert "31" in final.message.content or "thunder" in final.message.content.lower()


def test_streamed_tool_call_is_metered(client: ollama.Client, served: Node) -> None:
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
          city: The city name
        """
        return "sunny"

    time.sleep(0.5)  # earlier calls' records land first
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parts = list(client.chat(model=QWEN, messages=ASK, tools=[get_weather], options=GREEDY, stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert "paris" in calls[0].function.arguments["city"].lower()
    carrying = [p for p in parts if p.message.tool_calls]
    assert len(carrying) == 1 and not carrying[0].done  # a message chunk of its own, before the end
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip() == ""
    (record,) = usage_records(served, since)
    assert parts[-1].eval_count == record["completion_tokens"] > 0  # tool-call tokens are billed
    assert parts[-1].prompt_eval_count == record["prompt_tokens"]


def test_format_schema_validates(client: ollama.Client) -> None:
    schema = Country.model_json_schema()
    for country in COUNTRIES:
        reply = client.chat(
            model=QWEN,
            messages=[{"role": "user", "content": f"Describe {country} as JSON."}],
            format=schema,
            options={"temperature": 0.7, "seed": 5, "num_predict": 160},
        )
        data = json.loads(reply.message.content)
        jsonschema.validate(data, schema)
        Country.model_validate(data)
    generated = client.generate(
        model=QWEN,
        prompt="Describe Italy as JSON.",
        format=schema,
        options={"temperature": 0, "num_predict": 160},
    )
    jsonschema.validate(json.loads(generated.response), schema)


def test_format_json_parses(client: ollama.Client) -> None:
    reply = client.chat(
        model=QWEN,
        messages=[{"role": "user", "content": "Give me a JSON object with a colour and its hex code."}],
        format="json",
        options={"temperature": 0, "num_predict": 80},
    )
    assert isinstance(json.loads(reply.message.content), dict)
    streamed = client.generate(
        model=QWEN,
        prompt="List two fruits as a JSON object.",
        format="json",
        options={"temperature": 0, "num_predict": 80},
        stream=True,
    )
    assert isinstance(json.loads("".join(part.response for part in streamed)), dict)


def test_logprobs(client: ollama.Client) -> None:
    reply = client.chat(
        model=QWEN,
        messages=[{"role": "user", "content": "Say hello."}],
        options={"temperature": 0, "num_predict": 6},
        logprobs=True,
        top_logprobs=2,
    )
    assert len(reply.logprobs) == reply.eval_count
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in reply.logprobs)
    assert "".join(entry.token for entry in reply.logprobs) == reply.message.content


def refused(call) -> str:
    with pytest.raises(ollama.ResponseError) as error:
        call()
    assert error.value.status_code == 400, error.value
    return error.value.error


def test_refusals_name_the_field(client: ollama.Client, served: Node) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    assert "tools" in refused(lambda: client.chat(model=SMOL, messages=hi, tools=[WEATHER]))
    assert "format" in refused(lambda: client.chat(model=QWEN, messages=hi, tools=[WEATHER], format="json"))
    assert "think" in refused(lambda: client.chat(model=QWEN, messages=hi, think=True))
    assert "mirostat" in refused(lambda: client.chat(model=QWEN, messages=hi, options={"mirostat": 2}))
    assert "num_ctx" in refused(lambda: client.chat(model=QWEN, messages=hi, options={"num_ctx": 8192}))
    unbounded = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    assert "format" in refused(lambda: client.chat(model=QWEN, messages=hi, format=unbounded))
    assert "format" in refused(lambda: client.generate(model=QWEN, prompt="Hi", raw=True, format="json"))
    assert "images" in refused(lambda: client.generate(model=QWEN, prompt="Hi", images=[b"\x89PNG"]))
    assert "suffix" in refused(lambda: client.generate(model=QWEN, prompt="def f(", suffix="return 1"))
    assert "dimensions" in refused(lambda: client.embed(model=QWEN, input="Hi", dimensions=64))
    for body in ({"tool_choice": "required"}, {"truncate": True}):
        reply = httpx.post(
            f"{served.url}/api/chat",
            json={"model": QWEN, "messages": hi, "stream": False, **body},
            headers={"Authorization": f"Bearer {served.token}"},
        )
        assert reply.status_code == 400 and next(iter(body)) in reply.json()["error"], reply.text
    # hints that change nothing about the answer are accepted
    fine = client.chat(
        model=QWEN,
        messages=hi,
        think=False,
        keep_alive="5m",
        options={"num_predict": 2, "num_thread": 1, "use_mmap": True, "mirostat": 0, "tfs_z": 1.0},
    )
    assert fine.done
