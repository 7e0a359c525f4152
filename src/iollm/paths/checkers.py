"""Score a model's output against a task: ``exact``, ``numeric``, ``choice`` and ``python_tests``.

Models wrap answers in prose, so every checker first extracts *candidate answers* from the output, in
this order of priority, and then compares candidates with the target:

1. the answer region: the text after the **last** answer marker (``answer:``, ``answer is``,
   ``final answer =``, ``####``, case-insensitive) up to the end of that line (the next line when the
   marker ends its line);
2. the content of the last ``\\boxed{...}``;
3. the first non-empty line (``choice`` only: models tend to lead with the option they pick);
4. the last non-empty line;
5. the whole output.

Normalisation (``exact`` and ``choice`` text): Unicode NFKC, strip surrounding whitespace, quotes,
backticks and ``*``/``_`` emphasis, lower-case, collapse runs of whitespace, drop trailing ``.,;:!?``.
Each candidate is also tried without a short leading label of at most three words (``Sorted: a b`` ->
``a b``).

``exact``
    Passes if any normalised candidate equals any normalised target.
``numeric``
    The number in the answer region (its first number), else in ``\\boxed{}``, else the last number in the
    whole output. Numbers may carry a sign, thousands separators (``1,234``), decimals and exponents;
    the words zero to ninety-nine (``seven``, ``twenty-one``) count as numbers where the text in question
    has no number in digits ("one" is often a pronoun). Passes if it is within
    1e-6 (absolute or relative) of any target.
``choice``
    Each candidate is matched, in order, as a letter (``(B)``, ``B)``, ``B.``, ``B:``, a lone ``B``,
    ``option B``; only letters that name an option), as the exact text of an option, or as containing
    the text of exactly one option (an option whose text lies inside another matched option's text
    does not count). The first candidate that names an option decides; passes if that option is a
    target.
``math``
    Competition-math answers (MATH): the last ``\\boxed{}`` (nested braces allowed) or Minerva's "final
    answer is", compared after LaTeX normalisation (see ``math_answers``).
``python_tests``
    Code is the fenced python blocks (the first block that defines the entry point, else all blocks
    joined; a first line that only names the language is dropped), else the raw output. Two programs are tried in the sandbox, ``prompt + code`` (HumanEval
    completion style: the code continues the prompt's function or redefines it with the prompt's
    imports in scope) and ``code`` alone; either passing scores 1. Code never runs in this process.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .math_answers import extract_math_answer, math_equal
from .sandbox import Sandbox, SandboxResult

if TYPE_CHECKING:
    from .task import Task

__all__ = [
    "CHECKERS",
    "CheckResult",
    "answer_candidates",
    "check",
    "check_all",
    "extract_code",
    "extract_number",
    "normalize",
    "parse_number",
]

CHECKERS: tuple[str, ...] = ("exact", "numeric", "choice", "math", "python_tests")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check. ``extracted`` is the answer the checker read out of the output."""

    passed: bool
    score: float
    extracted: str
    detail: str


# ---------------------------------------------------------------------------------------------------
# Candidate extraction


