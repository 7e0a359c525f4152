"""The rest of the Hub API that huggingface_hub calls, driven by the unmodified client on its defaults
(hf_xet installed, no HF_HUB_DISABLE_XET; small files only) against a real node: listings, refs,
repository management, deletions, trees, HfFileSystem, the `hf` CLI, refusals and typed errors, each
checked with a second user's token where permissions matter."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nodes import Node, run_hf


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


README_A = b"---\nlicense: mit\ntags:\n- vision\n- demo\n---\n# alpha\n"
README_B = b"---\ntags: [demo]\n---\n# beta\n"


@pytest.fixture(scope="module")
def users(node: Node) -> dict[str, str]:
    return {
        "alice": node.cli_json("user", "create", "alice")["token"],
        "mallory": node.cli_json("user", "create", "mallory")["token"],
    }


@pytest.fixture(scope="module")
def listed(node: Node, users: dict, tmp_path_factory) -> dict:
    """Alice's models (two public with README tags, one private), a dataset and a space; one of Mallory's."""
    tmp = tmp_path_factory.mktemp("listed")
    run_hf(
        node,
        tmp,
        f"""
        api = HfApi()
        for name, readme in (("alpha-one", {README_A!r}), ("beta-two", {README_B!r})):
            api.create_repo(f"alice/{{name}}")
            api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id=f"alice/{{name}}")
        api.create_repo("alice/gamma-private", private=True)
        api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id="alice/gamma-private")
        api.create_repo("alice/data-one", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"a,b\\n", path_in_repo="t.csv", repo_id="alice/data-one", repo_type="dataset")
        api.create_repo("alice/space-one", repo_type="space", space_sdk="static")
        print(json.dumps(True))
        """,
        token=users["alice"],
    )
    run_hf(
        node,
        tmp,
        'HfApi().create_repo("mallory/alpha-evil"); print(json.dumps(True))',
        token=users["mallory"],
    )
    return users


def test_list_models_datasets_spaces(node: Node, listed: dict, tmp_path: Path) -> None:
    code = """
        api = HfApi()
        ids = lambda it: [m.id for m in it]
        print(json.dumps({
            "author": sorted(ids(api.list_models(author="alice"))),
            "search": sorted(ids(api.list_models(search="alpha"))),
            "demo": sorted(ids(api.list_models(filter="demo", author="alice"))),
            "both": ids(api.list_models(filter=["demo", "vision"])),
            "license": ids(api.list_models(filter="license:mit")),
            "newest": ids(api.list_models(author="alice", sort="created_at")),
            "limit": ids(api.list_models(author="alice", limit=1)),
            "full": {m.id: [s.rfilename for s in m.siblings] for m in api.list_models(author="alice", full=True)},
            "private": {m.id: m.private for m in api.list_models(author="alice")},
            "datasets": ids(api.list_datasets(author="alice")),
            "spaces": ids(api.list_spaces(author="alice")),
            "ds_search": ids(api.list_datasets(search="data")),
        }))
        """
    alice = run_hf(node, tmp_path, code, token=listed["alice"])
    assert alice["author"] == ["alice/alpha-one", "alice/beta-two", "alice/gamma-private"]
    assert alice["search"] == ["alice/alpha-one", "mallory/alpha-evil"]
    assert alice["demo"] == ["alice/alpha-one", "alice/beta-two"]
    assert alice["both"] == ["alice/alpha-one"] and alice["license"] == ["alice/alpha-one"]
    assert alice["newest"] == ["alice/gamma-private", "alice/beta-two", "alice/alpha-one"]
    assert alice["limit"] == ["alice/alpha-one"]
    assert alice["full"]["alice/alpha-one"] == ["README.md"]
    assert alice["private"]["alice/gamma-private"] is True
    assert alice["datasets"] == ["alice/data-one"] and alice["ds_search"] == ["alice/data-one"]
    assert alice["spaces"] == ["alice/space-one"]
    # Another user never sees Alice's private repository, under any filter.
    mallory = run_hf(node, tmp_path, code, token=listed["mallory"])
    assert mallory["author"] == ["alice/alpha-one", "alice/beta-two"]
    assert "alice/gamma-private" not in mallory["full"] and "alice/gamma-private" not in mallory["newest"]


def test_listing_pages_follow_link_headers(node: Node, listed: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub import constants
        from huggingface_hub.utils import build_hf_headers, paginate
        # The function list_models pages with: it follows each Link rel="next" the node sends.
        pages = paginate(f"{constants.ENDPOINT}/api/models", params={"limit": 1, "author": "alice", "sort": "id", "direction": 1}, headers=build_hf_headers())
        print(json.dumps([m["id"] for m in pages]))
        """,
        token=listed["alice"],
    )
    assert out == ["alice/alpha-one", "alice/beta-two", "alice/gamma-private"]
    alice = {"Authorization": f"Bearer {listed['alice']}"}
    first = httpx.get(f"{node.url}/api/models", params={"author": "alice", "limit": 2}, headers=alice)
    assert [m["id"] for m in first.json()] == ["alice/alpha-one", "alice/beta-two"]
    rest = httpx.get(first.links["next"]["url"], headers=alice)
    assert [m["id"] for m in rest.json()] == ["alice/gamma-private"] and "Link" not in rest.headers
    anonymous = httpx.get(f"{node.url}/api/models", params={"author": "alice", "limit": 2})
    assert len(anonymous.json()) == 2 and "Link" not in anonymous.headers  # the private one is not counted
    bad = httpx.get(f"{node.url}/api/models", params={"sort": "nonsense"})
    assert bad.status_code == 400 and "sort must be one of" in bad.headers["X-Error-Message"]


