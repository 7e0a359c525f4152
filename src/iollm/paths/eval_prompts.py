"""The requests ``iollm eval`` sends for one task: the standard protocols of lm-evaluation-harness.

- ``loglikelihood`` (multiple choice): one ``/v1/completions`` call per option with ``echo`` and
  ``logprobs`` and nothing generated; the option whose continuation is likeliest wins (``acc``), also
  per byte of continuation (``acc_norm``). Few-shot examples precede the context.
- ``generate``: the model answers and the suite's checker scores the answer. ``api="chat"`` sends
  messages (few-shot examples as earlier turns, the harness's ``--fewshot_as_multiturn``), for instruct
  models; ``api="completion"`` sends one few-shot prompt with stop sequences, for base models.

Prompts follow the published setups: GSM8K's 8 chain-of-thought examples ("Question:/Answer:"), Minerva's
MATH prompt ("Problem:/Solution:", answer boxed), HumanEval and MBPP as EvalPlus asks instruct models
("a self-contained Python script ... in a markdown code block") and as Codex completes base models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .suites import Suite
from .task import Task

__all__ = ["GenerateRequest", "LoglikelihoodRequest", "build_generate", "build_loglikelihood", "fewshot_for"]

_EVALPLUS = "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
_CODEX_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """One option of a multiple-choice task: score ``continuation`` after ``context``."""

    context: str
    continuation: str


@dataclass(frozen=True)
class GenerateRequest:
    """A chat (``messages``) or completion (``prompt``) request with its generation settings."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    stop: list[str] = field(default_factory=list)
    max_tokens: int = 512
    # text the checker sees before the generated text (a completion continues its prompt)
    prefix: str = ""

    def body(self, model: str) -> dict[str, Any]:
        common = {"model": model, "max_tokens": self.max_tokens, "temperature": 0.0, "seed": 0}
        if self.stop:
            common["stop"] = self.stop[:4]  # the OpenAI API takes at most 4 stop sequences
        if self.messages is not None:
            return {**common, "messages": self.messages}
        return {**common, "prompt": self.prompt}


def fewshot_for(suite: Suite, task: Task, shots: int) -> list[Task]:
    """``shots`` demonstrations for ``task``: the suite's published exemplars (same MMLU subject), else
    other items of the suite in a fixed order that depends on the task id, never the task itself."""
    if shots <= 0:
        return []
    pool = suite.exemplars
    subject = task.meta.get("subject")
    if subject is not None:
        pool = [e for e in pool if e.meta.get("subject") == subject]
    if len(pool) >= shots:
        return list(pool[:shots])
    others = sorted(
        (t for t in suite.tasks if t.id != task.id),
        key=lambda t: hashlib.sha256(f"{task.id}\x00{t.id}".encode()).digest(),
    )
    return [*pool, *others[: shots - len(pool)]]


# ---------------------------------------------------------------------------------------------------
# Log-likelihood (multiple choice)


def _solved_context(example: Task) -> str:
    """A demonstration: the example's scored context followed by its right continuation."""
    context, continuation = example.meta["requests"][example.meta["gold"]]
    return context + continuation


def build_loglikelihood(suite: Suite, task: Task, shots: int) -> list[LoglikelihoodRequest]:
    """One request per option; raises ValueError for a task that has no options to score."""
    requests = task.meta.get("requests")
    if not requests:
        raise ValueError(f"{suite.name}: task {task.id} is not multiple choice; use --protocol generate")
    demos = "".join(_solved_context(e) + "\n\n" for e in fewshot_for(suite, task, shots))
    header = str(task.meta.get("header") or "")  # e.g. the harness's MMLU description line
    return [
        LoglikelihoodRequest(header + demos + context, continuation) for context, continuation in requests
    ]


# ---------------------------------------------------------------------------------------------------
# Generation


def _question_turn(suite: Suite, task: Task) -> str:
    """What the user says for one task in chat form."""
    if task.checker == "numeric" and suite.name == "gsm8k":
        return f'{task.input}\nSolve it step by step, and end with "The answer is N."'
    if task.checker == "math":
        return f"{task.input}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
    if task.checker == "python_tests":
        if "entry_point" in task.meta:  # HumanEval: the function to complete
            return f"{_EVALPLUS}\n```\n{task.input.strip()}\n```"
        tests = task.target.strip().splitlines() if isinstance(task.target, str) else list(task.target)
        return f"{_EVALPLUS}\n```\n{task.meta.get('text', task.input)}\n{tests[-1] if tests else ''}\n```"
    return task.input


def _answer_turn(example: Task) -> str:
    """A demonstration's answer in chat form."""
    solution = example.meta.get("solution")
    if example.checker == "math" and solution:
        return (
            solution
            if "\\boxed" in solution
            else f"{solution}\nThe final answer is $\\boxed{{{example.target}}}$."
        )
    if solution:
        return str(solution)
    if example.checker == "choice":
        return "ABCDEFGHIJ"[example.meta["gold"]]
    return str(example.targets[0])


def _chat(suite: Suite, task: Task, shots: int, max_tokens: int) -> GenerateRequest:
    messages: list[dict[str, str]] = []
    for example in fewshot_for(suite, task, shots):
        messages.append({"role": "user", "content": _question_turn(suite, example)})
        messages.append({"role": "assistant", "content": _answer_turn(example)})
    messages.append({"role": "user", "content": _question_turn(suite, task)})
    return GenerateRequest(messages=messages, max_tokens=max_tokens)


def _completion(suite: Suite, task: Task, shots: int, max_tokens: int) -> GenerateRequest:
    demos = fewshot_for(suite, task, shots)
    if task.checker == "python_tests":
        if "entry_point" in task.meta:  # Codex-style HumanEval: continue the function body
            return GenerateRequest(prompt=task.input, stop=_CODEX_STOPS, max_tokens=max_tokens, prefix="")
        return GenerateRequest(prompt=f"{task.input}\n```python\n", stop=["\n```"], max_tokens=max_tokens)
    if task.checker == "math":
        shots_text = "".join(f"Problem:\n{e.input}\n\nSolution:\n{_answer_turn(e)}\n\n" for e in demos)
        prompt = f"{shots_text}Problem:\n{task.input}\n\nSolution:"
        return GenerateRequest(prompt=prompt, stop=["\n\nProblem:", "Problem:"], max_tokens=max_tokens)
    if task.checker == "choice":
        letters = "ABCDEFGHIJ"
        shots_text = "".join(f"{e.input}\nAnswer: {letters[e.meta['gold']]}\n\n" for e in demos)
        return GenerateRequest(
            prompt=f"{shots_text}{task.input}\nAnswer:", stop=["\n"], max_tokens=max_tokens
        )
    shots_text = "".join(f"Question: {e.input}\nAnswer: {_answer_turn(e)}\n\n" for e in demos)
    return GenerateRequest(
        prompt=f"{shots_text}Question: {task.input}\nAnswer:",
        stop=["\n\nQuestion:", "Question:", "\n\n\n"],
        max_tokens=max_tokens,
    )


def build_generate(suite: Suite, task: Task, shots: int, api: str, max_tokens: int) -> GenerateRequest:
    """The generation request for ``task`` through the chat or the completion API."""
    if api == "chat":
        return _chat(suite, task, shots, max_tokens)
    if api == "completion":
        return _completion(suite, task, shots, max_tokens)
    raise ValueError(f"unknown api {api!r}; expected chat or completion")
