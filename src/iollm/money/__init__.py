"""Money as integers: micro-credits, exact largest-remainder splits, basis points, token prices.
No float ever touches an amount."""

from .credits import (
    BPS_SCALE,
    MAX_MICRO,
    MICRO,
    BpsSplit,
    allocate,
    credits_from_json,
    format_credits,
    parse_credits,
    price_for_tokens,
    split_bps,
)

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
