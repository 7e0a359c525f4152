"""The sandbox that runs model-written code: limits, kills, and what each guard blocks on its own."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from iollm.paths.sandbox import ALL_GUARDS, PRELUDE, Sandbox

LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=5)


@pytest.fixture(scope="module")
def kernel_guards() -> tuple[str, ...]:
    """The kernel-enforced guards this machine supports (probed by running the prelude once)."""
    applied = Sandbox(guards=("landlock", "seccomp")).run_python("pass").protections
    return tuple(g for g in ("landlock", "seccomp") if g in applied)


def _processes_with(token: str) -> list[int]:
    """Pids whose command line mentions ``token`` (Linux /proc), to prove nothing was left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_prelude_compiles() -> None:
    compile(PRELUDE, "<prelude>", "exec")  # syntax only; it runs in the child, never here


def test_normal_code_returns_stdout_and_reads_stdin(sandbox: Sandbox) -> None:
    result = sandbox.run_python("import sys\nprint('hello', sys.stdin.read().upper())", stdin="world")
    assert result.ok and result.returncode == 0 and not result.timed_out and result.killed_reason is None
    assert result.stdout == "hello WORLD\n"
    assert set(result.protections) >= {"rlimits", "audit"}
    assert result.seconds < 5


def test_failing_code_reports_stderr(sandbox: Sandbox) -> None:
    result = sandbox.run_python("raise ValueError('boom')")
    assert not result.ok and result.returncode == 1 and result.killed_reason is None
    assert "ValueError: boom" in result.stderr


