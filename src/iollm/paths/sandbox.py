"""Run model-written Python (HumanEval solutions, test code) in a throw-away child process.

This is a *best-effort guard* for running untrusted-but-not-malicious code on a developer machine or a CI
runner: it stops the accidents that model-written code commits (infinite loops, fork bombs, ``rm -rf``
of the wrong folder, runaway memory or output). It is **not a security boundary** against a determined
attacker: the child runs as the same user as the caller, shares the kernel, the network namespace and
the readable filesystem, and a kernel or CPython bug is enough to escape it. Use a VM or container for
hostile code.

What each run gets:

* a fresh temporary folder as the working directory (also ``HOME`` and ``TMPDIR``), deleted afterwards;
* a new session and process group, killed as a whole (``SIGKILL``) when the run ends or times out;
* a wall-clock timeout, plus ``RLIMIT_CPU``; ``RLIMIT_AS`` (memory); ``RLIMIT_FSIZE`` (largest file);
  ``RLIMIT_NOFILE``; no core dumps;
* stdout and stderr captured up to ``max_output_bytes`` each; a run that prints more is killed;
* a minimal environment: nothing from the caller's environment (no API keys) is passed on;
* ``python -I -B -X utf8``: isolated mode, so ``PYTHON*`` variables, the user site folder and the
  current directory are not used.

Before the code under test runs, a prelude in the child applies these guards (``guards`` selects them; all by
default). The guards actually applied are reported in ``SandboxResult.protections``.

``landlock`` (Linux >= 5.13, kernel-enforced, cannot be undone by the child)
    No file may be created, written, truncated, removed, renamed, linked or executed outside the
    temporary folder (``/dev/null`` stays writable). On Landlock ABI >= 4 TCP ``connect``/``bind`` are
    denied; on ABI >= 6 the child cannot signal processes outside itself.
``seccomp`` (Linux x86_64/aarch64, kernel-enforced, cannot be undone by the child)
    ``fork``, ``vfork``, process-creating ``clone``, ``execve``, ``execveat``, ``ptrace``,
    ``process_vm_writev``, ``pidfd_send_signal`` and ``tkill`` fail with ``EPERM``; ``kill``/``tgkill``
    may only target the child itself; ``socket`` is limited to ``AF_UNIX``; 32-bit and x32 system calls
    are refused. Threads still work. This is what stops fork bombs when running as root, since root
    ignores ``RLIMIT_NPROC``.
``rlimits``
    The limits listed above. Without ``seccomp``, ``RLIMIT_NPROC`` is also set to 0, which stops ``fork``
    (and threads) for non-root users only.
``audit`` (portable, Python-level, see :pep:`578`)
    An audit hook, which the child cannot remove, refuses ``os.fork``/``forkpty``, ``os.system``,
    ``os.exec*``, ``os.spawn*``, ``os.posix_spawn``, ``subprocess.Popen``, signals to other processes,
    every ``socket.*`` event, ``ctypes``, ``resource.setrlimit``, ``gc.get_objects``-style heap walks,
    ``_posixsubprocess.fork_exec`` (replaced by a stub, as it raises no audit event),
    opening a file for writing outside the temporary folder (symlinks resolved), opening a directory
    outside it (so ``dir_fd`` tricks have nothing to start from), and ``remove``/``rename``/``mkdir``/
    ``chmod``/``link``/``symlink``/``truncate``/``utime``/``rmtree`` on paths outside it.

Not protected: reading any file the caller can read; CPU and memory pressure up to the limits; a
determined attacker evading the Python-level hook (for instance by monkeypatching the functions it calls),
which on a kernel without Landlock/seccomp leaves only the hook and the resource limits; anything the
kernel guards do not cover on other operating systems (macOS and Windows get only the audit hook and,
on macOS, the resource limits).

The parent never uses ``preexec_fn`` (it is unsafe when the caller has threads, and path searches
evaluate many candidates concurrently): every limit is applied by the prelude inside the child, where
lowering one's own limits needs no privilege.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ALL_GUARDS", "PRELUDE", "Sandbox", "SandboxResult"]

ALL_GUARDS: tuple[str, ...] = ("rlimits", "landlock", "seccomp", "audit")
_SOLUTION = "solution.py"
_STDIN = ".stdin"

# The prelude runs in the child before the code under test. It is a string (not an imported module) so
# that the child needs nothing but the standard library and never imports this package.
PRELUDE = r"""
import json as _json
import os as _os
import sys as _sys


def _iollm_limits(cfg, with_nproc):
    import resource

    def lower(which, value):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    lower(resource.RLIMIT_AS, cfg["memory_bytes"])
    lower(resource.RLIMIT_CPU, cfg["cpu_seconds"])
    lower(resource.RLIMIT_FSIZE, cfg["file_bytes"])
    lower(resource.RLIMIT_NOFILE, 256)
    lower(resource.RLIMIT_CORE, 0)
    if with_nproc:
        lower(resource.RLIMIT_NPROC, 0)


