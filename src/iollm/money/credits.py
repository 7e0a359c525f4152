"""Exact money: integer micro-credits, string parsing, and splits that always add up.

Why integers: a float cannot hold 0.1 exactly, SQLite's NUMERIC affinity silently turns decimal
text into REAL, and a ledger that is off by one micro-credit is not zero-sum. So every amount is an
``int`` number of micro-credits (1 credit = 1,000,000 micro-credits), text is parsed digit by digit
(never through ``float``), and every split hands out exactly the total it was given.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from decimal import Decimal
from typing import Generic, NamedTuple, TypeVar, overload

from ..errors import ProtocolError

__all__ = [
    "BPS_SCALE",
    "MAX_MICRO",
    "MICRO",
    "BpsSplit",
    "allocate",
    "credits_from_json",
    "format_credits",
    "parse_credits",
    "price_for_tokens",
    "split_bps",
]

MICRO = 1_000_000  # micro-credits per credit
DECIMALS = 6
MAX_MICRO = 2**62  # largest amount any single value may hold, well inside SQLite's 64-bit INTEGER
BPS_SCALE = 10_000  # basis points in a whole
TOKENS_PER_MILLION = 1_000_000

K = TypeVar("K", bound=Hashable)

_CREDITS_RE = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?", re.ASCII)


def _require_int(value: object, what: str) -> int:
    """Only genuine ints: ``bool`` is an int to Python but never an amount, and floats are banned."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int (micro-credits / integer units), not {type(value).__name__}")
    return value


def _check_range(micro: int, what: str, *, allow_negative: bool) -> int:
    if micro < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative")
    if abs(micro) > MAX_MICRO:
        raise ValueError(f"{what} exceeds the maximum of {MAX_MICRO} micro-credits")
    return micro


# --- text <-> micro-credits --------------------------------------------------------------------


