"""RFC 6962 / RFC 9162 Merkle tree log: roots, inclusion and consistency proofs, signed checkpoints.

Why a Merkle log rather than a plain hash chain: a chain can only be checked end to end, while a
Merkle log lets anyone check that one meter record or ledger entry is in the log (inclusion proof,
``O(log n)`` hashes) and that today's log extends yesterday's without rewriting history
(consistency proof), against a small signed checkpoint. The hashing is exactly RFC 6962 section 2.1
(SHA-256, ``0x00`` leaf and ``0x01`` node prefixes, split at the largest power of two below ``n``),
so any CT / Trillian / Tessera verifier agrees with these roots, and the checkpoint text and signed
note follow the C2SP ``tlog-checkpoint`` and ``signed-note`` formats.

Performance model (pure Python + hashlib): a hash costs ~0.5 us, so everything avoids rehashing.
:class:`MerkleLog` appends in amortised ``O(1)`` and computes its root in ``O(log n)`` from the right
frontier of complete subtrees; it keeps every leaf hash plus every complete subtree of 256 or more
leaves (about 32.3 bytes per entry) so proofs cost ``O(log n)`` lookups plus at most a few hundred
hashes. Over external storage, :class:`SubtreeHasher` memoises the same subtrees lazily.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from .checkpoint import Checkpoint, utc_timestamp

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "LogTamperedError",
    "MerkleLog",
    "SubtreeHasher",
    "SubtreeSource",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_all",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_CACHE_MIN_HEIGHT = 8  # complete subtrees of >= 2**8 = 256 leaves are stored / memoised
_sha256 = hashlib.sha256

LeafHashes = Sequence[bytes] | Callable[[int], bytes]


class LogTamperedError(ValueError):
    """Recomputed log contents do not match the root they are supposed to have."""


# --- hashing -----------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the prefix keeps a leaf from posing as an interior node."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below ``n`` (``n >= 2``), RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_complete(start: int, size: int) -> bool:
    """Whether ``[start, start + size)`` is a perfect, aligned subtree (its own hash in any tree)."""
    return size & (size - 1) == 0 and start % size == 0


def _perfect_root(hashes: list[bytes]) -> bytes:
    """Root of a power-of-two number of leaf hashes, one level at a time (no recursion)."""
    sha = _sha256
    while len(hashes) > 1:
        hashes = [sha(b"\x01" + a + b).digest() for a, b in zip(hashes[::2], hashes[1::2], strict=True)]
    return hashes[0]


class Frontier:
    """The compact range ``[0, n)``: one hash per complete subtree on the tree's right edge.

    Appending is amortised ``O(1)`` and the root is ``O(log n)``; this is all a writer or an
    auditor streaming the whole log needs to remember.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._nodes: list[bytes] = []  # left to right, strictly decreasing subtree sizes
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append_hash(self, h: bytes) -> list[tuple[int, bytes]]:
        """Add one leaf hash; returns the ``(height, hash)`` of every subtree it completed."""
        self._size += 1
        n, height, made = self._size, 0, []
        while not n & 1:
            h = node_hash(self._nodes.pop(), h)
            height += 1
            n >>= 1
            made.append((height, h))
        self._nodes.append(h)
        return made

    def root(self) -> bytes:
        """The RFC 6962 root of everything appended so far."""
        return _fold(self._nodes)


