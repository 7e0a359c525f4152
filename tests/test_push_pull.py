"""Push and pull through a real node with the real CLI: dedup, versions, resume, races, peers, damage."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from iollm.protocol import Conflict, LocalCache, MissingChunks, RepoNotFound, pull, push
from iollm.store import digest_buffer
from nodes import IOLLM, Node


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    (folder / "weights.bin").write_bytes(noise(12 << 20, 1))
    (folder / "config.json").write_text('{"model_type": "toy", "hidden_size": 8}')
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("nested file\n")
    return folder


def test_push_folder_and_pull_it_back(node: Node, model_dir: Path, tmp_path: Path) -> None:
    pushed = node.cli_json("push", str(model_dir), "local/toy", "--tag", "v1", "-m", "first")
    for key in ("commit", "bytes_total", "bytes_sent", "chunks_total", "chunks_sent", "seconds"):
        assert key in pushed
    assert pushed["bytes_sent"] == pushed["bytes_total"] > 12 << 20
    pulled = node.cli_json("pull", "local/toy", "--dest", str(tmp_path / "out"))
    for key in ("commit", "bytes_total", "bytes_received", "files", "seconds"):
        assert key in pulled
    assert pulled["commit"] == pushed["commit"] and pulled["files"] == 3
    for rel in ("weights.bin", "config.json", "sub/notes.txt"):
        assert (tmp_path / "out" / rel).read_bytes() == (model_dir / rel).read_bytes()
    shown = node.cli_json("show", "local/toy")
    assert shown["refs"]["tags"]["v1"] == pushed["commit"]
    assert {f["path"] for f in shown["files"]} == {"weights.bin", "config.json", "sub/notes.txt"}
    assert node.cli_json("log", "local/toy")["commits"][0]["message"] == "first"


def test_second_version_moves_only_changed_chunks(node: Node, tmp_path: Path) -> None:
    v1 = noise(16 << 20, 2)
    (tmp_path / "w.bin").write_bytes(v1)
    node.cli_json("push", str(tmp_path / "w.bin"), "local/versions")
    node.cli_json("pull", "local/versions", "--dest", str(tmp_path / "a"))
    v2 = bytearray(v1)
    v2[8 << 20 : (8 << 20) + 100_000] = noise(100_000, 3)  # ~0.6 % of the bytes change
    (tmp_path / "w.bin").write_bytes(bytes(v2))
    pushed = node.cli_json("push", str(tmp_path / "w.bin"), "local/versions", "-m", "v2")
    assert 0 < pushed["bytes_sent"] < 600_000
    pulled = node.cli_json("pull", "local/versions", "--dest", str(tmp_path / "b"))
    assert 0 < pulled["bytes_received"] < 600_000
    assert pulled["bytes_reused"] > 15 << 20
    assert (tmp_path / "b" / "w.bin").read_bytes() == bytes(v2)
    again = node.cli_json("push", str(tmp_path / "w.bin"), "local/versions")
    assert again["commit"] == pushed["commit"] and again["bytes_sent"] == 0  # no empty commit


def test_pull_by_branch_tag_and_commit(node: Node, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("one")
    first = node.cli_json("push", str(tmp_path / "f.txt"), "local/revs", "--tag", "first")
    (tmp_path / "f.txt").write_text("two")
    node.cli_json("push", str(tmp_path / "f.txt"), "local/revs")
    (tmp_path / "f.txt").write_text("on a branch")
    node.cli_json("push", str(tmp_path / "f.txt"), "local/revs", "--revision", "dev")
    for ref, text in (("first", "one"), (first["commit"], "one"), ("main", "two"), ("dev", "on a branch")):
        out = tmp_path / f"out-{ref[:8]}"
        node.cli_json("pull", f"local/revs@{ref}", "--dest", str(out))
        assert (out / "f.txt").read_text() == text
    missing = node.cli("pull", "local/revs@nope", "--json", check=False)
    assert missing.returncode != 0 and "nope" in json.loads(missing.stdout)["error"]["message"]


def test_racing_pushes_one_wins_one_conflicts(node: Node, tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("base")
    node.cli_json("push", str(tmp_path / "base.txt"), "local/race")
    client = node.client()
    head = client.refs("model", "local/race")["branches"]["main"]
    bodies = []
    for text in ("alice", "bob"):
        path = tmp_path / f"{text}.txt"
        path.write_text(text)
        data = path.read_bytes()
        digest = digest_buffer(data)
        client.upload_chunks([(c.digest, data[c.offset : c.offset + c.length]) for c in digest.chunks])
        bodies.append(
            {
                "branch": "main",
                "parent": head,
                "check_parent": True,
                "files": [
                    {
                        "path": "f.txt",
                        "size": digest.size,
                        "sha256": digest.sha256,
                        "chunks": [[c.digest.hex(), c.length] for c in digest.chunks],
                    }
                ],
            }
        )
    winner = client.commit("model", "local/race", bodies[0])
    with pytest.raises(Conflict, match="moved"):
        client.commit("model", "local/race", bodies[1])
    assert client.refs("model", "local/race")["branches"]["main"] == winner["commit"]


def test_commit_naming_absent_chunks_is_refused(node: Node) -> None:
    client = node.client()
    body = {"files": [{"path": "x", "size": 5, "sha256": "00" * 32, "chunks": [["11" * 32, 5]]}]}
    with pytest.raises(MissingChunks):
        client.commit("model", "local/ghost", body)


def test_bad_requests_get_clear_json_errors(node: Node) -> None:
    auth = {"Authorization": f"Bearer {node.token}"}
    r = httpx.post(f"{node.url}/api/chunks/missing", json={"protocol": "iollm/9", "chunks": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_protocol"
    assert "iollm/1" in r.json()["error"]["message"]
    assert httpx.get(f"{node.url}/api/protocol").json()["versions"] == ["iollm/1"]
    r = httpx.post(f"{node.url}/api/repos/model/local/bad/commits", content=b"{oops", headers=auth)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    files = [{"path": "../escape", "size": 1, "sha256": "00" * 32, "chunks": [["11" * 32, 1]]}]
    r = httpx.post(f"{node.url}/api/repos/model/local/bad/commits", json={"files": files}, headers=auth)
    assert r.status_code == 400 and "escape" in r.json()["error"]["message"]
    r = httpx.post(f"{node.url}/api/repos/model/local/bad/commits", content=b" " * (65 << 20), headers=auth)
    assert r.status_code == 413
    digest = bytes(32)
    frame = digest + (6).to_bytes(4, "big") + b"forged"
    r = httpx.post(f"{node.url}/api/chunks", content=frame, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "integrity_error"


def test_tokens_and_namespaces(node: Node, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    env_free = {k: v for k, v in node.env().items() if k != "IOLLM_HOME"}
    r = subprocess.run(
        [*IOLLM, "push", str(tmp_path / "f.txt"), "local/auth", "--json", "--home", str(tmp_path / "nohome")],
        capture_output=True,
        text=True,
        env=env_free,
    )
    assert r.returncode != 0 and "token" in json.loads(r.stdout)["error"]["message"]
    wrong = node.cli(
        "push", str(tmp_path / "f.txt"), "local/auth", "--json", check=False, token="iollm_wrong"
    )
    assert wrong.returncode != 0 and json.loads(wrong.stdout)["error"]["code"] == "unauthorized"
    bob = node.cli_json("user", "create", "bob")["token"]
    foreign = node.cli("push", str(tmp_path / "f.txt"), "local/auth", "--json", check=False, token=bob)
    assert json.loads(foreign.stdout)["error"]["code"] == "forbidden"
    assert node.cli_json("push", str(tmp_path / "f.txt"), "bob/mine", token=bob)["commit"]
    reader = node.cli_json("token", "create", "ro", "--read-only", token=bob)["token"]
    ro = node.cli("push", str(tmp_path / "f.txt"), "bob/mine2", "--json", check=False, token=reader)
    assert json.loads(ro.stdout)["error"]["code"] == "forbidden"
    node.cli_json("org", "create", "lab", token=bob)
    carol = node.cli_json("user", "create", "carol")["token"]
    denied = node.cli("push", str(tmp_path / "f.txt"), "lab/shared", "--json", check=False, token=carol)
    assert json.loads(denied.stdout)["error"]["code"] == "forbidden"
    node.cli_json("org", "add", "lab", "carol", token=bob)
    assert node.cli_json("push", str(tmp_path / "f.txt"), "lab/shared", token=carol)["commit"]


def test_private_repositories_are_invisible(node: Node, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("private weights")
    dave = node.cli_json("user", "create", "dave")["token"]
    eve = node.cli_json("user", "create", "eve")["token"]
    node.cli_json("push", str(tmp_path / "secret.txt"), "dave/hidden", "--private", token=dave)
    assert any(r["id"] == "dave/hidden" for r in node.cli_json("ls", token=dave)["repos"])
    assert not any(r["id"] == "dave/hidden" for r in node.cli_json("ls", token=eve)["repos"])
    anonymous = {"IOLLM_HOME": str(tmp_path / "no-token-home")}
    for token, env in ((eve, {}), ("", anonymous)):
        r = node.cli(
            "pull", "dave/hidden", "--dest", str(tmp_path / "x"), "--json", check=False, token=token, **env
        )
        assert r.returncode != 0 and json.loads(r.stdout)["error"]["code"] == "RepoNotFound"
    r = httpx.get(f"{node.url}/dave/hidden/resolve/main/secret.txt")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"
    node.cli_json("pull", "dave/hidden", "--dest", str(tmp_path / "ok"), token=dave)
    assert (tmp_path / "ok" / "secret.txt").read_text() == "private weights"


def test_resume_fetches_only_what_is_missing(node: Node, tmp_path: Path) -> None:
    data = noise(20 << 20, 7)
    (tmp_path / "big.bin").write_bytes(data)
    node.cli_json("push", str(tmp_path / "big.bin"), "local/resume")
    cache = LocalCache(tmp_path / "cache")
    # what a killed pull leaves: the first half in place, the rest zeros
    partial = cache.incomplete_path(hashlib.sha256(data).hexdigest())
    partial.write_bytes(data[: 10 << 20] + bytes(10 << 20))
    with node.client() as client:
        result = pull([client], "model", "local/resume", "main", cache, tmp_path / "out")
    assert result["bytes_resumed"] > 9 << 20
    assert result["bytes_received"] < 11 << 20
    assert (tmp_path / "out" / "big.bin").read_bytes() == data
    assert not partial.exists()


def test_killed_pull_then_rerun_completes(node: Node, tmp_path: Path) -> None:
    data = noise(96 << 20, 8)
    (tmp_path / "huge.bin").write_bytes(data)
    node.cli_json("push", str(tmp_path / "huge.bin"), "local/killed")
    home = tmp_path / "client-home"
    env = node.env(IOLLM_HOME=str(home), IOLLM_TOKEN=node.token)
    proc = subprocess.Popen(
        [*IOLLM, "pull", "local/killed", "--dest", str(tmp_path / "out"), "--json"], env=env
    )
    deadline = time.monotonic() + 60
    incomplete = home / "cache" / "blobs" / f"{hashlib.sha256(data).hexdigest()}.incomplete"
    while time.monotonic() < deadline and proc.poll() is None and not incomplete.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "huge.bin").exists() or sha(tmp_path / "out" / "huge.bin") == sha(
        tmp_path / "huge.bin"
    )
    rerun = json.loads(
        subprocess.run(
            [*IOLLM, "pull", "local/killed", "--dest", str(tmp_path / "out"), "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert rerun["bytes_received"] + rerun["bytes_resumed"] + rerun["bytes_reused"] <= rerun["bytes_total"]
    assert sha(tmp_path / "out" / "huge.bin") == hashlib.sha256(data).hexdigest()


def test_node_killed_mid_push_leaves_no_commit_and_next_push_reuses_chunks(
    node_factory, tmp_path: Path
) -> None:
    victim = node_factory("--no-seed", name="victim")
    data = noise(160 << 20, 9)
    (tmp_path / "model.bin").write_bytes(data)
    proc = subprocess.Popen(
        [*IOLLM, "push", str(tmp_path / "model.bin"), "local/crash", "--json"],
        env=victim.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _indexed_chunks(victim.home) == 0:
        time.sleep(0.005)
    victim.kill()  # some chunks are stored, the commit has not happened
    proc.wait(timeout=60)
    assert proc.returncode != 0
    victim.start()
    with victim.client() as client:
        try:
            assert client.refs("model", "local/crash")["branches"] == {}
        except RepoNotFound:
            pass  # the repository is created only together with its first commit
    again = victim.cli_json("push", str(tmp_path / "model.bin"), "local/crash")
    assert again["bytes_sent"] < again["bytes_total"]  # chunks stored before the kill are reused
    victim.cli_json("pull", "local/crash", "--dest", str(tmp_path / "back"))
    assert sha(tmp_path / "back" / "model.bin") == hashlib.sha256(data).hexdigest()
    assert victim.cli_json("store", "verify")["ok"]


def _indexed_chunks(home: Path) -> int:
    index = home / "store" / "index.sqlite"
    if not index.exists():
        return 0
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=1) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_damaged_store_is_named_and_a_healthy_peer_takes_over(node_factory, tmp_path: Path) -> None:
    origin = node_factory("--no-seed", name="origin")
    data = noise(6 << 20, 10)
    (tmp_path / "w.bin").write_bytes(data)
    pushed = origin.cli_json("push", str(tmp_path / "w.bin"), "local/damaged")
    replica = node_factory("--no-seed", name="replica")
    replica.cli_json("mirror", origin.url, "local/damaged")
    pack = origin.home / "store" / "packs" / "pack-000001.pack"
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    report = origin.cli("store", "verify", "--json", check=False)
    assert report.returncode == 1 and json.loads(report.stdout)["damaged_packs"] == [pack.name]
    alone = origin.cli(
        "pull",
        "local/damaged",
        "--dest",
        str(tmp_path / "bad"),
        "--json",
        check=False,
        IOLLM_HOME=str(tmp_path / "h1"),
        IOLLM_TOKEN=origin.token,
    )
    assert alone.returncode != 0 and "error" in json.loads(alone.stdout)
    assert not (tmp_path / "bad" / "w.bin").exists()
    healed = origin.cli_json(
        "pull",
        f"local/damaged@{pushed['commit']}",
        "--dest",
        str(tmp_path / "good"),
        "--peer",
        replica.url,
        IOLLM_HOME=str(tmp_path / "h2"),
        IOLLM_TOKEN=origin.token,
    )
    assert (tmp_path / "good" / "w.bin").read_bytes() == data
    assert origin.url in healed["peers_failed"]


def test_peer_that_is_down_is_skipped(node: Node, tmp_path: Path) -> None:
    (tmp_path / "p.bin").write_bytes(noise(3 << 20, 11))
    node.cli_json("push", str(tmp_path / "p.bin"), "local/peers")
    with node.client() as good, node.client() as dead:
        dead.endpoint = "http://127.0.0.1:9"
        dead.http = httpx.Client(base_url="http://127.0.0.1:9", timeout=2)
        result = pull(
            [good, dead], "model", "local/peers", "main", LocalCache(tmp_path / "c"), tmp_path / "o"
        )
    assert (tmp_path / "o" / "p.bin").read_bytes() == noise(3 << 20, 11)
    assert result["files"] == 1


def test_push_api_reports_progress(node: Node, tmp_path: Path) -> None:
    (tmp_path / "q.bin").write_bytes(noise(2 << 20, 12))
    seen: list[str] = []
    with node.client() as client:
        push(
            client,
            tmp_path / "q.bin",
            "local/progress",
            progress=lambda phase, done, total: seen.append(phase),
        )
    assert "hashing" in seen and "uploading" in seen
    assert os.path.exists(tmp_path / "q.bin")
