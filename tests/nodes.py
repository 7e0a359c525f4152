"""Real nodes for tests: each is an ``iollm up`` subprocess on a free loopback port with its own home."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
IOLLM = [sys.executable, "-m", "iollm"]


def link_or_copy(source: Path, target: Path) -> None:
    """Put a big packaged file into a folder to push without copying it where a hard link works (push
    refuses symbolic links that point out of the pushed folder)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    home: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            IOLLM_HOME=str(self.home),
            IOLLM_ENDPOINT=self.url,
            IOLLM_NO_PROGRESS="1",
        )
        env.pop("IOLLM_TOKEN", None)
        env.pop("HF_HUB_DISABLE_TELEMETRY", None)  # the client on its defaults
        env.update(extra)
        return env

    def start(self, timeout: float = 120.0) -> Node:
        log = open(self.home.parent / f"{self.home.name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [*IOLLM, "up", "--home", str(self.home), "--port", str(self.port), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node on port {self.port} did not come up")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def cli(
        self, *args: str, check: bool = True, token: str | None = None, **env: str
    ) -> subprocess.CompletedProcess:
        """Run the real CLI against this node."""
        extra = dict(env)
        if token is not None:
            extra["IOLLM_TOKEN"] = token
        result = subprocess.run(
            [*IOLLM, *args], capture_output=True, text=True, env=self.env(**extra), timeout=600
        )
        if check and result.returncode != 0:
            raise AssertionError(f"iollm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def cli_json(self, *args: str, **kw: str) -> dict:
        import json

        result = self.cli(*args, "--json", **kw)
        return json.loads(result.stdout)

    def client(self, token: str | None = None):
        from iollm.protocol import NodeClient

        return NodeClient(self.url, token if token is not None else self.token)


@dataclass
class Provider:
    """An ``iollm provider join`` subprocess (a real Dask worker) for a node."""

    node: Node
    home: Path
    name: str
    cpus: int = 1
    process: subprocess.Popen | None = None
    prelude: str = ""  # Python run before the CLI (tests use it to make a dishonest provider)

    def start(self, timeout: float = 120.0) -> Provider:
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.home / "provider" / "provider.key").exists():
            subprocess.run(
                [*IOLLM, "provider", "init", "--name", self.name, "--home", str(self.home)],
                check=True,
                capture_output=True,
            )
        code = f"{self.prelude}\nimport sys\nfrom iollm.cli import main\nsys.argv = ['iollm', *sys.argv[1:]]\nmain()\n"
        log = open(self.home / "provider.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "provider",
                "join",
                "--cpus",
                str(self.cpus),
                "--json",
                "--home",
                str(self.home),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.node.env(IOLLM_HOME=str(self.home), IOLLM_TOKEN=self.node.token),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"provider {self.name} exited; see {self.home / 'provider.log'}")
            if self.online():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"provider {self.name} did not come online")

    @property
    def id(self) -> str:
        import json

        return json.loads((self.home / "provider" / "provider.json").read_text())["id"]

    def online(self) -> bool:
        reply = httpx.get(f"{self.node.url}/api/providers", timeout=5)
        return any(p["id"] == self.id and p["state"] == "online" for p in reply.json().get("providers", []))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGINT)


def run_hf(node: Node, tmp_path: Path, code: str, token: str | None = None, **extra_env: str) -> dict:
    """Unmodified huggingface_hub on its defaults (hf_xet installed, Xet uploads) in a fresh interpreter
    (it reads HF_ENDPOINT at import); the code's last printed line is JSON. ``extra_env`` adds variables
    (only the test of a user who chooses LFS sets one: ``HF_HUB_DISABLE_XET="1"``)."""
    import json

    env = node.env(
        HF_ENDPOINT=node.url,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_TOKEN=token if token is not None else node.token,
        **extra_env,
    )
    script = "import json\nfrom huggingface_hub import *\n" + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
