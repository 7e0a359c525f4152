"""OpenAI's Responses API through a real node, real GGUF models and the unmodified openai client on its
default path (``client.responses.create`` and the ``client.responses.stream`` helper): the same answer as
the chat route, events the SDK's stream helper accepts, a function-call round trip with Qwen2.5-Coder,
``text.format`` JSON schemas that validate, exact usage, and refusals that name the parameter."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from nodes import Node

QWEN = "local/qwen-responses"
SMOL = "local/smol-responses"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    from iollm import assets

    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), SMOL)
    node.cli_json("push", str(assets.ensure_model("qwen-coder", progress=False)), QWEN)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)


def usage_of(node: Node, model: str, response_id: str) -> dict:
    for _ in range(20):
        reply = httpx.get(
            f"{node.url}/api/usage",
            params={"model": model},
            headers={"Authorization": f"Bearer {node.token}"},
        )
        found = [r for r in reply.json()["records"] if response_id.endswith(r["id"])]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no usage record for {response_id}")


def test_a_response_is_the_chat_answer_with_exact_usage(client: openai.OpenAI, served: Node) -> None:
    asked = {"model": SMOL, "temperature": 0}
    response = client.responses.create(
        input="Name a colour.", instructions="Answer in one word.", max_output_tokens=12, **asked
    )
    chat = client.chat.completions.create(
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_completion_tokens=12,
        **asked,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text and response.output_text == chat.choices[0].message.content
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    record = usage_of(served, SMOL, response.id)
    assert response.usage.output_tokens == record["completion_tokens"] == chat.usage.completion_tokens
    assert response.usage.input_tokens == record["prompt_tokens"]
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_a_cut_answer_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=SMOL, input="Tell me a long story about a ship.", max_output_tokens=3, temperature=0
    )
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_streamed_events_build_the_same_response(client: openai.OpenAI, served: Node) -> None:
    asked = {"model": SMOL, "input": "Say hello.", "max_output_tokens": 48, "temperature": 0}
    deltas, kinds = [], []
    with client.responses.stream(**asked) as stream:  # the SDK's helper checks the events' order and ids
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_item.done" in kinds
    assert "".join(deltas) == final.output_text and final.output_text
    assert final.usage.output_tokens == usage_of(served, SMOL, final.id)["completion_tokens"]
    raw = client.responses.create(**asked, stream=True)
    numbers = [event.sequence_number for event in raw]
    assert numbers == list(range(len(numbers)))


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    asked = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    first = client.responses.create(
        model=QWEN, input=asked, tools=[WEATHER], temperature=0, max_output_tokens=60
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and "paris" in json.loads(call.arguments)["city"].lower()
    assert call.call_id.startswith("call_")
    then = [
        *asked,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": '{"sky": "sunny", "celsius": 21}',
        },
    ]
    answer = client.responses.create(
        model=QWEN, input=then, tools=[WEATHER], temperature=0, max_output_tokens=60
    )
    assert not [item for item in answer.output if item.type == "function_call"]
    assert "21" in answer.output_text or "sunny" in answer.output_text.lower(), answer.output_text
    streamed_text = client.responses.stream(  # tools on, text out: the message is sent once it is known
        model=QWEN, input=then, tools=[WEATHER], temperature=0, max_output_tokens=60
    )
    with streamed_text as s:
        assert s.get_final_response().output_text.strip()
    forced = client.responses.create(
        model=QWEN,
        input="Hello!",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=60,
    )
    assert [item.name for item in forced.output if item.type == "function_call"] == ["get_weather"]
    with client.responses.stream(
        model=QWEN, input=asked, tools=[WEATHER], temperature=0, max_output_tokens=60
    ) as s:
        streamed = s.get_final_response()
    assert [(i.name, i.arguments) for i in streamed.output if i.type == "function_call"] == [
        (call.name, call.arguments)
    ]


def test_text_format_json_schema_validates(client: openai.OpenAI) -> None:
    for prompt in ("Invent a person.", "Describe a pirate.", "Who wrote Hamlet?"):
        response = client.responses.create(
            model=SMOL,
            input=prompt,
            text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
            max_output_tokens=60,
            temperature=0,
        )
        jsonschema.validate(json.loads(response.output_text), PERSON)


def test_what_is_not_supported_is_refused_by_name(client: openai.OpenAI) -> None:
    for extra, param in (
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_x"}, "previous_response_id"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"service_tier": "flex"}, "service_tier"),
    ):
        asked = {"model": SMOL, "input": "hi", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**asked)
        assert caught.value.body["param"] == param and param.split(".")[0] in caught.value.body["message"], (
            caught.value.body
        )
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_123")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="local/absent", input="hi")
