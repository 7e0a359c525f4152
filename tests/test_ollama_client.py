"""The Ollama API through the unmodified ``ollama`` Python client, against a real node."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import ollama
import pytest

from nodes import Node

MODEL = "local/smol"


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> ollama.Client:
    return ollama.Client(host=served.url, headers={"Authorization": f"Bearer {served.token}"})


def test_chat_then_ps_names_the_model(client: ollama.Client) -> None:
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        options={"num_predict": 4, "temperature": 0},
    )
    assert reply.done and reply.eval_count and reply.eval_count <= 4
    listed = {m.model: m for m in client.list().models}
    assert f"{MODEL}:latest" in listed
    tag = listed[f"{MODEL}:latest"]
    running = {m.model: m for m in client.ps().models}
    assert f"{MODEL}:latest" in running, list(running)
    model = running[f"{MODEL}:latest"]
    assert model.name == model.model
    assert model.size == tag.size and model.size > 0
    assert model.size_vram == 0
    assert model.digest == tag.digest
    assert model.details == tag.details
    assert model.details.format == "gguf" and model.details.family
    assert model.expires_at is not None and model.expires_at > datetime.now(UTC)
    assert model.context_length and model.context_length > 0


def test_show(client: ollama.Client) -> None:
    shown = client.show(MODEL)
    assert shown.details.format == "gguf"
    assert shown.modelfile and shown.modelinfo is not None


def test_ps_hides_private_models_from_others(client: ollama.Client, served: Node) -> None:
    client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 1})
    anonymous = ollama.Client(host=served.url)
    visible = [m.model for m in anonymous.ps().models]
    public = [m.model for m in anonymous.list().models]
    assert set(visible) <= set(public)
