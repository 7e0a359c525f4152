"""Final answers of competition math (MATH, MATH-500): read them out of a solution and compare them.

The comparison is the one lm-evaluation-harness and Minerva use, so our MATH figures compare with
published ones: take the last ``\\boxed{...}`` (braces balanced), else the text after "final answer is",
then normalise LaTeX (Hendrycks' ``strip_string``: units, ``\\left``/``\\right``, ``dfrac``, ``0.5`` vs
``.5``, ``\\frac12``, ``x=`` prefixes, spaces) and compare the strings; two answers that parse as numbers
are also compared as numbers.
"""

from __future__ import annotations

import math
import re

__all__ = ["extract_math_answer", "math_equal", "normalize_math"]

_FINAL = re.compile(r"final answer is\s*\$?(.+?)\$?(?:\.\s*I hope|\s*$)", re.IGNORECASE | re.MULTILINE)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` with nested braces, or ``\\boxed 5``."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    if rest.startswith("\\boxed ") and "{" not in rest.split(" ", 1)[1][:1]:
        return rest[len("\\boxed ") :].split("$")[0].strip()
    open_at = rest.find("{")
    if open_at < 0:
        return None
    depth = 0
    for index in range(open_at, len(rest)):
        if rest[index] == "{":
            depth += 1
        elif rest[index] == "}":
            depth -= 1
            if depth == 0:
                return rest[open_at + 1 : index]
    return None


def extract_math_answer(output: str) -> str | None:
    """The model's final answer: last boxed expression, else Minerva's "final answer is $X$"."""
    boxed = last_boxed(output)
    if boxed is not None:
        return boxed
    found = _FINAL.findall(output)
    return found[-1].strip() if found else None


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``."""
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + ("{" + b + "}" + rest if b != "{" else b + rest)
    return out


def _fix_a_slash_b(text: str) -> str:
    match = re.fullmatch(r"(-?\d+)/(-?\d+)", text)
    return f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}" if match else text


def _fix_sqrt(text: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)


def _remove_right_units(text: str) -> str:
    return text.split("\\text{ ")[0] if "\\text{ " in text else text


def normalize_math(text: str) -> str:
    """Hendrycks' ``strip_string``: the canonical string form two equal answers share."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "").replace("$", "")
    text = _remove_right_units(text)
    text = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", text)
    text = text.replace("\\%", "").replace("%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if text.startswith("."):
        text = "0" + text
    if "=" in text and len(text.split("=")[0]) <= 2:
        text = text.split("=", 1)[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    text = _fix_a_slash_b(text)
    return text.rstrip(".")


def _as_number(text: str) -> float | None:
    cleaned = text.replace(",", "")
    match = re.fullmatch(r"\\frac\{(-?\d+)\}\{(-?\d+)\}", cleaned)
    if match and int(match.group(2)) != 0:
        return int(match.group(1)) / int(match.group(2))
    try:
        return float(cleaned)
    except ValueError:
        return None


def math_equal(answer: str, target: str) -> bool:
    """Equal after normalisation, or equal as numbers."""
    a, b = normalize_math(answer), normalize_math(target)
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
