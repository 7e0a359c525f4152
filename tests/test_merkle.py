"""Merkle log (RFC 6962 / 9162), checkpoints, signed notes and Ed25519 signing helpers.

Reference vectors are copied from independent implementations so that "our roots" are "everyone's
roots": the 8-leaf tree from google/trillian ``merkle/testonly/constants.go`` and the proofs from
transparency-dev/merkle ``proof/verify_test.go``; the signed note from golang/mod
``sumdb/note/note.go`` (the PeterNeumann example).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import stat
import statistics
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iollm.mining import checkpoint, merkle
from iollm.mining.checkpoint import Checkpoint
from iollm.mining.merkle import LogTamperedError, MerkleLog
from iollm.signing import ed25519 as signing

# --- reference data ---------------------------------------------------------------------------

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [  # by tree size 0..8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEVEL0 = [  # leaf hashes (trillian NodeHashes level 0)
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
INCLUSION_VECTORS = [  # (leaf index, tree size, proof); the Go file numbers leaves from 1
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY_VECTORS = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# golang/mod sumdb/note: the documented example key and signed note.
GO_SIGNER_SEED_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # 0x01 || Ed25519 seed
GO_VERIFIER_B64 = "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"  # 0x01 || public key, hash c74f20a3
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

LEAF_HASHES = [merkle.leaf_hash(d) for d in LEAF_INPUTS]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


def reference_mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH, literally as the RFC writes it (recursive, no tricks)."""
    if not hashes:
        return merkle.EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(reference_mth(hashes[:k]), reference_mth(hashes[k:]))


def make_hashes(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [merkle.leaf_hash(rng.randbytes(rng.randrange(0, 12))) for _ in range(n)]


# --- RFC 6962 vectors ---------------------------------------------------------------------------


def test_leaf_and_root_vectors() -> None:
    assert [x.hex() for x in LEAF_HASHES] == LEVEL0
    for size in range(9):
        assert merkle.root(LEAF_HASHES[:size]).hex() == ROOTS[size]
        assert merkle.verify_all(LEAF_INPUTS[:size]).hex() == ROOTS[size]
        assert MerkleLog(LEAF_HASHES[:size]).root().hex() == ROOTS[size]
        assert MerkleLog(LEAF_HASHES).root_at(size).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    assert merkle.inclusion_proof(index, size, LEAF_HASHES) == h(proof)
    assert MerkleLog(LEAF_HASHES).inclusion_proof(index, size) == h(proof)
    root = bytes.fromhex(ROOTS[size])
    assert merkle.verify_inclusion(LEAF_HASHES[index], index, size, h(proof), root)
    assert not merkle.verify_inclusion(LEAF_HASHES[index], index, size, h(proof)[:-1], root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    assert merkle.consistency_proof(old, new, LEAF_HASHES) == h(proof)
    old_root, new_root = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    assert merkle.verify_consistency(old, new, old_root, new_root, h(proof))
    if proof:
        assert not merkle.verify_consistency(old, new, new_root, old_root, h(proof))
        assert not merkle.verify_consistency(old, new, old_root, new_root, h(proof)[1:])


def test_consistency_edge_cases() -> None:
    r1, r8 = bytes.fromhex(ROOTS[1]), bytes.fromhex(ROOTS[8])
    assert merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, r8, [])
    assert not merkle.verify_consistency(0, 8, r1, r8, [])  # a size-0 tree has exactly one root
    assert not merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, r8, [r1])
    assert merkle.verify_consistency(8, 8, r8, r8, [])
    assert not merkle.verify_consistency(8, 8, r8, r1, [])
    assert not merkle.verify_consistency(8, 8, r8, r8, [r8])
    assert not merkle.verify_consistency(2, 1, r1, r1, [])  # time travel
    assert not merkle.verify_consistency(1, 2, r1, bytes.fromhex(ROOTS[2]), [])  # empty proof