def test_tags_and_branches(node: Node, listed: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError, BadRequestError
        api = HfApi()
        repo = "alice/alpha-one"
        def status(call):
            try:
                call()
                return 200
            except HfHubHTTPError as exc:
                return [type(exc).__name__, exc.response.status_code]
        api.upload_file(path_or_fileobj=b"first", path_in_repo="v.txt", repo_id=repo)
        api.create_tag(repo, tag="v1", tag_message="first")
        again = status(lambda: api.create_tag(repo, tag="v1"))
        api.create_tag(repo, tag="v1", exist_ok=True)
        api.upload_file(path_or_fileobj=b"second", path_in_repo="v.txt", repo_id=repo)
        api.create_branch(repo, branch="dev", revision="v1")
        api.create_branch(repo, branch="feature/x")
        dup = status(lambda: api.create_branch(repo, branch="dev"))
        api.create_branch(repo, branch="dev", exist_ok=True)
        api.upload_file(path_or_fileobj=b"on dev", path_in_repo="v.txt", repo_id=repo, revision="dev")
        refs = api.list_repo_refs(repo)
        got = {r: open(hf_hub_download(repo, "v.txt", revision=r), "rb").read().decode()
               for r in ("v1", "main", "dev", "feature/x")}
        api.delete_tag(repo, tag="v1")
        gone = status(lambda: hf_hub_download(repo, "v.txt", revision="v1", force_download=True))
        api.delete_branch(repo, branch="dev")
        api.delete_branch(repo, branch="feature/x")
        main = status(lambda: api.delete_branch(repo, branch="main"))
        after = api.list_repo_refs(repo)
        print(json.dumps({
            "again": again, "dup": dup, "got": got, "gone": gone, "main": main,
            "branches": sorted(b.name for b in refs.branches), "tags": [t.name for t in refs.tags],
            "after": [sorted(b.name for b in after.branches), [t.name for t in after.tags]],
        }))
        """,
        token=listed["alice"],
    )
    assert out["again"] == ["HfHubHTTPError", 409] and out["dup"] == ["HfHubHTTPError", 409]
    assert out["got"] == {"v1": "first", "main": "second", "dev": "on dev", "feature/x": "second"}
    assert out["branches"] == ["dev", "feature/x", "main"] and out["tags"] == ["v1"]
    assert out["gone"] == ["RevisionNotFoundError", 404]
    assert out["main"] == ["BadRequestError", 400]
    assert out["after"] == [["main"], []]
    hostile = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import HfHubHTTPError
        api = HfApi()
        seen = []
        for call in (lambda: api.create_tag("alice/alpha-one", tag="evil"),
                     lambda: api.create_branch("alice/alpha-one", branch="evil"),
                     lambda: api.delete_branch("alice/alpha-one", branch="main"),
                     lambda: api.create_tag("alice/gamma-private", tag="evil"),
                     lambda: api.delete_tag("alice/gamma-private", tag="v1")):
            try:
                call()
                seen.append("accepted")
            except HfHubHTTPError as exc:
                seen.append([type(exc).__name__, exc.response.status_code])
        print(json.dumps(seen))
        """,
        token=listed["mallory"],
    )
    assert hostile[:3] == [["HfHubHTTPError", 403]] * 3
    assert hostile[3:] == [["RepositoryNotFoundError", 404]] * 2
    refs = httpx.get(f"{node.url}/api/models/alice/alpha-one/refs").json()
    assert [b["name"] for b in refs["branches"]] == ["main"] and refs["tags"] == []


