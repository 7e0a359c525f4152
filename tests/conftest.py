"""Shared fixtures: real nodes on loopback ports and real model files from the packaged wheels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import Node


@pytest.fixture(scope="module")
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start any number of nodes; all are stopped when the module's tests finish."""
    started: list[Node] = []
    base = tmp_path_factory.mktemp("nodes")

    def make(*args: str, name: str | None = None) -> Node:
        node = Node(base / (name or f"node{len(started)}"), args=list(args))
        started.append(node)
        return node.start()

    yield make
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def node(node_factory) -> Node:
    """One node without the packaged models (fast to start)."""
    return node_factory("--no-seed")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from iollm import assets

    return assets.ensure_model("smollm2", progress=False)


@pytest.fixture(scope="session")
def smollm2_safetensors() -> Path:
    from iollm import assets

    return assets.ensure_smollm2_safetensors()


def make_database(kind: str, folder: Path) -> str:
    """A fresh database of ``kind``: a SQLite file, or a new database on the test PostgreSQL server
    (``make test`` starts one and sets IOLLM_TEST_POSTGRES)."""
    import os
    import uuid

    if kind == "sqlite":
        return str(folder / f"db-{uuid.uuid4().hex[:8]}.sqlite")
    base = os.environ.get("IOLLM_TEST_POSTGRES")
    if not base:
        pytest.skip("IOLLM_TEST_POSTGRES is not set: `make test` starts a PostgreSQL server for these")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    return make_database(request.param, tmp_path)
