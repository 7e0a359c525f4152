"""Benchmark of the sharing protocol (issue #2). Prints one JSON object.

1. Cold pull of the Qwen GGUF (491 MB) from one node: our verified pull vs ``hf_hub_download`` from the
   same node vs ``curl`` of the same resolve URL.
2. A second version of the SmolLM2 safetensors model with ~1 % of its bytes changed: bytes our push
   sends and our pull receives vs the bytes that changed; v2 pull time vs ``hf_hub_download`` of v2.
3. Ingest (chunk + hash + store) speed vs BLAKE3 hashing alone of the same bytes.
4. Xet (issue #16), on a generated incompressible file of ``BENCH_XET_MB`` MB (default 96; the 491 MB
   GGUF takes minutes per upload on a 2-core machine): ``upload_folder`` with hf_xet (the client's
   default) vs our ``iollm push`` of a file of the same size; a 1 %-changed second version through
   hf_xet (bytes the client sent over bytes changed, and the store's growth); ``hf_hub_download``
   through Xet vs plain resolve (HF_HUB_DISABLE_XET=1) vs ``curl``; a native push of the file that
   came in through Xet (bytes sent); and the 491 MB Qwen GGUF uploaded by ``upload_folder`` and by
   ``iollm push``, each to a fresh node (``BENCH_XET_GGUF=0`` skips it).

``BENCH_ONLY=xet`` (or a comma list of cold_pull, second_version, ingest, xet) runs only those parts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import BenchNode, emit, median, scratch, timed
from iollm import assets
from iollm.protocol import LocalCache, NodeClient, pull
from iollm.store import ChunkStore, MappedFile

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
QWEN = "iollm/qwen2.5-coder-0.5b-instruct"


def hf_download(
    endpoint: str, token: str, repo: str, filename: str, cache: Path, revision: str = "main"
) -> float:
    """Time hf_hub_download in a fresh interpreter (it reads HF_ENDPOINT at import); import time excluded."""
    code = (
        "import time,sys\nfrom huggingface_hub import hf_hub_download\n"
        "t=time.perf_counter()\n"
        f"hf_hub_download({repo!r}, {filename!r}, revision={revision!r}, cache_dir={str(cache)!r})\n"
        "print(time.perf_counter()-t)"
    )
    env = dict(
        os.environ,
        HF_ENDPOINT=endpoint,
        HF_TOKEN=token,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(cache / "home"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def our_pull(node: BenchNode, repo: str, home: Path, revision: str = "main") -> tuple[float, dict]:
    with NodeClient(node.url, node.token) as client:
        cache = LocalCache(home / "cache")
        seconds, result = timed(lambda: pull([client], "model", repo, revision, cache, home / "out"))
        cache.close()
    return seconds, result


def curl_download(url: str, token: str, dest: Path) -> float:
    seconds, _ = timed(
        lambda: subprocess.run(
            ["curl", "-sf", "-o", str(dest), "-H", f"Authorization: Bearer {token}", url], check=True
        )
    )
    return seconds


def cold_pull(node: BenchNode, work: Path) -> dict:
    gguf = assets.ensure_model("qwen-coder", progress=False)
    name = gguf.name
    url = f"{node.url}/{QWEN}/resolve/main/{name}"
    ours, hf, curl = [], [], []
    for i in range(REPEATS):
        seconds, result = our_pull(node, QWEN, work / f"ours{i}")
        assert result["bytes_received"] == gguf.stat().st_size
        ours.append(seconds)
        hf.append(hf_download(node.url, node.token, QWEN, name, work / f"hf{i}"))
        curl.append(curl_download(url, node.token, work / f"curl{i}.gguf"))
        for folder in (work / f"ours{i}", work / f"hf{i}"):
            shutil.rmtree(folder, ignore_errors=True)
        (work / f"curl{i}.gguf").unlink(missing_ok=True)
    size_mb = gguf.stat().st_size / 1e6
    return {
        "file_mb": round(size_mb, 1),
        "ours_s": median(ours),
        "hf_hub_download_s": median(hf),
        "curl_s": median(curl),
        "ours_mb_per_s": round(size_mb / median(ours), 1),
        "ratio_hf_over_ours": round(median(hf) / median(ours), 3),
        "ratio_curl_over_ours": round(median(curl) / median(ours), 3),
        "ours_verifies": "blake3 per chunk + sha256 per file",
        "hf_verifies": "size only",
        "target_met": median(ours) <= median(hf),
        "runs": {"ours": ours, "hf": hf, "curl": curl},
    }


def make_v2(v1: Path, v2: Path, fraction: float = 0.01) -> int:
    """Copy the model folder, rewrite whole tensors until ~``fraction`` of bytes changed; returns bytes changed."""
    shutil.copytree(v1, v2)
    target = v2 / "model.safetensors"
    raw = bytearray(target.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    import json

    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    budget = int(len(raw) * fraction)
    changed = 0
    names = sorted(k for k in header if k != "__metadata__" and "layers.10." in k)
    for name in names:
        start, end = header[name]["data_offsets"]
        if changed + (end - start) > budget * 1.2:
            continue
        original = bytes(raw[base + start : base + end])
        noise = os.urandom(end - start)
        raw[base + start : base + end] = noise
        changed += sum(1 for a, b in zip(original, noise, strict=True) if a != b)
        if changed >= budget:
            break
    target.write_bytes(bytes(raw))
    return changed


def second_version(node: BenchNode, work: Path) -> dict:
    v1 = assets.ensure_smollm2_safetensors(progress=False)
    v2 = work / "smollm2-v2"
    changed = make_v2(v1, v2)
    first = node.cli_json("push", str(v1), "local/smollm2-st", "-m", "v1")
    second = node.cli_json("push", str(v2), "local/smollm2-st", "-m", "v2")
    home = work / "client"
    our_pull(node, "local/smollm2-st", home, first["commit"])  # v1 present locally
    seconds, pulled = our_pull(node, "local/smollm2-st", home, second["commit"])
    hf_cache = work / "hf-st"
    hf_download(node.url, node.token, "local/smollm2-st", "model.safetensors", hf_cache, first["commit"])
    hf_seconds = hf_download(
        node.url, node.token, "local/smollm2-st", "model.safetensors", hf_cache, second["commit"]
    )
    total = sum(f.stat().st_size for f in v2.rglob("*") if f.is_file())
    return {
        "model_bytes": total,
        "bytes_changed": changed,
        "fraction_changed": round(changed / total, 4),
        "push_bytes_sent": second["bytes_sent"],
        "pull_bytes_received": pulled["bytes_received"],
        "push_sent_over_changed": round(second["bytes_sent"] / changed, 3),
        "pull_received_over_changed": round(pulled["bytes_received"] / changed, 3),
        "ours_v2_pull_s": round(seconds, 3),
        "hf_hub_download_v2_s": round(hf_seconds, 3),
        "hf_bytes_received": (v2 / "model.safetensors").stat().st_size,
        "target_met": second["bytes_sent"] <= 1.2 * changed and pulled["bytes_received"] <= 1.2 * changed,
    }


def _write_and_sync(source: Path, target: Path) -> None:
    with MappedFile(source) as mapped, open(target, "wb") as out:
        out.write(mapped.view)
        out.flush()
        os.fsync(out.fileno())
    target.unlink()


def ingest_speed(work: Path) -> dict:
    gguf = assets.ensure_model("qwen-coder", progress=False)
    with MappedFile(gguf) as mapped:
        view = mapped.view
        blake_single = median([timed(lambda: blake3.blake3(view).digest())[0] for _ in range(REPEATS)])
        blake_multi = median(
            [
                timed(lambda: blake3.blake3(view, max_threads=blake3.blake3.AUTO).digest())[0]
                for _ in range(REPEATS)
            ]
        )
        sha = median([timed(lambda: hashlib.sha256(view).digest())[0] for _ in range(REPEATS)])
    runs = []
    for i in range(REPEATS):
        store = ChunkStore(work / f"store{i}")
        runs.append(timed(lambda store=store: store.ingest_file(gguf))[0])
        store.close()
        shutil.rmtree(work / f"store{i}")
    # The same ingest into a store in memory (/dev/shm): the chunk+hash+index pipeline without the disk,
    # and a plain write + fsync of the same bytes: the disk's own bound on any ingest that stores them.
    memory_runs = []
    for _ in range(REPEATS):
        folder = Path(tempfile.mkdtemp(prefix="iollm-ingest-", dir="/dev/shm"))
        try:
            store = ChunkStore(folder)
            memory_runs.append(timed(lambda store=store: store.ingest_file(gguf))[0])
            store.close()
        finally:
            shutil.rmtree(folder)
    disk_runs = [timed(lambda: _write_and_sync(gguf, work / "plain.bin"))[0] for _ in range(REPEATS)]
    mb = gguf.stat().st_size / 1e6
    ingest = median(runs)
    in_memory, disk = median(memory_runs), median(disk_runs)
    return {
        "file_mb": round(mb, 1),
        "ingest_mb_per_s": round(mb / ingest, 1),
        "blake3_1thread_mb_per_s": round(mb / blake_single, 1),
        "blake3_all_threads_mb_per_s": round(mb / blake_multi, 1),
        "sha256_mb_per_s": round(mb / sha, 1),
        "ingest_over_blake3_1thread": round(blake_single / ingest, 3),
        "plain_write_fsync_mb_per_s": round(mb / disk, 1),
        "ingest_over_plain_write": round(disk / ingest, 3),
        "ingest_in_memory_mb_per_s": round(mb / in_memory, 1),
        "ingest_in_memory_over_blake3_1thread": round(blake_single / in_memory, 3),
        "ingest_includes": "FastCDC + BLAKE3 per chunk + SHA-256 of the file + pack write + index commit (fsync)",
        "target_met": blake_single / ingest >= 0.5,
    }


def hf_run(node: BenchNode, home: Path, code: str, **env: str) -> float:
    """Run huggingface_hub code in a fresh interpreter on its defaults; returns the seconds it printed."""
    full = dict(
        os.environ,
        HF_ENDPOINT=node.url,
        HF_TOKEN=node.token,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(home),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        **env,
    )
    script = "import time\nfrom huggingface_hub import HfApi, hf_hub_download\nt=time.perf_counter()\n" + code
    script += "\nprint(time.perf_counter()-t)"
    out = subprocess.run([sys.executable, "-c", script], env=full, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def xet_sent(node: BenchNode) -> int:
    """Bytes Xet clients sent the node (xorb and shard bodies, as on the wire)."""
    stats = httpx.get(f"{node.url}/api/xet/stats", headers={"Authorization": f"Bearer {node.token}"}).json()
    return int(stats["xorb_bytes"])


def store_bytes(node: BenchNode) -> int:
    return sum(p.stat().st_size for p in (node.home / "store").rglob("*") if p.is_file())


def xet_gguf_upload(work: Path) -> dict:
    """The 491 MB Qwen GGUF uploaded by ``upload_folder`` (hf_xet) and by ``iollm push``, each to a
    fresh node (on one node the second upload would find every chunk already there)."""
    gguf = assets.ensure_model("qwen-coder", progress=False)
    folder = work / "gguf-upload"
    folder.mkdir()
    shutil.copy(gguf, folder / gguf.name)
    result: dict = {"file_mb": round(gguf.stat().st_size / 1e6, 1)}
    for name in ("hf_xet", "ours"):
        node = BenchNode(work / f"gguf-{name}", "--no-seed")
        try:
            if name == "hf_xet":
                code = (
                    "api=HfApi(); api.create_repo('local/gguf')\n"
                    f"api.upload_folder(folder_path={str(folder)!r}, repo_id='local/gguf')"
                )
                result["upload_hf_xet_s"] = round(hf_run(node, work / "gguf-client", code), 3)
            else:
                result["upload_ours_s"] = node.cli_json("push", str(folder), "local/gguf")["seconds"]
        finally:
            node.stop()
    result["ratio_hf_xet_over_ours"] = round(result["upload_hf_xet_s"] / result["upload_ours_s"], 3)
    return result


def xet_transfer(node: BenchNode, work: Path) -> dict:
    mb = int(os.environ.get("BENCH_XET_MB", "96"))
    size = mb * 1_000_000
    rng = __import__("random").Random(16)
    model, other = work / "xet-model", work / "xet-native"
    model.mkdir()
    other.mkdir()
    (model / "weights.bin").write_bytes(rng.randbytes(size))
    (other / "weights.bin").write_bytes(rng.randbytes(size))
    home = work / "xet-client"
    # 1. upload: hf_xet (default path) vs our push, each of a file the node has never seen
    sent_before = xet_sent(node)
    hf_upload_s = hf_run(
        node,
        home,
        f"api=HfApi(); api.create_repo('local/xet-bench')\napi.upload_folder(folder_path={str(model)!r}, repo_id='local/xet-bench')",
    )
    hf_upload_sent = xet_sent(node) - sent_before
    ours = node.cli_json("push", str(other), "local/native-bench")
    # 2. a second version with 1 % of its bytes changed, through hf_xet from the same client machine
    data = bytearray((model / "weights.bin").read_bytes())
    changed = size // 100
    data[size // 3 : size // 3 + changed] = rng.randbytes(changed)
    (model / "weights.bin").write_bytes(bytes(data))
    grown, sent_before = store_bytes(node), xet_sent(node)
    hf_v2_s = hf_run(
        node, home, f"HfApi().upload_folder(folder_path={str(model)!r}, repo_id='local/xet-bench')"
    )
    v2_sent, grown = xet_sent(node) - sent_before, store_bytes(node) - grown
    # the same change pushed natively, for comparison
    native_v2 = other / "weights.bin"
    native_data = bytearray(native_v2.read_bytes())
    native_data[size // 3 : size // 3 + changed] = rng.randbytes(changed)
    native_v2.write_bytes(bytes(native_data))
    ours_v2 = node.cli_json("push", str(other), "local/native-bench")
    # 3. download of the Xet-stored file: through Xet, through plain resolve, and curl (the bound)
    via_xet, via_resolve, via_curl = [], [], []
    url = f"{node.url}/local/xet-bench/resolve/main/weights.bin"
    for i in range(REPEATS):
        code = f"hf_hub_download('local/xet-bench', 'weights.bin', cache_dir={str(work / f'xdl{i}')!r})"
        via_xet.append(hf_run(node, work / f"xh{i}", code))
        code = f"hf_hub_download('local/xet-bench', 'weights.bin', cache_dir={str(work / f'pdl{i}')!r})"
        via_resolve.append(hf_run(node, work / f"ph{i}", code, HF_HUB_DISABLE_XET="1"))
        via_curl.append(curl_download(url, node.token, work / f"curl{i}.bin"))
        for folder in (work / f"xdl{i}", work / f"pdl{i}", work / f"xh{i}", work / f"ph{i}"):
            shutil.rmtree(folder, ignore_errors=True)
        (work / f"curl{i}.bin").unlink(missing_ok=True)
    # 4. a native push of the file that came in through Xet: the store already holds its chunks
    (work / "xet-copy").mkdir()
    shutil.copy(model / "weights.bin", work / "xet-copy" / "weights.bin")
    dedup = node.cli_json("push", str(work / "xet-copy"), "local/xet-copy")
    return {
        "file_mb": mb,
        "file": "generated incompressible bytes (random), not the 491 MB GGUF: see the docstring",
        "upload_hf_xet_s": round(hf_upload_s, 3),
        "upload_hf_xet_bytes_sent": hf_upload_sent,
        "upload_ours_s": ours["seconds"],
        "upload_ours_bytes_sent": ours["bytes_sent"],
        "ratio_hf_xet_over_ours": round(hf_upload_s / ours["seconds"], 3),
        "v2_bytes_changed": changed,
        "v2_hf_xet_s": round(hf_v2_s, 3),
        "v2_hf_xet_bytes_sent": v2_sent,
        "v2_hf_xet_sent_over_changed": round(v2_sent / changed, 3),
        "v2_store_growth_bytes": grown,
        "v2_store_growth_over_changed": round(grown / changed, 3),
        "v2_ours_bytes_sent": ours_v2["bytes_sent"],
        "v2_ours_sent_over_changed": round(ours_v2["bytes_sent"] / changed, 3),
        "download_via_xet_s": median(via_xet),
        "download_via_resolve_s": median(via_resolve),
        "download_curl_s": median(via_curl),
        "ratio_xet_over_curl": round(median(via_xet) / median(via_curl), 3),
        "native_push_of_xet_file_bytes_sent": dedup["bytes_sent"],
        "target_met": v2_sent <= 1.2 * changed,
        "runs": {"xet": via_xet, "resolve": via_resolve, "curl": via_curl},
        "gguf_upload": xet_gguf_upload(work) if os.environ.get("BENCH_XET_GGUF", "1") != "0" else None,
    }


PARTS = {
    "cold_pull": cold_pull,
    "second_version": second_version,
    "ingest": lambda node, work: ingest_speed(work),
    "xet": xet_transfer,
}


def main() -> None:
    only = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p] or list(PARTS)
    with scratch("iollm-bench-transfer-") as work:
        node = BenchNode(work / "node")
        try:
            started = time.perf_counter()
            result = {"benchmark": "transfer", "machine": {"cpus": os.cpu_count()}}
            for part in only:
                result[part] = PARTS[part](node, work)
            result["seconds"] = round(time.perf_counter() - started, 1)
        finally:
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