def test_environment_is_not_inherited(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOLLM_SECRET_TOKEN", "hunter2")
    result = sandbox.run_python("import os; print(sorted(os.environ))")
    assert "IOLLM_SECRET_TOKEN" not in result.stdout


def test_run_tests_composes_code_tests_and_check(sandbox: Sandbox) -> None:
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    assert sandbox.run_tests("def double(x):\n    return 2 * x\n", tests, "double").ok
    assert not sandbox.run_tests("def double(x):\n    return x\n", tests, "double").ok


def test_threads_and_devnull_still_work(sandbox: Sandbox) -> None:
    if LINUX and "seccomp" not in sandbox.run_python("pass").protections:
        pytest.skip("without seccomp the fallback RLIMIT_NPROC=0 also stops threads for non-root users")
    code = "import threading\nt = threading.Thread(target=print, args=('in thread',))\nt.start(); t.join()"
    code += "\nimport os\nopen(os.devnull, 'w').write('discarded')"
    result = sandbox.run_python(code)
    assert result.ok and result.stdout == "in thread\n", result


def test_infinite_loop_is_killed_within_the_timeout() -> None:
    started = time.monotonic()
    result = Sandbox(timeout_s=1).run_python("while True:\n    pass\n")
    assert result.timed_out and result.killed_reason == "timeout" and not result.ok
    assert time.monotonic() - started < 3


def test_sleeping_code_is_killed_by_the_wall_clock() -> None:
    result = Sandbox(timeout_s=1).run_python("import time\nprint('started', flush=True)\ntime.sleep(60)")
    assert result.timed_out and result.seconds < 3
    assert result.stdout == "started\n"  # output written before the kill is kept


def test_memory_hog_fails(sandbox: Sandbox) -> None:
    result = sandbox.run_python("data = bytearray(2 * 1024 ** 3)\nprint('allocated')")
    assert not result.ok and "allocated" not in result.stdout
    assert result.killed_reason == "memory limit"


def test_huge_output_is_truncated() -> None:
    limit = 10_000
    result = Sandbox(timeout_s=5, max_output_bytes=limit).run_python("while True:\n    print('x' * 1000)\n")
    assert not result.ok and result.killed_reason == "output limit" and not result.timed_out
    assert 0 < len(result.stdout) <= limit


def test_big_files_are_capped(sandbox: Sandbox) -> None:
    small = Sandbox(timeout_s=5, max_file_mb=1)
    result = small.run_python("open('big.bin', 'wb').write(b'x' * (4 * 1024 * 1024))")
    assert not result.ok


def test_temporary_folder_is_cwd_and_removed_afterwards(sandbox: Sandbox) -> None:
    code = "import os\nopen('scratch.txt', 'w').write('ok')\nos.mkdir('sub')\nos.chmod('sub', 0)\nprint(os.getcwd())"
    result = sandbox.run_python(code)
    assert result.ok, result.stderr
    folder = Path(result.stdout.strip())
    assert folder.name.startswith("iollm-sandbox-")
    assert not folder.exists()


def test_sandbox_rejects_unknown_guards() -> None:
    with pytest.raises(ValueError, match="unknown sandbox guards"):
        Sandbox(guards=("chroot",))


# ---------------------------------------------------------------------------------------------------
# Escapes: each attempt is tried with all guards, with only the kernel guards and with only the audit
# hook, so every layer is shown to hold on its own (the "none" run proves the attempt works unguarded).

FORK = """
import os
try:
    pid = os.fork()
except OSError as exc:
    print('blocked:', exc)
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print('FORKED')
"""

FORK_BOMB = """
import os
children = 0
try:
    for _ in range(50):
        if os.fork() == 0:
            import time
            time.sleep(30)
            os._exit(0)
        children += 1
except OSError as exc:
    print('blocked:', exc)
print('children', children)
"""

SPAWN = """
import os, subprocess
for attempt in (
    lambda: subprocess.Popen(['sleep', '{token}']),
    lambda: subprocess.run(['echo', 'ran', '{token}']),
    lambda: os.system('echo ran {token}'),
    lambda: os.waitpid(os.posix_spawn('/bin/echo', ['echo', 'ran', '{token}'], {{}}), 0),
    lambda: os.execv('/bin/echo', ['echo', 'ran', '{token}']),
):
    try:
        attempt()
    except (OSError, subprocess.SubprocessError):
        pass
print('done')
"""

WRITE_OUTSIDE = """
import os
path = {path!r}
attempts = [
    lambda: open(path, 'w').write('x'),
    lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT)),
    lambda: (os.symlink(os.path.dirname(path), 'link'), open('link/' + os.path.basename(path), 'w').write('x')),
    lambda: os.mkdir(path + '.dir'),
]
for attempt in attempts:
    try:
        attempt()
    except OSError:
        pass
print('done')
"""


def _guard_sets(kernel_guards: tuple[str, ...]) -> list[tuple[str, ...]]:
    sets = [ALL_GUARDS, ("audit",)]
    if kernel_guards:
        sets.append(kernel_guards)
    return sets


@pytest.mark.skipif(not LINUX, reason="fork semantics checked on Linux")
def test_fork_is_blocked_by_every_layer(kernel_guards: tuple[str, ...]) -> None:
    for guards in _guard_sets(kernel_guards):
        result = Sandbox(timeout_s=5, guards=guards).run_python(FORK)
        assert "FORKED" not in result.stdout and "blocked" in result.stdout, (guards, result)
    if os.geteuid() == 0:  # root ignores RLIMIT_NPROC, so without guards the fork really happens
        assert "FORKED" in Sandbox(timeout_s=5, guards=()).run_python(FORK).stdout


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_fork_bomb_leaves_no_processes(sandbox: Sandbox) -> None:
    result = sandbox.run_python(FORK_BOMB)
    assert "children 0" in result.stdout, result
    assert result.seconds < 5


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_subprocess_system_spawn_and_exec_are_blocked(kernel_guards: tuple[str, ...]) -> None:
    for guards in _guard_sets(kernel_guards):
        token = f"9{uuid.uuid4().int % 10**8}.5"
        result = Sandbox(timeout_s=5, guards=guards).run_python(SPAWN.format(token=token))
        assert result.stdout == "done\n", (guards, result)  # no "ran <token>" from a spawned echo
        assert _processes_with(token) == []
    unguarded = Sandbox(timeout_s=5, guards=()).run_python(SPAWN.format(token="0.1"))
    assert "ran 0.1" in unguarded.stdout  # the attempts do spawn when nothing stops them


def test_raw_fork_exec_is_refused_by_the_hook() -> None:
    code = "import _posixsubprocess\n_posixsubprocess.fork_exec()"
    result = Sandbox(timeout_s=5, guards=("audit",)).run_python(code)
    assert "PermissionError" in result.stderr


def test_ctypes_cannot_fork_behind_the_hook(sandbox: Sandbox) -> None:
    result = sandbox.run_python("import ctypes\nprint(ctypes.CDLL(None).fork())")
    assert not result.ok and "PermissionError" in result.stderr


def test_writes_outside_the_folder_do_not_happen(tmp_path: Path, kernel_guards: tuple[str, ...]) -> None:
    for index, guards in enumerate(_guard_sets(kernel_guards)):
        target = tmp_path / f"outside-{index}.txt"
        result = Sandbox(timeout_s=5, guards=guards).run_python(WRITE_OUTSIDE.format(path=str(target)))
        assert result.stdout == "done\n", (guards, result)
        assert list(tmp_path.iterdir()) == [], guards
    unguarded = Sandbox(timeout_s=5, guards=()).run_python(WRITE_OUTSIDE.format(path=str(tmp_path / "x")))
    assert unguarded.ok and (tmp_path / "x").exists()  # the attempts do write when nothing stops them


def test_removing_files_outside_is_blocked(tmp_path: Path, kernel_guards: tuple[str, ...]) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    code = f"import os, shutil\nfor f in (lambda: os.remove({str(victim)!r}), lambda: shutil.rmtree({str(tmp_path)!r})):\n"
    code += "    try:\n        f()\n    except OSError:\n        pass\n"
    for guards in _guard_sets(kernel_guards):
        Sandbox(timeout_s=5, guards=guards).run_python(code)
        assert victim.read_text() == "precious", guards


def test_network_is_blocked(sandbox: Sandbox) -> None:
    code = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))"
    result = sandbox.run_python(code)
    assert not result.ok and "PermissionError" in result.stderr


def test_signals_to_other_processes_are_blocked(sandbox: Sandbox) -> None:
    code = f"import os, signal\nos.kill({os.getpid()}, 0)\nprint('reached')"
    result = sandbox.run_python(code)
    assert "reached" not in result.stdout and "PermissionError" in result.stderr


def test_limits_cannot_be_raised_again(sandbox: Sandbox) -> None:
    code = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))"
    assert not sandbox.run_python(code).ok