def test_move_visibility_and_delete(node: Node, listed: dict, tmp_path: Path) -> None:
    payload = b"weights of the movable model\n" * 100
    (tmp_path / "payload.txt").write_bytes(payload)
    setup = """
        from huggingface_hub.errors import HfHubHTTPError
        api = HfApi()
        def status(call):
            try:
                call()
                return 200
            except HfHubHTTPError as exc:
                return [type(exc).__name__, exc.response.status_code]
        """
    first = run_hf(
        node,
        tmp_path,
        setup
        + f"""
        api.create_repo("alice/movable")
        api.upload_file(path_or_fileobj="{tmp_path / "payload.txt"}", path_in_repo="payload.txt", repo_id="alice/movable")
        into_theirs = status(lambda: api.move_repo("alice/movable", "mallory/taken"))
        api.move_repo("alice/movable", "alice/moved")
        old = status(lambda: api.model_info("alice/movable"))
        path = hf_hub_download("alice/moved", "payload.txt")
        api.update_repo_settings("alice/moved", private=True)
        print(json.dumps({{"into_theirs": into_theirs, "old": old, "path": path,
                          "private": api.model_info("alice/moved").private}}))
        """,
        token=listed["alice"],
    )
    assert first["into_theirs"] == ["HfHubHTTPError", 403]
    assert first["old"] == ["RepositoryNotFoundError", 404]
    assert sha(Path(first["path"]).read_bytes()) == sha(payload) and first["private"] is True
    hostile = run_hf(
        node,
        tmp_path / "mallory",  # her own cache: the client would serve Alice's cached copy offline
        setup
        + """
        print(json.dumps({
            "info": status(lambda: api.model_info("alice/moved")),
            "download": status(lambda: hf_hub_download("alice/moved", "payload.txt")),
            "listed": [m.id for m in api.list_models(author="alice")],
            "settings": status(lambda: api.update_repo_settings("alice/moved", private=False)),
            "move": status(lambda: api.move_repo("alice/moved", "mallory/stolen")),
            "delete": status(lambda: api.delete_repo("alice/moved")),
            "delete_public": status(lambda: api.delete_repo("alice/beta-two")),
            "move_public": status(lambda: api.move_repo("alice/beta-two", "mallory/stolen")),
            "hide_public": status(lambda: api.update_repo_settings("alice/beta-two", private=True)),
        }))
        """,
        token=listed["mallory"],
    )
    assert hostile["info"] == hostile["download"] == ["RepositoryNotFoundError", 404]
    assert hostile["settings"] == hostile["move"] == hostile["delete"] == ["RepositoryNotFoundError", 404]
    assert "alice/moved" not in hostile["listed"]
    assert (
        hostile["delete_public"]
        == hostile["move_public"]
        == hostile["hide_public"]
        == ["HfHubHTTPError", 403]
    )
    last = run_hf(
        node,
        tmp_path,
        setup
        + """
        api.update_repo_settings("alice/moved", visibility="public")
        public = api.model_info("alice/moved", token=False).private
        api.delete_repo("alice/moved")
        api.delete_repo("alice/moved", missing_ok=True)
        print(json.dumps({
            "public": public,
            "exists": api.repo_exists("alice/moved"),
            "again": status(lambda: api.delete_repo("alice/moved")),
            "recreated": str(api.create_repo("alice/moved")),
            "info": api.model_info("alice/moved").sha,
        }))
        """,
        token=listed["alice"],
    )
    assert last["public"] is False and last["exists"] is False
    assert last["again"] == ["RepositoryNotFoundError", 404]
    assert last["recreated"].endswith("/alice/moved") and last["info"] is None  # a new, empty repository
    assert httpx.get(f"{node.url}/api/models/alice/beta-two").status_code == 200


