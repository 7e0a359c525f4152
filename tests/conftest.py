"""Shared fixtures: real nodes on loopback ports and real model files from the packaged wheels."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import Node

_MODULES_WITH_FAILURES: set[str] = set()
_DATABASES_CREATED: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        _MODULES_WITH_FAILURES.add(item.nodeid.split("::")[0])
    return report


@pytest.fixture(scope="module", autouse=True)
def _module_scratch_is_freed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Free the module's scratch folders once its tests pass.

    Why: module-scoped fixtures keep node stores, pushed models and providers' homes (hundreds of MB
    per module); pytest keeps them all until the run ends, and CI's disk filled before the last modules
    ran. A module with a failure keeps its folders (and its nodes' logs) to read. Autouse, so it is torn
    down after the module's nodes and providers have stopped.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid.split("::")[0] in _MODULES_WITH_FAILURES:
        return
    for path in set(base.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _test_databases_are_dropped() -> Iterator[None]:
    """Drop the PostgreSQL databases this run created: the server outlives runs (``make test`` reuses
    it), and each run would otherwise leave a few hundred MB of databases behind."""
    yield
    base = os.environ.get("IOLLM_TEST_POSTGRES")
    if not base or not _DATABASES_CREATED:
        return
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        for name in _DATABASES_CREATED:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
    _DATABASES_CREATED.append(name)
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    return make_database(request.param, tmp_path)
