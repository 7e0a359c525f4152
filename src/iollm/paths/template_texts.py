"""The words of the space's templates: prompts per style and role, stop strings, completion budgets and
the sandbox programs that run and check a model's code.

Prompts are written for tiny models (SmolLM2-135M, Gemma-3-270M base without a chat template,
Qwen2.5-Coder-0.5B): short, one instruction, the answer format spelled out.
"""

from __future__ import annotations

from .roles import STEP_BY_STEP

# Every call asks for its tokens' log-probabilities: a single model's evaluation then carries its
# confidence, so a logprob cascade's thresholds fit on the search split without a call more.
LOGPROBS = {"logprobs": True}
SAMPLE_TEMPERATURE = 0.7  # the executor's default for votes and agreement samples
VOTE_KS = (3, 5)
MOA_SAMPLES = 3

# Completion budgets: small enough for CPU inference, long enough for each role's job.
MAX_TOKENS = {
    "direct": 32,
    "step": 128,
    "plan": 96,
    "critique": 64,
    "program": 128,
    "aggregate": 96,
    "code": 320,
    "tests": 128,
}

# Base models without a chat template run on a "User:/Assistant:" transcript and tend to write both sides;
# a short direct answer also ends at its first blank line.
STOP = ["\nUser:", "\nAssistant:"]
DIRECT_STOP = [*STOP, "\n\n"]

TEXT_STYLES = {
    "direct": "{{input}}\nReply with only the final answer.",
    "step": STEP_BY_STEP,
}
CODE_STYLES = {
    "direct": "Complete this Python function. Reply with the whole function in a ```python block.\n\n{{input}}",
    "step": (
        "Complete this Python function. First say in one sentence how it works, then give the whole "
        "function in a ```python block.\n\n{{input}}"
    ),
}

PLAN_SOLVE = (
    "Task: {{input}}\n\nPlan:\n{{plan}}\n\n"
    "Follow the plan. Give the final answer on the last line as 'Answer: ...'."
)
CODE_PLAN_SOLVE = (
    "{{input}}\n\nPlan:\n{{plan}}\n\nFollowing the plan, complete the function. "
    "Reply with the whole function in a ```python block."
)
PROGRAM = (
    "Write a short Python program that computes the answer to this question and prints it.\n\n"
    "Question: {{input}}\n\nReply with only the code in a ```python block."
)
CODE_REFINE = (
    "{{input}}\n\nThis attempt failed its checks:\n{{solve}}\n\nCheck output:\n{{check}}\n\n"
    "Write a corrected version. Reply with the whole function in a ```python block."
)

# The model's program sits in an inert raw string at the end of the sandboxed file; this runner reads it
# back from the file, so a syntax error in it is a clean failure, and a bare last expression is printed.
_REGION_START = "\n# --- program ---\nr'''\n"
_REGION_END = "\n'''\n# --- end ---\n"
_READ_REGION = (
    "_text = open(__file__, encoding='utf-8').read()\n"
    "_marker = '\\n# --- program ---\\nr' + \"'''\" + '\\n'\n"
    "_start = _text.index(_marker) + len(_marker)\n"
    "_program = _text[_start:_text.rindex('\\n' + \"'''\" + '\\n# --- end ---')]\n"
)
PROGRAM_RUNNER = (
    "import ast\n" + _READ_REGION + "_tree = ast.parse(_program)\n"
    "if _tree.body and isinstance(_tree.body[-1], ast.Expr):\n"
    "    _last = _tree.body[-1].value\n"
    "    if not (isinstance(_last, ast.Call) and getattr(_last.func, 'id', '') == 'print'):\n"
    "        _tree.body[-1] = ast.Expr(ast.Call(ast.Name('print', ast.Load()), [_last], []))\n"
    "        ast.fix_missing_locations(_tree)\n"
    "exec(compile(_tree, 'program.py', 'exec'), {'__name__': '__main__'})\n"
    "raise SystemExit(0)\n" + _REGION_START + "{{program}}" + _REGION_END
)
# Runs a code answer and the examples in its docstrings; prints PASS or FAIL with the reason, never fails.
CODE_CHECKER = (
    "import doctest, types\n" + _READ_REGION + "def _verdict():\n"
    "    try:\n"
    "        code = compile(_program, 'solution.py', 'exec')\n"
    "    except SyntaxError as exc:\n"
    "        return f'FAIL: SyntaxError: {exc.msg} (line {exc.lineno})'\n"
    "    space = {'__name__': 'solution'}\n"
    "    try:\n"
    "        exec(code, space)\n"
    "    except BaseException as exc:\n"
    "        return f'FAIL: {type(exc).__name__}: {exc}'\n"
    "    failures = []\n"
    "    for name, obj in list(space.items()):\n"
    "        if isinstance(obj, types.FunctionType) and obj.__doc__ and '>>>' in obj.__doc__:\n"
    "            runner, out = doctest.DocTestRunner(verbose=False), []\n"
    "            test = doctest.DocTestParser().get_doctest(obj.__doc__, space, name, 'solution.py', 0)\n"
    "            runner.run(test, out=out.append)\n"
    "            if runner.failures:\n"
    "                failures.append(''.join(out)[-400:])\n"
    "    return 'FAIL: ' + '\\n'.join(failures) if failures else 'PASS'\n"
    "print(_verdict())\n"
    "raise SystemExit(0)\n" + _REGION_START + "{{solve}}" + _REGION_END
)
# Appended to a cascade answer's code: fails (and escalates) when a docstring example does not hold.
CASCADE_CODE_TEST = (
    "import doctest as _doctest, types as _types\n"
    "for _name, _obj in list(globals().items()):\n"
    "    if isinstance(_obj, _types.FunctionType) and _obj.__doc__ and '>>>' in _obj.__doc__:\n"
    "        _runner = _doctest.DocTestRunner(verbose=False)\n"
    "        _test = _doctest.DocTestParser().get_doctest(_obj.__doc__, globals(), _name, 'solution.py', 0)\n"
    "        _runner.run(_test, out=lambda _s: None)\n"
    "        if _runner.failures:\n"
    "            raise SystemExit(1)\n"
)
