"""The same node on SQLite and on PostgreSQL (`--database postgresql://...`): hub push and pull, the
Hugging Face client, truly concurrent commits from several threads, inference usage, and a restart."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from conftest import make_database
from iollm.protocol import Conflict
from iollm.store import digest_buffer
from nodes import Node


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_node(request, node_factory, tmp_path_factory) -> Node:
    url = make_database(request.param, tmp_path_factory.mktemp(f"db-{request.param}"))
    node = node_factory("--no-seed", "--database", url, name=f"node-{request.param}")
    node.database = url  # type: ignore[attr-defined]
    return node


def test_push_pull_and_history(db_node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(random.Random(7).randbytes(3 << 20))
    (folder / "config.json").write_text('{"model_type": "toy"}')
    first = db_node.cli_json("push", str(folder), "local/toy", "--tag", "v1")
    assert first["chunks_sent"] == first["chunks_total"] > 0
    again = db_node.cli_json("push", str(folder), "local/toy")
    assert again["bytes_sent"] == 0  # every chunk is already indexed in this database
    pulled = db_node.cli_json("pull", "local/toy@v1", "--dest", str(tmp_path / "out"))
    assert pulled["commit"] == first["commit"]
    for name in ("weights.bin", "config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (folder / name).read_bytes()
    shown = db_node.cli_json("show", "local/toy")
    assert shown["refs"]["tags"]["v1"] == first["commit"]


def test_concurrent_commits_on_one_branch_one_wins(db_node: Node, tmp_path: Path) -> None:
    """Eight threads commit against the same parent at once: exactly one moves the branch."""
    (tmp_path / "base.txt").write_text("base")
    db_node.cli_json("push", str(tmp_path / "base.txt"), "local/race")
    client = db_node.client()
    head = client.refs("model", "local/race")["branches"]["main"]
    bodies = []
    for i in range(8):
        data = f"writer {i}".encode()
        digest = digest_buffer(data)
        client.upload_chunks([(c.digest, data[c.offset : c.offset + c.length]) for c in digest.chunks])
        entry = {
            "path": "f.txt",
            "size": digest.size,
            "sha256": digest.sha256,
            "chunks": [[c.digest.hex(), c.length] for c in digest.chunks],
        }
        bodies.append({"branch": "main", "parent": head, "check_parent": True, "files": [entry]})
    start = threading.Barrier(len(bodies))
    outcomes: list[object] = [None] * len(bodies)

    def commit(i: int) -> None:
        own = db_node.client()
        start.wait()
        try:
            outcomes[i] = own.commit("model", "local/race", bodies[i])["commit"]
        except Conflict as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1 and all(isinstance(o, Conflict) for o in outcomes if o is not winners[0])
    assert client.refs("model", "local/race")["branches"]["main"] == winners[0]
    assert len(client.log("model", "local/race")) == 2


def test_huggingface_hub_downloads(db_node: Node, tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "README.md").write_text("# on either database\n")
    db_node.cli_json("push", str(tmp_path / "hf"), "local/hf")
    code = textwrap.dedent(
        """
        import json
        from huggingface_hub import hf_hub_download, HfApi
        path = hf_hub_download("local/hf", "README.md")
        info = HfApi().model_info("local/hf", files_metadata=True)
        print(json.dumps({"text": open(path).read(), "files": [s.rfilename for s in info.siblings]}))
        """
    )
    env = db_node.env(HF_ENDPOINT=db_node.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=db_node.token)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"# on either database\\n"' in result.stdout and "README.md" in result.stdout


def test_usage_is_recorded_and_survives_a_restart(db_node: Node, smollm2_gguf: Path) -> None:
    db_node.cli_json("push", str(smollm2_gguf), "local/smol")
    reply = httpx.post(
        f"{db_node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {db_node.token}"},
        json={"model": "local/smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    db_node.stop()
    db_node.start()  # the same home and database: nothing lost
    usage = db_node.cli_json("usage", "--model", "local/smol")
    assert (
        usage["totals"]["calls"] == 1
        and usage["totals"]["completion_tokens"] == reply.json()["usage"]["completion_tokens"]
    )
    listed = {r["id"] for r in db_node.cli_json("ls")["repos"]}
    assert {"local/toy", "local/race", "local/hf", "local/smol"} <= listed
    digest = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    files = db_node.cli_json("show", "local/smol")["files"]
    assert any(f["sha256"] == digest for f in files)
