"""A verifiable benchmark: the node picks two random matrices, the provider multiplies them, and the
node checks the product with Freivalds' method in O(n^2) instead of redoing the O(n^3) work.

Speed is measured by the node (from handing out the challenge to receiving the answer), so a
provider can make itself look slower but never faster than it is. A provider whose measured speed
cannot cover the CPUs and GPUs it claims is refused.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

import numpy as np

MATRIX_SIZE = 1024  # ~2 GFLOP: long enough that compute, not the network, dominates the time
MIN_GFLOPS_PER_CPU = 0.25  # far below any real core (one modern core does tens of GFLOP/s)
MIN_GFLOPS_PER_GPU = 200.0  # below any GPU worth lending
CHALLENGE_SECONDS = 300
FREIVALDS_ROUNDS = 8
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


@dataclass
class Challenge:
    nonce: str
    seed: int
    size: int
    issued: float

    def as_dict(self) -> dict[str, object]:
        return {"nonce": self.nonce, "seed": self.seed, "size": self.size}


def new_challenge(size: int = MATRIX_SIZE) -> Challenge:
    return Challenge(secrets.token_hex(16), secrets.randbits(63), size, time.monotonic())


def matrices(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((size, size), dtype=np.float32),
        rng.standard_normal((size, size), dtype=np.float32),
    )


def solve(seed: int, size: int) -> str:
    """The provider's side: compute A @ B, returned as base64 little-endian float32."""
    a, b = matrices(seed, size)
    return base64.b64encode((a @ b).astype("<f4").tobytes()).decode()


def verify(challenge: Challenge, product_b64: str) -> bool:
    """Freivalds: for random r, A(Br) == Cr up to rounding; a wrong C fails with probability >= 1 - 2^-k.

    "Up to rounding" is float32's: an honest product's error grows with |A||B|, not with A·B (whose terms
    cancel), so the bound is u·sqrt(n)·|A|(|B|r). A fixed rtol/atol refused about one honest provider in
    twelve on an AVX-512 CPU; this bound sits hundreds of times above every honest error measured, and below
    the error of a product computed from bfloat16-rounded inputs or of an entry off by more than about one."""
    try:
        raw = base64.b64decode(product_b64, validate=True)
        c = np.frombuffer(raw, dtype="<f4").reshape(challenge.size, challenge.size).astype(np.float64)
    except (ValueError, TypeError):
        return False
    if not np.all(np.isfinite(c)):
        return False
    a, b = (m.astype(np.float64) for m in matrices(challenge.seed, challenge.size))
    abs_a, abs_b = np.abs(a), np.abs(b)
    rounding = FLOAT32_UNIT_ROUNDOFF * np.sqrt(challenge.size)
    rng = np.random.default_rng()
    for _ in range(FREIVALDS_ROUNDS):
        r = rng.integers(0, 2, size=challenge.size).astype(float)
        expected = a @ (b @ r)
        bound = rounding * (abs_a @ (abs_b @ r))
        if np.any(np.abs(expected - c @ r) > bound):
            return False
    return True


def gflops(size: int, seconds: float) -> float:
    return 2 * size**3 / max(seconds, 1e-9) / 1e9


def plausible(measured_gflops: float, cpus: int, gpus: int) -> str | None:
    """Why the claim cannot be true for the measured speed, or None when it can."""
    needed = cpus * MIN_GFLOPS_PER_CPU + gpus * MIN_GFLOPS_PER_GPU
    if measured_gflops < needed:
        return (
            f"the benchmark measured {measured_gflops:.1f} GFLOP/s, less than the {needed:.1f} GFLOP/s that "
            f"{cpus} CPU(s) and {gpus} GPU(s) would deliver at minimum: declare the resources you really have"
        )
    return None