def _fold(nodes: list[bytes]) -> bytes:
    """Combine a right frontier into a root, right to left (the ragged edge hangs on the right)."""
    if not nodes:
        return EMPTY_ROOT
    acc = nodes[-1]
    for h in reversed(nodes[:-1]):
        acc = node_hash(h, acc)
    return acc


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """RFC 6962 ``MTH`` of already-hashed leaves (``EMPTY_ROOT`` for none), streaming."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append_hash(h)
    return frontier.root()


def _root_and_count(leaf_datas: Iterable[bytes]) -> tuple[bytes, int]:
    """Hash raw entries and fold them into a root with ``O(log n)`` memory.

    This is the audit hot loop (two SHA-256 calls per entry), so it is inlined instead of
    calling :class:`Frontier`: about 1.4 s per million 100-byte entries on one core.
    """
    sha = _sha256
    stack: list[bytes] = []
    n = 0
    for data in leaf_datas:
        h = sha(b"\x00" + data).digest()
        n += 1
        m = n
        while not m & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            m >>= 1
        stack.append(h)
    return _fold(stack), n


def verify_all(leaf_datas: Iterable[bytes]) -> bytes:
    """Recompute the root of a whole log from its raw entries (compare it to a checkpoint)."""
    return _root_and_count(leaf_datas)[0]


# --- subtree sources ---------------------------------------------------------------------------


@runtime_checkable
class SubtreeSource(Protocol):
    """Anything that can give the RFC 6962 hash of leaves ``[start, end)``."""

    def subtree_hash(self, start: int, end: int) -> bytes: ...


class SubtreeHasher:
    """Subtree hashes over stored leaf hashes (a sequence, or a callable ``index -> leaf hash``).

    Complete subtrees of at least ``cache_min_size`` leaves are memoised: in an append-only log a
    complete subtree never changes, so after one pass (e.g. computing the root) any proof needs
    only ``O(log n)`` cache hits plus a few hundred hashes. The source must be append-only.
    """

    def __init__(self, leaf_hashes: LeafHashes, *, cache_min_size: int = 1 << _CACHE_MIN_HEIGHT) -> None:
        if cache_min_size < 2 or cache_min_size & (cache_min_size - 1):
            raise ValueError("cache_min_size must be a power of two >= 2")
        self._source = leaf_hashes
        self._cache_min = cache_min_size
        self._cache: dict[tuple[int, int], bytes] = {}

    def subtree_hash(self, start: int, end: int) -> bytes:
        """RFC 6962 ``MTH`` of leaves ``[start, end)``."""
        if not 0 <= start < end:
            raise ValueError(f"empty or negative leaf range [{start}, {end})")
        if isinstance(self._source, Sequence) and end > len(self._source):
            raise IndexError(f"leaf range [{start}, {end}) beyond {len(self._source)} stored leaves")
        return self._hash(start, end)

    def _hash(self, start: int, end: int) -> bytes:
        size = end - start
        if _is_complete(start, size):
            if size < self._cache_min:
                return _perfect_root(self._leaves(start, end))
            key = (start, size)
            h = self._cache.get(key)
            if h is None:
                mid = start + size // 2
                h = self._cache[key] = node_hash(self._hash(start, mid), self._hash(mid, end))
            return h
        k = start + _split(size)
        return node_hash(self._hash(start, k), self._hash(k, end))

    def _leaves(self, start: int, end: int) -> list[bytes]:
        src = self._source
        hashes = list(src[start:end]) if isinstance(src, Sequence) else [src(i) for i in range(start, end)]
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"leaf hashes in [{start}, {end}) must be {HASH_SIZE} bytes each")
        return hashes


def _as_source(hashes_source: SubtreeSource | LeafHashes) -> SubtreeSource:
    if isinstance(hashes_source, SubtreeSource):
        return hashes_source
    return SubtreeHasher(hashes_source)


# --- proofs ------------------------------------------------------------------------------------


def inclusion_proof(
    leaf_index: int, tree_size: int, hashes_source: SubtreeSource | LeafHashes
) -> list[bytes]:
    """RFC 6962 ``PATH(m, D[n])``: sibling hashes from the leaf up to the root.

    ``hashes_source`` is a :class:`MerkleLog`, a :class:`SubtreeHasher`, or leaf hashes as a
    sequence / callable (then every call rehashes; wrap it in a ``SubtreeHasher`` to reuse work).
    """
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf index {leaf_index} outside a tree of size {tree_size}")
    src = _as_source(hashes_source)
    proof: list[bytes] = []
    start, end = 0, tree_size
    while end - start > 1:
        k = start + _split(end - start)
        if leaf_index < k:
            proof.append(src.subtree_hash(k, end))
            end = k
        else:
            proof.append(src.subtree_hash(start, k))
            start = k
    proof.reverse()  # the RFC lists the deepest sibling first
    return proof


def consistency_proof(old_size: int, new_size: int, hashes_source: SubtreeSource | LeafHashes) -> list[bytes]:
    """RFC 6962 ``PROOF(m, D[n])`` that the first ``old_size`` leaves are a prefix of ``new_size``.

    Empty when ``old_size`` is 0 or equal to ``new_size`` (nothing to prove).
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size <= new_size, got {old_size} and {new_size}")
    if old_size in (0, new_size):
        return []
    src = _as_source(hashes_source)
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True  # SUBPROOF(m, D[start:end], whole)
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(src.subtree_hash(start + k, end))
            end = start + k
        else:
            proof.append(src.subtree_hash(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(src.subtree_hash(start, end))
    proof.reverse()
    return proof


def _hashes_ok(*hashes: object) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` place ``leaf_hash`` at ``index`` under ``root``?

    Never raises; any malformed input is simply not a valid proof.
    """
    try:
        if not (_hashes_ok(leaf_hash, root, *proof) and 0 <= index < tree_size):
            return False
        fn, sn, r = index, tree_size - 1, leaf_hash
        for p in proof:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(p, r)
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
            else:
                r = node_hash(r, p)
            fn, sn = fn >> 1, sn >> 1
        return sn == 0 and r == root
    except (TypeError, ValueError):
        return False


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree ``(new_size, new_root)`` an extension of the old one?

    Edge cases are strict: equal sizes need equal roots and an empty proof; an old size of 0 needs
    the empty-tree root and an empty proof. Never raises.
    """
    try:
        if not (_hashes_ok(old_root, new_root, *proof) and 0 <= old_size <= new_size):
            return False
        if old_size == 0:
            return not proof and old_root == EMPTY_ROOT
        if old_size == new_size:
            return not proof and old_root == new_root
        return _verify_consistency_path(old_size, new_size, old_root, new_root, list(proof))
    except (TypeError, ValueError):
        return False


def _verify_consistency_path(m: int, n: int, old_root: bytes, new_root: bytes, path: list[bytes]) -> bool:
    """The RFC 9162 loop for ``0 < m < n``."""
    if not path:
        return False
    if m & (m - 1) == 0:  # the old tree is a complete subtree, so its root is implied
        path.insert(0, old_root)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


# --- the log -----------------------------------------------------------------------------------


class MerkleLog:
    """An in-memory append-only Merkle log of leaf hashes (entries themselves live elsewhere).

    Stores each leaf hash (32 bytes) and each complete subtree of >= 256 leaves (~0.25 bytes per
    entry), plus the right frontier, so ``append`` is amortised ``O(1)``, ``root`` is ``O(log n)``
    and proofs for any past tree size need ``O(log n)`` lookups and at most ~500 hashes.
    Not thread-safe: serialise appends (the ledger's single writer does) or guard with a lock.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._leaves = bytearray()
        self._levels: list[bytearray] = []  # _levels[i]: complete subtrees of height i + 8, in order
        self._frontier = Frontier()
        for h in leaf_hashes:
            self.append_leaf_hash(h)

    def __len__(self) -> int:
        return self._frontier.size

    @property
    def size(self) -> int:
        return self._frontier.size

    def append(self, data: bytes) -> int:
        """Append a raw entry; returns its leaf index."""
        return self.append_leaf_hash(leaf_hash(data))

    def extend(self, datas: Iterable[bytes]) -> None:
        for data in datas:
            self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, h: bytes) -> int:
        """Append an already-hashed leaf; returns its leaf index."""
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        index = self._frontier.size
        self._leaves += h
        for height, node in self._frontier.append_hash(h):
            if height >= _CACHE_MIN_HEIGHT:
                level = height - _CACHE_MIN_HEIGHT
                if level == len(self._levels):
                    self._levels.append(bytearray())
                self._levels[level] += node
        return index

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} not in a log of size {self.size}")
        return bytes(self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def root(self) -> bytes:
        """The current root, from the frontier in ``O(log n)``."""
        return self._frontier.root()

    def root_at(self, tree_size: int) -> bytes:
        """The root the log had when it held ``tree_size`` entries."""
        self._check_size(tree_size)
        return EMPTY_ROOT if tree_size == 0 else self.subtree_hash(0, tree_size)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """RFC 6962 ``MTH`` of leaves ``[start, end)``, from stored nodes where possible."""
        if not 0 <= start < end <= self.size:
            raise ValueError(f"leaf range [{start}, {end}) not inside a log of size {self.size}")
        return self._hash(start, end)

    def _hash(self, start: int, end: int) -> bytes:
        size = end - start
        if not _is_complete(start, size):
            k = start + _split(size)
            return node_hash(self._hash(start, k), self._hash(k, end))
        height = size.bit_length() - 1
        if height >= _CACHE_MIN_HEIGHT:
            offset = (start >> height) * HASH_SIZE
            return bytes(self._levels[height - _CACHE_MIN_HEIGHT][offset : offset + HASH_SIZE])
        raw = self._leaves[start * HASH_SIZE : end * HASH_SIZE]
        return _perfect_root([bytes(raw[i : i + HASH_SIZE]) for i in range(0, len(raw), HASH_SIZE)])

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """Proof that leaf ``index`` is in the tree of ``tree_size`` (default: now)."""
        size = self.size if tree_size is None else tree_size
        self._check_size(size)
        return inclusion_proof(index, size, self)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old_size`` is a prefix of the tree of ``new_size`` (default: now)."""
        size = self.size if new_size is None else new_size
        self._check_size(size)
        return consistency_proof(old_size, size, self)

    def checkpoint(
        self, origin: str, timestamp: str | None = None, tree_size: int | None = None
    ) -> Checkpoint:
        """An (unsigned) checkpoint of the log now or at an earlier size."""
        size = self.size if tree_size is None else tree_size
        return Checkpoint(origin, size, self.root_at(size), timestamp or utc_timestamp())

    def verify_all(self, leaf_datas: Iterable[bytes]) -> bytes:
        """Rehash every raw entry and require exactly this log's size and root (a full audit).

        Raises :class:`LogTamperedError` on any modified, missing, extra or reordered entry.
        """
        recomputed, count = _root_and_count(leaf_datas)
        if count != self.size:
            raise LogTamperedError(f"log has {self.size} entries but {count} were supplied")
        if recomputed != self.root():
            raise LogTamperedError("entries do not hash to the log's root: some entry was altered")
        return recomputed

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= tree_size <= self.size:
            raise ValueError(f"tree size {tree_size} outside 0..{self.size}")
