"""``response_format`` through a real node and the unmodified openai client: ``json_schema`` answers are
grammar-constrained, so they parse and validate (jsonschema) on every prompt; ``json_object`` answers
parse; a schema keyword the grammar cannot enforce is refused naming ``response_format``; a constrained
answer is billed like any other."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from nodes import Node

MODEL = "local/smol-json"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "kind": {"enum": ["human", "robot", "elf"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
        "alive": {"type": "boolean"},
    },
    "required": ["name", "age", "kind", "hobbies", "alive"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
TOPICS = [
    "a pirate",
    "a baker",
    "an astronaut",
    "a robot butler",
    "a forest elf",
    "a chess player",
    "a retired teacher",
    "a young painter",
    "a deep-sea diver",
    "a librarian",
    "a racing driver",
    "a beekeeper",
    "a lighthouse keeper",
    "a violinist",
    "a mountain guide",
    "a street magician",
    "a farmer",
    "a software tester",
    "a dragon tamer",
    "a night-shift nurse",
]


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)


def test_json_schema_answers_validate_on_every_prompt(client: openai.OpenAI) -> None:
    assert len(TOPICS) == 20
    for i, topic in enumerate(TOPICS):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Describe {topic} as a JSON person record."}],
            response_format=FORMAT,
            temperature=0.8,
            seed=i,
            max_tokens=200,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_parses_and_is_metered(client: openai.OpenAI, served: Node) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'Answer in JSON: {"answer": ...}. What is 2 + 2?'}],
        response_format={"type": "json_object"},
        temperature=0.7,
        seed=1,  # greedy SmolLM2 nests objects until max_tokens; this seed ends (seeds are reproducible)
        max_tokens=120,
        logprobs=True,
    )
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop", content
    assert isinstance(json.loads(content), dict), content
    time.sleep(0.5)
    records = httpx.get(
        f"{served.url}/api/usage",
        params={"model": MODEL},
        headers={"Authorization": f"Bearer {served.token}"},
    ).json()["records"]
    record = next(r for r in records if reply.id.endswith(r["id"]))
    tokens = len(reply.choices[0].logprobs.content)  # one entry per token the engine generated
    assert reply.usage.completion_tokens == record["completion_tokens"] == tokens


def test_streamed_json_schema(client: openai.OpenAI) -> None:
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a sailor."}],
            response_format=FORMAT,
            temperature=0,
            max_tokens=200,
            stream=True,
        )
        if chunk.choices
    )
    jsonschema.validate(json.loads(text), PERSON)


def test_unenforceable_schemas_are_refused(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Hi"}]
    for schema in (
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}},
        {"type": "object", "properties": {"n": {"not": {"type": "string"}}}},
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "a+"}}},
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=MODEL,
                messages=ask,
                max_tokens=4,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            )
        assert refused.value.body["param"] == "response_format", schema
    with pytest.raises(openai.BadRequestError) as kind:
        client.chat.completions.create(
            model=MODEL, messages=ask, max_tokens=4, extra_body={"response_format": {"type": "yaml"}}
        )
    assert kind.value.body["param"] == "response_format"
