"""The providers' benchmark check: an honest float32 product always passes Freivalds' test, shortcuts fail.

Why: the check used a fixed rtol/atol, and on an AVX-512 CPU about one honest product in twelve failed it,
so a provider restarting after a node restart was refused ("Freivalds check failed") and CI failed.
"""

from __future__ import annotations

import base64

import numpy as np

from iollm.compute import benchmark


def encode(product: np.ndarray) -> str:
    return base64.b64encode(product.astype("<f4").tobytes()).decode()


def test_honest_products_always_verify() -> None:
    refused = [
        seed for seed in range(24) if not benchmark.verify(challenge(seed), benchmark.solve(seed, 1024))
    ]
    assert not refused, f"honest products refused for seeds {refused}"


def test_a_product_of_bfloat16_rounded_inputs_is_refused() -> None:
    a, b = benchmark.matrices(7, 1024)
    rounded = [(m.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for m in (a, b)]
    assert not benchmark.verify(challenge(7), encode(rounded[0] @ rounded[1]))


def test_entries_off_by_two_are_refused() -> None:
    a, b = benchmark.matrices(3, 1024)
    product = a @ b
    product[5, 100:116] += 2.0  # 16 entries of one row: some round picks one of their columns
    assert not benchmark.verify(challenge(3), encode(product))


def test_garbage_is_refused() -> None:
    assert not benchmark.verify(challenge(1), benchmark.solve(2, 1024))
    assert not benchmark.verify(challenge(1), "not base64!")
    assert not benchmark.verify(challenge(1), encode(np.full((1024, 1024), np.nan, dtype=np.float32)))


def challenge(seed: int) -> benchmark.Challenge:
    return benchmark.Challenge(nonce="n", seed=seed, size=1024, issued=0.0)
