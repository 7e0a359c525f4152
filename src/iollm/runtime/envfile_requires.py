"""REQUIRES: Python packages pinned to one version (and pip hashes) for an environment's own venv, or
Ollama's bare minimum version. Ranges are refused: an Envfile must run with exactly what it was made with."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as _PipRequirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .envfile_lexer import InvalidValue

_OLLAMA_VERSION = re.compile(r"v?\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_HASH_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HASH = re.compile(r"(sha256|sha384|sha512):([0-9a-fA-F]+)")


@dataclass(frozen=True)
class Requirement:
    """A Python package pinned to one version (and optionally to pip hashes), for reproducible runs.

    Fields are normalised on creation (PEP 503 name, canonical version, lowercase sorted hashes), so
    two spellings of the same pin compare equal and hash to the same requirements key.
    """

    name: str
    version: str
    hashes: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            version = str(Version(self.version))
        except InvalidVersion:
            raise InvalidValue(f"{self.version!r} is not a version", "pin a release such as 2.4.6") from None
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", self.name):
            raise InvalidValue(f"{self.name!r} is not a package name", "use the name as published on PyPI")
        object.__setattr__(self, "name", canonicalize_name(self.name))
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "hashes", tuple(sorted({_check_hash(h) for h in self.hashes})))
        object.__setattr__(self, "extras", tuple(sorted({canonicalize_name(e) for e in self.extras})))

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """One pin as pip writes it: ``name[extras]==version [--hash=algo:hex ...]``."""
        pins = parse_pins(text.split())
        if len(pins) != 1:
            raise InvalidValue(f"{text!r} is not one requirement", "write name==version [--hash=sha256:...]")
        return pins[0]

    def __str__(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        hashes = "".join(f" --hash={h}" for h in self.hashes)
        return f"{self.name}{extras}=={self.version}{hashes}"


def _check_hash(value: str) -> str:
    """A pip hash ``algo:hex``, lowercased; the hex length must match the algorithm."""
    match = _HASH.fullmatch(value.strip())
    if not match or len(match.group(2)) != _HASH_LENGTHS[match.group(1)]:
        raise InvalidValue(f"{value!r} is not a pip hash", "write --hash=sha256:<64 hex digits>")
    return value.strip().lower()


def parse_requires(value: str) -> tuple[str | None, list[Requirement]]:
    """A REQUIRES value: Ollama's bare minimum version, or pinned packages with their hashes."""
    words = value.split()
    if len(words) == 1 and _OLLAMA_VERSION.fullmatch(words[0]):
        return words[0].removeprefix("v"), []
    return None, parse_pins(words)


def parse_pins(words: list[str]) -> list[Requirement]:
    """``name==version`` words, each followed by any number of ``--hash=algo:hex`` (pip's syntax)."""
    pins: list[tuple[_PipRequirement, list[str]]] = []
    words = list(words)
    while words:
        word = words.pop(0)
        if word == "--hash" or word.startswith("--hash="):
            digest = word[len("--hash=") :] if "=" in word else (words.pop(0) if words else "")
            if not pins:
                raise InvalidValue(f"--hash={digest} follows no package", "put it after name==version")
            pins[-1][1].append(_check_hash(digest))
        elif word.startswith("-"):
            raise InvalidValue(
                f"REQUIRES option {word!r} is not supported", "only --hash=algo:hex may follow a pin"
            )
        elif _OLLAMA_VERSION.fullmatch(word):
            raise InvalidValue(
                f"{word!r} looks like Ollama's minimum version among packages",
                f"put REQUIRES {word} on its own line, or write name=={word}",
            )
        else:
            pins.append((_pip_requirement(word), []))
    return [_pinned(requirement, hashes) for requirement, hashes in pins]


def _pip_requirement(word: str) -> _PipRequirement:
    try:
        requirement = _PipRequirement(word)
    except InvalidRequirement:
        raise InvalidValue(
            f"{word!r} is not a package requirement", "write name==version, e.g. numpy==2.4.6"
        ) from None
    if requirement.url or requirement.marker:
        raise InvalidValue(f"{word!r} has a URL or environment marker", "write a plain name==version pin")
    return requirement


def _pinned(requirement: _PipRequirement, hashes: list[str]) -> Requirement:
    """A Requirement, refusing ranges: an Envfile must run with exactly the packages it was made with."""
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith(".*"):
        shown = f"{requirement.name}{requirement.specifier}"
        raise InvalidValue(
            f"REQUIRES {shown} is not pinned",
            f"pin it to one exact version with ==, e.g. REQUIRES {requirement.name}==<version>",
        )
    return Requirement(requirement.name, specs[0].version, tuple(hashes), tuple(requirement.extras))


def merge_pins(pins: Iterable[Requirement]) -> list[Requirement]:
    """One pin per package, sorted by name; the same pin twice merges its hashes and extras."""
    merged: dict[str, Requirement] = {}
    for pin in pins:
        merged[pin.name] = _merge_pin(merged.get(pin.name), pin)
    return [merged[name] for name in sorted(merged)]


def _merge_pin(old: Requirement | None, new: Requirement) -> Requirement:
    if old is None:
        return new
    if old.version != new.version:
        raise InvalidValue(
            f"{new.name} is pinned twice, to {old.version} and {new.version}",
            f"keep one REQUIRES {new.name}==...",
        )
    return Requirement(new.name, new.version, old.hashes + new.hashes, old.extras + new.extras)
