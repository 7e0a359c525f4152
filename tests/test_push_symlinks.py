"""Push never follows a symbolic link out of the pushed folder (issue 13, item 5), through the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from nodes import Node


def test_push_refuses_links_out_of_the_folder(node: Node, tmp_path: Path) -> None:
    """`ln -s ~/.iollm/token my-model/leak.txt` must not publish the token: the push fails, names
    every offending link, and creates nothing on the node."""
    folder = tmp_path / "my-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(4096))
    (folder / "leak.txt").symlink_to(node.home / "token")
    (folder / "sub" / "up.txt").symlink_to("../../secret.txt")
    (tmp_path / "secret.txt").write_text("not for publishing\n")
    result = node.cli("push", str(folder), "local/leaky", check=False)
    assert result.returncode != 0
    assert "leak.txt" in result.stderr and "sub/up.txt" in result.stderr
    assert "outside" in result.stderr
    assert node.token not in result.stderr + result.stdout
    reply = httpx.get(
        f"{node.url}/api/repos/model/local/leaky", headers={"Authorization": f"Bearer {node.token}"}
    )
    assert reply.status_code == 404


def test_link_inside_the_folder_is_stored_as_its_target(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    data = os.urandom(8192)
    (folder / "weights.bin").write_bytes(data)
    (folder / "alias.bin").symlink_to("weights.bin")
    (folder / "dangling.bin").symlink_to("nowhere.bin")  # skipped, as before
    node.cli_json("push", str(folder), "local/linked")
    out = tmp_path / "out"
    pulled = node.cli_json("pull", "local/linked", "--dest", str(out))
    assert pulled["files"] == 2
    assert (out / "alias.bin").read_bytes() == data == (out / "weights.bin").read_bytes()
    assert not (out / "alias.bin").is_symlink()