def test_delete_files_tree_and_paths_info(node: Node, listed: dict, tmp_path: Path) -> None:
    folder = tmp_path / "tree"
    (folder / "docs" / "deep").mkdir(parents=True)
    files = {
        "a.txt": b"top level\n",
        "docs/x.md": b"# x\n",
        "docs/deep/y.md": b"# y\n",
        "data/z.json": b'{"z": 1}\n',
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    out = run_hf(
        node,
        tmp_path,
        f"""
        from huggingface_hub import RepoFile
        api = HfApi()
        repo = "alice/tree"
        api.create_repo(repo)
        first = api.upload_folder(folder_path="{folder}", repo_id=repo, commit_message="all files").oid
        second = api.upload_file(path_or_fileobj=b"# x v2\\n", path_in_repo="docs/x.md", repo_id=repo,
                                 commit_message="x again").oid
        def show(entries):
            return sorted([e.path, "file" if isinstance(e, RepoFile) else "dir",
                           e.last_commit.oid if e.last_commit else None] for e in entries)
        shallow = show(api.list_repo_tree(repo))
        deep = show(api.list_repo_tree(repo, recursive=True))
        docs = show(api.list_repo_tree(repo, path_in_repo="docs", expand=True))
        info = api.get_paths_info(repo, ["a.txt", "docs", "missing.txt"], expand=True)
        blob = [e.blob_id for e in api.list_repo_tree(repo) if e.path == "a.txt"][0]
        api.delete_file("a.txt", repo_id=repo)
        api.delete_folder("docs", repo_id=repo)
        old = open(hf_hub_download(repo, "docs/deep/y.md", revision=first), "rb").read().decode()
        print(json.dumps({{
            "first": first, "second": second, "shallow": shallow, "deep": deep, "docs": docs,
            "info": show(info), "blob": blob, "left": sorted(api.list_repo_files(repo)), "old": old,
        }}))
        """,
        token=listed["alice"],
    )
    first, second = out["first"], out["second"]
    assert out["shallow"] == [["a.txt", "file", None], ["data", "dir", None], ["docs", "dir", None]]
    assert [p for p, _, _ in out["deep"]] == sorted([*files, "data", "docs", "docs/deep"])
    assert out["docs"] == [["docs/deep", "dir", first], ["docs/x.md", "file", second]]
    assert out["info"] == [["a.txt", "file", first], ["docs", "dir", second]]
    assert out["blob"] == hashlib.sha1(b"blob %d\0" % len(files["a.txt"]) + files["a.txt"]).hexdigest()
    assert out["left"] == ["data/z.json"] and out["old"] == "# y\n"
    hostile = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import HfHubHTTPError
        try:
            HfApi().delete_file("data/z.json", repo_id="alice/tree")
            print(json.dumps("accepted"))
        except HfHubHTTPError as exc:
            print(json.dumps(exc.response.status_code))
        """,
        token=listed["mallory"],
    )
    assert hostile == 403


def test_tree_lfs_shape_and_hf_file_system(node: Node, listed: dict, tmp_path: Path) -> None:
    weights = bytes(range(256)) * 512  # 128 KiB, an LFS file by its suffix
    (tmp_path / "push").mkdir()
    (tmp_path / "push" / "weights.bin").write_bytes(weights)
    (tmp_path / "push" / "notes").mkdir()
    (tmp_path / "push" / "notes" / "readme.md").write_text("notes\n")
    pushed = node.cli_json("push", str(tmp_path / "push"), "local/fs-model")
    out = run_hf(
        node,
        tmp_path,
        """
        fs = HfFileSystem()
        entry = [e for e in HfApi().list_repo_tree("local/fs-model") if e.path == "weights.bin"][0]
        with fs.open("local/fs-model/weights.bin", "rb") as handle:
            handle.seek(1000)
            middle = handle.read(10)
        print(json.dumps({
            "lfs": [entry.lfs.sha256, entry.lfs.size, entry.lfs.pointer_size, entry.size],
            "ls": sorted(fs.ls("local/fs-model", detail=False)),
            "glob": fs.glob("local/fs-model/**/*.md"),
            "whole": fs.open("local/fs-model/weights.bin", "rb").read().hex(),
            "middle": middle.hex(),
            "range": fs.cat_file("local/fs-model/weights.bin", start=300, end=310).hex(),
            "info": {k: fs.info("local/fs-model/weights.bin")[k] for k in ("size", "type")},
            "modified": fs.modified("local/fs-model/notes/readme.md").isoformat(),
            "last": fs.info("local/fs-model/notes", expand_info=True)["last_commit"].oid,
        }))
        """,
        token=listed["alice"],
    )
    assert out["lfs"][:2] == [sha(weights), len(weights)] and out["lfs"][3] == len(weights)
    assert out["lfs"][2] == len(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha(weights)}\nsize {len(weights)}\n"
    )
    assert out["ls"] == ["local/fs-model/notes", "local/fs-model/weights.bin"]
    assert out["glob"] == ["local/fs-model/notes/readme.md"]
    assert sha(bytes.fromhex(out["whole"])) == sha(weights)
    assert bytes.fromhex(out["middle"]) == weights[1000:1010]
    assert bytes.fromhex(out["range"]) == weights[300:310]
    assert out["info"] == {"size": len(weights), "type": "file"}
    assert out["modified"].startswith("20") and out["last"] == pushed["commit"]
    part = httpx.get(f"{node.url}/local/fs-model/resolve/main/weights.bin", headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 5-9/{len(weights)}"


def test_super_squash_is_refused_clearly(node: Node, listed: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import HfHubHTTPError
        try:
            HfApi().super_squash_history("alice/alpha-one")
            print(json.dumps("accepted"))
        except HfHubHTTPError as exc:
            print(json.dumps([exc.response.status_code, str(exc)]))
        """,
        token=listed["alice"],
    )
    assert out[0] == 501 and "history is never rewritten" in out[1]
    assert len(httpx.get(f"{node.url}/api/models/alice/alpha-one/commits/main").json()) >= 2


