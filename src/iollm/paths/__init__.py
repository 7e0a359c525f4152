"""Agent optimal path module: task suites and checkers, a sandbox for model-written code, workflows of
models in roles, and the search for the best quality/cost paths."""

from .checkers import CheckResult, check, check_all
from .sandbox import Sandbox, SandboxResult
from .suites import Suite, SuiteError, SuiteSplit, Task, list_suites, load_suite, read_jsonl, write_jsonl

__all__ = [
    "CheckResult",
    "Sandbox",
    "SandboxResult",
    "Suite",
    "SuiteError",
    "SuiteSplit",
    "Task",
    "check",
    "check_all",
    "list_suites",
    "load_suite",
    "read_jsonl",
    "write_jsonl",
]
