"""Worker processes: an environment that pins packages runs its model in its own venv's interpreter.

``WorkerPool.start`` builds (or reuses) the venv for the environment's pinned REQUIRES, starts
``<venv python> -m iollm.runtime.worker_main`` on a free loopback port in a new session, waits until it
answers ``/health``, and returns a :class:`WorkerBackend`: the remote backend pointed at the worker, plus
the process. A worker that dies fails the request it was serving with a BackendFailure (500) while the
node stays up; the next request starts a fresh worker. Tools, grammars and logprobs travel to the worker
as private body fields (``tools``, ``grammar``, ``logprobs``), and messages keep their tool calls.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .backends.base import BackendFailure, ChatMessage, Counts, Embedding, GenerationParams, Piece
from .backends.remote import RemoteBackend
from .envfile import Requirement
from .resolve import ModelSpec
from .venvs import VenvInfo, VenvManager

log = logging.getLogger("iollm.runtime.workers")

START_TIMEOUT = 600.0  # loading a large model in a cold page cache takes a while


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """One ``worker_main`` subprocess: how to (re)start it, wait for it, and stop it."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.base_command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.health: dict[str, Any] = {}
        self.started_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        started = time.perf_counter()
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [*self.base_command, "--port", str(self.port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendFailure(
                    f"the worker exited with code {self.process.returncode} while loading: {self.log_tail()}"
                )
            try:
                reply = httpx.get(self.url + "/health", timeout=2.0)
                if reply.status_code == 200:
                    self.health = reply.json()
                    self.started_seconds = time.perf_counter() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise BackendFailure(f"the worker did not answer within {timeout:.0f} s; see {self.log_path}")

    def exit_code(self, wait: float = 0.0) -> int | None:
        """The exit status if the process has ended (waiting up to ``wait`` seconds), else None."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return " | ".join(text.strip().splitlines()[-lines:]) or f"(empty log {self.log_path})"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass


class WorkerBackend(RemoteBackend):
    """The remote backend aimed at a worker; owns the process, restarts it when it has died."""

    forwards_logprobs = True  # the worker runs our own llama.cpp or transformers backend

    def __init__(self, worker: WorkerProcess, spec: ModelSpec, venv: VenvInfo, pool: WorkerPool) -> None:
        super().__init__(worker.url + "/v1", "local")
        self.worker = worker
        self.spec = spec
        self.venv = venv
        self.pool = pool
        self.name = f"{spec.backend} (worker)"
        self.context_length = int(worker.health.get("context_length") or 0)
        self._restart_lock = threading.Lock()

    def _ready(self) -> None:
        """Before each call: a dead worker is started again (its log says why it died)."""
        with self._restart_lock:
            if self.worker.alive():
                return
            log.warning("worker for %s died; restarting (%s)", self.spec.model_id, self.worker.log_tail(3))
            self.worker.start()
            self.url = self.worker.url + "/v1"

    def _openai_body(self, params: GenerationParams) -> dict[str, Any]:
        body = super()._openai_body(params)
        body.update(
            top_k=params.top_k,
            min_p=params.min_p,
            repeat_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )
        if params.logprobs is not None:
            body.update(logprobs=params.logprobs, prompt_logprobs=params.prompt_logprobs)
        if params.tools:
            body["tools"] = params.tools
        if params.grammar is not None:
            body.update(grammar=params.grammar, grammar_param=params.grammar_param)
        return body

    def _guard(self, pieces: Iterator[Piece]) -> Iterator[Piece]:
        try:
            yield from pieces
        except BackendFailure as exc:
            code = self.worker.exit_code(wait=1.0)  # a dead worker closes its socket just before exiting
            if code is not None:
                raise BackendFailure(
                    f"the worker for {self.spec.model_id} died (exit {code}) during the request; "
                    f"see {self.worker.log_path}"
                ) from exc
            raise

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        self._ready()
        return self._guard(super().chat(messages, params, counts, cancel))

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        self._ready()
        return self._guard(super().complete(prompt, params, counts, cancel))

    def embed(self, texts: list[str]) -> Embedding:
        self._ready()
        return super().embed(texts)

    def count_tokens(self, text: str) -> int:
        self._ready()
        try:
            reply = self.http.post(self.worker.url + "/tokenize", json={"text": text})
            reply.raise_for_status()
            return int(reply.json()["count"])
        except httpx.HTTPError as exc:
            raise BackendFailure(f"the worker could not count tokens: {exc}") from exc

    def close(self) -> None:
        super().close()
        self.worker.stop()
        self.pool.forget(self)


class WorkerPool:
    """Starts workers for environments with REQUIRES; ``venvs`` builds and shares their venvs."""

    def __init__(self, venvs: VenvManager, home: Path) -> None:
        self.venvs = venvs
        self.home = Path(home)
        self._running: list[WorkerBackend] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def start(self, spec: ModelSpec, location: Path, context: int) -> WorkerBackend:
        pins = [Requirement.parse(text) for text in spec.requires]
        venv = self.venvs.ensure(pins)
        folder = self.home / "workers" / _slug(spec)
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            str(venv.python),
            "-m",
            "iollm.runtime.worker_main",
            "--backend",
            spec.backend,
            "--path",
            str(location),
            "--ctx",
            str(context),
            "--batch",
            str(int(spec.parameters.get("num_batch") or 512)),
            "--requires",
            ",".join(p.name for p in venv.packages),
            "--parent-pid",
            str(os.getpid()),
        ]
        for flag, text in (("--template-file", spec.template), ("--system-file", spec.system)):
            if text:
                path = folder / flag.removeprefix("--").removesuffix("-file")
                path.write_text(text)
                command += [flag, str(path)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PYTHONNOUSERSITE="1", VIRTUAL_ENV=str(venv.path))
        worker = WorkerProcess(command, self.home / "logs" / f"worker-{_slug(spec)}.log", env)
        worker.start()
        log.info(
            "worker for %s ready in %.1f s (venv %s, pid %s)",
            spec.model_id,
            worker.started_seconds,
            venv.key[:12],
            worker.health.get("pid"),
        )
        backend = WorkerBackend(worker, spec, venv, self)
        with self._lock:
            self._running.append(backend)
        return backend

    def running(self) -> list[dict[str, Any]]:
        """What runs where (for the admin API and tests)."""
        with self._lock:
            backends = list(self._running)
        return [
            {
                "model": b.spec.model_id,
                "commit": b.spec.commit,
                "backend": b.spec.backend,
                "url": b.worker.url,
                "pid": b.worker.process.pid if b.worker.process else None,
                "alive": b.worker.alive(),
                "venv": str(b.venv.path),
                "requires_key": b.venv.key,
                "log": str(b.worker.log_path),
                "start_seconds": round(b.worker.started_seconds, 3),
            }
            for b in backends
        ]

    def forget(self, backend: WorkerBackend) -> None:
        with self._lock:
            if backend in self._running:
                self._running.remove(backend)

    def close(self) -> None:
        with self._lock:
            backends, self._running = self._running, []
        for backend in backends:
            backend.worker.stop()


def _slug(spec: ModelSpec) -> str:
    """A file-name-safe, unique-enough name for one spec's worker files."""
    digest = hashlib.sha256(spec.load_key.encode()).hexdigest()[:12]
    return f"{spec.model_id.replace('/', '--')}-{digest}"
