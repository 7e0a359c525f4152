"""Exact money: parsing, formatting, largest-remainder splits, basis points and token pricing."""

from __future__ import annotations

import decimal
import random
import statistics
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iollm import money
from iollm.money import (
    MAX_MICRO,
    MICRO,
    allocate,
    format_credits,
    parse_credits,
    price_for_tokens,
    split_bps,
)

FAST = settings(max_examples=150, deadline=None)


@pytest.fixture(autouse=True)
def _float_trap():
    """Research target 6: any float mixed into Decimal arithmetic during a money test is an error."""
    ctx = decimal.getcontext()
    previous = ctx.traps[decimal.FloatOperation]
    ctx.traps[decimal.FloatOperation] = True
    yield
    ctx.traps[decimal.FloatOperation] = previous


# --- parsing and formatting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("1.5", 1_500_000),
        ("0", 0),
        ("0.000001", 1),
        ("12.345678", 12_345_678),
        ("+3", 3_000_000),
        (" 7.25 ", 7_250_000),
        ("1.500000000", 1_500_000),  # trailing zeros lose nothing
        ("007.1", 7_100_000),
        (decimal.Decimal("2.5"), 2_500_000),
        (decimal.Decimal("1E+2"), 100_000_000),
        (format_credits(MAX_MICRO), MAX_MICRO),
    ],
)
def test_parse_credits(text: str, micro: int) -> None:
    assert parse_credits(text) == micro


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.5, TypeError),
        (1, TypeError),  # ambiguous: credits or micro-credits? say it as text
        (None, TypeError),
        ("1.0000001", ValueError),
        ("0.0000005", ValueError),
        ("-1", ValueError),
        ("NaN", ValueError),
        ("inf", ValueError),
        ("1e3", ValueError),
        ("1,000", ValueError),
        ("1_000", ValueError),
        ("\u0661", ValueError),  # Arabic-Indic digit one
        ("", ValueError),
        (".5", ValueError),
        ("1.", ValueError),
        ("--1", ValueError),
        ("0x10", ValueError),
        (decimal.Decimal("NaN"), ValueError),
        (decimal.Decimal("Infinity"), ValueError),
        (decimal.Decimal("1E-7"), ValueError),
        (format_credits(MAX_MICRO + 1), ValueError),
        ("9" * 5000, ValueError),
    ],
)
def test_parse_credits_rejects(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_credits(value)  # type: ignore[arg-type]


def test_negative_amounts_only_when_allowed() -> None:
    assert parse_credits("-0.000001", allow_negative=True) == -1
    assert parse_credits("-0") == 0
    with pytest.raises(ValueError, match="negative"):
        parse_credits("-2.5")
    with pytest.raises(ValueError, match="maximum"):
        parse_credits("-" + format_credits(MAX_MICRO + 1), allow_negative=True)


def test_format_credits() -> None:
    assert format_credits(1_500_000) == "1.500000"
    assert format_credits(0) == "0.000000"
    assert format_credits(-1) == "-0.000001"
    assert format_credits(123_456_789_012) == "123456.789012"
    for bad in (1.5, True, "1"):
        with pytest.raises(TypeError):
            format_credits(bad)  # type: ignore[arg-type]


@FAST
@given(st.integers(-MAX_MICRO, MAX_MICRO))
def test_format_and_parse_round_trip(micro: int) -> None:
    text = format_credits(micro)
    assert parse_credits(text, allow_negative=True) == micro
    assert decimal.Decimal(text) * MICRO == micro


# --- allocate -----------------------------------------------------------------------------------


def hamilton_reference(total: int, weights: list[int]) -> list[int]:
    """Textbook largest remainder with exact fractions, ties to the earlier position."""
    w_sum = sum(weights)
    shares = [Fraction(total * w, w_sum) for w in weights]
    parts = [int(s) for s in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(shares[i] - parts[i]), i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


weight_lists = st.lists(st.integers(0, 10**9), min_size=1, max_size=60).filter(any)
totals = st.integers(0, MAX_MICRO)


@FAST
@given(total=totals, weights=weight_lists)
def test_allocate_is_exact_and_within_one_of_the_true_share(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    w_sum = sum(weights)
    assert sum(parts) == total
    assert all(isinstance(p, int) and p >= 0 for p in parts)
    for part, w in zip(parts, weights, strict=True):
        assert abs(part * w_sum - total * w) < w_sum  # |part - exact share| < 1
        if w == 0:
            assert part == 0
    assert parts == hamilton_reference(total, weights)


@FAST
@given(total=totals, weights=weight_lists, seed=st.integers(0, 2**32))
def test_allocate_is_deterministic_and_ignores_dict_order(total: int, weights: list[int], seed: int) -> None:
    named = {f"party-{i:03d}": w for i, w in enumerate(weights)}
    shuffled_keys = list(named)
    random.Random(seed).shuffle(shuffled_keys)
    shuffled = {k: named[k] for k in shuffled_keys}
    result = allocate(total, named)
    assert result == allocate(total, shuffled) == allocate(total, dict(named))
    assert list(result.values()) == allocate(total, weights)  # keys sort in list order here
    assert allocate(total, weights) == allocate(total, list(weights))


def test_allocate_tie_breaking_is_documented_behaviour() -> None:
    assert allocate(1, [1, 1, 1]) == [1, 0, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(2, {"c": 1, "b": 1, "a": 1}) == {"a": 1, "b": 1, "c": 0}
    assert allocate(10, [1, 0, 2]) == [3, 0, 7]  # remainders 1/3 < 2/3: the larger one wins
    assert allocate(100, [3, 3, 3]) == [34, 33, 33]
    assert allocate(0, [5, 5]) == [0, 0]
    assert allocate(7, (1,)) == [7]


@pytest.mark.parametrize(
    ("total", "weights", "error"),
    [
        (10, [0, 0], ValueError),
        (10, [], ValueError),
        (10, {}, ValueError),
        (10, [1, -1, 3], ValueError),
        (-10, [1, 1], ValueError),
        (MAX_MICRO + 1, [1], ValueError),
        (10, [1.5, 1], TypeError),
        (10, [True, 1], TypeError),
        (10.0, [1, 1], TypeError),
        (10, {"a": 1, 2: 1}, TypeError),  # keys that cannot be ordered
    ],
)
def test_allocate_rejects(total: object, weights: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        allocate(total, weights)  # type: ignore[arg-type]


# --- basis points -------------------------------------------------------------------------------


@FAST
@given(
    total=totals,
    bps=st.lists(st.integers(0, 10_000), min_size=1, max_size=20).filter(lambda b: sum(b) <= 10_000),
)
def test_split_bps_is_exact(total: int, bps: list[int]) -> None:
    shares = {f"p{i:02d}": b for i, b in enumerate(bps)}
    parts, rest = split_bps(total, shares)
    assert sum(parts.values()) + rest == total
    for key, b in shares.items():
        assert abs(parts[key] * 10_000 - total * b) < 10_000
    assert abs(rest * 10_000 - total * (10_000 - sum(bps))) < 10_000
    if sum(bps) == 10_000:
        assert rest == 0


def test_split_bps_examples_and_errors() -> None:
    split = split_bps(1_000_001, {"designer": 3_000, "provider": 7_000})
    assert split.parts == {"designer": 300_000, "provider": 700_001} and split.rest == 0
    assert split_bps(100, {"a": 2_500}) == ({"a": 25}, 75)
    assert split_bps(1, {"a": 5_000, "b": 5_000}) == money.BpsSplit({"a": 1, "b": 0}, 0)
    assert split_bps(1, {"a": 3_000}).rest == 1  # the rest's remainder 0.7 beats 0.3
    with pytest.raises(ValueError, match="10,000"):
        split_bps(100, {"a": 6_000, "b": 4_001})
    with pytest.raises(ValueError):
        split_bps(100, {"a": -1})
    with pytest.raises(TypeError):
        split_bps(100, {"a": 50.0})  # type: ignore[dict-item]
    assert split_bps(100, {}) == ({}, 100)


# --- pricing ------------------------------------------------------------------------------------


def test_price_for_tokens_rounds_half_up_once() -> None:
    assert price_for_tokens(1_000_000, 0, 2_000_000, 0) == 2_000_000
    assert price_for_tokens(1, 0, 500_000, 0) == 1  # exactly half a micro-credit rounds up
    assert price_for_tokens(1, 0, 499_999, 0) == 0
    assert price_for_tokens(1, 1, 250_000, 250_000) == 1  # 0.25 + 0.25, rounded once
    assert price_for_tokens(0, 0, 10**9, 10**9) == 0
    assert price_for_tokens(1234, 567, 150_000, 600_000) == 525  # 185.1 + 340.2 = 525.3
    for bad in ((-1, 0, 1, 1), (0, 0, -5, 1)):
        with pytest.raises(ValueError):
            price_for_tokens(*bad)
    with pytest.raises(TypeError):
        price_for_tokens(10, 10, 1.5, 1)  # type: ignore[arg-type]


@FAST
@given(
    p=st.integers(0, 10**7),
    c=st.integers(0, 10**7),
    pp=st.integers(0, 10**9),
    pc=st.integers(0, 10**9),
)
def test_price_for_tokens_matches_exact_rounding(p: int, c: int, pp: int, pc: int) -> None:
    exact = Fraction(p * pp + c * pc, 1_000_000)
    expected = int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0)
    assert price_for_tokens(p, c, pp, pc) == expected


# --- speed (research target 7: a 10,000-way split well under 1 s) -------------------------------


@pytest.mark.slow
def test_ten_thousand_way_split_speed() -> None:
    rng = random.Random(5)
    weights = {f"provider-{i:05d}": rng.randrange(1, 10**6) for i in range(10_000)}
    times = []
    for _ in range(10):
        start = time.perf_counter()
        parts = allocate(10**15 + 7, weights)
        times.append(time.perf_counter() - start)
        assert sum(parts.values()) == 10**15 + 7
    print(f"\n10,000-way allocate: median {statistics.median(times) * 1e3:.1f} ms")
    assert statistics.median(times) < 0.5
