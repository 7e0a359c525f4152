"""The real, unmodified huggingface_hub client against a real node (HF_ENDPOINT=<node>)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from nodes import Node, link_or_copy, run_hf


@pytest.fixture(scope="module")
def published(node: Node, smollm2_gguf: Path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hf-model")
    link_or_copy(smollm2_gguf, folder / smollm2_gguf.name)  # push refuses symlinks out of the folder
    (folder / "README.md").write_text("# SmolLM2\n")
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("notes\n")
    first = node.cli_json("push", str(folder), "local/smol", "--tag", "v1")
    (folder / "README.md").write_text("# SmolLM2, second version\n")
    second = node.cli_json("push", str(folder), "local/smol")
    return {"v1": first["commit"], "v2": second["commit"], "gguf": smollm2_gguf}


def test_hf_hub_download_by_branch_tag_and_commit(node: Node, published: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        f"""
        a = hf_hub_download("local/smol", "README.md")
        b = hf_hub_download("local/smol", "README.md", revision="v1")
        c = hf_hub_download("local/smol", "README.md", revision="{published["v1"]}")
        g = hf_hub_download("local/smol", "{published["gguf"].name}")
        print(json.dumps({{"a": open(a).read(), "b": open(b).read(), "c": open(c).read(), "g": g}}))
        """,
    )
    assert out["a"] == "# SmolLM2, second version\n"
    assert out["b"] == out["c"] == "# SmolLM2\n"
    assert (
        hashlib.sha256(Path(out["g"]).read_bytes()).hexdigest()
        == hashlib.sha256(published["gguf"].read_bytes()).hexdigest()
    )


def test_snapshot_download_with_allow_patterns(node: Node, published: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        import os
        path = snapshot_download("local/smol", allow_patterns=["extra/*", "*.md"])
        files = sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)
        print(json.dumps({"files": files}))
        """,
    )
    assert out["files"] == ["README.md", "extra/notes.txt"]


