"""Mirrors and pull-through: repositories replicated between real nodes, chunk by chunk."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from nodes import Node


def test_mirror_copies_all_refs_and_history_then_only_what_is_new(node_factory, tmp_path: Path) -> None:
    origin: Node = node_factory("--no-seed", name="origin")
    replica: Node = node_factory("--no-seed", name="replica")
    data = random.Random(1).randbytes(5 << 20)
    (tmp_path / "w.bin").write_bytes(data)
    first = origin.cli_json("push", str(tmp_path / "w.bin"), "local/mirrored", "--tag", "v1")
    (tmp_path / "w.bin").write_bytes(data[:-1000] + b"x" * 1000)
    second = origin.cli_json("push", str(tmp_path / "w.bin"), "local/mirrored")
    copied = replica.cli_json("mirror", origin.url, "local/mirrored")
    assert copied["commits_copied"] == 2
    assert (
        replica.cli_json("show", "local/mirrored")["refs"]
        == origin.cli_json("show", "local/mirrored")["refs"]
    )
    assert [c["commit"] for c in replica.cli_json("log", "local/mirrored")["commits"]] == [
        second["commit"],
        first["commit"],
    ]
    replica.cli_json("pull", "local/mirrored@v1", "--dest", str(tmp_path / "v1"))
    assert (tmp_path / "v1" / "w.bin").read_bytes() == data
    (tmp_path / "w.bin").write_bytes(data[:-2000] + b"y" * 2000)
    origin.cli_json("push", str(tmp_path / "w.bin"), "local/mirrored")
    again = replica.cli_json("mirror", origin.url, "local/mirrored")
    assert again["commits_copied"] == 1 and 0 < again["bytes_fetched"] < 1 << 20


def test_mirror_needs_an_admin(node_factory, tmp_path: Path) -> None:
    origin: Node = node_factory("--no-seed", name="origin2")
    replica: Node = node_factory("--no-seed", name="replica2")
    (tmp_path / "f.txt").write_text("x")
    origin.cli_json("push", str(tmp_path / "f.txt"), "local/guarded")
    someone = replica.cli_json("user", "create", "someone")["token"]
    denied = replica.cli("mirror", origin.url, "local/guarded", "--json", check=False, token=someone)
    assert denied.returncode != 0 and "admin" in denied.stdout


def test_upstream_pull_through_serves_a_repository_the_node_lacks(node_factory, tmp_path: Path) -> None:
    origin: Node = node_factory("--no-seed", name="upstream")
    (tmp_path / "model.bin").write_bytes(random.Random(2).randbytes(1 << 20))
    pushed = origin.cli_json("push", str(tmp_path / "model.bin"), "local/far-away")
    edge: Node = node_factory("--no-seed", "--upstream", origin.url, name="edge")
    resolved = httpx.get(f"{edge.url}/local/far-away/resolve/main/model.bin")
    assert resolved.status_code == 200 and resolved.content == (tmp_path / "model.bin").read_bytes()
    assert resolved.headers["X-Repo-Commit"] == pushed["commit"]
    assert edge.cli_json("show", "local/far-away")["commit"] == pushed["commit"]
    missing = httpx.get(f"{edge.url}/local/nowhere/resolve/main/x")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "RepoNotFound"
