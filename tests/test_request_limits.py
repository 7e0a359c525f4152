"""Request bodies are bounded (issue 13, item 4): size limits answered 413 before the body is read,
a JSON depth limit answered 400, prompts longer than any context refused before tokenizing, and the
node answering other clients throughout. Real node, real httpx / openai clients, raw sockets."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from nodes import Node

MODEL = "local/smol-limits"
MiB = 1 << 20


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


def auth(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}


def test_declared_oversized_body_refused_before_it_is_sent(served: Node) -> None:
    """A Content-Length over the limit gets 413 at once: the node does not wait for the 50 MB."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + served.token.encode() + b"\r\n"
            b"Content-Length: 50000000\r\n\r\n" + b'{"model": "' + MODEL.encode() + b'", "messages": ['
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            piece = sock.recv(65536)  # before the change: blocks until the 30 s timeout
            if not piece:
                break
            reply += piece
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and "8388608" in error["message"]


def test_large_streamed_chat_body_refused_while_node_stays_responsive(served: Node) -> None:
    """A 50 MB chat body sent chunked (no Content-Length) is counted as it streams and refused with
    413; other clients are answered while it is being received and refused."""
    answers: list[int] = []

    def body() -> Iterator[bytes]:
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        for i in range(50):
            if i in (2, 20):  # mid-body, then after the node has refused it
                answers.append(httpx.get(f"{served.url}/api/protocol", timeout=30).status_code)
            yield b"word " * (MiB // 5)
        yield b'"}]}'

    reply = httpx.post(
        f"{served.url}/v1/chat/completions",
        content=body(),
        headers={**auth(served), "Content-Type": "application/json"},
        timeout=120,
    )
    assert "content-length" not in reply.request.headers  # really streamed
    assert reply.status_code == 413, reply.text[:300]
    assert reply.json()["error"]["code"] == "payload_too_large"
    assert answers == [200, 200]
    assert httpx.get(f"{served.url}/health", timeout=30).status_code == 200


def test_openai_client_gets_413_for_a_50_mb_message(served: Node) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token, max_retries=0, timeout=120)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * (50 * 10**6)}]
        )
    assert raised.value.status_code == 413
    assert "limit" in raised.value.message
    assert httpx.get(f"{served.url}/api/protocol", timeout=30).json()["limits"]["body_bytes"] == 8 * MiB


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/api/chat",  # Ollama
        "/api/repos",  # native hub
        "/api/chunks/missing",
        f"/api/models/{MODEL}/commit/main",  # Hugging Face commit (ndjson)
        "/api/editor/validate",
        "/api/jobs",
        "/api/credits/grant",
    ],
)
def test_deeply_nested_json_is_400_not_500(served: Node, path: str) -> None:
    reply = httpx.post(f"{served.url}{path}", content=DEEP, headers=auth(served), timeout=60)
    assert reply.status_code == 400, reply.text[:300]
    assert reply.headers["x-error-code"] == "json_too_deep"
    assert "nested deeper than 64" in reply.text


def test_moderate_nesting_reaches_the_route(served: Node) -> None:
    """Depth under the limit (and brackets inside strings) are not refused by the depth check."""
    nested: object = "x"
    for _ in range(40):
        nested = [nested]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "[[[[" * 100}],
        "metadata": nested,
        "max_tokens": 1,
    }
    reply = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=auth(served), timeout=60)
    assert reply.headers.get("x-error-code") != "json_too_deep", reply.text[:300]
    assert reply.status_code == 200, reply.text[:300]


def test_prompt_longer_than_any_context_refused_before_tokenizing(served: Node) -> None:
    """A 1.2 MB prompt fits the body limit but cannot fit SmolLM2's 4096-token context: it is refused
    with context_length_exceeded from its length alone, without tokenizing it."""
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token, max_retries=0, timeout=120)
    text = "hello " * 200_000
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=4
        )
    assert raised.value.code == "context_length_exceeded"
    assert "refused before tokenizing" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt=text, max_tokens=4)
    assert raised.value.code == "context_length_exceeded"
    assert "refused before tokenizing" in raised.value.message
    ok = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert ok.usage.prompt_tokens > 0


def test_configured_limit_spares_uploads(node_factory, tmp_path: Path) -> None:
    """`iollm up --max-body-bytes` lowers the JSON limit; chunk uploads keep their own larger limit, so
    pushing and pulling a 3 MB model through the CLI still works on that node."""
    node = node_factory("--no-seed", "--max-body-bytes", "100000", "--max-json-depth", "8")
    limits = httpx.get(f"{node.url}/api/protocol", timeout=30).json()["limits"]
    assert limits["body_bytes"] == 100_000 and limits["json_depth"] == 8
    big = httpx.post(f"{node.url}/api/tokens", json={"name": "x" * 200_000}, headers=auth(node), timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    small = httpx.post(f"{node.url}/api/tokens", json={"name": "t" * 50}, headers=auth(node), timeout=30)
    assert small.status_code == 200, small.text
    deep = httpx.post(f"{node.url}/api/repos", content=b"[" * 9 + b"]" * 9, headers=auth(node), timeout=30)
    assert deep.status_code == 400 and deep.headers["x-error-code"] == "json_too_deep"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(random.Random(7).randbytes(3 * MiB))
    pushed = node.cli_json("push", str(folder), "local/up")
    assert pushed["bytes_sent"] == 3 * MiB
    node.cli_json("pull", "local/up", "--dest", str(tmp_path / "out"))
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
