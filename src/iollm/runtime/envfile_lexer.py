"""Ollama's lexical rules for an Envfile: text -> instructions (keyword, line, raw value), and each value
written back in the shortest quoting that reads back exactly. What the instructions mean is envfile's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TRIPLE = '"""'


class EnvfileError(ValueError):
    """A malformed Envfile, located by file and line so the author can fix it at once."""

    def __init__(self, source: str, line: int, what: str, fix: str) -> None:
        self.source = source
        self.line = line
        self.what = what
        self.fix = fix
        super().__init__(f"{source}:{line}: {what}; {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors may cross process boundaries (worker pools); the default reduce would lose fields.
        return (type(self), (self.source, self.line, self.what, self.fix))


class InvalidValue(ValueError):
    """A bad value, before the parser knows its line; turned into an EnvfileError by the parser."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # lowercase
    line: int  # where the instruction starts, 1-based
    value: str | None  # None when nothing follows the keyword
    key: str | None = None  # PARAMETER's name or MESSAGE's role


def _split_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _split_word(text: str) -> tuple[str, str]:
    """First whitespace-separated word and the rest (Ollama allows spaces and tabs between)."""
    match = re.match(r"(\S+)\s*(.*)", text, re.DOTALL)
    return (match.group(1), match.group(2)) if match else ("", "")


def lex(text: str, source: str, known: tuple[str, ...]) -> list[Instruction]:
    """Instructions with their raw values; comment and blank lines are skipped."""
    lines = _split_lines(text)
    found: list[Instruction] = []
    index = 0
    while index < len(lines):
        line = lines[index].lstrip()
        if not line.strip() or line.startswith("#"):
            index += 1
            continue
        word, rest = _split_word(line)
        keyword = word.lower()
        if keyword not in known:
            raise EnvfileError(
                source,
                index + 1,
                f"unknown instruction {word!r}",
                f"use one of {', '.join(i.upper() for i in known)}",
            )
        key = None
        if keyword in ("parameter", "message"):
            key, rest = _split_word(rest)
            key = key or None
        value, last = _read_value(lines, index, rest, source)
        found.append(Instruction(keyword, index + 1, value, key))
        index = last + 1
    return found


def _read_value(lines: list[str], index: int, first: str, source: str) -> tuple[str | None, int]:
    """The value that starts with ``first`` on line ``index``, and the line it ends on.

    As in Ollama, a bare value is the rest of the line, trimmed; a value opening with ``\"\"\"`` or
    ``"`` goes on, newlines included, until a line whose end (trailing blanks ignored) closes it.
    A closing ``\"\"\"`` preceded by an odd number of backslashes is escaped (iollm's addition).
    """
    text = first.strip()
    if not text:
        return None, index
    if not text.startswith('"'):
        return text, index
    closer = _TRIPLE if text.startswith(_TRIPLE) else '"'
    last = index
    while not _closes(text if last == index else lines[last].rstrip(), closer, last == index):
        last += 1
        if last == len(lines):
            raise EnvfileError(
                source,
                index + 1,
                f"the {closer} quote opened on this line is never closed",
                f"end the value with {closer} at the end of a line",
            )
    full = "\n".join([first.lstrip(), *lines[index + 1 : last + 1]]).rstrip()
    inner = full[len(closer) : -len(closer)]
    return (_unescape_triple(inner) if closer == _TRIPLE else inner), last


def _closes(line: str, closer: str, first_line: bool) -> bool:
    """Whether this (right-trimmed) line ends the quoted value opened by ``closer``."""
    if first_line and len(line) < 2 * len(closer):
        return False  # the opening quote itself cannot also be the closing one
    if not line.endswith(closer):
        return False
    if closer != _TRIPLE:
        return True
    backslashes = len(line[:-3]) - len(line[:-3].rstrip("\\"))
    return backslashes % 2 == 0


def _unescape_triple(inner: str) -> str:
    """Halve each run of backslashes that stands before ``\"\"\"`` or at the end of the value."""
    return re.sub(r'(\\+)(?="""|\Z)', lambda m: "\\" * (len(m.group(1)) // 2), inner)


def _escape_triple(value: str) -> str:
    """Inverse of _unescape_triple, leaving no unescaped ``\"\"\"`` that could end the value early."""

    def quotes(match: re.Match[str]) -> str:
        backslashes, run = match.group(1), match.group(2)
        groups, rest = divmod(len(run), 3)
        if rest:
            return backslashes + '"' * rest + '\\"""' * groups
        return "\\" * (2 * len(backslashes) + 1) + _TRIPLE + '\\"""' * (groups - 1)

    escaped = re.sub(r'(\\*)("{3,})', quotes, value)
    return re.sub(r"(\\+)\Z", lambda m: m.group(1) * 2, escaped)


def quote(value: str, prefer_quotes: bool = False) -> str:
    """The shortest Ollama-readable form of ``value`` that reads back exactly, else escaped triple quotes."""
    candidates = [f'"{value}"', f"{_TRIPLE}{value}{_TRIPLE}"]
    if not prefer_quotes:
        candidates.insert(0, value)
    if "\n" in value:
        candidates = candidates[-1:]
    for candidate in candidates:
        if _reads_back(candidate, value):
            return candidate
    return f"{_TRIPLE}{_escape_triple(value)}{_TRIPLE}"


def _reads_back(candidate: str, value: str) -> bool:
    lines = candidate.split("\n")
    try:
        read, last = _read_value(lines, 0, lines[0], "<quote>")
    except EnvfileError:
        return False
    return read == value and last == len(lines) - 1
