"""The backend registry: one table of engines (name, aliases, weight files, loader) that the engine
factory, worker processes, the Envfile's BACKEND and the resolver all read, so a new engine is one
module in ``iollm.runtime.backends`` that defines ``BACKEND``."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from iollm.protocol import FileEntry
from iollm.runtime import ModelSpec, NotRunnable, Resolver, make_factory, parse_envfile
from iollm.runtime.backends import registry
from iollm.runtime.backends.registry import BackendType, LoadOptions
from iollm.runtime.envfile import EnvfileError
from iollm.runtime.worker_main import load_backend


def test_the_engines_that_ship() -> None:
    assert [kind.name for kind in registry.known()] == ["llama.cpp", "transformers", "remote"]
    assert registry.weight_suffixes() == (".gguf", ".safetensors")
    for spelling in ("llama.cpp", "LlamaCpp", " llama_cpp ", "llama-cpp", "GGUF"):
        assert registry.named(spelling).name == "llama.cpp"
    assert registry.for_files(["model.safetensors", "config.json", "Model.Q4.GGUF"]).name == "llama.cpp"
    assert registry.for_files(["model.safetensors"]).name == "transformers"
    assert registry.for_files(["README.md"]) is None
    with pytest.raises(
        registry.UnknownBackend, match=r"unknown backend 'vllm': use one of llama.cpp, transformers, remote"
    ):
        registry.named("vllm")


def test_gguf_is_known_by_its_first_bytes(tmp_path: Path) -> None:
    blob = tmp_path / "sha256-0123"  # an Ollama blob has no suffix
    blob.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 32)
    assert registry.for_magic(blob).name == "llama.cpp"
    assert registry.for_magic(tmp_path / "missing") is None
    assert parse_envfile(f"FROM {blob}\n").resolved_backend() == "llama.cpp"


def entry(path: str, size: int) -> FileEntry:
    data = b"x" * size
    chunks = [(hashlib.sha256(data).hexdigest(), size)] if size else []
    return FileEntry(path=path, size=size, sha256=hashlib.sha256(data).hexdigest(), chunks=chunks)


class FakeHub:
    """The two reads ``Resolver.spec_for`` makes of a commit."""

    def __init__(self, files: list[FileEntry]) -> None:
        self.files = files

    def manifest(self, commit: str) -> FakeHub:
        return self

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    def card(self, commit: str) -> dict:
        return {}


class EchoBackend:
    name = "echo"

    def __init__(self, options: LoadOptions) -> None:
        self.options = options


@pytest.fixture
def echo() -> Iterator[BackendType]:
    kind = BackendType(
        name="echo",
        load=EchoBackend,  # type: ignore[arg-type]
        aliases=("echo-engine",),
        suffixes=(".echo",),
        weights="echo file",
        single_file=True,
        precedence=5,
    )
    registry.register(kind)
    yield kind
    registry.unregister("echo")


def test_a_registered_engine_is_used_everywhere(echo: BackendType, tmp_path: Path) -> None:
    # Envfile: BACKEND accepts its names, and FROM a file of its suffix is a local path it runs.
    assert parse_envfile("FROM a/b\nBACKEND Echo-Engine\n").backend == "echo"
    assert parse_envfile("FROM model.echo\n").base.kind == "path"
    assert parse_envfile("FROM model.echo\n").resolved_backend() == "echo"
    assert parse_envfile("FROM a/b\n").resolved_backend(["model.echo", "model.gguf"]) == "echo"
    with pytest.raises(EnvfileError, match=r"no \.echo or \.gguf or \.safetensors file"):
        parse_envfile("FROM a/b\n").resolved_backend(["README.md"])

    # The resolver picks it for a repository holding its weights (the largest such file).
    files = [entry("model.gguf", 9), entry("small.echo", 1), entry("model.echo", 0)]
    spec = Resolver(FakeHub(files), tmp_path).spec_for("me/echo", "c" * 40)  # type: ignore[arg-type]
    assert spec.backend == "echo" and [f.path for f in spec.weights] == ["small.echo"]

    # The engine factory loads it with the environment's options.
    weights = entry("model.echo", 0)

    class Weights:
        def materialize(self, spec: ModelSpec) -> Path:
            return tmp_path / spec.weights[0].path

    spec = ModelSpec("me/echo", "me/echo", "c" * 40, "echo", (weights,), parameters={"num_ctx": 256})
    engine = make_factory(Weights())(spec)  # type: ignore[arg-type]
    assert isinstance(engine, EchoBackend)
    assert engine.options.location == tmp_path / "model.echo" and engine.options.context == 256

    # A worker process loads it by name.
    args = argparse.Namespace(
        backend="echo", path=str(tmp_path), ctx=512, batch=64, template_file=None, system_file=None
    )
    assert load_backend(args).options == LoadOptions(tmp_path, 512, batch=64)


def test_an_unknown_engine_is_not_runnable() -> None:
    spec = ModelSpec("me/odd", "me/odd", "c" * 40, "vllm")
    with pytest.raises(NotRunnable, match=r"me/odd: unknown backend 'vllm': use one of llama\.cpp"):
        make_factory(None)(spec)  # type: ignore[arg-type]
    with pytest.raises(EnvfileError, match="unknown BACKEND 'vllm'"):
        parse_envfile("FROM a/b\nBACKEND vllm\n")