def test_unserved_routes_and_typed_errors(node: Node, listed: dict, tmp_path: Path) -> None:
    out = run_hf(
        node,
        tmp_path,
        """
        from huggingface_hub.errors import HfHubHTTPError
        api = HfApi()
        seen = {}
        calls = {
            "discussions": lambda: list(api.get_repo_discussions("alice/alpha-one")),
            "private_discussions": lambda: list(api.get_repo_discussions("alice/gamma-private", token=MALLORY)),
            "missing_repo_tree": lambda: list(api.list_repo_tree("alice/nothing")),
            "missing_revision_tree": lambda: list(api.list_repo_tree("alice/alpha-one", revision="nope")),
            "missing_folder_tree": lambda: list(api.list_repo_tree("alice/alpha-one", path_in_repo="nope")),
            "missing_tag": lambda: api.delete_tag("alice/alpha-one", tag="nope"),
            "missing_branch": lambda: api.delete_branch("alice/alpha-one", branch="nope"),
            "tag_missing_revision": lambda: api.create_tag("alice/alpha-one", tag="t", revision="nope"),
            "gated": lambda: api.update_repo_settings("alice/beta-two", gated="auto"),
        }
        for key, call in calls.items():
            try:
                call()
                seen[key] = "accepted"
            except HfHubHTTPError as exc:
                seen[key] = [type(exc).__name__, exc.response.status_code, str(exc)[-300:]]
        print(json.dumps(seen))
        """.replace("MALLORY", repr(listed["mallory"])),
        token=listed["alice"],
    )
    assert out["discussions"][:2] == ["HfHubHTTPError", 501]
    assert "iollm does not serve GET /api/models/alice/alpha-one/discussions" in out["discussions"][2]
    assert out["private_discussions"][:2] == ["RepositoryNotFoundError", 404]
    assert out["missing_repo_tree"][:2] == ["RepositoryNotFoundError", 404]
    assert out["missing_revision_tree"][:2] == out["missing_tag"][:2] == ["RevisionNotFoundError", 404]
    assert out["missing_branch"][:2] == out["tag_missing_revision"][:2] == ["RevisionNotFoundError", 404]
    assert out["missing_folder_tree"][:2] == ["RemoteEntryNotFoundError", 404]
    assert out["gated"][:2] == ["HfHubHTTPError", 501] and "gated" in out["gated"][2]
    web = httpx.get(f"{node.url}/alice/alpha-one/blob/main/README.md")
    assert web.status_code == 501 and "does not serve" in web.headers["X-Error-Message"]
    assert (
        httpx.get(f"{node.url}/alice/gamma-private/blob/main/s.txt").headers["X-Error-Code"] == "RepoNotFound"
    )
    assert httpx.get(f"{node.url}/api/collections").status_code == 501


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/models/alice/alpha-one/preupload/main"),
        ("POST", "/api/models/alice/alpha-one/commit/main"),
        ("POST", "/alice/alpha-one.git/info/lfs/objects/batch"),
        ("POST", "/api/models/alice/alpha-one/branch/b"),
        ("POST", "/api/repos/move"),
    ],
)
def test_invalid_json_is_a_400(node: Node, listed: dict, method: str, path: str) -> None:
    reply = httpx.request(
        method, node.url + path, content=b"{not json", headers={"Authorization": f"Bearer {listed['alice']}"}
    )
    assert reply.status_code == 400, reply.text
    assert "JSON" in reply.headers["X-Error-Message"]


