"""Task suites and checkers: real public benchmarks (via iollm.assets), JSONL files, answer extraction."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import iollm.assets as assets
from iollm.paths import catalog
from iollm.paths.catalog import BUILTIN_SUITES, list_suites, load_suite
from iollm.paths.checkers import check, extract_code, extract_number, normalize, parse_number
from iollm.paths.sandbox import Sandbox
from iollm.paths.suites import Suite, SuiteError, Task, read_jsonl, write_jsonl

EXPECTED = {
    "gsm8k": ("numeric", 1319),
    "math500": ("math", 500),
    "math/algebra": ("math", 1187),
    "math/counting_and_probability": ("math", 474),
    "math/geometry": ("math", 479),
    "math/intermediate_algebra": ("math", 903),
    "math/number_theory": ("math", 540),
    "math/prealgebra": ("math", 871),
    "math/precalculus": ("math", 546),
    "mmlu": ("choice", 14_042),
    "mmlu-cloze": ("choice", 14_042),
    "arc-challenge": ("choice", 1172),
    "arc-easy": ("choice", 2376),
    "hellaswag": ("choice", 10_042),
    "piqa": ("choice", 1838),
    "winogrande": ("choice", 1267),
    "boolq": ("choice", 3270),
    "openbookqa": ("choice", 500),
    "csqa": ("choice", 1221),
    "socialiqa": ("choice", 1954),
    "humaneval": ("python_tests", 164),
    "mbpp": ("python_tests", 500),
    "evals/tracking-shuffled-objects": ("exact", 30),
    "evals/logical-counting": ("numeric", 1000),
    "evals/sort-numeric": ("exact", 100),
    "evals/first-letters": ("exact", 100),
    "evals/bigrams": ("numeric", 200),
}
MULTIPLE_CHOICE = [name for name, (checker, _) in EXPECTED.items() if checker == "choice"]


# ---------------------------------------------------------------------------------------------------
# Built-in suites


def test_registry_covers_the_issue() -> None:
    assert set(BUILTIN_SUITES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_suite_loads(name: str) -> None:
    checker, size = EXPECTED[name]
    suite = load_suite(name)
    assert suite.name == name and suite.description and Path(suite.source).is_file()
    assert len(suite) == size
    assert suite.checkers == [checker]
    assert len({t.id for t in suite}) == size, "task ids are unique"
    assert all(t.input.strip() and t.targets for t in suite)
    if name == "humaneval":
        assert size == 164 and suite.tasks[0].id == "HumanEval/0"
        assert all("entry_point" in t.meta and t.meta["prompt"] == t.input for t in suite)
        assert all(t.target.rstrip().endswith(f"check({t.meta['entry_point']})") for t in suite)
    elif name in ("mmlu", "mmlu-cloze"):
        assert suite.tasks[0].id == f"{name}/abstract_algebra/test/0"
    elif name == "mbpp":
        assert suite.tasks[0].id == "mbpp/11"
    else:
        assert suite.tasks[0].id == f"{name}/0"


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_multiple_choice_tasks_serve_both_protocols(name: str) -> None:
    suite = load_suite(name)
    for task in suite.tasks[:50]:
        gold = task.meta["gold"]
        assert task.target == task.choices[gold] and len(task.choices) >= 2
        for letter, choice in zip("ABCDEFGH", task.choices, strict=False):
            assert f"{letter}. {choice}" in task.input
        requests = task.meta["requests"]
        assert len(requests) == len(task.choices)
        assert all(isinstance(c, str) and isinstance(x, str) and x for c, x in requests)


def test_known_items_and_their_answers() -> None:
    gsm8k = load_suite("gsm8k")
    assert gsm8k.tasks[0].input.startswith("Janet\u2019s ducks lay 16 eggs") and gsm8k.tasks[0].target == "18"
    assert len(gsm8k.exemplars) == 8 and gsm8k.exemplars[0].target == "6"
    assert gsm8k.exemplars[0].meta["solution"].endswith("So the answer is 6.")
    math500 = load_suite("math500")
    assert math500.tasks[0].input.startswith("Convert the point $(0,3)$")
    assert math500.tasks[0].target == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert len(math500.exemplars) == 4
    arc = load_suite("arc-challenge").tasks[0]
    assert arc.input.startswith("An astronomer observes that a planet rotates faster")
    assert arc.target == "Planetary days will become shorter." and arc.meta["gold"] == 2
    assert arc.meta["requests"][2] == [
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?\nAnswer:",
        " Planetary days will become shorter.",
    ]
    wino = load_suite("winogrande").tasks[0]
    assert wino.meta["requests"][0] == [
        "Sarah was a much better surgeon than Maria so Sarah",
        " always got the easier cases.",
    ]
    assert wino.target == "Maria"
    mbpp = load_suite("mbpp").tasks[0]
    assert (
        "remove first and last occurrence" in mbpp.input
        and 'assert remove_Occ("hello","l") == "heo"' in mbpp.input
    )
    shuffled = load_suite("evals/tracking-shuffled-objects").tasks[0]
    assert "Alice, Bob, Claire" in shuffled.input


def test_mmlu_subjects_and_their_dev_exemplars() -> None:
    algebra = load_suite("mmlu/abstract_algebra")
    assert len(algebra) == 100 and len(algebra.exemplars) == 5
    assert all(t.meta["subject"] == "abstract_algebra" for t in [*algebra.tasks, *algebra.exemplars])
    assert sum(len(load_suite(f"mmlu/{s}")) for s in assets.MMLU_SUBJECTS) == 14_042
    task = algebra.tasks[0]
    assert task.meta["requests"][0][0].endswith(
        "\nA. "
        + task.choices[0]
        + "\nB. "
        + task.choices[1]
        + "\nC. "
        + task.choices[2]
        + "\nD. "
        + task.choices[3]
        + "\nAnswer:"
    )
    assert [c for _, c in task.meta["requests"]] == [" A", " B", " C", " D"]
    with pytest.raises(SuiteError, match="no MMLU subject 'astrology'"):
        load_suite("mmlu/astrology")
    cloze = load_suite("mmlu-cloze/abstract_algebra").tasks[0]
    assert cloze.meta["requests"][0] == [
        f"The following are questions about abstract algebra.\nQuestion: {cloze.input.split(chr(10) * 2)[0]}\nAnswer:",
        " " + cloze.choices[0],
    ]


def test_math_checker_reads_boxed_latex() -> None:
    task = load_suite("math500").tasks[0]
    assert check(task, "So $r=3$ and $\\theta=\\pi/2$: $\\boxed{\\left(3,\\frac{\\pi}{2}\\right)}$.").passed
    assert check(task, "The answer is \\boxed{(3, \\dfrac{\\pi}{2})}").passed
    assert not check(task, "\\boxed{(3, \\pi)}").passed
    half = _task("\\frac{1}{2}", "math")
    for output in (
        "\\boxed{0.5}",
        "\\boxed{1/2}",
        "\\boxed{\\frac12}",
        "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
    ):
        assert check(half, output).passed, output
    assert not check(half, "one half").passed


def test_list_suites_reports_sizes_without_loading_twice() -> None:
    listed = {row["name"]: row for row in list_suites()}
    assert set(listed) == set(EXPECTED)
    for name, (checker, size) in EXPECTED.items():
        assert listed[name]["checker"] == checker
        assert listed[name]["size"] == size  # the data is already present in the assets cache
        assert listed[name]["description"]


def test_list_suites_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOLLM_ASSETS", str(tmp_path / "empty"))
    monkeypatch.setattr(catalog, "_CACHE", {})

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("list_suites must not fetch anything")

    for fetcher in ("ensure_humaneval", "ensure_benchmark"):
        monkeypatch.setattr(assets, fetcher, no_download)
    rows = list_suites()
    assert len(rows) == len(EXPECTED)
    assert all(row["size"] is None for row in rows)
    assert not (tmp_path / "empty").exists()


def test_unknown_suite_name() -> None:
    with pytest.raises(SuiteError, match="not a built-in suite"):
        load_suite("gsm9k")


# ---------------------------------------------------------------------------------------------------
# Splits


def _suite(n: int, name: str = "toy") -> Suite:
    tasks = [Task(f"{name}/{i}", f"What is {i} plus 1?", str(i + 1), "numeric") for i in range(n)]
    return Suite(name, "toy", tasks, "memory")


def test_split_is_deterministic_disjoint_and_complete() -> None:
    suite = load_suite("evals/logical-counting")
    first, again = suite.split(seed=7), load_suite("evals/logical-counting").split(seed=7)
    assert [t.id for t in first.search] == [t.id for t in again.search]
    assert first.fingerprint == again.fingerprint
    search, heldout = {t.id for t in first.search}, {t.id for t in first.heldout}
    assert not search & heldout
    assert search | heldout == {t.id for t in suite}
    assert len(heldout) == 500
    other = suite.split(seed=8)
    assert other.fingerprint["heldout"] != first.fingerprint["heldout"]
    # suite order is kept inside each split
    order = [t.id for t in suite]
    assert [t.id for t in first.heldout] == [i for i in order if i in heldout]


def test_split_fractions_and_bounds() -> None:
    suite = _suite(100)
    assert len(suite.split(heldout_fraction=0.8).heldout) == 80
    assert len(suite.split(heldout_fraction=0.0).heldout) == 0
    assert len(suite.split(heldout_fraction=1.0).search) == 0
    with pytest.raises(ValueError):
        suite.split(heldout_fraction=1.5)


def test_split_is_stable_when_tasks_are_added_or_reordered() -> None:
    base = _suite(200)
    grown = Suite("toy", "toy", [*base.tasks, Task("toy/new", "x", "1", "numeric")], "memory")
    before, after = base.split(seed=3), grown.split(seed=3)
    moved = {t.id for t in before.heldout} ^ ({t.id for t in after.heldout} - {"toy/new"})
    assert len(moved) <= 1
    shuffled = Suite("toy", "toy", list(reversed(base.tasks)), "memory").split(seed=3)
    assert {t.id for t in shuffled.heldout} == {t.id for t in before.heldout}


def test_max_tasks_never_mixes_splits() -> None:
    suite = _suite(300)
    full = suite.split(seed=1, heldout_fraction=0.5)
    capped = suite.split(seed=1, heldout_fraction=0.5, max_tasks=40)
    assert len(capped.search) + len(capped.heldout) == 40
    assert {t.id for t in capped.search} <= {t.id for t in full.search}
    assert {t.id for t in capped.heldout} <= {t.id for t in full.heldout}


# ---------------------------------------------------------------------------------------------------
# JSONL files


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_suite_loads_with_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"input": "Capital of France?", "target": "Paris"}),
            "",
            json.dumps({"input": "2+2?", "target": ["4", "four"], "checker": "numeric"}),
            json.dumps({"input": "Pick", "target": "b", "checker": "choice", "choices": ["a", "b"]}),
        ],
    )
    suite = load_suite(str(path))
    assert suite.name == "mine" and len(suite) == 3
    assert [t.id for t in suite] == ["mine/0", "mine/1", "mine/2"]
    assert suite.tasks[0].checker == "exact"
    assert suite.tasks[1].target == ("4", "four")
    assert suite.tasks[2].choices == ("a", "b")


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"input": "x", "target": "y"', "Expecting"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"input": "x"}', "missing 'target'"),
        ('{"input": 3, "target": "y"}', "'input' must be a string"),
        ('{"input": "x", "target": "y", "checker": "fuzzy"}', "unknown checker 'fuzzy'"),
        ('{"input": "x", "target": "y", "chekcer": "numeric"}', "unknown key"),
        ('{"input": "x", "target": [], "checker": "exact"}', "non-empty list"),
        ('{"input": "x", "target": "many", "checker": "numeric"}', "not a number"),
        (
            '{"input": "x", "target": "c", "checker": "choice", "choices": ["a", "b"]}',
            "not one of the choices",
        ),
        ('{"input": "x", "target": "c", "checker": "choice"}', "needs 'choices'"),
        ('{"id": "dup", "input": "x", "target": "y"}', "duplicate id 'dup'"),
    ],
)
def test_malformed_line_reports_path_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    good = [json.dumps({"id": "dup", "input": "1+1", "target": "2"}), ""]
    path = _write(tmp_path / "bad.jsonl", [*good, bad_line])
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no tasks"):
        read_jsonl(_write(tmp_path / "empty.jsonl", [""]))
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SuiteError, match="cannot read"):
        read_jsonl(tmp_path / "binary.jsonl")


@pytest.mark.parametrize("name", ["arc-challenge", "humaneval", "gsm8k", "math500"])
def test_write_jsonl_round_trips(tmp_path: Path, name: str) -> None:
    suite = load_suite(name)
    path = write_jsonl(suite, tmp_path / "export.jsonl")
    again = load_suite(str(path))
    assert again.tasks == suite.tasks
    assert [t.meta for t in again] == [t.meta for t in suite]
    assert again.split(seed=5).fingerprint == suite.split(seed=5).fingerprint


# ---------------------------------------------------------------------------------------------------
# Checkers


def _task(target: str | tuple[str, ...], checker: str, choices: tuple[str, ...] = ()) -> Task:
    return Task("t/0", "question", target, checker, choices)


@pytest.mark.parametrize(
    ("output", "target", "passed"),
    [
        ("42", "42", True),
        ("The answer is 42.", "42", True),
        ("Let me think. 40 + 2 = 42.\nAnswer: 42", "42", True),
        ("6 times 7 is 42", "42", True),
        ("answer: 42 (not 41)", "42", True),
        ("The final answer is $1,234.", "1234", True),
        ("It is -7.", "-7", True),
        ("3.0000000001", "3", True),
        ("I count seven objects.", "7", True),
        ("There are twenty-one.", "21", True),
        ("You have 3 instruments: one clarinet, one violin, one flute.", "3", True),
        ("I think 9", ("nine", "9"), True),
        ("nine", ("nine", "9"), True),
        ("\\boxed{12}", "12", True),
        ("The answer is 41.", "42", False),
        ("42 is wrong, it is 43", "42", False),
        ("no idea", "42", False),
        ("", "42", False),
    ],
)
def test_numeric_checker(output: str, target: str | tuple[str, ...], passed: bool) -> None:
    result = check(_task(target, "numeric"), output)
    assert result.passed is passed, result
    assert result.score == (1.0 if passed else 0.0)


def test_number_helpers() -> None:
    assert parse_number("1,000,000") == 1_000_000
    assert parse_number("ninety-nine") == 99
    assert parse_number("apple") is None
    assert extract_number("Answer:\n  17 apples, 3 pears") == "17"
    assert extract_number("x2 and 5") == "5"


@pytest.mark.parametrize(
    ("output", "target", "passed"),
    [
        ("gelatine stick", "gelatine stick", True),
        ("  Gelatine   STICK. ", "gelatine stick", True),
        ("Sorted: gelatine stick", "gelatine stick", True),
        ("The answer is: **gelatine stick**", "gelatine stick", True),
        ("Let me sort these.\ngelatine stick", "gelatine stick", True),
        ('Final answer: "Paris".', "Paris", True),
        ("paris!", ("Paris", "Paris, France"), True),
        ("stick gelatine", "gelatine stick", False),
        ("gelatine, stick", "gelatine stick", False),
        ("gelatine stick extra", "gelatine stick", False),
    ],
)
def test_exact_checker(output: str, target: str | tuple[str, ...], passed: bool) -> None:
    assert check(_task(target, "exact"), output).passed is passed


def test_normalize_rules() -> None:
    assert normalize("  `Hello   World`!! ") == "hello world"
    assert normalize("**Yes.**") == "yes"


CHOICES = (
    "The black book is the leftmost.",
    "The orange book is the leftmost.",
    "The blue book is the leftmost.",
)


@pytest.mark.parametrize(
    ("output", "passed", "extracted"),
    [
        ("(B)", True, CHOICES[1]),
        ("B", True, CHOICES[1]),
        ("b", True, CHOICES[1]),
        ("B) The orange book is the leftmost.", True, CHOICES[1]),
        ("B. because the orange book is left of the others", True, CHOICES[1]),
        ("The answer is (B).", True, CHOICES[1]),
        ("Answer: option B", True, CHOICES[1]),
        ("**(B)**", True, CHOICES[1]),
        ("The orange book is the leftmost.", True, CHOICES[1]),
        ("I reason step by step... so the orange book is the leftmost.", True, CHOICES[1]),
        ("(A)", False, CHOICES[0]),
        ("The answer is (C).", False, CHOICES[2]),
        ("(D)", False, ""),
        ("Either the black book is the leftmost or the orange book is the leftmost.", False, ""),
        ("A black book", False, ""),
    ],
)
def test_choice_checker(output: str, passed: bool, extracted: str) -> None:
    result = check(_task(CHOICES[1], "choice", CHOICES), output)
    assert result.passed is passed, result
    assert result.extracted == extracted


def test_choice_prefers_the_longest_option_inside_the_output() -> None:
    task = _task("15", "choice", ("5", "15", "25"))
    assert check(task, "The answer is 15").passed
    assert check(task, "(C)").extracted == "25"


def test_choice_checker_on_real_tasks() -> None:
    task = load_suite("arc-easy").tasks[0]
    letter = "ABCDEF"[task.choices.index(task.target)]
    assert check(task, f"({letter})").passed and check(task, f"{letter}. {task.target}").passed
    assert check(task, f"The date is {task.target}.").passed
    wrong = next(c for c in task.choices if c != task.target)
    assert not check(task, wrong).passed


def test_unknown_checker_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown checker"):
        check(_task("x", "fuzzy"), "x")


# ---------------------------------------------------------------------------------------------------
# python_tests (HumanEval)


@pytest.fixture(scope="module")
def humaneval_rows() -> dict[str, dict]:
    with gzip.open(assets.ensure_humaneval(progress=False), "rt", encoding="utf-8") as f:
        return {row["task_id"]: row for row in map(json.loads, f)}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=10)


def test_humaneval_canonical_solutions_pass(humaneval_rows: dict[str, dict], sandbox: Sandbox) -> None:
    for task in load_suite("humaneval").tasks[:10]:
        solution = humaneval_rows[task.id]["canonical_solution"]
        result = check(task, solution, sandbox)  # completion style: continues the prompt
        assert result.passed and result.score == 1.0, (task.id, result.detail)


def test_humaneval_full_function_in_a_fence_passes(humaneval_rows: dict[str, dict], sandbox: Sandbox) -> None:
    task = load_suite("humaneval").tasks[2]
    row = humaneval_rows[task.id]
    output = f"Here you go:\n```python\n{row['prompt']}{row['canonical_solution']}```\nHope it helps."
    assert check(task, output, sandbox).passed


@pytest.mark.parametrize(
    "output",
    [
        "",
        "   ",
        "    return None\n",
        "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```",
    ],
)
def test_humaneval_wrong_or_empty_completion_fails(output: str, sandbox: Sandbox) -> None:
    task = load_suite("humaneval").tasks[0]
    result = check(task, output, sandbox)
    assert not result.passed and result.score == 0.0


def test_python_tests_hostile_code_fails_quickly(tmp_path: Path) -> None:
    task = Task("t/0", "write f", "assert f() == 1\n", "python_tests", meta={"entry_point": "f"})
    quick = Sandbox(timeout_s=1)
    looping = check(task, "def f():\n    while True:\n        pass\n", quick)
    assert not looping.passed and "timeout" in looping.detail
    marker = tmp_path / "pwned"
    escaping = check(task, f"def f():\n    open({str(marker)!r}, 'w').write('x')\n    return 1\n", quick)
    assert not escaping.passed and not marker.exists()
    assert check(task, "def f():\n    return 1\n", quick).passed


def test_extract_code_rules() -> None:
    fenced = "text\n```python\nx = 1\n```\nmore\n```py\ny = 2\n```"
    assert extract_code(fenced) == "x = 1\n\n\ny = 2\n"
    two = "```python\nimport math\n```\n```python\ndef f():\n    return 1\n```"
    assert extract_code(two, "f") == "def f():\n    return 1\n"
    assert extract_code("```python\ndef f(): pass\n") == "def f(): pass\n"  # unclosed fence
    assert extract_code("    return 1\n") == "    return 1\n"
    # Qwen2.5-Coder-0.5B (Q4) writes the language on the line after the fence
    assert (
        extract_code("```\npython\ndef add(a, b):\n    return a + b\n```", "add")
        == "def add(a, b):\n    return a + b\n"
    )


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_reference_solutions_pass_their_checker(name: str) -> None:
    suite = load_suite(name)
    failing = [t.id for t in suite.tasks if not check(t, t.meta["solution"]).passed]
    assert failing == []


def test_mbpp_reference_code_passes_and_a_wrong_one_fails(sandbox: Sandbox) -> None:
    rows = {f"mbpp/{r['doc']['task_id']}": r["doc"] for r in assets.read_benchmark("mbpp")}
    suite = load_suite("mbpp")
    for task in suite.tasks[:5]:
        fenced = f"Here you go:\n```python\n{rows[task.id]['code']}\n```"
        assert check(task, fenced, sandbox).passed, task.id
    assert not check(suite.tasks[0], "```python\ndef remove_Occ(s, ch):\n    return s\n```", sandbox).passed
