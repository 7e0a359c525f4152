"""CPU threads per engine: the Modelfile's ``num_thread`` and ``IOLLM_NUM_THREAD`` are honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from iollm.runtime.engines import make_factory
from iollm.runtime.resolve import ModelSpec


class FileResolver:
    """Hands the engine a GGUF already on disk (what ``Resolver.materialize`` does after a pull)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def materialize(self, spec: ModelSpec) -> Path:
        return self.path


def _spec(**parameters: int) -> ModelSpec:
    return ModelSpec("local/smol", "local/smol", "c" * 40, "llama.cpp", parameters=dict(parameters))


def test_num_thread_parameter_sets_the_engine_threads(smollm2_gguf: Path) -> None:
    backend = make_factory(FileResolver(smollm2_gguf), default_context=512)(_spec(num_thread=1))
    try:
        assert backend.llm.n_threads == 1 and backend.llm.n_threads_batch == 1
    finally:
        backend.close()
    assert _spec(num_thread=1).load_key != _spec().load_key, "another thread count is another instance"


def test_environment_variable_is_the_default(smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOLLM_NUM_THREAD", "1")
    backend = make_factory(FileResolver(smollm2_gguf), default_context=512)(_spec())
    try:
        assert backend.llm.n_threads == 1
    finally:
        backend.close()
