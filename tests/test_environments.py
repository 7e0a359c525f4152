"""Environments end to end on real nodes: `iollm create` from an Envfile, serving with its SYSTEM,
TEMPLATE, MESSAGE and PARAMETERs, pinned export that rebuilds the same environment on another node,
local and remote bases, REQUIRES in a shared venv run by a worker process, and safetensors bases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from iollm.runtime.envfile import Requirement
from iollm.runtime.venvs import RequirementsUnavailable, VenvManager, requirements_key
from nodes import Node

BASE = "local/smol"
PACKAGE = "python-slugify==9.0.0"  # tiny, not a dependency of the node; pulls in text-unidecode
CHATML = (
    '"""{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    '<|im_start|>assistant\n"""'
)
PIRATE = f"""# An Ollama-style Modelfile with iollm's extras
FROM {BASE}
SYSTEM You are a pirate. Answer every question like a pirate.
TEMPLATE {CHATML}
PARAMETER temperature 0
PARAMETER num_predict 6
MESSAGE user Who are you?
MESSAGE assistant Arr, I be Captain Smol!
"""


@pytest.fixture(scope="module")
def node_a(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed", "--anonymous-inference", name="env-a")
    node.cli_json("push", str(smollm2_gguf), BASE)
    return node


@pytest.fixture(scope="module")
def pirate(node_a: Node, tmp_path_factory: pytest.TempPathFactory) -> dict:
    envfile = tmp_path_factory.mktemp("pirate") / "Envfile"
    envfile.write_text(PIRATE)
    return node_a.cli_json("create", "local/pirate", "-f", str(envfile))


def chat(node: Node, model: str, messages: list[dict], **extra: object) -> dict:
    reply = httpx.post(
        f"{node.url}/v1/chat/completions",
        json={"model": model, "messages": messages, **extra},
        headers={"Authorization": f"Bearer {node.token}"},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def write(folder: Path, text: str, name: str = "Envfile") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def node_distributions() -> list[str]:
    script = "import importlib.metadata as m; print('\\n'.join(sorted(f'{d.metadata[\"Name\"]}=={d.version}' for d in m.distributions())))"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()


# -- create and serve ------------------------------------------------------------------------------


def test_environment_answers_with_its_system_messages_and_parameters(node_a: Node, pirate: dict) -> None:
    head = node_a.client().refs("model", BASE)["branches"]["main"]
    assert pirate["base"] == {"repo": BASE, "commit": head}
    assert pirate["backend"] == "llama.cpp" and pirate["requires"] == []

    question = [{"role": "user", "content": "What is your favourite food?"}]
    through_env = chat(node_a, "local/pirate", question)
    # The same conversation spelled out against the base: SYSTEM + MESSAGE history + the same format.
    spelled_out = [
        {"role": "system", "content": "You are a pirate. Answer every question like a pirate."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "Arr, I be Captain Smol!"},
        *question,
    ]
    direct = chat(node_a, BASE, spelled_out, temperature=0, max_tokens=6)
    assert through_env["usage"] == direct["usage"]
    assert through_env["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert through_env["usage"]["completion_tokens"] <= 6  # PARAMETER num_predict
    # The request still wins over the environment's parameters.
    shorter = chat(node_a, "local/pirate", question, max_tokens=2)
    assert shorter["usage"]["completion_tokens"] <= 2


def test_environment_repository_refers_to_its_base_without_weights(node_a: Node, pirate: dict) -> None:
    with node_a.client() as client:
        manifest = client.manifest("model", "local/pirate", pirate["commit"])
        info = client.repo_info("model", "local/pirate")
    assert sorted(f.path for f in manifest.files) == ["Envfile", "environment.json"]
    assert sum(f.size for f in manifest.files) < 10_000
    declared = info["card"]["declared"]
    assert declared["base_model"] == BASE and declared["base_commit"] == pirate["base"]["commit"]
    assert declared["relation"] == "environment"
    assert info["lineage"][0]["repo"] == BASE
    stored = httpx.get(
        f"{node_a.url}/local/pirate/resolve/main/Envfile", headers={"Authorization": f"Bearer {node_a.token}"}
    )
    assert stored.text == PIRATE  # the Envfile as written


def test_export_prints_a_stable_pinned_envfile(node_a: Node, pirate: dict) -> None:
    first = node_a.cli("env", "export", "local/pirate").stdout
    second = node_a.cli("env", "export", "local/pirate", "--revision", pirate["commit"]).stdout
    assert first == second
    assert first.startswith(f"FROM {BASE}@{pirate['base']['commit']}\n")
    assert "PARAMETER num_predict 6" in first and "MESSAGE assistant" in first
    as_json = node_a.cli_json("env", "export", "local/pirate")
    assert as_json == {"name": "local/pirate", "commit": pirate["commit"], "pinned": True, "envfile": first}
    assert node_a.cli("env", "export", "local/pirate", "--as-written").stdout == PIRATE


def test_pinned_envfile_rebuilds_the_same_environment_on_another_node(
    node_a: Node, pirate: dict, node_factory, tmp_path: Path
) -> None:
    node_b = node_factory("--no-seed", name="env-b")
    node_b.cli_json("mirror", node_a.url, BASE)  # same bytes, same commit id
    pinned = write(tmp_path, node_a.cli("env", "export", "local/pirate").stdout, "Envfile.lock")
    rebuilt = node_b.cli_json("create", "local/pirate", "-f", str(pinned))
    assert rebuilt["base"] == pirate["base"]
    with node_a.client() as a, node_b.client() as b:
        env_a = a.manifest("model", "local/pirate", pirate["commit"]).file("environment.json")
        env_b = b.manifest("model", "local/pirate", rebuilt["commit"]).file("environment.json")
    assert env_a.sha256 == env_b.sha256  # byte for byte
    assert node_b.cli("env", "export", "local/pirate").stdout == pinned.read_text()
    answer = chat(node_b, "local/pirate", [{"role": "user", "content": "What is your favourite food?"}])
    original = chat(node_a, "local/pirate", [{"role": "user", "content": "What is your favourite food?"}])
    assert answer["choices"][0]["message"] == original["choices"][0]["message"]


def test_content_digest_outlives_a_new_commit_so_cached_answers_stay_valid(
    node_a: Node, pirate: dict, smollm2_gguf: Path, tmp_path: Path
) -> None:
    """The same weights and settings published again (as a fresh bench node does) get a new commit but
    keep their content digest, and the path search's call cache keys on it: a later run reuses the
    answers. A changed setting is a new digest."""
    import asyncio

    from iollm.paths.clients import CachedClient, CallCache, OpenAIClient

    again = node_a.cli_json("push", str(smollm2_gguf), "local/smol-again")
    twin = node_a.cli_json("create", "local/pirate-twin", "-f", str(write(tmp_path, PIRATE)))
    warmer = node_a.cli_json(
        "create",
        "local/pirate-warm",
        "-f",
        str(write(tmp_path, PIRATE.replace("temperature 0", "temperature 0.5"))),
    )
    assert len({pirate["commit"], twin["commit"], warmer["commit"]}) == 3

    def card(model: str) -> dict:
        reply = httpx.get(
            f"{node_a.url}/v1/models/{model}", headers={"Authorization": f"Bearer {node_a.token}"}
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    smol, smol_again = card(BASE), card("local/smol-again")
    assert smol_again["root"] == again["commit"] != smol["root"]
    assert smol["content_digest"] == smol_again["content_digest"]
    assert card("local/pirate")["content_digest"] == card("local/pirate-twin")["content_digest"]
    assert card("local/pirate-warm")["content_digest"] != card("local/pirate")["content_digest"]
    assert card("local/pirate")["content_digest"] != smol["content_digest"]

    async def ask(model: str) -> CachedClient:
        inner = OpenAIClient(f"{node_a.url}/v1", node_a.token)
        client = CachedClient(inner, CallCache(tmp_path / "calls.sqlite"))
        try:
            await client.chat(model, [{"role": "user", "content": "Say hi"}], {"max_tokens": 3, "seed": 1})
        finally:
            await inner.close()
        return client

    assert asyncio.run(ask(BASE)).calls_made == 1
    replayed = asyncio.run(ask("local/smol-again"))  # a new run against the model published again
    assert (replayed.calls_made, replayed.calls_cached) == (0, 1)
    assert asyncio.run(ask("local/pirate")).calls_made == 1  # another environment: its own answers


# -- errors ----------------------------------------------------------------------------------------


def test_envfile_errors_name_the_line(node_a: Node, tmp_path: Path) -> None:
    bad = write(tmp_path, f"FROM {BASE}\n# comment\nPARAMETER temperature hot\n")
    result = node_a.cli("create", "local/bad", "-f", str(bad), check=False)
    assert result.returncode != 0
    assert f"{bad}:3:" in result.stderr and "temperature" in result.stderr
    as_json = node_a.cli("create", "local/bad", "-f", str(bad), "--json", check=False)
    assert json.loads(as_json.stdout)["error"]["code"] == "invalid_envfile"
    # The node checks too (for clients other than the CLI), with the line in the reply.
    reply = httpx.post(
        f"{node_a.url}/api/environments",
        json={"name": "local/bad", "envfile": f"FROM {BASE}\nBOGUS thing\n"},
        headers={"Authorization": f"Bearer {node_a.token}"},
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["line"] == 2 and "Envfile:2:" in reply.json()["error"]["message"]


def test_from_resolves_branches_tags_and_commits_to_one_commit(node_a: Node) -> None:
    with node_a.client() as client:
        head = client.refs("model", BASE)["branches"]["main"]
        client.tag("model", BASE, head, "v1")
    headers = {"Authorization": f"Bearer {node_a.token}"}
    for name, spec in (("at-branch", "main"), ("at-tag", "v1"), ("at-commit", head)):
        text = f"FROM {BASE}@{spec}\nPARAMETER num_predict 2\n"
        reply = httpx.post(
            f"{node_a.url}/api/environments", json={"name": name, "envfile": text}, headers=headers
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["base"] == {"repo": BASE, "commit": head}
        assert reply.json()["name"] == f"local/{name}"


def test_unsupported_or_missing_bases_are_refused(node_a: Node, tmp_path: Path) -> None:
    adapter = write(tmp_path, f"FROM {BASE}\nADAPTER ./lora.gguf\n")
    result = node_a.cli("create", "local/lora", "-f", str(adapter), check=False)
    assert result.returncode != 0 and "not supported yet" in result.stderr
    missing = write(tmp_path, "FROM local/nope@v9\n", "Envfile.missing")
    result = node_a.cli("create", "local/nope-env", "-f", str(missing), check=False)
    assert result.returncode != 0 and ":1:" in result.stderr and "local/nope" in result.stderr


# -- other bases -----------------------------------------------------------------------------------


def test_from_a_local_gguf_path(node_a: Node, smollm2_gguf: Path, tmp_path: Path) -> None:
    (tmp_path / "smol.gguf").symlink_to(smollm2_gguf)
    envfile = write(tmp_path, "FROM ./smol.gguf\nPARAMETER num_predict 4\nPARAMETER temperature 0\n")
    created = node_a.cli_json("create", "smol-file", "-f", str(envfile))  # bare name: caller's namespace
    assert created["name"] == "local/smol-file"
    assert created["base"] == {"self": True} and created["backend"] == "llama.cpp"
    assert created["bytes_sent"] == 0  # the node already had every chunk (content-addressed)
    with node_a.client() as client:
        files = client.manifest("model", "local/smol-file", created["commit"]).files
    assert sorted(f.path for f in files) == ["Envfile", "environment.json", "smol.gguf"]
    answer = chat(node_a, "local/smol-file", [{"role": "user", "content": "Hi"}])
    assert 0 < answer["usage"]["completion_tokens"] <= 4
    exported = node_a.cli("env", "export", "local/smol-file").stdout
    assert exported.startswith(f"FROM local/smol-file@{created['commit']}\n")


def test_from_a_remote_openai_compatible_server(node_a: Node, tmp_path: Path) -> None:
    envfile = write(tmp_path, f"FROM {node_a.url}/v1 {BASE}\nPARAMETER num_predict 3\nSYSTEM Be brief.\n")
    created = node_a.cli_json("create", "local/far-smol", "-f", str(envfile))
    assert created["base"] == {"url": f"{node_a.url}/v1", "model": BASE, "api": "openai"}
    assert created["backend"] == "remote"
    answer = chat(node_a, "local/far-smol", [{"role": "user", "content": "Hi"}])
    assert 0 < answer["usage"]["completion_tokens"] <= 3 and answer["usage"]["prompt_tokens"] > 0
    assert node_a.cli("env", "export", "local/far-smol").stdout.startswith(f"FROM {node_a.url}/v1 {BASE}\n")


@pytest.mark.slow
def test_safetensors_base_runs_on_transformers(
    node_a: Node, smollm2_safetensors: Path, tmp_path: Path
) -> None:
    node_a.cli_json("push", str(smollm2_safetensors), "local/smol-st")
    envfile = write(tmp_path, "FROM local/smol-st\nPARAMETER num_predict 4\nPARAMETER temperature 0\n")
    created = node_a.cli_json("create", "local/smol-st-env", "-f", str(envfile))
    assert created["backend"] == "transformers"
    answer = chat(node_a, "local/smol-st-env", [{"role": "user", "content": "What is 2 + 2?"}])
    assert answer["choices"][0]["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 4


# -- REQUIRES: a shared venv and a worker process ---------------------------------------------------


@pytest.mark.slow
def test_requires_runs_in_a_shared_venv_the_node_never_sees(node_a: Node, tmp_path: Path) -> None:
    before = node_distributions()
    first = write(
        tmp_path, f"FROM {BASE}\nREQUIRES {PACKAGE}\nPARAMETER num_predict 4\nPARAMETER temperature 0\n"
    )
    one = node_a.cli_json("create", "local/slug-one", "-f", str(first))
    names = sorted(Requirement.parse(r).name for r in one["requires"])
    assert names == ["python-slugify", "text-unidecode"]  # the closure, each with its hash
    assert all("--hash=sha256:" in r for r in one["requires"])
    venv = Path(one["venv"])
    assert venv == node_a.home / "venvs" / one["requires_key"] and one["venv_created"]
    assert one["requires_key"] == requirements_key(Requirement.parse(r) for r in one["requires"])

    second = write(tmp_path, f"FROM {BASE}\nSYSTEM Be terse.\nREQUIRES {PACKAGE}\n", "Envfile.2")
    two = node_a.cli_json("create", "local/slug-two", "-f", str(second))
    assert two["requires_key"] == one["requires_key"] and two["venv"] == one["venv"]
    assert not two["venv_created"]  # reused
    assert sorted(p.name for p in (node_a.home / "venvs").iterdir() if not p.name.startswith(".")) == [
        one["requires_key"]
    ]
    exported = node_a.cli("env", "export", "local/slug-one").stdout
    assert all(f"REQUIRES {r}" in exported for r in one["requires"])

    answer = chat(node_a, "local/slug-one", [{"role": "user", "content": "Hi"}])
    assert 0 < answer["usage"]["completion_tokens"] <= 4
    worker = _worker(node_a, "local/slug-one")
    health = httpx.get(worker["url"] + "/health").json()
    assert Path(health["prefix"]) == venv  # the worker runs the venv's interpreter
    slugify = health["packages"]["python-slugify"]
    assert slugify["imports"] and slugify["version"] == "9.0.0"
    assert Path(slugify["location"]).is_relative_to(venv)
    node_import = subprocess.run([sys.executable, "-c", "import slugify"], capture_output=True)
    assert node_import.returncode != 0  # ... and the node's interpreter cannot import it
    assert node_distributions() == before

    # Crash isolation: a worker killed mid-answer fails that request; the node stays up and recovers.
    body = {
        "model": "local/slug-one",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 300,
        "stream": True,
    }
    events = []
    with httpx.stream(
        "POST",
        f"{node_a.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {node_a.token}"},
        timeout=120,
    ) as reply:
        for number, line in enumerate(reply.iter_lines()):
            if number == 2:
                os.kill(worker["pid"], signal.SIGKILL)
            if line.startswith("data:"):
                events.append(line)
    assert any('"error"' in e and "worker" in e for e in events)
    assert httpx.get(f"{node_a.url}/health").status_code == 200
    again = chat(node_a, "local/slug-one", [{"role": "user", "content": "Hi"}])
    assert again["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
    assert _worker(node_a, "local/slug-one")["pid"] != worker["pid"]


def _worker(node: Node, model: str) -> dict:
    reply = httpx.get(
        f"{node.url}/api/environments/workers", headers={"Authorization": f"Bearer {node.token}"}
    )
    return next(w for w in reply.json()["workers"] if w["model"] == model and w["alive"])


# -- the venv manager on its own -----------------------------------------------------------------


def test_venvs_are_pinned_keyed_and_built_atomically(tmp_path: Path) -> None:
    manager = VenvManager(tmp_path / "venvs")
    pins = manager.pin([Requirement.parse(PACKAGE)])
    assert [p.name for p in pins] == ["python-slugify", "text-unidecode"]
    assert manager.pin(pins) == pins  # a pinned closure pins to itself
    key = requirements_key(pins)
    leftover = tmp_path / "venvs" / f".{key}.tmp-4242"  # what a killed build leaves behind
    (leftover / "bin").mkdir(parents=True)
    info = manager.ensure(pins)
    assert info.created and info.path == tmp_path / "venvs" / key and not leftover.exists()
    run = subprocess.run(
        [str(info.python), "-c", "import slugify, iollm; print(slugify.slugify('Hi There'))"],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "hi-there", run.stderr  # its own package, and the node's iollm
    assert not manager.ensure(pins).created

    wrong = Requirement("python-slugify", "9.0.0", ("sha256:" + "0" * 64,))
    with pytest.raises(RequirementsUnavailable, match="not among the Envfile's hashes"):
        manager.pin([wrong])
    with pytest.raises(RequirementsUnavailable):
        manager.pin([Requirement("iollm-no-such-package-xyz", "1.0")])