def test_model_info_files_and_refs(node: Node, published: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        api = HfApi()
        info = api.model_info("local/smol", files_metadata=True)
        refs = api.list_repo_refs("local/smol")
        print(json.dumps({
            "sha": info.sha,
            "siblings": {s.rfilename: [s.size, s.lfs.sha256 if s.lfs else None] for s in info.siblings},
            "files": api.list_repo_files("local/smol"),
            "branches": {b.name: b.target_commit for b in refs.branches},
            "tags": {t.name: t.target_commit for t in refs.tags},
            "gguf": info.gguf,
            "commits": [c.commit_id for c in api.list_repo_commits("local/smol")],
            "exists": api.repo_exists("local/nothing-here"),
            "file_exists": api.file_exists("local/smol", "nope.txt"),
        }))
        """,
    )
    gguf = published["gguf"]
    assert out["sha"] == published["v2"]
    assert out["siblings"][gguf.name] == [gguf.stat().st_size, hashlib.sha256(gguf.read_bytes()).hexdigest()]
    assert sorted(out["files"]) == sorted(["README.md", "extra/notes.txt", gguf.name])
    assert out["branches"] == {"main": published["v2"]} and out["tags"] == {"v1": published["v1"]}
    assert out["gguf"]["architecture"] == "llama"
    assert out["commits"] == [published["v2"], published["v1"]]
    assert out["exists"] is False and out["file_exists"] is False


def test_range_requests_and_headers(node: Node, published: dict) -> None:
    gguf = published["gguf"]
    url = f"{node.url}/local/smol/resolve/main/{gguf.name}"
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == published["v2"]
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert int(head.headers["Content-Length"]) == gguf.stat().st_size
    assert "xet" not in " ".join(head.headers.keys()).lower()
    part = httpx.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == gguf.read_bytes()[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{gguf.stat().st_size}"
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == gguf.read_bytes()[-10:]
    bad = httpx.get(url, headers={"Range": f"bytes={gguf.stat().st_size + 5}-"})
    assert bad.status_code == 416
    missing = httpx.head(f"{node.url}/local/smol/resolve/main/absent.bin")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == published["v2"]
    norev = httpx.head(f"{node.url}/local/smol/resolve/nobranch/README.md")
    assert norev.status_code == 404 and norev.headers["X-Error-Code"] == "RevisionNotFound"


def test_uploads_through_hf_are_the_same_repository(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.safetensors").write_bytes(
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(4 << 20)
    )
    (folder / "config.json").write_text('{"model_type": "demo"}')
    out = run_hf(
        node,
        tmp_path,
        f"""
        api = HfApi()
        url = api.create_repo("local/via-hf", exist_ok=True)
        again = api.create_repo("local/via-hf", exist_ok=True)
        ds = api.create_repo("local/data-hf", repo_type="dataset", private=True)
        api.upload_folder(folder_path="{folder}", repo_id="local/via-hf", commit_message="folder")
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="hello.txt", repo_id="local/via-hf")
        api.upload_file(path_or_fileobj=b"a,b\\n1,2\\n", path_in_repo="train.csv", repo_id="local/data-hf", repo_type="dataset")
        rows = open(hf_hub_download("local/data-hf", "train.csv", repo_type="dataset")).read()
        print(json.dumps({{"url": str(url), "again": str(again), "files": sorted(api.list_repo_files("local/via-hf")), "rows": rows}}))
        """,
    )
    assert out["url"].endswith("/local/via-hf") and out["again"] == out["url"]
    assert out["files"] == ["config.json", "hello.txt", "sub/weights.safetensors"]
    assert out["rows"] == "a,b\n1,2\n"
    pulled = node.cli_json("pull", "local/via-hf", "--dest", str(tmp_path / "native"))
    assert (tmp_path / "native" / "sub" / "weights.safetensors").read_bytes() == (
        folder / "sub" / "weights.safetensors"
    ).read_bytes()
    assert pulled["files"] == 3
    info = node.cli_json("show", "local/data-hf", "--type", "dataset")
    assert info["private"] is True
    log = node.cli_json("log", "local/via-hf")["commits"]
    assert [c["message"].split("\n")[0] for c in log][-1] == "folder"


def test_hf_errors_map_to_client_exceptions(node: Node, published: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError
        seen = []
        for call in (lambda: hf_hub_download("local/missing", "x"),
                     lambda: hf_hub_download("local/smol", "x", revision="nope"),
                     lambda: hf_hub_download("local/smol", "x")):
            try:
                call()
            except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
                seen.append(type(exc).__name__)
        print(json.dumps(seen))
        """,
    )
    assert out == ["RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"]


def test_stale_parent_commit_is_refused(node: Node, published: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        f"""
        from huggingface_hub.errors import HfHubHTTPError
        try:
            HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="late.txt", repo_id="local/smol",
                                parent_commit="{published["v1"]}")
            print(json.dumps("accepted"))
        except HfHubHTTPError as exc:
            print(json.dumps(exc.response.status_code))
        """,
    )
    assert out == 412


def test_lfs_uploads_still_work_for_users_who_turn_xet_off(node: Node, tmp_path: Path) -> None:
    """A user may choose LFS (``HF_HUB_DISABLE_XET=1``): that path keeps working, bytes checked by SHA-256."""
    import hashlib
    import os

    payload = os.urandom(3 << 20)
    (tmp_path / "lfs").mkdir()
    (tmp_path / "lfs" / "blob.bin").write_bytes(payload)
    out = run_hf(
        node,
        tmp_path,
        f"""
        import hashlib
        api = HfApi()
        api.create_repo("local/via-lfs", exist_ok=True)
        api.upload_folder(folder_path="{tmp_path / "lfs"}", repo_id="local/via-lfs")
        path = hf_hub_download("local/via-lfs", "blob.bin", cache_dir="{tmp_path / "dl"}")
        print(json.dumps({{"sha": hashlib.sha256(open(path, "rb").read()).hexdigest()}}))
        """,
        HF_HUB_DISABLE_XET="1",
    )
    assert out["sha"] == hashlib.sha256(payload).hexdigest()
    entry = next(f for f in node.cli_json("show", "local/via-lfs")["files"] if f["path"] == "blob.bin")
    assert entry["size"] == len(payload) and entry["sha256"] == out["sha"]  # computed by the node