_MARKER = re.compile(
    r"(?:\b(?:final\s+)?answer(?:\s+(?:is|was))?\s*[:=]|\b(?:final\s+)?answer\s+(?:is|was)\b|####)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_LABEL = re.compile(r"^\s*[A-Za-z][\w' -]{0,30}?:\s*(?=\S)")
_EDGE_CHARS = " \t\r\n\"'`*_\u201c\u201d\u2018\u2019"


def _answer_region(output: str) -> str | None:
    """Text after the last answer marker, up to the end of its line (or the next line if it is empty)."""
    matches = list(_MARKER.finditer(output))
    if not matches:
        return None
    rest = output[matches[-1].end() :].lstrip()
    return rest.split("\n", 1)[0].strip() or None


def _boxed(output: str) -> str | None:
    found = _BOXED.findall(output)
    return found[-1].strip() if found else None


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip()]


def answer_candidates(output: str, first_line: bool = False) -> list[str]:
    """Candidate answers in priority order (see the module docstring), without duplicates."""
    lines = _lines(output)
    ordered = [_answer_region(output), _boxed(output)]
    if first_line and lines:
        ordered.append(lines[0])
    ordered += [lines[-1] if lines else None, output.strip()]
    return list(dict.fromkeys(c for c in ordered if c))


def _without_label(text: str) -> str:
    """``Sorted: a b`` -> ``a b``; labels are at most three words."""
    match = _LABEL.match(text)
    if match and len(match.group(0).split()) <= 3:
        return text[match.end() :]
    return text


def normalize(text: str) -> str:
    """Case-, whitespace- and wrapping-insensitive form used by ``exact`` and ``choice``."""
    text = unicodedata.normalize("NFKC", text).strip(_EDGE_CHARS)
    text = " ".join(text.lower().split())
    return text.rstrip(".,;:!? ").strip(_EDGE_CHARS)


# ---------------------------------------------------------------------------------------------------
# Numbers


_UNITS = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = {w: 10 * i for i, w in enumerate(("twenty", "thirty", "forty", "fifty", "sixty", "seventy"), 2)}
_TENS |= {"eighty": 80, "ninety": 90}
_WORD_VALUES = {word: value for value, word in enumerate(_UNITS)} | _TENS
_DIGITS = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+"
_ONES = "one|two|three|four|five|six|seven|eight|nine"
_UNIT_WORDS = "|".join(sorted(_UNITS, key=len, reverse=True))
_WORDS = rf"(?:{'|'.join(_TENS)})(?:[\s-](?:{_ONES})\b)?|{_UNIT_WORDS}"
_DIGIT_NUMBER = re.compile(rf"(?<![\w.])(?:{_DIGITS})")
_WORD_NUMBER = re.compile(rf"\b(?:{_WORDS})\b", re.IGNORECASE)


def _word_value(text: str) -> float | None:
    parts = re.split(r"[\s-]+", text.lower())
    values = [_WORD_VALUES.get(p) for p in parts]
    if any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def parse_number(text: str) -> float | None:
    """A number written as digits (``-1,234.5``) or as words up to ninety-nine; None otherwise."""
    cleaned = normalize(text).replace("\u2212", "-").lstrip("$").rstrip("%")
    if re.fullmatch(_DIGITS, cleaned):
        return float(cleaned.replace(",", ""))
    return _word_value(cleaned) if re.fullmatch(_WORDS, cleaned, re.IGNORECASE) else None


def _numbers(text: str) -> list[str]:
    """Numbers written in digits; number words only when there are none ("one" is often a pronoun)."""
    text = text.replace("\u2212", "-")
    return _DIGIT_NUMBER.findall(text) or _WORD_NUMBER.findall(text)


def extract_number(output: str) -> str | None:
    """The answer region's first number, else ``\\boxed{}``'s, else the output's last number."""
    for region in (_answer_region(output), _boxed(output)):
        found = _numbers(region) if region else []
        if found:
            return found[0]
    found = _numbers(output)
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------------
# Checkers


def _targets(task: Task) -> tuple[str, ...]:
    return (task.target,) if isinstance(task.target, str) else tuple(task.target)


def _check_exact(task: Task, output: str) -> CheckResult:
    wanted = {normalize(t) for t in _targets(task)}
    candidates = answer_candidates(output)
    for candidate in candidates:
        for form in dict.fromkeys((candidate, _without_label(candidate))):
            if normalize(form) in wanted:
                return CheckResult(True, 1.0, form, "matches the target")
    extracted = candidates[0] if candidates else ""
    return CheckResult(False, 0.0, extracted, f"expected {_targets(task)[0]!r}, got {extracted!r}")


def _check_numeric(task: Task, output: str) -> CheckResult:
    found = extract_number(output)
    if found is None:
        return CheckResult(False, 0.0, "", "no number in the output")
    value = parse_number(found)
    targets = [t for t in (parse_number(t) for t in _targets(task)) if t is not None]
    if value is None or not targets:
        return CheckResult(False, 0.0, found, "target or output is not a number")
    if any(math.isclose(value, t, rel_tol=1e-6, abs_tol=1e-6) for t in targets):
        return CheckResult(True, 1.0, found, "numerically equal")
    return CheckResult(False, 0.0, found, f"expected {_targets(task)[0]}, got {found}")


_LETTER_FORMS = (
    re.compile(r"^\(([A-Za-z])\)"),
    re.compile(r"^([A-Z])[).:\]](?:\s|$)"),
    re.compile(r"^([A-Za-z])$"),
    re.compile(r"^(?:option|choice)\s*\(?([A-Z])\)?(?:\W|$)", re.IGNORECASE),
)


def _letter_choice(candidate: str, choices: tuple[str, ...]) -> str | None:
    text = candidate.strip(_EDGE_CHARS)
    for form in _LETTER_FORMS:
        match = form.match(text)
        if match:
            index = ord(match.group(1).upper()) - ord("A")
            if 0 <= index < len(choices):
                return choices[index]
    return None


def _text_choice(candidate: str, choices: tuple[str, ...]) -> str | None:
    """Exact option text, else the only option whose text the candidate contains."""
    norm = normalize(candidate)
    forms = {norm, normalize(_without_label(candidate))}
    by_text = {normalize(c): c for c in choices}
    for form in forms:
        if form in by_text:
            return by_text[form]
    inside = [t for t in by_text if t and t in norm]
    inside = [t for t in inside if not any(t != o and t in o for o in inside)]
    return by_text[inside[0]] if len(inside) == 1 else None


def _pick_choice(output: str, choices: tuple[str, ...]) -> str | None:
    for candidate in answer_candidates(output, first_line=True):
        picked = _letter_choice(candidate, choices) or _text_choice(candidate, choices)
        if picked is not None:
            return picked
    return None


def _check_choice(task: Task, output: str) -> CheckResult:
    choices = tuple(task.choices) or _targets(task)
    picked = _pick_choice(output, choices)
    if picked is None:
        return CheckResult(False, 0.0, "", "the output names no option")
    wanted = {normalize(t) for t in _targets(task)}
    if normalize(picked) in wanted:
        return CheckResult(True, 1.0, picked, "picked the right option")
    return CheckResult(False, 0.0, picked, f"picked {picked!r}, expected {_targets(task)[0]!r}")


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _without_language_line(body: str) -> str:
    """Small models sometimes put the fence's language on its own line (a fence, then ``python``)."""
    first, _, rest = body.partition("\n")
    return rest if first.strip().lower() in ("python", "py", "python3") else body


def extract_code(output: str, entry_point: str | None = None) -> str:
    """Python source from a model's output: fenced blocks (see the module docstring), else the raw text."""
    blocks = [
        _without_language_line(body)
        for lang, body in _FENCE.findall(output)
        if lang.lower() in ("", "python", "py", "python3")
    ]
    if not blocks:
        return output
    if entry_point:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        if defining:
            return defining[0]
    return "\n\n".join(blocks)


def _programs(task: Task, code: str) -> list[str]:
    prompt = str(task.meta.get("prompt") or "")
    programs = []
    if prompt:
        programs.append(prompt + code if prompt.endswith("\n") else prompt + "\n" + code)
    programs.append(code)
    return list(dict.fromkeys(programs))


def _failure_detail(result: SandboxResult) -> str:
    if result.killed_reason:
        return f"killed: {result.killed_reason}"
    lines = result.stderr.strip().splitlines()
    return lines[-1][:300] if lines else f"exit status {result.returncode}"


def _check_python_tests(task: Task, output: str, sandbox: Sandbox | None) -> CheckResult:
    entry_point = task.meta.get("entry_point")
    code = extract_code(output, entry_point if isinstance(entry_point, str) else None)
    if not code.strip():
        return CheckResult(False, 0.0, "", "no code in the output")
    sandbox = sandbox or Sandbox()
    tests = task.target if isinstance(task.target, str) else "\n".join(task.target)
    details = []
    for program in _programs(task, code):
        result = sandbox.run_tests(program, tests, None)
        if result.ok:
            return CheckResult(True, 1.0, code, f"tests passed in {result.seconds:.2f} s")
        details.append(_failure_detail(result))
    return CheckResult(False, 0.0, code, "tests failed: " + " | ".join(dict.fromkeys(details)))


def _check_math(task: Task, output: str) -> CheckResult:
    answer = extract_math_answer(output)
    if answer is None:
        return CheckResult(False, 0.0, "", "no boxed or final answer in the output")
    if any(math_equal(answer, t) for t in _targets(task)):
        return CheckResult(True, 1.0, answer, "equal after LaTeX normalisation")
    return CheckResult(False, 0.0, answer, f"expected {_targets(task)[0]!r}, got {answer!r}")


_SIMPLE: dict[str, Callable[[Task, str], CheckResult]] = {
    "exact": _check_exact,
    "numeric": _check_numeric,
    "choice": _check_choice,
    "math": _check_math,
}


def check(task: Task, output: str, sandbox: Sandbox | None = None) -> CheckResult:
    """Score ``output`` for ``task`` with the task's checker; ``sandbox`` runs ``python_tests`` code."""
    if task.checker == "python_tests":
        return _check_python_tests(task, output, sandbox)
    checker = _SIMPLE.get(task.checker)
    if checker is None:
        raise ValueError(f"unknown checker {task.checker!r}; known: {', '.join(CHECKERS)}")
    return checker(task, output or "")


def check_all(
    tasks: Iterable[Task], outputs: Iterable[str], sandbox: Sandbox | None = None
) -> list[CheckResult]:
    """Convenience for scoring aligned lists of tasks and outputs."""
    return [check(task, output, sandbox) for task, output in zip(tasks, outputs, strict=True)]
