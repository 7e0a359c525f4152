"""Prompts and sandbox code of the verifier-guided templates (issue 17, item 2).

``pot-check`` (text suites): a program-of-thought answer and a chain-of-thought answer of the same model
are compared in the sandbox (``COMPARE``); it prints the answer when they agree and nothing when they
disagree, so a route can send the task on.

``selftest-bon`` (code suites): the model samples a few solutions and writes ``assert`` tests from the task;
``SELFTEST_PICK`` runs every candidate against those asserts plus the docstring examples of the task and
prints the candidate that passes the most (ties: the first).

Model outputs reach the sandbox the way ``space.PROGRAM_RUNNER`` passes them: each sits in an inert raw
string region at the end of the file, read back from the file at run time, so nothing a model writes is
ever executed by accident (a model output containing three single quotes in a row breaks the file, as it
does for the other checkers; the graph then falls back, see the templates).
"""

from __future__ import annotations

SELFTEST_SAMPLES = 3
SELFTEST_SECONDS = 2.0  # per candidate run and per test, inside the sandbox's own timeout

SELFTEST_TESTS = (
    "{{input}}\n\nWrite 3 to 5 Python assert statements that test this function on small inputs. "
    "Reply with only the assert lines, one per line."
)


def region(name: str, variable: str) -> str:
    """An inert raw-string region holding ``{{variable}}``, read back at run time by ``_read(name)``."""
    return f"\n# --- {name} ---\nr'''\n{{{{{variable}}}}}\n'''\n# --- end {name} ---\n"


# Reads a region back from the file; the markers are assembled at run time so the reader's own text never
# contains them.
_READER = (
    "_TEXT = open(__file__, encoding='utf-8').read()\n"
    "def _read(name):\n"
    "    start = '\\n# --- ' + name + ' ---\\nr' + \"'''\" + '\\n'\n"
    "    end = '\\n' + \"'''\" + '\\n# --- end ' + name + ' ---'\n"
    "    first = _TEXT.index(start) + len(start)\n"
    "    return _TEXT[first:_TEXT.index(end, first)]\n"
)

# Final answers, self-contained (the sandbox imports nothing from iollm): the text after the last
# 'Answer:' (else the last \boxed{}, else the last line); numbers compared numerically, text after
# normalisation.
_ANSWERS = r"""
import re, unicodedata

_NUMBER = re.compile(r'(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+')


def _region_of(text):
    found = re.findall(r'answer\s*(?:is)?\s*[:=]\s*(.+)', text, flags=re.IGNORECASE)
    if found:
        return found[-1].strip()
    boxed = re.findall(r'\\boxed\{([^{}]*)\}', text)
    if boxed:
        return boxed[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ''


def _number(text):
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[0].replace(',', ''))
    except ValueError:
        return None


def _normal(text):
    text = unicodedata.normalize('NFKC', text).strip().strip('*`"\'$ ')
    return ' '.join(text.lower().split()).rstrip('.,;:!? ')


def _shown(value):
    return str(int(value)) if abs(value) < 1e15 and value == int(value) else repr(value)
"""

# pot-check: prints the agreed answer, or nothing (disagreement, or a program that failed or printed nothing).
COMPARE = (
    _READER
    + _ANSWERS
    + r"""
def _verdict():
    program = [line.strip() for line in _read('run').splitlines() if line.strip()]
    reasoned = _region_of(_read('step'))
    if not program or not reasoned:
        return ''
    printed = _region_of(program[-1])
    a, b = _number(printed), _number(reasoned)
    if a is not None and b is not None:
        if abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b)):
            return _shown(a)
        return ''
    if _normal(printed) and _normal(printed) == _normal(reasoned):
        return reasoned
    return ''


print(_verdict())
raise SystemExit(0)
"""
    + region("run", "run")
    + region("step", "step")
)


def _candidates_regions(n: int) -> str:
    return "".join(region(f"cand{i + 1}", f"cand{i + 1}") for i in range(n))


