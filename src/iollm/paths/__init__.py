"""Agent optimal path module: task suites and checkers, a sandbox for model-written code, workflows of
models in roles, and the search for the best quality/cost paths."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "projected_calls": "call_plan",
        "Candidate": "candidate",
        "BUILTIN_SUITES": "catalog",
        "list_suites": "catalog",
        "load_suite": "catalog",
        "CheckResult": "checkers",
        "check": "checkers",
        "check_all": "checkers",
        "SearchError": "evaluation",
        "evaluate_unit": "evaluation",
        "evaluate_unit_async": "evaluation",
        "list_breakthroughs": "leaderboard",
        "Sandbox": "sandbox",
        "SandboxResult": "sandbox",
        "Search": "search",
        "SearchConfig": "search",
        "build_space": "space",
        "Suite": "suites",
        "SuiteError": "suites",
        "SuiteSplit": "suites",
        "read_jsonl": "suites",
        "write_jsonl": "suites",
        "Task": "task",
    },
)
