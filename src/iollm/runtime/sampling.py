"""The one rule for the sampling parameters a request may ask for.

The OpenAI routes, the Ollama routes' ``options`` and ``params_for`` (which also serves paths and the
editor) all check request values here, before a model is looked up or loaded. A value out of range is
refused with 400 naming the parameter (``param`` in OpenAI's error shape); nothing is clamped.

Ranges follow OpenAI's API reference where OpenAI has the parameter (temperature 0 to 2, top_p 0 to 1,
presence and frequency penalties -2 to 2, token limits from 0; ``n`` from 1 to 8, below OpenAI's
128, since each choice is a whole generation on this node); Ollama's extra knobs get the ranges
their samplers make sense in (top_k 0 or more, where 0 turns it off; min_p 0 to 1; repeat_penalty
above 0; num_predict any integer, negative meaning no limit). JSON has no NaN or Infinity, but Python's
json module reads those literals, so every number must also be finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError

_INT64 = 2**63
MAX_CHOICES = 8  # the most choices (OpenAI ``n``) one request may ask for


@dataclass(frozen=True)
class Rule:
    integer: bool  # an integer (an integral JSON number such as 40.0 counts), else any finite number
    low: float
    high: float
    text: str  # what the value must be, for the error message
    low_open: bool = False  # ``low`` itself is out of range


RULES: dict[str, Rule] = {
    "temperature": Rule(False, 0, 2, "a number from 0 to 2"),
    "top_p": Rule(False, 0, 1, "a number from 0 to 1"),
    "min_p": Rule(False, 0, 1, "a number from 0 to 1"),
    "presence_penalty": Rule(False, -2, 2, "a number from -2 to 2"),
    "frequency_penalty": Rule(False, -2, 2, "a number from -2 to 2"),
    "repeat_penalty": Rule(False, 0, math.inf, "a number above 0 (1 is no penalty)", low_open=True),
    "top_k": Rule(True, 0, _INT64 - 1, "an integer of 0 or more (0 turns it off)"),
    "max_tokens": Rule(True, 0, _INT64 - 1, "an integer of 0 or more"),
    "max_completion_tokens": Rule(True, 0, _INT64 - 1, "an integer of 0 or more"),
    "num_predict": Rule(True, -_INT64, _INT64 - 1, "an integer (negative: no limit)"),
    "seed": Rule(True, -_INT64, 2**64 - 1, "a 64-bit integer"),
    # OpenAI's ``n``: how many choices one request returns, each generated (and billed) as its own call
    "n": Rule(True, 1, MAX_CHOICES, f"an integer from 1 to {MAX_CHOICES}"),
}


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)  # NaN, Infinity, true, "text": as the client wrote them
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse(name: str, what: str, value: Any) -> ProtocolError:
    return ProtocolError(f"invalid {name!r}: it must be {what}, not {_shown(value)}", param=name)


def check_value(name: str, value: Any) -> Any:
    """``value`` if it is valid for ``name`` (ints as int, other numbers as float), else ProtocolError.
    Names without a rule pass unchanged."""
    if name == "stop":
        if isinstance(value, str) or (
            isinstance(value, list | tuple) and all(isinstance(s, str) for s in value)
        ):
            return value
        raise _refuse(name, "a string or a list of strings", value)
    rule = RULES.get(name)
    if rule is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(name, rule.text, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(name, rule.text, value)
    if rule.integer:
        if isinstance(value, float) and not value.is_integer():
            raise _refuse(name, rule.text, value)
        value = int(value)
    else:
        value = float(value)
    below = value <= rule.low if rule.low_open else value < rule.low
    if below or value > rule.high:
        raise _refuse(name, rule.text, value)
    return value


def check_sampling(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every known sampling parameter in ``values`` (None means unset and passes); returns a copy
    with the checked values normalised. The first bad one is refused (400, ``param`` set to its name)."""
    return {name: value if value is None else check_value(name, value) for name, value in values.items()}