@pytest.mark.parametrize(
    "bad",
    [
        dict(index=-1),
        dict(index=8),
        dict(tree_size=0),
        dict(tree_size=16),
        dict(leaf=b"short"),
        dict(leaf="not bytes"),
        dict(root=b"\x00" * 31),
        dict(root=None),
        dict(proof=None),
        dict(proof=[b"x"] * 3),
        dict(proof=[*h(INCLUSION_VECTORS[0][2]), b"\x00" * 32]),
    ],
)
def test_verify_inclusion_rejects_malformed_input_without_raising(bad: dict) -> None:
    args = dict(
        leaf=LEAF_HASHES[0],
        index=0,
        tree_size=8,
        proof=h(INCLUSION_VECTORS[0][2]),
        root=bytes.fromhex(ROOTS[8]),
    )
    assert merkle.verify_inclusion(
        args["leaf"], args["index"], args["tree_size"], args["proof"], args["root"]
    )
    args.update(bad)
    assert not merkle.verify_inclusion(
        args["leaf"], args["index"], args["tree_size"], args["proof"], args["root"]
    )


# --- properties ---------------------------------------------------------------------------------


@FAST
@given(n=st.integers(0, 600), seed=st.integers(0, 2**32))
def test_every_root_matches_the_rfc_definition(n: int, seed: int) -> None:
    hashes = make_hashes(n, seed)
    expected = reference_mth(hashes)
    log = MerkleLog(hashes)
    assert merkle.root(hashes) == log.root() == expected
    if n:
        assert merkle.SubtreeHasher(hashes, cache_min_size=4).subtree_hash(0, n) == expected
        k = (seed % n) + 1
        assert log.root_at(k) == reference_mth(hashes[:k])


