"""A new node publishes the three packaged models with cards read from their GGUF headers."""

from __future__ import annotations

import os
import stat

import pytest

from nodes import Node


@pytest.fixture(scope="module")
def seeded(node_factory) -> Node:
    return node_factory(name="seeded")


def test_local_admin_token_file_is_private(seeded: Node) -> None:
    mode = stat.S_IMODE(os.stat(seeded.home / "token").st_mode)
    assert mode == 0o600
    assert seeded.cli_json("whoami")["name"] == "local"


@pytest.mark.parametrize(
    ("repo", "architecture", "quantization", "context", "template", "license_", "size"),
    [
        ("iollm/smollm2-135m-instruct", "llama", "Q4_1", 8192, True, "apache-2.0", "135M"),
        ("iollm/gemma-3-270m", "gemma3", "Q4_K_M", 32768, False, "gemma", "270M"),
        ("iollm/qwen2.5-coder-0.5b-instruct", "qwen2", None, 32768, True, "apache-2.0", "0.5B"),
    ],
)
def test_packaged_models_have_cards_from_gguf_headers(
    seeded: Node, repo, architecture, quantization, context, template, license_, size
) -> None:
    card = seeded.cli_json("show", repo)["card"]
    assert card["format"] == "gguf"
    assert card["architecture"] == architecture
    assert card["context_length"] == context
    assert card["chat_template"] is template
    assert card["license"] == license_
    assert card["parameter_size"] == size
    assert card["parameters"] > 100_000_000
    if quantization:
        assert card["quantization"] == quantization


def test_restart_does_not_publish_twice(seeded: Node) -> None:
    before = seeded.cli_json("log", "iollm/gemma-3-270m")["commits"]
    seeded.stop()
    seeded.start()
    assert seeded.cli_json("log", "iollm/gemma-3-270m")["commits"] == before