def _iollm_libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return ctypes, libc


def _iollm_landlock(tmp):
    if not _sys.platform.startswith("linux"):
        return False
    ctypes, libc = _iollm_libc()
    create, add_rule, restrict = 444, 445, 446
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    execute, write_file = 1 << 0, 1 << 1
    fs_write = write_file | sum(1 << b for b in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
    if abi >= 2:
        fs_write |= 1 << 13  # refer
    if abi >= 3:
        fs_write |= 1 << 14  # truncate

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    net = 3 if abi >= 4 else 0  # bind_tcp | connect_tcp, with no rule allowing any port
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets | signals outside the domain
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = RulesetAttr(fs_write | execute, net, scoped)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        rules = [(tmp, fs_write), (_os.devnull, write_file | (1 << 14 if abi >= 3 else 0))]
        for path, allowed in rules:
            fd = _os.open(path, getattr(_os, "O_PATH", 0) | _os.O_CLOEXEC)
            try:
                rule = PathBeneath(allowed, fd)
                if libc.syscall(add_rule, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    return False
            finally:
                _os.close(fd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        return libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        _os.close(ruleset)


_IOLLM_SECCOMP = {
    # machine: (audit arch, always denied, clone, clone3, socket, (kill, tgkill), refuse x32 numbers)
    # always denied: fork vfork execve execveat ptrace process_vm_writev tkill pidfd_send_signal
    "x86_64": (0xC000003E, (57, 58, 59, 322, 101, 311, 200, 424), 56, 435, 41, (62, 234), True),
    "aarch64": (0xC00000B7, (221, 281, 117, 271, 130, 424), 220, 435, 198, (129, 131), False),
}


def _iollm_seccomp():
    spec = _IOLLM_SECCOMP.get(_os.uname().machine) if _sys.platform.startswith("linux") else None
    if spec is None:
        return False
    arch, denied, clone, clone3, socket_nr, kills, x32 = spec
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = []

    def ins(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    ins(ld, 4)  # seccomp_data.arch
    ins(jeq, arch, 1, 0)
    ins(ret, eperm)
    ins(ld, 0)  # seccomp_data.nr
    if x32:
        ins(jge, 0x40000000, "deny")
    for nr in denied:
        ins(jeq, nr, "deny")
    ins(jeq, clone3, "enosys")  # its flags sit behind a pointer; glibc falls back to clone
    ins(jeq, clone, 0, 2)
    ins(ld, 16)  # args[0], low 32 bits: clone flags
    ins(jset, 0x00010000, "allow", "deny")  # CLONE_THREAD: threads yes, processes no
    ins(jeq, socket_nr, 0, 2)
    ins(ld, 16)
    ins(jeq, 1, "allow", "deny")  # AF_UNIX only
    for nr in kills:
        ins(jeq, nr, 0, 3)
        ins(ld, 16)
        ins(jeq, _os.getpid(), "allow")
        ins(jeq, 0, "allow", "deny")  # 0: own process group, which holds only this process
    labels = {}
    for name, k in (("allow", allow), ("deny", eperm), ("enosys", enosys)):
        labels[name] = len(prog)
        ins(ret, k)
    import struct

    raw = b""
    for index, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - index - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - index - 1 if isinstance(jf, str) else jf
        raw += struct.pack("HBBI", code, jt, jf, k)
    ctypes, libc = _iollm_libc()

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    fprog = Fprog(len(prog), raw)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def _iollm_audit(tmp):
    fspath, realpath, isdir, fsdecode = _os.fspath, _os.path.realpath, _os.path.isdir, _os.fsdecode
    root = realpath(tmp)
    prefix = root.rstrip(_os.sep) + _os.sep
    devnull = realpath(_os.devnull)
    mypid = _os.getpid()
    write_flags = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
    o_directory = getattr(_os, "O_DIRECTORY", 0)
    blocked = frozenset({
        "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.Popen",
        "pty.spawn", "os.startfile", "resource.setrlimit", "resource.prlimit", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "sys.remote_exec", "os.add_dll_directory",
    })
    path_events = frozenset({
        "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.link", "os.symlink", "os.chmod", "os.chown",
        "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
        "os.mkfifo", "os.mknod", "shutil.rmtree", "shutil.chown",
    })
    denied_imports = frozenset({"ctypes", "_ctypes"})
    text_types = (str, bytes)

    def inside(path):
        try:
            path = fsdecode(fspath(path))
        except TypeError:
            return True  # a file descriptor: nothing to resolve
        resolved = realpath(path)
        return resolved == root or resolved.startswith(prefix) or resolved == devnull

    def deny(event):
        raise PermissionError(f"sandbox: {event} is not allowed")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = bool(flags & write_flags) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if (writing or (mode is None and (flags & o_directory or isdir(path)))) and not inside(path):
                deny(f"open({path!r}) outside the sandbox folder")
        elif event in blocked or event.startswith(("ctypes.", "socket.")):
            deny(event)
        elif event in ("os.kill", "os.killpg"):
            if args[0] not in (mypid, 0):
                deny(event)
        elif event in path_events:
            for arg in args:
                if (isinstance(arg, text_types) or hasattr(arg, "__fspath__")) and not inside(arg):
                    deny(f"{event}({arg!r}) outside the sandbox folder")
        elif event == "import" and args[0] in denied_imports:
            deny(f"import {args[0]}")

    _sys.addaudithook(hook)
    try:  # subprocess's fork+exec primitive raises no audit event of its own
        import _posixsubprocess

        def refuse(*args, **kwargs):
            raise PermissionError("sandbox: _posixsubprocess.fork_exec is not allowed")

        _posixsubprocess.fork_exec = refuse
    except ImportError:
        pass


def _iollm_main():
    cfg = _json.loads(_sys.argv[1])
    guards, tmp = set(cfg["guards"]), cfg["tmp"]
    applied = []
    if "landlock" in guards and _iollm_landlock(tmp):
        applied.append("landlock")
    if "seccomp" in guards and _iollm_seccomp():
        applied.append("seccomp")
    if "rlimits" in guards:
        _iollm_limits(cfg, with_nproc="seccomp" not in applied)
        applied.append("rlimits")
    for name in [m for m in _sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del _sys.modules[name]
    if "audit" in guards:
        _iollm_audit(tmp)
        applied.append("audit")
    _os.write(cfg["status_fd"], ",".join(applied).encode())
    _os.close(cfg["status_fd"])
    with open(_os.path.join(tmp, cfg["solution"]), encoding="utf-8") as f:
        source = f.read()
    code = compile(source, cfg["solution"], "exec")
    module = type(_sys)("__main__")
    module.__file__ = cfg["solution"]
    _sys.modules["__main__"] = module
    _sys.argv = [cfg["solution"]]
    exec(code, module.__dict__)


_iollm_main()
"""


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did. ``ok`` means exit status 0, no timeout and no limit hit."""

    ok: bool
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    seconds: float
    protections: tuple[str, ...] = ()


@dataclass
class _Capture:
    """Bounded stdout/stderr of one run."""

    stdout: bytearray
    stderr: bytearray
    timed_out: bool = False
    overflow: bool = False


class Sandbox:
    """Runs Python source in a guarded child process; stateless, so one instance may serve many threads."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        memory_mb: int = 512,
        max_output_bytes: int = 1_000_000,
        max_file_mb: int = 16,
        guards: tuple[str, ...] = ALL_GUARDS,
        python: str | None = None,
    ) -> None:
        unknown = set(guards) - set(ALL_GUARDS)
        if unknown:
            raise ValueError(f"unknown sandbox guards {sorted(unknown)}; known: {', '.join(ALL_GUARDS)}")
        if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes <= 0 or max_file_mb <= 0:
            raise ValueError("sandbox limits must be positive")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_output_bytes = int(max_output_bytes)
        self.max_file_mb = int(max_file_mb)
        self.guards = tuple(guards)
        self.python = python or sys.executable

    def run_tests(self, code: str, test_code: str, entry_point: str | None = None) -> SandboxResult:
        """Run ``code`` followed by ``test_code`` (and ``check(entry_point)``, HumanEval style)."""
        program = code + "\n" + test_code
        if entry_point:
            program += f"\ncheck({entry_point})\n"
        return self.run_python(program)

    def run_python(self, code: str, stdin: str = "") -> SandboxResult:
        """Run ``code`` as ``__main__`` in a fresh temporary folder; the folder is removed afterwards."""
        started = time.monotonic()
        tmp = tempfile.mkdtemp(prefix="iollm-sandbox-")
        try:
            Path(tmp, _SOLUTION).write_text(code, encoding="utf-8")
            Path(tmp, _STDIN).write_text(stdin, encoding="utf-8")
            return self._run(tmp, started)
        finally:
            _remove_tree(tmp)

    def _command(self, tmp: str, status_fd: int) -> list[str]:
        config = {
            "tmp": tmp,
            "status_fd": status_fd,
            "guards": list(self.guards),
            "solution": _SOLUTION,
            "memory_bytes": self.memory_mb * 1024 * 1024,
            "cpu_seconds": int(self.timeout_s) + 1,
            "file_bytes": self.max_file_mb * 1024 * 1024,
        }
        return [self.python, "-I", "-B", "-X", "utf8", "-c", PRELUDE, json.dumps(config)]

    def _run(self, tmp: str, started: float) -> SandboxResult:
        status_r, status_w = os.pipe()
        try:
            env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
            with open(Path(tmp, _STDIN), "rb") as stdin:
                proc = subprocess.Popen(
                    self._command(tmp, status_w),
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=tmp,
                    env=env,
                    start_new_session=True,
                    pass_fds=(status_w,),
                )
            os.close(status_w)
            status_w = -1
            try:
                capture = self._collect(proc, started + self.timeout_s)
                if not capture.timed_out and not capture.overflow:
                    capture.timed_out = not _wait_exit(proc, started + self.timeout_s)
            finally:  # also on errors and KeyboardInterrupt: never leave the child running
                _kill_group(proc.pid)  # the whole group, in case anything slipped out of the guards
                returncode = proc.wait()
            _drain(proc, capture, self.max_output_bytes)
            protections = _read_status(status_r)
        finally:
            os.close(status_r)
            if status_w >= 0:
                os.close(status_w)
        return self._result(capture, returncode, protections, time.monotonic() - started)

    def _collect(self, proc: subprocess.Popen[bytes], deadline: float) -> _Capture:
        """Read both pipes until EOF, the deadline, or more output than allowed."""
        assert proc.stdout is not None and proc.stderr is not None
        capture = _Capture(bytearray(), bytearray())
        buffers = {proc.stdout.fileno(): capture.stdout, proc.stderr.fileno(): capture.stderr}
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    capture.timed_out = True
                    break
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                    elif _append(buffers[key.fd], chunk, self.max_output_bytes):
                        capture.overflow = True
                if capture.overflow:
                    break
        return capture

    def _result(
        self, capture: _Capture, returncode: int, protections: tuple[str, ...], seconds: float
    ) -> SandboxResult:
        stderr = capture.stderr.decode("utf-8", errors="replace")
        reason = _killed_reason(capture, returncode, stderr)
        return SandboxResult(
            ok=returncode == 0 and reason is None,
            returncode=returncode,
            stdout=capture.stdout.decode("utf-8", errors="replace"),
            stderr=stderr,
            timed_out=capture.timed_out,
            killed_reason=reason,
            seconds=seconds,
            protections=protections,
        )


def _append(buffer: bytearray, chunk: bytes, limit: int) -> bool:
    """Append what fits under ``limit``; True when something had to be dropped."""
    room = limit - len(buffer)
    buffer += chunk[: max(room, 0)]
    return len(chunk) > room


def _wait_exit(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the child to exit *without reaping it*, so its pid still names its process group."""
    if not hasattr(os, "waitid"):
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
            return True
        except subprocess.TimeoutExpired:
            return False
    delay = 0.0005
    while True:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(proc: subprocess.Popen[bytes], capture: _Capture, limit: int) -> None:
    """Keep what is still buffered in the pipes after the kill, without ever blocking."""
    for pipe, buffer in ((proc.stdout, capture.stdout), (proc.stderr, capture.stderr)):
        if pipe is None:
            continue
        os.set_blocking(pipe.fileno(), False)
        try:
            while len(buffer) < limit and (chunk := os.read(pipe.fileno(), 65536)):
                _append(buffer, chunk, limit)
        except BlockingIOError:
            pass
        pipe.close()


def _read_status(fd: int) -> tuple[str, ...]:
    """The guards the child's prelude reported as applied (empty if it died before reporting)."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return ()
    return tuple(name for name in data.decode("ascii", errors="replace").split(",") if name)


_SIGNAL_REASONS = {
    signal.SIGXCPU: "cpu time limit",
    signal.SIGXFSZ: "file size limit",
    signal.SIGKILL: "killed (SIGKILL)",
    signal.SIGSEGV: "crashed (SIGSEGV)",
}


def _killed_reason(capture: _Capture, returncode: int, stderr: str) -> str | None:
    """Why the run was stopped from outside (or hit a limit), or None for an ordinary exit."""
    if capture.timed_out:
        return "timeout"
    if capture.overflow:
        return "output limit"
    if returncode < 0:
        signum = -returncode
        try:
            return _SIGNAL_REASONS.get(signal.Signals(signum), f"signal {signal.Signals(signum).name}")
        except ValueError:
            return f"signal {signum}"
    last_line = stderr.rstrip().rpartition("\n")[2]
    if returncode != 0 and last_line.startswith("MemoryError"):
        return "memory limit"
    return None


def _remove_tree(path: str) -> None:
    """Delete the run folder even if the code made parts of it read-only."""

    def make_writable_and_retry(func: Callable[[str], object], target: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)