@FAST
@given(n=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_every_inclusion_proof_verifies_and_wrong_ones_fail(n: int, seed: int) -> None:
    hashes = make_hashes(n, seed)
    log = MerkleLog(hashes)
    root = log.root()
    cached = merkle.SubtreeHasher(hashes, cache_min_size=8)
    other = merkle.leaf_hash(b"not in the log")
    for i in range(n):
        proof = log.inclusion_proof(i)
        assert proof == merkle.inclusion_proof(i, n, cached)
        assert len(proof) <= max(1, (n - 1).bit_length())
        assert merkle.verify_inclusion(hashes[i], i, n, proof, root)
        assert not merkle.verify_inclusion(other, i, n, proof, root)
        assert not merkle.verify_inclusion(hashes[i], i, n, proof, other)
        if hashes[(i + 1) % n] != hashes[i] and n > 1:
            assert not merkle.verify_inclusion(hashes[i], (i + 1) % n, n, proof, root)
        if proof:
            flipped = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
            assert not merkle.verify_inclusion(hashes[i], i, n, flipped, root)


def test_consistency_for_every_pair_up_to_64() -> None:
    hashes = make_hashes(64, seed=7)
    log = MerkleLog(hashes)
    roots = [log.root_at(k) for k in range(65)]
    for new in range(1, 65):
        for old in range(0, new + 1):
            proof = log.consistency_proof(old, new)
            assert proof == merkle.consistency_proof(old, new, hashes)
            assert merkle.verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            if 0 < old < new:
                # Any change to the old tree (here its last entry) must break consistency.
                altered = [*hashes[: old - 1], merkle.leaf_hash(b"rewritten history")]
                assert not merkle.verify_consistency(old, new, merkle.root(altered), roots[new], proof)
                assert not merkle.verify_consistency(old, new, roots[old], roots[new - 1], proof)
                assert not merkle.verify_consistency(old, new, roots[old], roots[new], proof[:-1])


def _mutate(entries: list[bytes], rng: random.Random) -> list[bytes] | None:
    """One random tampering: byte change, deletion, insertion, reordering or truncation."""
    out = list(entries)
    kind = rng.randrange(5)
    i = rng.randrange(len(out))
    if kind == 0:
        if not out[i]:
            return None
        pos = rng.randrange(len(out[i]))
        out[i] = out[i][:pos] + bytes([out[i][pos] ^ rng.randrange(1, 256)]) + out[i][pos + 1 :]
    elif kind == 1:
        del out[i]
    elif kind == 2:
        out.insert(i, rng.randbytes(rng.randrange(0, 8)))
    elif kind == 3:
        j = rng.randrange(len(out))
        if out[i] == out[j]:
            return None
        out[i], out[j] = out[j], out[i]
    else:
        out = out[:i]
    return out


def test_ten_thousand_random_tamperings_are_all_detected() -> None:
    """Target 9 of the research notes: 100 % of >= 10,000 fuzzed mutations are detected."""
    rng = random.Random(2026)
    entries = [rng.randbytes(rng.randrange(1, 24)) for _ in range(48)]
    log = MerkleLog(merkle.leaf_hash(e) for e in entries)
    detected = 0
    while detected < 10_000:
        mutated = _mutate(entries, rng)
        if mutated is None:
            continue
        assert merkle.verify_all(mutated) != log.root()
        detected += 1
    assert log.verify_all(entries) == log.root()


@FAST
@given(entries=st.lists(st.binary(max_size=16), min_size=1, max_size=40), seed=st.integers(0, 2**32))
def test_any_tampering_changes_the_root(entries: list[bytes], seed: int) -> None:
    log = MerkleLog()
    log.extend(entries)
    mutated = _mutate(entries, random.Random(seed))
    assume(mutated is not None and mutated != entries)
    assert merkle.verify_all(mutated) != log.root()
    with pytest.raises(LogTamperedError):
        log.verify_all(mutated)


def test_merkle_log_append_returns_indexes_and_keeps_old_roots() -> None:
    log = MerkleLog()
    assert log.root() == merkle.EMPTY_ROOT and len(log) == 0
    roots = []
    for i, data in enumerate(LEAF_INPUTS):
        assert log.append(data) == i
        roots.append(log.root())
    assert [r.hex() for r in roots] == ROOTS[1:]
    assert log.leaf_hash(3) == LEAF_HASHES[3]
    with pytest.raises(ValueError):
        log.append_leaf_hash(b"too short")
    with pytest.raises(ValueError):
        log.inclusion_proof(0, tree_size=9)
    with pytest.raises(IndexError):
        log.leaf_hash(8)


def test_subtree_hasher_accepts_a_callable_and_checks_hash_sizes() -> None:
    hashes = make_hashes(1000, seed=3)
    source = merkle.SubtreeHasher(lambda i: hashes[i])
    assert source.subtree_hash(0, 1000) == reference_mth(hashes)
    assert merkle.inclusion_proof(999, 1000, source) == MerkleLog(hashes).inclusion_proof(999)
    with pytest.raises(IndexError):
        merkle.SubtreeHasher(hashes).subtree_hash(0, 1001)
    with pytest.raises(ValueError):
        merkle.SubtreeHasher([b"short", b"hashes"]).subtree_hash(0, 2)


# --- checkpoints and signed notes ---------------------------------------------------------------

ROOT8 = bytes.fromhex(ROOTS[8])


def test_checkpoint_text_format() -> None:
    cp = Checkpoint("iollm.example/ledger", 8, ROOT8, "2026-01-31T12:00:00Z")
    text = cp.to_text()
    assert text == (
        "iollm.example/ledger\n8\n" + base64.b64encode(ROOT8).decode() + "\n2026-01-31T12:00:00Z\n"
    )
    assert Checkpoint.from_text(text) == cp


@pytest.mark.parametrize(
    "text",
    [
        "log\n8\n{root}\n2026-01-31T12:00:00Z",  # no final newline
        "log\n08\n{root}\n2026-01-31T12:00:00Z\n",  # non-canonical size
        "log\n-1\n{root}\n2026-01-31T12:00:00Z\n",
        "log\n8\n{root}\n",  # no timestamp
        "log\n8\n{root}\n2026-01-31T12:00:00Z\nextra\n",
        "log\r\n8\n{root}\n2026-01-31T12:00:00Z\n",
        "log\n8\n{root}=\n2026-01-31T12:00:00Z\n",
        "log\n8\nAAAA\n2026-01-31T12:00:00Z\n",  # wrong hash length
        "log\n8\n{root}\n2026-02-30T12:00:00Z\n",  # impossible date
        "log\n8\n{root}\n2026-01-31 12:00:00\n",
        " log\n8\n{root}\n2026-01-31T12:00:00Z\n",
        "\n8\n{root}\n2026-01-31T12:00:00Z\n",
    ],
)
def test_checkpoint_parsing_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        Checkpoint.from_text(text.format(root=base64.b64encode(ROOT8).decode()))


def test_merkle_log_checkpoint_signs_and_verifies() -> None:
    key = signing.generate_key()
    kid = signing.public_key_id(key)
    log = MerkleLog(LEAF_HASHES)
    cp = log.checkpoint("iollm.example/meter", tree_size=6)
    assert cp.root_hash == bytes.fromhex(ROOTS[6]) and cp.tree_size == 6
    sig = checkpoint.sign_checkpoint(key, cp)
    assert checkpoint.verify_checkpoint(kid, cp, sig)
    assert not checkpoint.verify_checkpoint(signing.public_key_id(signing.generate_key()), cp, sig)


@FAST
@given(
    field=st.sampled_from(["origin", "tree_size", "root_hash", "timestamp"]),
    origin=st.text(
        alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=30
    ),
    size=st.integers(0, 2**63),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoint_signature_fails_when_any_field_changes(
    field: str, origin: str, size: int, root: bytes
) -> None:
    key = signing.generate_key()
    kid = signing.public_key_id(key)
    cp = Checkpoint(origin, size, root, "2026-01-31T12:00:00Z")
    sig = cp.sign(key)
    assert cp.verify(kid, sig)
    assert Checkpoint.from_text(cp.to_text()) == cp
    changed = {
        "origin": dict(origin=origin + "x"),
        "tree_size": dict(tree_size=size + 1),
        "root_hash": dict(root_hash=bytes([root[0] ^ 1]) + root[1:]),
        "timestamp": dict(timestamp="2026-01-31T12:00:01Z"),
    }[field]
    other = dataclasses.replace(cp, **changed)
    assert not other.verify(kid, sig)


def test_signed_note_matches_the_go_reference_byte_for_byte() -> None:
    seed = base64.b64decode(GO_SIGNER_SEED_B64)
    key = signing.Ed25519PrivateKey.from_private_bytes(seed[1:])
    assert signing.raw_public_key(key) == base64.b64decode(GO_VERIFIER_B64)[1:]
    assert checkpoint.sign_note(GO_TEXT, key, "PeterNeumann") == GO_NOTE
    kid = signing.public_key_id(key)
    assert checkpoint.open_note(GO_NOTE, "PeterNeumann", kid) == GO_TEXT
    with pytest.raises(ValueError):
        checkpoint.open_note(GO_NOTE.replace("problem,", "problem;"), "PeterNeumann", kid)
    with pytest.raises(ValueError):
        checkpoint.open_note(GO_NOTE, "PaulNeumann", kid)


def test_checkpoint_signed_note_round_trip_with_a_witness_cosignature() -> None:
    log_key, witness_key = signing.generate_key(), signing.generate_key()
    cp = MerkleLog(LEAF_HASHES).checkpoint("iollm.example/ledger", "2026-01-31T12:00:00Z")
    note = cp.to_signed_note(log_key, "iollm.example/ledger")
    witness_line = checkpoint.sign_note(cp.to_text(), witness_key, "witness.example").split("\n\n", 1)[1]
    cosigned = note + witness_line
    log_id = signing.public_key_id(log_key)
    assert Checkpoint.from_signed_note(cosigned, "iollm.example/ledger", log_id) == cp
    assert (
        checkpoint.open_note(cosigned, "witness.example", signing.public_key_id(witness_key)) == cp.to_text()
    )
    tampered = cosigned.replace("\n8\n", "\n9\n")
    with pytest.raises(ValueError):
        Checkpoint.from_signed_note(tampered, "iollm.example/ledger", log_id)


# --- Ed25519 helpers ------------------------------------------------------------------------------


def test_key_ids_and_signatures_round_trip() -> None:
    key = signing.generate_key()
    kid = signing.public_key_id(key)
    assert kid.startswith("ed25519:") and len(kid) == len("ed25519:") + 43
    assert signing.public_key_id(signing.public_key_from_id(kid)) == kid
    sig = signing.sign(key, b"meter record")
    assert len(sig) == 86 and "=" not in sig
    assert signing.verify(kid, b"meter record", sig)
    assert not signing.verify(kid, b"meter recorD", sig)
    for bad_id in ["", "ed25519:", "rsa:" + kid[8:], kid + "A", kid[:-1] + "_"]:
        with pytest.raises(ValueError):
            signing.public_key_from_id(bad_id)
        assert not signing.verify(bad_id, b"meter record", sig)


@settings(max_examples=200, deadline=None)
@given(
    kid=st.one_of(st.text(max_size=60), st.none(), st.integers()),
    message=st.one_of(st.binary(max_size=40), st.text(max_size=10), st.none()),
    sig=st.one_of(st.text(max_size=100), st.binary(max_size=64), st.none()),
)
def test_verify_never_raises(kid: object, message: object, sig: object) -> None:
    assert signing.verify(kid, message, sig) is False  # type: ignore[arg-type]


def test_signature_encoding_is_strict() -> None:
    sig = ""
    while "-" not in sig and "_" not in sig:  # about 1 signature in 15 has neither: it tests nothing
        key = signing.generate_key()
        kid = signing.public_key_id(key)
        sig = signing.sign(key, b"x")
    assert not signing.verify(kid, b"x", sig + "==")  # padding
    assert not signing.verify(kid, b"x", sig.replace("-", "+").replace("_", "/"))  # std alphabet
    with pytest.raises(ValueError):
        signing.b64url_decode("AB")  # non-zero trailing bits: a second spelling of b"\x00"
    assert signing.b64url_decode("AA") == b"\x00"


def test_private_key_file_is_private_atomic_and_not_clobbered(tmp_path: Path) -> None:
    key = signing.generate_key()
    path = signing.save_private_key(key, tmp_path / "node.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert signing.public_key_id(signing.load_private_key(path)) == signing.public_key_id(key)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp files left behind
    with pytest.raises(FileExistsError):
        signing.save_private_key(signing.generate_key(), path)
    assert signing.public_key_id(signing.load_private_key(path)) == signing.public_key_id(key)
    other = signing.generate_key()
    signing.save_private_key(other, path, overwrite=True)
    assert signing.public_key_id(signing.load_private_key(path)) == signing.public_key_id(other)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_save_without_hard_links_still_refuses_to_clobber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("this file system has no hard links")

    monkeypatch.setattr(os, "link", no_links)
    key = signing.generate_key()
    path = signing.save_private_key(key, tmp_path / "node.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.public_key_id(signing.load_private_key(path)) == signing.public_key_id(key)
    with pytest.raises(FileExistsError):
        signing.save_private_key(signing.generate_key(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_loading_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = signing.save_private_key(signing.generate_key(), tmp_path / "node.key")
    path.chmod(0o644)
    with pytest.raises(signing.InsecureKeyFileError, match="chmod 600"):
        signing.load_private_key(path)


def test_raw_seed_key_files_load(tmp_path: Path) -> None:
    seed = base64.b64decode(GO_SIGNER_SEED_B64)[1:]
    path = tmp_path / "seed.key"
    path.write_bytes(seed)
    path.chmod(0o600)
    key = signing.load_private_key(path)
    assert signing.raw_public_key(key) == base64.b64decode(GO_VERIFIER_B64)[1:]


# --- canonical JSON -----------------------------------------------------------------------------


def test_canonical_json_form() -> None:
    obj = {"b": [1, True, None, "é"], "a": {"z": -(2**63), "y": 2**63 - 1}, "\u20ac": 0}
    assert signing.canonical_json(obj) == (
        '{"a":{"y":9223372036854775807,"z":-9223372036854775808},"b":[1,true,null,"é"],"€":0}'.encode()
    )
    # RFC 8785 section 3.2.3: keys sort by UTF-16 code units, not by code points.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    order = list(json.loads(signing.canonical_json(dict.fromkeys(keys, 0))))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert signing.canonical_json("\x01\n") == b'"\\u0001\\n"'


@pytest.mark.parametrize(
    "bad",
    [
        1.0,
        {"amount": 0.1},
        [1, 2, float("nan")],
        {"x": {"y": [float("inf")]}},
        {1: "int key"},
        b"bytes",
        {1, 2},
    ],
)
def test_canonical_json_rejects_floats_and_unencodable_values(bad: object) -> None:
    with pytest.raises(signing.CanonicalJSONError):
        signing.canonical_json(bad)


def test_canonical_json_float_error_names_the_path() -> None:
    with pytest.raises(signing.CanonicalJSONError, match=r"\$\.terms\[1\]\.share"):
        signing.canonical_json({"terms": [{"share": 1}, {"share": 0.5}]})
    with pytest.raises(signing.CanonicalJSONError, match="64-bit"):
        signing.canonical_json(2**63)
    with pytest.raises(signing.CanonicalJSONError, match="surrogate"):
        signing.canonical_json("\ud800")


@FAST
@given(
    obj=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
        max_leaves=20,
    )
)
def test_sign_json_is_stable_under_key_order_and_fails_on_change(obj: object) -> None:
    key = signing.generate_key()
    kid = signing.public_key_id(key)
    sig = signing.sign_json(key, obj)
    assert signing.verify_json(kid, obj, sig)
    if isinstance(obj, dict):
        assert signing.verify_json(kid, dict(reversed(list(obj.items()))), sig)
    assert not signing.verify_json(kid, [obj], sig)
    assert not signing.verify_json(kid, {"x": 0.5}, sig)  # floats never verify, never raise
    # Domain separation: the same key signing the bare JSON does not yield a JSON signature.
    assert not signing.verify_json(kid, obj, signing.sign(key, signing.canonical_json(obj)))


# --- speed (research target 9: 1M-entry audit < 60 s, proofs fast) -------------------------------


@pytest.mark.slow
def test_million_entry_log_speed() -> None:
    entries = [os.urandom(100) for _ in range(1_000_000)]
    start = time.perf_counter()
    audited = merkle.verify_all(entries)
    audit_s = time.perf_counter() - start
    log = MerkleLog()
    start = time.perf_counter()
    log.extend(entries)
    build_s = time.perf_counter() - start
    assert log.root() == audited
    rng = random.Random(1)
    proof_times = []
    for _ in range(100):
        i = rng.randrange(len(log))
        start = time.perf_counter()
        proof = log.inclusion_proof(i)
        proof_times.append(time.perf_counter() - start)
        assert merkle.verify_inclusion(log.leaf_hash(i), i, len(log), proof, audited)
    print(
        f"\n1M x 100 B: audit {audit_s:.2f} s, build {build_s:.2f} s, "
        f"proof median {statistics.median(proof_times) * 1e3:.2f} ms"
    )
    assert audit_s < 60
    assert max(proof_times) < 0.05