# selftest-bon: scores each candidate (asserts passed + docstring examples passed, each run under a timer)
# and prints the best one in a fenced block, then its score line (outside the block, so not code).
SELFTEST_PICK = (
    "import ast, doctest, io, signal, sys\n"
    + _READER
    + f"_N, _LIMIT = {SELFTEST_SAMPLES}, {SELFTEST_SECONDS}\n"
    + r"""

class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


signal.signal(signal.SIGALRM, _alarm)


def _limited(run):
    # a repeating timer, so code that swallows the first interrupt is interrupted again
    signal.setitimer(signal.ITIMER_REAL, _LIMIT, 0.05)
    try:
        return run()
    except BaseException:
        return False
    finally:
        while True:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except _Timeout:
                continue


def _asserts(text):
    # every top-level assert; when the text does not parse, the assert lines that do; else none
    try:
        statements = ast.parse(text).body
    except SyntaxError:
        statements = []
        for line in text.splitlines():
            if line.strip().startswith('assert'):
                try:
                    statements += ast.parse(line.strip()).body
                except SyntaxError:
                    pass
    found = []
    for statement in statements:
        if isinstance(statement, ast.Assert):
            try:
                found.append(compile(ast.Module([statement], []), 'tests.py', 'exec'))
            except (SyntaxError, ValueError, TypeError):
                pass
    return found


def _examples(text):
    # the examples in the docstrings of a source (a closing quote line is not part of an example's output)
    try:
        tree = ast.parse(text)
        kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        docs = [ast.get_docstring(n, clean=False) for n in ast.walk(tree) if isinstance(n, kinds)]
    except (SyntaxError, ValueError):
        quotes = ('"' * 3, "'" * 3)
        docs = ['\n'.join(line for line in text.splitlines() if line.strip() not in quotes)]
    found = []
    for doc in docs:
        try:
            found += doctest.DocTestParser().get_examples(doc or '')
        except ValueError:
            pass
    return found


def _load(code, prompt):
    # the candidate alone, else appended to the task's prompt (a reply with the body only)
    for source in (code, prompt.rstrip('\n') + '\n' + code):
        try:
            compiled = compile(source, 'solution.py', 'exec')
        except (SyntaxError, ValueError):
            continue
        space = {'__name__': 'solution'}
        if _limited(lambda: exec(compiled, space) or True):
            return space
        return None
    return None


def _passes_example(example, space):
    runner = doctest.DocTestRunner(verbose=False)
    test = doctest.DocTest([example], dict(space), 'example', 'solution.py', 0, None)
    runner.run(test, out=lambda _s: None, clear_globs=False)
    return runner.failures == 0


def _score(space, asserts, examples):
    if space is None:
        return 0
    score = 0
    for test in asserts:
        score += bool(_limited(lambda: exec(test, dict(space)) or True))
    for example in examples:
        score += bool(_limited(lambda: _passes_example(example, space)))
    return score


def _pick():
    prompt = _read('input')
    codes = [_read(f'cand{i + 1}') for i in range(_N)]
    asserts = _asserts(_read('tests'))
    examples = _examples(prompt)
    if not examples:  # no examples in the task: those in the candidates' docstrings, once each
        seen = {}
        for code in codes:
            for example in _examples(code):
                seen.setdefault((example.source, example.want), example)
        examples = list(seen.values())
    real = sys.stdout
    sys.stdout = io.StringIO()  # candidates' own prints must not become the answer
    try:
        scores = [_score(_load(code, prompt), asserts, examples) for code in codes]
    finally:
        sys.stdout = real
    best = max(range(_N), key=lambda i: (scores[i], -i))
    print('```python\n' + codes[best].strip('\n') + '\n```')
    print(f'# selftest-bon: scores {scores} over {len(asserts)} asserts and {len(examples)} examples;'
          f' candidate {best + 1}')


_pick()
raise SystemExit(0)
"""
    + region("input", "input")
    + _candidates_regions(SELFTEST_SAMPLES)
    + region("tests", "tests")
)
