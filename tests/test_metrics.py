"""GET /metrics: Prometheus counters of a real node's calls, without naming private models."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodes import Node

MODEL = "local/smol"
SECRET = "local/secret"


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Anonymous GET /metrics: sample (name, sorted labels) -> value."""
    response = httpx.get(f"{node.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def chat(node: Node, model: str, max_tokens: int) -> dict:
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {node.token}"},
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": max_tokens,
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def test_a_chat_call_is_counted(served: Node) -> None:
    usage = chat(served, MODEL, 8)
    samples = scrape(served)
    model = (("model", MODEL),)
    assert samples[("iollm_prompt_tokens_total", model)] == usage["prompt_tokens"] > 0
    assert samples[("iollm_completion_tokens_total", model)] == usage["completion_tokens"] > 0
    calls = (("kind", "chat"), ("model", MODEL), ("status", "ok"))
    assert samples[("iollm_calls_total", calls)] == 1
    assert samples[("iollm_time_to_first_token_seconds_count", model)] == 1
    assert samples[("iollm_loaded_models", ())] == 1
    assert samples[("iollm_calls_in_flight", model)] == 0


def test_private_models_are_not_named(served: Node, smollm2_gguf: Path) -> None:
    served.cli_json("push", str(smollm2_gguf), SECRET, "--private")
    chat(served, SECRET, 1)
    response = httpx.get(f"{served.url}/metrics", timeout=30)
    assert SECRET not in response.text
    calls = (("kind", "chat"), ("model", "private"), ("status", "ok"))
    assert scrape(served)[("iollm_calls_total", calls)] == 1