def test_hf_cli_against_the_node(node: Node, listed: dict, tmp_path: Path) -> None:
    data = b"uploaded by the hf CLI\n" * 50
    (tmp_path / "cli.txt").write_bytes(data)
    env = node.env(HF_ENDPOINT=node.url, HF_TOKEN=listed["alice"], HF_HOME=str(tmp_path / "hf-home"))
    hf = str(Path(sys.executable).parent / "hf")

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([hf, *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
        return result

    run("repos", "create", "alice/cli-repo")
    run("upload", "alice/cli-repo", str(tmp_path / "cli.txt"), "cli.txt")
    run("repos", "tag", "create", "alice/cli-repo", "v1")
    (tmp_path / "cli.txt").write_bytes(b"changed\n")
    run("upload", "alice/cli-repo", str(tmp_path / "cli.txt"), "cli.txt")
    run("download", "alice/cli-repo", "cli.txt", "--revision", "v1", "--local-dir", str(tmp_path / "v1"))
    run("download", "alice/cli-repo", "--local-dir", str(tmp_path / "main"))
    assert sha((tmp_path / "v1" / "cli.txt").read_bytes()) == sha(data)
    assert (tmp_path / "main" / "cli.txt").read_bytes() == b"changed\n"
    refs = httpx.get(f"{node.url}/api/models/alice/cli-repo/refs").json()
    assert [t["name"] for t in refs["tags"]] == ["v1"]
