"""What the security fixes of issue 13 cost. Prints one JSON object.

1. A pull from a warm cache into a new folder (the 491 MB Qwen GGUF): ours (stat check of the cached
   blob, then a reflink or a copy, so editing the folder cannot change the cache) vs ``cp`` of the same
   blob (the bound for a copy) vs the same pull with hard links into the cache (what pull did before:
   fast, and the poisoning bug; still used for read-only internal folders).
2. A pull after the cached blob's stat changed (``os.utime``): ours re-hashes it in full before it is
   reused vs a warm pull plus one SHA-256 pass over the file (hashlib; the bound).
3. A priced call holds its most cost in the ledger before its first token and settles it after: median
   latency of one-token chat calls to a priced model vs the same weights unpriced, same node, same run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import BenchNode, emit, median, scratch, timed
from iollm import assets
from iollm.protocol import LocalCache, NodeClient, pull

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CALLS = int(os.environ.get("BENCH_CALLS", "30"))


def warm_pulls(node: BenchNode, work: Path) -> dict:
    gguf = assets.ensure_model("qwen-coder", progress=False)
    node.cli_json("push", str(gguf), "local/qwen")
    cache = LocalCache(work / "cache")

    def pull_to(name: str, link: bool = False) -> float:
        seconds, result = timed(
            lambda: pull([client], "model", "local/qwen", "main", cache, work / name, link=link)
        )
        assert result["bytes_received"] == 0, result
        shutil.rmtree(work / name)
        return seconds

    with NodeClient(node.url, node.token) as client:
        pull([client], "model", "local/qwen", "main", cache, work / "first")  # fills the cache
        first_copy = next((work / "first").iterdir())
        blob = cache.blob_path(_sha_file(first_copy))
        time.sleep(2.5)  # a blob is trusted on its stat only once it has settled (see protocol.cache)
        pull_to("settle")  # its first reuse hashes it once and records it as settled
        ours, linked, copy, link = [], [], [], []
        for i in range(REPEATS):
            ours.append(pull_to(f"o{i}"))
            copy.append(timed(lambda i=i: shutil.copyfile(blob, work / f"c{i}.gguf"))[0])
            # Linking the blob itself would change its ctime and make the next pull re-hash it.
            link.append(timed(lambda i=i: os.link(first_copy, work / f"l{i}.gguf"))[0])
            for name in (f"c{i}.gguf", f"l{i}.gguf"):
                (work / name).unlink()
        for i in range(REPEATS):  # after the others: removing a hard-linked folder changes the blob's ctime
            linked.append(pull_to(f"h{i}", link=True))  # the old behaviour: hard links into the cache
        rehash, sha256 = [], []
        for i in range(REPEATS):
            os.utime(blob)  # a changed stat: the next pull must hash the blob before reusing it
            rehash.append(pull_to(f"r{i}"))
            sha256.append(timed(lambda: _sha_file(blob))[0])
    cache.close()
    return {
        "file_mb": round(gguf.stat().st_size / 1e6, 1),
        "warm_pull_s": median(ours),
        "cp_s": median(copy),
        "hard_link_s": median(link),
        "warm_pull_hard_linked_s": median(linked),
        "ratio_ours_over_hard_linked_pull": round(median(ours) / median(linked), 3),
        "ratio_ours_over_cp": round(median(ours) / median(copy), 3),
        "after_stat_change_pull_s": median(rehash),
        "sha256_s": median(sha256),
        "ratio_rehash_pull_over_warm_pull_plus_sha256": round(
            median(rehash) / (median(ours) + median(sha256)), 3
        ),
        "runs": {
            "ours": ours,
            "hard_linked_pull": linked,
            "cp": copy,
            "link": link,
            "rehash": rehash,
            "sha256": sha256,
        },
    }


def _sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def call_latencies(node: BenchNode, model: str, token: str) -> list[float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 1,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    with httpx.Client(base_url=node.url, headers=headers, timeout=600) as http:
        http.post("/v1/chat/completions", json=body).raise_for_status()  # load the model
        for _ in range(CALLS):
            start = time.perf_counter()
            http.post("/v1/chat/completions", json=body).raise_for_status()
            out.append(time.perf_counter() - start)
    return out


def hold_overhead(node: BenchNode) -> dict:
    gguf = assets.ensure_model("smollm2", progress=False)
    node.cli_json("push", str(gguf), "local/free")
    node.cli_json("push", str(gguf), "local/priced")
    node.cli_json("price", "set", "local/priced", "--prompt", "0.000001", "--completion", "0.000001")
    token = node.cli_json("user", "create", "payer")["token"]
    node.cli_json("credits", "grant", "payer", "1000")
    free, priced = [], []
    for _ in range(2):  # interleaved: drift in machine load touches both alike
        free += call_latencies(node, "local/free", token)
        priced += call_latencies(node, "local/priced", token)
    return {
        "calls_each": len(free),
        "free_p50_ms": round(statistics.median(free) * 1000, 2),
        "priced_p50_ms": round(statistics.median(priced) * 1000, 2),
        "hold_and_settle_p50_ms": round((statistics.median(priced) - statistics.median(free)) * 1000, 2),
        "ratio_priced_over_free": round(statistics.median(priced) / statistics.median(free), 3),
    }


def main() -> None:
    with scratch("iollm-bench-security-") as work:
        home = work / "node"
        home.mkdir()
        node = BenchNode(home, "--no-seed", "--audit-rate", "0")
        try:
            result = {"bench": "security_costs", "warm_pull": warm_pulls(node, work)}
            result["credit_hold"] = hold_overhead(node)
        finally:
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
