"""Archives (OCI image layouts) between real nodes: export, import offline, bit-identical round trips,
environments that bring their base along, and archives that must be refused whole."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from iollm.protocol import push
from nodes import Node, link_or_copy


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def make_tar(files: dict[str, bytes], extra: Callable[[tarfile.TarFile], None] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra:
            extra(tar)
    return out.getvalue()


def post_import(node: Node, data: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token if token is not None else node.token}"} if token != "" else {}
    return httpx.post(f"{node.url}/api/import", content=data, headers=headers, timeout=120)


def repos_of(node: Node) -> list[str]:
    with node.client() as client:
        return [r["id"] for r in client.list_repos()]


def tmp_files(node: Node) -> list[str]:
    return sorted(p.name for p in (node.home / "tmp").iterdir())


@pytest.fixture(scope="module")
def origin(node_factory) -> Node:
    return node_factory("--no-seed", name="origin")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, smollm2_gguf: Path) -> Path:
    folder = tmp_path_factory.mktemp("model")
    link_or_copy(smollm2_gguf, folder / "model.gguf")  # push refuses symlinks out of the folder
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("same bytes twice\n")
    (folder / "copy.txt").write_text("same bytes twice\n")
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def pushed(origin: Node, model_dir: Path) -> dict:
    return origin.cli_json("push", str(model_dir), "local/toy", "--tag", "v1", "-m", "first")


@pytest.fixture(scope="module")
def archive(origin: Node, pushed: dict, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archives") / "toy.tar"
    result = origin.cli_json("export", "local/toy", str(path), "--revision", "v1")
    assert result["path"] == str(path) and result["bytes"] == path.stat().st_size
    assert result["sha256"] == sha(path)
    assert result["commits"] == [
        {"repo": "local/toy", "type": "model", "commit": pushed["commit"], "ref": "v1", "ref_kind": "tag"}
    ]
    return path


def test_export_is_a_deterministic_oci_layout(
    origin: Node, archive: Path, pushed: dict, tmp_path: Path
) -> None:
    again = origin.cli_json("export", "local/toy@v1", str(tmp_path / "again.tar"))
    assert again["sha256"] == sha(archive)
    with tarfile.open(archive) as tar:
        infos = tar.getmembers()
    names = [m.name for m in infos]
    assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    assert names[4:] == sorted(names[4:])
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in infos)
    assert {m.mode for m in infos if m.isdir()} == {0o755} and {m.mode for m in infos if m.isfile()} == {
        0o644
    }
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2 and len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["annotations"] == {
        "org.opencontainers.image.ref.name": "v1",
        "io.iollm.ref.kind": "tag",
        "io.iollm.repo": "model/local/toy",
        "io.iollm.commit": pushed["commit"],
        "io.iollm.role": "export",
    }
    manifest = json.loads(files["blobs/sha256/" + entry["digest"].removeprefix("sha256:")])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.iollm.commit.v1+json"
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].removeprefix("sha256:")])
    assert config["repo"] == "local/toy" and config["message"] == "first"
    layers = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in manifest["layers"]}
    assert set(layers) == {"model.gguf", "config.json", "sub/notes.txt", "copy.txt", "empty.txt"}
    assert layers["model.gguf"]["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
    assert layers["config.json"]["mediaType"] == "application/vnd.iollm.file.v1"
    assert layers["copy.txt"]["digest"] == layers["sub/notes.txt"]["digest"]  # one blob for both paths
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 2 + 4  # manifest, config, 4 bodies


def test_import_offline_round_trips_bit_identical(
    node_factory, archive: Path, pushed: dict, model_dir: Path, tmp_path: Path
) -> None:
    island = node_factory("--no-seed", name="island")  # no upstreams: nothing to fetch from
    result = island.cli_json("import", str(archive))
    assert result["commits_new"] == 1 and result["bytes"] == archive.stat().st_size
    assert result["imported"][0] | {"new_commit": True} == {
        "repo": "local/toy",
        "type": "model",
        "commit": pushed["commit"],
        "ref": "v1",
        "ref_kind": "tag",
        "ref_status": "created",
        "role": "export",
        "new_commit": True,
    }
    island.cli_json("pull", "local/toy@v1", "--dest", str(tmp_path / "out"))
    for rel in ("model.gguf", "config.json", "sub/notes.txt", "copy.txt", "empty.txt"):
        assert (tmp_path / "out" / rel).read_bytes() == (model_dir / rel).read_bytes()
    assert island.cli_json("show", "local/toy@v1")["card"]["architecture"] == "llama"
    assert [c["commit"] for c in island.cli_json("log", "local/toy@v1")["commits"]] == [pushed["commit"]]
    back = island.cli_json("export", "local/toy", str(tmp_path / "back.tar"), "--revision", "v1")
    assert back["sha256"] == sha(archive)
    again = island.cli_json("import", str(archive))
    assert again["commits_new"] == 0 and again["bytes_new"] == 0
    assert again["imported"][0]["ref_status"] == "unchanged"
    assert tmp_files(island) == []


def test_branches_move_forward_only_and_history_ends_at_missing_parents(
    origin: Node, node_factory, tmp_path: Path
) -> None:
    (tmp_path / "w.bin").write_bytes(random.Random(1).randbytes(1 << 20))
    first = origin.cli_json("push", str(tmp_path / "w.bin"), "local/hist")
    origin.cli_json("export", "local/hist", str(tmp_path / "one.tar"))
    (tmp_path / "w.bin").write_bytes(random.Random(2).randbytes(1 << 20))
    second = origin.cli_json("push", str(tmp_path / "w.bin"), "local/hist")
    origin.cli_json("export", "local/hist", str(tmp_path / "two.tar"))

    forward = node_factory("--no-seed", name="forward")
    assert forward.cli_json("import", str(tmp_path / "one.tar"))["imported"][0]["ref_status"] == "created"
    assert forward.cli_json("import", str(tmp_path / "two.tar"))["imported"][0]["ref_status"] == "moved"
    log = [c["commit"] for c in forward.cli_json("log", "local/hist")["commits"]]
    assert log == [second["commit"], first["commit"]]

    newest_first = node_factory("--no-seed", name="newest-first")
    newest_first.cli_json("import", str(tmp_path / "two.tar"))
    assert [c["commit"] for c in newest_first.cli_json("log", "local/hist")["commits"]] == [second["commit"]]
    older = newest_first.cli_json("import", str(tmp_path / "one.tar"))["imported"][0]
    assert older["ref_status"] == "behind" and older["new_commit"]
    assert newest_first.cli_json("show", "local/hist")["commit"] == second["commit"]

    diverged = node_factory("--no-seed", name="diverged")
    (tmp_path / "other.txt").write_text("a different history")
    diverged.cli_json("push", str(tmp_path / "other.txt"), "local/hist")
    refused = diverged.cli("import", str(tmp_path / "two.tar"), "--json", check=False)
    assert refused.returncode != 0 and json.loads(refused.stdout)["error"]["code"] == "conflict"
    assert [f["path"] for f in diverged.cli_json("show", "local/hist")["files"]] == ["other.txt"]
    with diverged.client() as client:
        assert len(client.log("model", "local/hist")) == 1


def test_environment_brings_its_base_commits(
    origin: Node, node_factory, smollm2_gguf: Path, tmp_path: Path
) -> None:
    base = origin.cli_json("push", str(smollm2_gguf), "local/base", "--tag", "q4")
    (tmp_path / "env").mkdir()
    env_file = tmp_path / "env" / "environment.json"
    env_file.write_text(
        json.dumps({"base": {"repo": "local/base", "commit": base["commit"]}, "system": "Hi"})
    )
    with origin.client() as client:
        env = push(
            client,
            tmp_path / "env",
            "local/env",
            card={"base_model": "local/base", "base_commit": base["commit"]},
        )
        (tmp_path / "env" / "environment.json").write_text(
            json.dumps({"base": {"repo": "local/env", "commit": env["commit"]}, "system": "Hello"})
        )
        outer = push(client, tmp_path / "env", "local/env2", tag="v2")
        (tmp_path / "env" / "environment.json").write_text(
            json.dumps({"base": {"repo": "local/base", "commit": "0" * 40}})
        )
        push(client, tmp_path / "env", "local/dangling")

    exported = origin.cli_json("export", "local/env2", str(tmp_path / "env2.tar"), "--revision", "v2")
    assert [(c["repo"], c["commit"], c["ref"]) for c in exported["commits"]] == [
        ("local/env2", outer["commit"], "v2"),
        ("local/env", env["commit"], "main"),
        ("local/base", base["commit"], "main"),
        ("local/base", base["commit"], "q4"),
    ]
    offline = node_factory("--no-seed", name="offline-env")
    imported = offline.cli_json("import", str(tmp_path / "env2.tar"))
    assert imported["commits_new"] == 3
    assert {r["role"] for r in imported["imported"] if r["repo"] == "local/base"} == {"base"}
    offline.cli_json("pull", f"local/base@{base['commit']}", "--dest", str(tmp_path / "base-out"))
    assert sha(tmp_path / "base-out" / smollm2_gguf.name) == sha(smollm2_gguf)
    assert offline.cli_json("show", "local/base")["refs"]["tags"] == {"q4": base["commit"]}
    back = offline.cli_json("export", "local/env2@v2", str(tmp_path / "back.tar"))
    assert back["sha256"] == exported["sha256"]

    dangling = origin.cli("export", "local/dangling", str(tmp_path / "x.tar"), "--json", check=False)
    error = json.loads(dangling.stdout)["error"]
    assert (
        dangling.returncode != 0 and error["code"] == "RevisionNotFound" and "0000000000" in error["message"]
    )
    assert not (tmp_path / "x.tar").exists() and not list(tmp_path.glob(".x.tar*"))


def _blob_offset(archive: Path, digest: str) -> tuple[int, int]:
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"blobs/sha256/{digest}")
        return member.offset_data, member.size


def test_tampered_blob_is_named_and_nothing_is_imported(
    node_factory, archive: Path, model_dir: Path, tmp_path: Path
) -> None:
    victim = node_factory("--no-seed", name="tampered")
    digest = sha(model_dir / "model.gguf")
    offset, size = _blob_offset(archive, digest)
    data = bytearray(archive.read_bytes())
    data[offset + size // 2] ^= 0x01
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    r = post_import(victim, bytes(data))
    assert r.status_code == 422 and r.json()["error"]["code"] == "integrity_error"
    assert digest in r.json()["error"]["message"] and "Nothing was imported" in r.json()["error"]["message"]
    cli = victim.cli("import", str(tmp_path / "bad.tar"), "--json", check=False)
    assert cli.returncode != 0 and json.loads(cli.stdout)["error"]["code"] == "integrity_error"
    assert repos_of(victim) == []
    assert victim.cli_json("store", "verify")["chunks"] == 0
    assert tmp_files(victim) == []


def test_archives_that_are_not_iollm_oci_layouts_are_refused(node: Node, archive: Path, pushed: dict) -> None:
    files = members(archive)
    index = json.loads(files["index.json"])
    wrong_id = json.loads(files["index.json"])
    wrong_id["manifests"][0]["annotations"]["io.iollm.commit"] = "1" * 40
    missing = dict(files)
    del missing[f"blobs/sha256/{sha_of(files, 'model.gguf', index)}"]
    cases = {
        "not a tar": (random.Random(3).randbytes(4096), 400),
        "empty body": (b"", 400),
        "no oci-layout": (make_tar({"README": b"hello"}), 400),
        "wrong layout version": (make_tar({**files, "oci-layout": b'{"imageLayoutVersion":"9"}'}), 400),
        "index not json": (make_tar({**files, "index.json": b"{oops"}), 400),
        "commit id mismatch": (make_tar({**files, "index.json": json.dumps(wrong_id).encode()}), 422),
        "missing blob": (make_tar(missing), 400),
    }
    for what, (body, status) in cases.items():
        r = post_import(node, body)
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"]["message"], what
    assert "1111111111" in post_import(node, cases["commit id mismatch"][0]).json()["error"]["message"]
    assert "missing" in post_import(node, cases["missing blob"][0]).json()["error"]["message"]
    assert "local/toy" not in repos_of(node)
    assert tmp_files(node) == []


def sha_of(files: dict[str, bytes], path: str, index: dict) -> str:
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"].removeprefix("sha256:")])
    layer = next(x for x in manifest["layers"] if x["annotations"]["org.opencontainers.image.title"] == path)
    return layer["digest"].removeprefix("sha256:")


def test_entries_that_could_escape_are_refused(node: Node, archive: Path, tmp_path: Path) -> None:
    files = members(archive)

    def symlink(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("blobs/sha256/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    for body in (
        make_tar({**files, "../evil.txt": b"x"}),
        make_tar({**files, "/tmp/evil-absolute.txt": b"x"}),
        make_tar({**files, "blobs/../../evil.txt": b"x"}),
        make_tar(files, extra=symlink),
    ):
        r = post_import(node, body)
        assert r.status_code == 400, r.text
        assert "nothing was imported" in r.json()["error"]["message"].lower()
    assert not (node.home / "evil.txt").exists() and not (node.home.parent / "evil.txt").exists()
    assert not Path("/tmp/evil-absolute.txt").exists()
    assert "local/toy" not in repos_of(node) and tmp_files(node) == []


def test_only_writers_of_each_namespace_may_import(
    origin: Node, node_factory, archive: Path, tmp_path: Path
) -> None:
    guarded = node_factory("--no-seed", name="guarded")
    mallory = guarded.cli_json("user", "create", "mallory")["token"]
    reader = guarded.cli_json("token", "create", "ro", "--read-only", token=mallory)["token"]
    foreign = guarded.cli("import", str(archive), "--json", check=False, token=mallory)
    assert foreign.returncode != 0 and json.loads(foreign.stdout)["error"]["code"] == "forbidden"
    assert "local" in json.loads(foreign.stdout)["error"]["message"]
    read_only = guarded.cli("import", str(archive), "--json", check=False, token=reader)
    assert json.loads(read_only.stdout)["error"]["code"] == "forbidden"
    assert post_import(guarded, b"", token=reader).status_code == 403
    assert post_import(guarded, archive.read_bytes(), token="").status_code == 401
    assert repos_of(guarded) == []

    origin_mallory = origin.cli_json("user", "create", "mallory")["token"]
    (tmp_path / "own.txt").write_text("mine")
    origin.cli_json("push", str(tmp_path / "own.txt"), "mallory/own", "--private", token=origin_mallory)
    origin.cli_json("export", "mallory/own", str(tmp_path / "own.tar"), token=origin_mallory)
    assert guarded.cli_json("import", str(tmp_path / "own.tar"), token=mallory)["commits_new"] == 1
    with guarded.client(mallory) as client:
        assert client.repo_info("model", "mallory/own")["private"] is True  # stays private
    with guarded.client("") as anonymous:
        assert anonymous.list_repos() == []
    assert guarded.cli_json("import", str(archive))["commits_new"] == 1  # the admin may import anything


def test_import_size_limit(node_factory, archive: Path, monkeypatch) -> None:
    monkeypatch.setenv("IOLLM_MAX_IMPORT_BYTES", str(1 << 20))
    small = node_factory("--no-seed", name="small-limit")
    r = post_import(small, archive.read_bytes())
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert repos_of(small) == [] and tmp_files(small) == []


def test_layout_repacked_by_another_tool_imports(node: Node, archive: Path, pushed: dict) -> None:
    """`tar -cf x.tar -C layout .` names entries ./oci-layout, ./blobs/...: still the same archive."""

    def dot_folder(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("./")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)

    repacked = make_tar({f"./{name}": data for name, data in members(archive).items()}, extra=dot_folder)
    r = post_import(node, repacked)
    assert r.status_code == 200, r.text
    assert r.json()["imported"][0]["commit"] == pushed["commit"]
