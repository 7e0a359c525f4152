"""Sampling parameters out of range (temperature NaN or negative, top_p 5, ...) are refused with 400
naming the parameter, on the OpenAI routes (the real openai client, and httpx for the NaN/Infinity
literals Python's json would otherwise let through) and on the Ollama routes' ``options``; a refused
request never gets as far as the model. Values at the edges of each range still work."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from iollm.protocol import ProtocolError
from iollm.runtime import params_for
from nodes import Node

MODEL = "local/smol-sampling"
HI = [{"role": "user", "content": "Say hi."}]

# (parameter, value) pairs every API must refuse, as the openai client can send them
OUT_OF_RANGE = [
    ("temperature", -0.5),
    ("temperature", 2.5),
    ("top_p", 5),
    ("top_p", -0.1),
    ("presence_penalty", 2.5),
    ("frequency_penalty", -3),
    ("max_tokens", -1),
]


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token, max_retries=0)


def loaded(node: Node) -> list[str]:
    return [m["name"] for m in httpx.get(f"{node.url}/api/ps").json()["models"]]


def raw_post(node: Node, path: str, body: str) -> httpx.Response:
    """A body sent as bytes: httpx (and so the openai client) would refuse to encode NaN itself."""
    headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
    return httpx.post(f"{node.url}{path}", content=body.encode(), headers=headers, timeout=60)


def test_openai_client_gets_bad_request_naming_the_parameter(client: openai.OpenAI, served: Node) -> None:
    before = loaded(served)
    for name, value in OUT_OF_RANGE:
        with pytest.raises(openai.BadRequestError) as chat:
            client.chat.completions.create(model=MODEL, messages=HI, **{name: value})
        assert chat.value.param == name and name in str(chat.value), (name, value, chat.value)
        with pytest.raises(openai.BadRequestError) as completion:
            client.completions.create(model=MODEL, prompt="Hi", **{name: value})
        assert completion.value.param == name and name in str(completion.value), (name, value)
    for name in ("max_tokens", "max_completion_tokens"):  # 0 scores a prompt on /v1/completions only
        for value in (0, -5):
            with pytest.raises(openai.BadRequestError) as chat:
                client.chat.completions.create(model=MODEL, messages=HI, **{name: value})
            assert chat.value.param == name, (name, value, chat.value)
    with pytest.raises(openai.BadRequestError) as streamed:
        client.chat.completions.create(model=MODEL, messages=HI, temperature=-1, stream=True)
    assert streamed.value.param == "temperature"
    assert loaded(served) == before  # nothing was loaded to refuse them


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    "name,literal",
    [
        ("temperature", "NaN"),
        ("temperature", "-Infinity"),
        ("top_p", "NaN"),
        ("top_p", "Infinity"),
        ("presence_penalty", "NaN"),
        ("frequency_penalty", "Infinity"),
        ("max_tokens", "NaN"),
    ],
)
def test_nan_and_infinity_literals_are_refused(served: Node, path: str, name: str, literal: str) -> None:
    prompt = f'"messages": {json.dumps(HI)}' if "chat" in path else '"prompt": "Hi"'
    reply = raw_post(served, path, f'{{"model": "{MODEL}", {prompt}, "{name}": {literal}}}')
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == name and error["type"] == "invalid_request_error", error
    assert name in error["message"]


def test_refused_before_the_model_is_looked_up(served: Node) -> None:
    body = json.dumps({"model": "local/no-such-model", "messages": HI, "temperature": -1})
    reply = raw_post(served, "/v1/chat/completions", body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize(
    "options",
    [
        '{"temperature": -1}',
        '{"temperature": NaN}',
        '{"temperature": "hot"}',
        '{"temperature": true}',
        '{"top_p": 5}',
        '{"top_p": Infinity}',
        '{"top_k": -1}',
        '{"top_k": 2.5}',
        '{"min_p": 1.5}',
        '{"repeat_penalty": 0}',
        '{"repeat_penalty": NaN}',
        '{"presence_penalty": 9}',
        '{"frequency_penalty": -Infinity}',
        '{"num_predict": 1.5}',
        '{"seed": "x"}',
        '{"stop": 5}',
    ],
)
def test_ollama_options_are_checked(served: Node, path: str, options: str) -> None:
    name = next(iter(json.loads(options)))
    chat = f'"messages": {json.dumps(HI)}' if path == "/api/chat" else '"prompt": "Hi"'
    before = loaded(served)
    reply = raw_post(served, path, f'{{"model": "{MODEL}", {chat}, "options": {options}}}')
    assert reply.status_code == 400, reply.text
    assert name in reply.json()["error"], reply.json()  # Ollama's dialect: {"error": "message"}
    assert loaded(served) == before


def test_values_at_the_edges_are_served(client: openai.OpenAI, served: Node) -> None:
    for params in (
        {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 2},
        {"temperature": 2, "top_p": 1, "presence_penalty": 2, "frequency_penalty": -2, "seed": 3},
    ):
        reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, **params)
        assert reply.usage.completion_tokens <= 2
    reply = client.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=1)
    assert reply.usage.completion_tokens <= 1
    # max_tokens 0 with echo still scores the prompt (lm-evaluation-harness)
    scored = client.completions.create(
        model=MODEL, prompt="The sky is blue.", max_tokens=0, echo=True, logprobs=0, temperature=0
    )
    assert scored.usage.completion_tokens == 0 and scored.choices[0].logprobs.token_logprobs
    for path, key in (("/api/chat", "messages"), ("/api/generate", "prompt")):
        body = {
            "model": MODEL,
            key: HI if key == "messages" else "Hi",
            "stream": False,
            "options": {
                "temperature": 0,
                "top_k": 0,
                "top_p": 1,
                "min_p": 0,
                "repeat_penalty": 1.1,
                "num_predict": 2,
                "seed": 1,
                "stop": ["\n\n"],
            },
        }
        reply = raw_post(served, path, json.dumps(body))
        assert reply.status_code == 200, reply.text
        assert reply.json()["eval_count"] <= 2


def test_one_rule_for_every_caller() -> None:
    """The rule is one function; params_for (paths, the editor) applies it to request values too."""
    from iollm.runtime.sampling import check_sampling

    spec = SimpleNamespace(parameters={"temperature": 5.0})  # an environment's own PARAMETERs pass
    assert params_for(spec, {"top_p": 0.5}).temperature == 5.0
    for bad in ({"temperature": float("nan")}, {"top_k": True}, {"max_tokens": 1.5}, {"seed": 2**70}):
        with pytest.raises(ProtocolError) as raised:
            params_for(spec, bad)
        assert raised.value.details["param"] == next(iter(bad))
    check_sampling({"temperature": 1, "top_p": 0, "top_k": 0, "num_predict": -1, "stop": "x"})
    with pytest.raises(ProtocolError, match="top_p"):
        check_sampling({"top_p": 1.0000001})


def test_top_p_zero_keeps_the_most_likely_token_in_the_transformers_sampler() -> None:
    """OpenAI accepts top_p 0; it must mean the most likely token (as in llama.cpp), not "no top_p"."""
    torch = pytest.importorskip("torch")
    from iollm.runtime.backends import GenerationParams
    from iollm.runtime.backends.transformers import _Sampler

    logits = torch.tensor([1.0, 1.5, 1.2, 0.3])
    for seed in range(20):
        params = GenerationParams(temperature=2.0, top_p=0.0, top_k=0, min_p=0.0, seed=seed)
        assert _Sampler(torch, params).pick(logits, []) == 1