def parse_credits(value: str | Decimal, *, allow_negative: bool = False) -> int:
    """Credits as text (``"1.5"``, ``"-0.000001"``) or ``Decimal`` -> integer micro-credits.

    Rejects floats (use a string), NaN/Infinity, exponents, thousands separators, non-ASCII digits,
    negatives unless ``allow_negative``, anything finer than 1 micro-credit (trailing zeros past the
    sixth decimal are fine: they lose nothing) and magnitudes above :data:`MAX_MICRO`.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite amount")
        value = format(value, "f")
    elif not isinstance(value, str):
        raise TypeError(f"credits must be given as a decimal string, not {type(value).__name__}")
    match = _CREDITS_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a decimal amount of credits like '12.345678'")
    sign, whole, frac = match.group(1), match.group(2).lstrip("0"), match.group(3) or ""
    if len(whole) > len(str(MAX_MICRO // MICRO)):
        raise ValueError(f"{value!r} exceeds the maximum of {format_credits(MAX_MICRO)} credits")
    if frac[DECIMALS:].strip("0"):
        raise ValueError(f"{value!r} has more than {DECIMALS} decimal places (1 micro-credit is the unit)")
    micro = int(whole or "0") * MICRO + int(frac[:DECIMALS].ljust(DECIMALS, "0"))
    return _check_range(-micro if sign == "-" else micro, "amount", allow_negative=allow_negative)


def credits_from_json(value: object, field: str = "amount", *, allow_zero: bool = False) -> int:
    """An amount of credits as an API receives it -> integer micro-credits; anything else is a 400.

    The one format every route takes: a decimal string of credits (``"2"``, ``"2.5"``, at most six
    decimals). A JSON number is refused, never guessed at: ``2`` could mean credits or micro-credits,
    and ``2.5`` has already been through a float. Zero is refused unless ``allow_zero`` (prices).
    """
    if not isinstance(value, str):
        raise ProtocolError(
            f'{field}: give credits as a decimal string like "2.5", not {_json_kind(value)} '
            "(a bare number could mean credits or micro-credits)",
            param=field,
        )
    try:
        micro = parse_credits(value)
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("amount must", f"{field} must")
        raise ProtocolError(
            message if message.startswith(field) else f"{field}: {message}", param=field
        ) from None
    if micro == 0 and not allow_zero:
        raise ProtocolError(f"{field} must be more than 0 credits", param=field)
    return micro


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"[:60]
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "that"


def format_credits(micro: int) -> str:
    """Integer micro-credits -> ``"1.500000"``: always six decimals, so the text is canonical."""
    micro = _require_int(micro, "amount")
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


# --- apportionment -----------------------------------------------------------------------------


def _check_weights(weights: Sequence[int]) -> int:
    total_weight = 0
    for w in weights:
        if _require_int(w, "weight") < 0:
            raise ValueError("weights must not be negative")
        total_weight += w
    if total_weight == 0:
        raise ValueError("cannot allocate by weights that are all zero (or empty)")
    return total_weight


def _hamilton(total: int, weights: Sequence[int]) -> list[int]:
    """Largest remainder over ``weights`` in tie-break order: the core of every split here.

    Each part starts at ``floor(total * w / W)``; the few units left over (fewer than the number of
    non-zero weights) go one each to the largest remainders ``total * w mod W``, ties going to the
    earlier position. Parts therefore sum to ``total`` and each is within 1 of its exact share.
    """
    total_weight = _check_weights(weights)
    parts: list[int] = []
    remainders: list[int] = []
    for w in weights:
        q, r = divmod(total * w, total_weight)
        parts.append(q)
        remainders.append(r)
    leftover = total - sum(parts)
    if leftover:
        # A stable sort (reverse=True keeps stability): among equal remainders the earlier wins.
        order = sorted(range(len(parts)), key=remainders.__getitem__, reverse=True)
        for i in order[:leftover]:
            parts[i] += 1
    return parts


def _sorted_keys(mapping: Mapping[K, int]) -> list[K]:
    """Keys in the order that breaks ties; sorting makes splits independent of insertion order."""
    try:
        return sorted(mapping)  # type: ignore[type-var]
    except TypeError as exc:
        raise TypeError(
            "keys must be mutually comparable (e.g. all str) to break ties deterministically"
        ) from exc


@overload
def allocate(total: int, weights: Mapping[K, int]) -> dict[K, int]: ...
@overload
def allocate(total: int, weights: Sequence[int]) -> list[int]: ...
def allocate(total: int, weights: Mapping[K, int] | Sequence[int]) -> dict[K, int] | list[int]:
    """Split ``total`` micro-credits by integer ``weights``, exactly (largest-remainder / Hamilton).

    Guarantees: parts are non-negative ints summing to ``total``; each is ``floor`` or ``ceil`` of
    its exact share ``total * w / sum(w)``; a zero weight gets 0. Leftover units go to the largest
    remainders; ties go to the earlier list position, or for a dict to the smaller key (keys are
    sorted, so the result does not depend on insertion order, e.g. of a database query). The
    result has the shape of ``weights``. All-zero, empty or negative weights raise ``ValueError``.
    """
    total = _check_range(_require_int(total, "total"), "total", allow_negative=False)
    if isinstance(weights, Mapping):
        keys = _sorted_keys(weights)
        return dict(zip(keys, _hamilton(total, [weights[k] for k in keys]), strict=True))
    return _hamilton(total, list(weights))


class BpsSplit(NamedTuple, Generic[K]):
    """Per-party amounts of a basis-point split and the unassigned ``rest``."""

    parts: dict[K, int]
    rest: int


def split_bps(total: int, shares: Mapping[K, int]) -> BpsSplit[K]:
    """Split ``total`` by basis-point ``shares`` (summing to at most 10,000); the rest is returned.

    The ``rest`` (what the shares leave unassigned, e.g. for the platform or the next tier) takes
    part in the largest-remainder rounding as one more party ranked after every key, so parties
    and rest are each within 1 of their exact share, they sum to ``total`` exactly, and shares
    summing to 10,000 leave ``rest == 0``.
    """
    total = _check_range(_require_int(total, "total"), "total", allow_negative=False)
    keys = _sorted_keys(shares)
    bps = [_require_int(shares[k], "share") for k in keys]
    if any(not 0 <= b <= BPS_SCALE for b in bps):
        raise ValueError("each share must be between 0 and 10,000 basis points")
    unassigned = BPS_SCALE - sum(bps)
    if unassigned < 0:
        raise ValueError(f"shares sum to {sum(bps)} basis points, more than 10,000")
    *parts, rest = _hamilton(total, [*bps, unassigned])
    return BpsSplit(dict(zip(keys, parts, strict=True)), rest)


# --- pricing -----------------------------------------------------------------------------------


def price_for_tokens(
    prompt_tokens: int,
    completion_tokens: int,
    price_prompt_per_million: int,
    price_completion_per_million: int,
) -> int:
    """Micro-credits owed for a request, prices being micro-credits per million tokens.

    Rounding rule: the exact cost of the whole request
    ``(prompt * p_price + completion * c_price) / 1e6`` is rounded once, half up, to the
    micro-credit, using integers only. Rounding once (not per component) means splitting tokens
    across the two prices never changes the bill by more than the single final rounding.
    """
    counts = (prompt_tokens, completion_tokens, price_prompt_per_million, price_completion_per_million)
    names = ("prompt_tokens", "completion_tokens", "price_prompt_per_million", "price_completion_per_million")
    for value, name in zip(counts, names, strict=True):
        if _require_int(value, name) < 0:
            raise ValueError(f"{name} must not be negative")
    numerator = prompt_tokens * price_prompt_per_million + completion_tokens * price_completion_per_million
    cost = (numerator + TOKENS_PER_MILLION // 2) // TOKENS_PER_MILLION
    return _check_range(cost, "price", allow_negative=False)
