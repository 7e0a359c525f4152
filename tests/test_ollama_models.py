"""Ollama's model management (pull, push, create, blobs, copy, delete) through the unmodified ``ollama``
client against a real node and a real GGUF model, and who may do what (plain httpx, other users)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import ollama
import pytest

from nodes import Node

MODEL = "local/smol"
SECRET = "local/secret"  # private to the local admin
GREETING = [{"role": "user", "content": "Say hello."}]
QUICK = {"num_predict": 4, "temperature": 0}


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    node.cli_json("push", str(smollm2_gguf), SECRET, "--private")
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> ollama.Client:
    return ollama.Client(host=served.url, headers={"Authorization": f"Bearer {served.token}"})


@pytest.fixture(scope="module")
def bob(served: Node) -> str:
    return served.cli_json("user", "create", "bob")["token"]


def names(client: ollama.Client) -> set[str]:
    return {m.model for m in client.list().models}


def api(node: Node, method: str, path: str, token: str, **kw) -> httpx.Response:
    return httpx.request(
        method, f"{node.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=300, **kw
    )


# -- pull ----------------------------------------------------------------------------------------


def test_pull_streams_ollama_progress_and_writes_verified_weights(
    client: ollama.Client, served: Node, smollm2_gguf: Path
) -> None:
    lines = list(client.pull(MODEL, stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses
    sha = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    layer = [line for line in lines if line.digest == f"sha256:{sha}"]
    assert layer and layer[0].status == f"pulling {sha[:12]}"
    assert layer[-1].completed == layer[-1].total == smollm2_gguf.stat().st_size
    blob = served.home / "models" / "blobs" / sha
    assert blob.stat().st_size == smollm2_gguf.stat().st_size
    assert client.pull(f"{MODEL}:latest").status == "success"  # the client's default: one answer


def test_pull_of_an_unknown_or_unreadable_model_is_not_found(served: Node, bob: str) -> None:
    with pytest.raises(ollama.ResponseError) as unknown:
        ollama.Client(host=served.url, headers={"Authorization": f"Bearer {bob}"}).pull("local/nothing")
    assert unknown.value.status_code == 404
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as private:
            result = ollama.Client(host=served.url, headers={"Authorization": f"Bearer {bob}"}).pull(
                SECRET, stream=stream
            )
            list(result) if stream else None
        assert private.value.status_code == 404
        assert "not found" in private.value.error or "does not exist" in private.value.error


def test_pull_through_an_upstream_node(node_factory, served: Node) -> None:
    edge: Node = node_factory("--no-seed", "--upstream", served.url, name="edge")
    edge_client = ollama.Client(host=edge.url, headers={"Authorization": f"Bearer {edge.token}"})
    assert f"{MODEL}:latest" not in names(edge_client)
    statuses = [line.status for line in edge_client.pull(MODEL, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(s and s.startswith("pulling ") and s != "pulling manifest" for s in statuses)
    assert f"{MODEL}:latest" in names(edge_client)
    reply = edge_client.chat(model=MODEL, messages=GREETING, options=QUICK)
    assert reply.done and reply.eval_count
    with pytest.raises(ollama.ResponseError) as private:  # upstreams are read anonymously
        edge_client.pull(SECRET)
    assert private.value.status_code == 404


# -- push ----------------------------------------------------------------------------------------


def test_push_of_a_model_in_this_hub_sends_nothing_and_says_so(client: ollama.Client, served: Node, bob: str):
    assert client.push(MODEL).status == "success"
    statuses = [line.status for line in client.push(MODEL, stream=True)]
    assert statuses[-1] == "success" and any("nothing to upload" in (s or "") for s in statuses)
    with pytest.raises(ollama.ResponseError) as elsewhere:
        client.push("registry.ollama.ai/library/smol:latest")
    assert elsewhere.value.status_code == 400 and "another registry" in elsewhere.value.error
    with pytest.raises(ollama.ResponseError) as not_theirs:  # bob cannot publish in local/
        ollama.Client(host=served.url, headers={"Authorization": f"Bearer {bob}"}).push(MODEL)
    assert not_theirs.value.status_code == 403


# -- create and blobs ----------------------------------------------------------------------------


def test_create_from_a_model_with_a_system_prompt_then_chat(client: ollama.Client) -> None:
    system = "You are a pirate. Answer every question like a pirate would, in one short sentence."
    statuses = [
        line.status
        for line in client.create(
            model="smol-pirate",
            from_=MODEL,
            system=system,
            parameters={"temperature": 0, "num_predict": 6},
            stream=True,
        )
    ]
    assert statuses[-1] == "success"
    assert "local/smol-pirate:latest" in names(client)
    shown = client.show("local/smol-pirate")
    assert "SYSTEM" in shown.modelfile and "pirate" in shown.modelfile
    pirate = client.chat(model="local/smol-pirate", messages=GREETING)
    assert pirate.done and pirate.eval_count and pirate.eval_count <= 6  # its PARAMETER num_predict
    # The same as the base model told the same things by the caller: the system prompt went in.
    told = client.chat(
        model=MODEL,
        messages=[{"role": "system", "content": system}, *GREETING],
        options={"temperature": 0, "num_predict": 6},
    )
    assert pirate.prompt_eval_count == told.prompt_eval_count
    assert pirate.message.content == told.message.content


def test_create_from_an_uploaded_blob(client: ollama.Client, served: Node, smollm2_gguf: Path) -> None:
    digest = client.create_blob(smollm2_gguf)
    assert api(served, "HEAD", f"/api/blobs/{digest}", served.token).status_code == 200
    assert client.create(model="smol-blob", files={"model.gguf": digest}).status == "success"
    assert "local/smol-blob:latest" in names(client)
    reply = client.chat(model="local/smol-blob", messages=GREETING, options=QUICK)
    assert reply.done and reply.eval_count


def test_blobs_are_verified_and_private_to_their_uploader(served: Node, bob: str) -> None:
    data = b"some bytes only bob sent"
    right = f"sha256:{hashlib.sha256(data).hexdigest()}"
    wrong = f"sha256:{hashlib.sha256(b'other').hexdigest()}"
    refused = api(served, "POST", f"/api/blobs/{wrong}", bob, content=data)
    assert refused.status_code == 400 and "digest mismatch" in refused.json()["error"]
    assert api(served, "HEAD", f"/api/blobs/{wrong}", bob).status_code == 404
    assert api(served, "POST", f"/api/blobs/{right}", bob, content=data).status_code == 201
    assert api(served, "HEAD", f"/api/blobs/{right}", bob).status_code == 200
    assert api(served, "HEAD", f"/api/blobs/{right}", served.token).status_code == 404  # not the admin's
    anonymous = httpx.post(f"{served.url}/api/blobs/{right}", content=data, timeout=60)
    assert anonymous.status_code == 401


def test_create_refuses_what_it_cannot_do_by_name(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as quantize:
        client.create(model="smol-q", from_=MODEL, quantize="q4_K_M")
    assert quantize.value.status_code == 400 and "quantize" in quantize.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        client.create(model="smol-x", from_="local/nothing")
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as unknown_blob:
        client.create(model="smol-y", files={"model.gguf": "sha256:" + "0" * 64})
    assert unknown_blob.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad_parameter:
        client.create(model="smol-z", from_=MODEL, parameters={"no_such_parameter": 1})
    assert bad_parameter.value.status_code == 400 and "no_such_parameter" in bad_parameter.value.error


def test_create_from_a_legacy_modelfile(client: ollama.Client, served: Node, smollm2_gguf: Path) -> None:
    """Clients before Ollama 0.5 sent Modelfile text, with uploaded weights as ``FROM @sha256:...``."""
    text = f'FROM {MODEL}:latest\nSYSTEM """Answer in French."""\nPARAMETER num_predict 3\n'
    reply = api(served, "POST", "/api/create", served.token, json={"name": "smol-fr", "modelfile": text})
    assert reply.status_code == 200, reply.text
    assert reply.text.splitlines()[-1] == '{"status":"success"}'  # Ollama streams unless told not to
    shown = api(served, "POST", "/api/show", served.token, json={"model": "local/smol-fr"}).json()
    assert shown["system"] == "Answer in French."
    digest = client.create_blob(smollm2_gguf)
    body = {"name": "smol-old", "modelfile": f"FROM @{digest}\nPARAMETER num_predict 2\n", "stream": False}
    reply = api(served, "POST", "/api/create", served.token, json=body)
    assert reply.status_code == 200 and reply.json() == {"status": "success"}, reply.text
    answer = client.chat(model="local/smol-old", messages=GREETING)
    assert answer.done and answer.eval_count and answer.eval_count <= 2
    bad = api(
        served, "POST", "/api/create", served.token, json={"model": "x", "files": {"../x.gguf": digest}}
    )
    assert bad.status_code == 400 and "files" in bad.json()["error"]


# -- copy and delete -----------------------------------------------------------------------------


def test_copy_then_delete(client: ollama.Client) -> None:
    assert client.copy(MODEL, "smol-copy").status == "success"
    assert "local/smol-copy:latest" in names(client)
    assert client.show("local/smol-copy").details.format == "gguf"
    reply = client.chat(model="local/smol-copy", messages=GREETING, options=QUICK)
    assert reply.done
    assert client.delete("local/smol-copy:latest").status == "success"
    assert "local/smol-copy:latest" not in names(client)
    with pytest.raises(ollama.ResponseError) as gone:
        client.chat(model="local/smol-copy", messages=GREETING, options=QUICK)
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as again:
        client.delete("local/smol-copy")
    assert again.value.status_code == 404
    assert f"{MODEL}:latest" in names(client)  # the source is untouched


def test_others_cannot_copy_or_delete_what_is_not_theirs(served: Node, bob: str) -> None:
    # A private model another user owns does not exist for bob: 404 whatever he tries.
    assert api(served, "DELETE", "/api/delete", bob, json={"model": SECRET}).status_code == 404
    copied = api(served, "POST", "/api/copy", bob, json={"source": SECRET, "destination": "bob/mine"})
    assert copied.status_code == 404
    assert api(served, "POST", "/api/pull", bob, json={"model": SECRET, "stream": False}).status_code == 404
    # A public model he can read but not delete; he may copy it into his own namespace only.
    refused = api(served, "DELETE", "/api/delete", bob, json={"model": MODEL})
    assert refused.status_code == 403 and "error" in refused.json()
    into_local = api(served, "POST", "/api/copy", bob, json={"source": MODEL, "destination": "local/bobs"})
    assert into_local.status_code == 403
    mine = api(served, "POST", "/api/copy", bob, json={"source": MODEL, "destination": "smol"})
    assert mine.status_code == 200, mine.text
    listed = {m["name"] for m in api(served, "GET", "/api/tags", bob).json()["models"]}
    assert {"bob/smol:latest", f"{MODEL}:latest"} <= listed and f"{SECRET}:latest" not in listed
    assert api(served, "DELETE", "/api/delete", bob, json={"model": "bob/smol"}).status_code == 200
    anonymous = httpx.request("DELETE", f"{served.url}/api/delete", json={"model": MODEL}, timeout=60)
    assert anonymous.status_code == 401
    owner = ollama.Client(host=served.url, headers={"Authorization": f"Bearer {served.token}"})
    assert {f"{MODEL}:latest", f"{SECRET}:latest"} <= names(owner)
