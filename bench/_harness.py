"""Shared benchmark plumbing: a real node in a temporary home, timing helpers, one JSON object out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

IOLLM = [sys.executable, "-m", "iollm"]


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# A bench stopped with kill or `timeout` unwinds like Ctrl-C: its nodes run in their own sessions (so a
# terminal's signals do not reach them) and live on, loading the CPU, unless its finally blocks run.
signal.signal(signal.SIGTERM, _exit_on_sigterm)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchNode:
    """An ``iollm up`` subprocess on a free loopback port."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(home.parent / f"{home.name}.log", "ab")  # noqa: SIM115 - lives as long as the node
        self.process = subprocess.Popen(
            [*IOLLM, "up", "--home", str(home), "--port", str(self.port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited; see {log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("node did not start")

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, IOLLM_HOME=str(self.home), IOLLM_NO_PROGRESS="1", HF_HUB_DISABLE_TELEMETRY="1")
        env["IOLLM_ENDPOINT"] = self.url
        env.update(extra)
        return env

    def cli_json(self, *args: str, **env: str) -> dict[str, Any]:
        out = subprocess.run([*IOLLM, *args, "--json"], capture_output=True, text=True, env=self.env(**env))
        if out.returncode != 0:
            raise RuntimeError(f"iollm {' '.join(args)}: {out.stderr}")
        return json.loads(out.stdout)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


@contextmanager
def scratch(prefix: str):
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=None, default=str))
