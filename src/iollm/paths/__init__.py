"""Agent optimal path module: task suites and checkers, a sandbox for model-written code, workflows of
models in roles, and the search for the best quality/cost paths."""

from .call_plan import projected_calls
from .candidate import Candidate
from .catalog import BUILTIN_SUITES, list_suites, load_suite
from .checkers import CheckResult, check, check_all
from .evaluation import SearchError, evaluate_unit, evaluate_unit_async
from .leaderboard import list_breakthroughs
from .sandbox import Sandbox, SandboxResult
from .search import Search, SearchConfig
from .space import build_space
from .suites import Suite, SuiteError, SuiteSplit, read_jsonl, write_jsonl
from .task import Task

__all__ = [
    "BUILTIN_SUITES",
    "Candidate",
    "CheckResult",
    "Sandbox",
    "SandboxResult",
    "Search",
    "SearchConfig",
    "SearchError",
    "Suite",
    "SuiteError",
    "SuiteSplit",
    "Task",
    "build_space",
    "check",
    "check_all",
    "evaluate_unit",
    "evaluate_unit_async",
    "list_breakthroughs",
    "list_suites",
    "load_suite",
    "projected_calls",
    "read_jsonl",
    "write_jsonl",
]
