"""``iollm eval``: prompts, scoring on fixed outputs, the result cache, the model card, and a real node."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from iollm.paths.catalog import load_suite
from iollm.paths.eval_card import card_with_result
from iollm.paths.eval_prompts import build_generate, build_loglikelihood, fewshot_for
from iollm.paths.eval_run import (
    EvalConfig,
    ResultCache,
    choose_option,
    continuation_logprob,
    run_eval,
    sample,
)
from iollm.paths.suites import Suite, Task

# ---------------------------------------------------------------------------------------------------
# Prompts


def test_loglikelihood_requests_follow_the_harness() -> None:
    suite = load_suite("arc-challenge")
    task = suite.tasks[0]
    zero = build_loglikelihood(suite, task, 0)
    assert [r.continuation for r in zero] == [" " + c for c in task.choices]
    assert zero[0].context == "Question: " + task.meta["requests"][0][0].removeprefix("Question: ")
    three = build_loglikelihood(suite, task, 3)
    demos = fewshot_for(suite, task, 3)
    assert len(demos) == 3 and task not in demos
    for demo in demos:
        solved = demo.meta["requests"][demo.meta["gold"]]
        assert solved[0] + solved[1] + "\n\n" in three[0].context
    assert three[0].context.endswith(zero[0].context)


def test_mmlu_prompt_has_the_subject_line_and_dev_examples() -> None:
    suite = load_suite("mmlu/anatomy")
    task = suite.tasks[0]
    requests = build_loglikelihood(suite, task, 5)
    context = requests[0].context
    assert context.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert context.count("\nAnswer:") == 6, "5 dev examples and the question"
    assert [r.continuation for r in requests] == [" A", " B", " C", " D"]
    assert all(e in suite.exemplars for e in fewshot_for(suite, task, 5))


def test_generate_chat_puts_examples_in_earlier_turns() -> None:
    suite = load_suite("gsm8k")
    request = build_generate(suite, suite.tasks[0], 5, "chat", 512)
    assert request.messages is not None and len(request.messages) == 11
    assert request.messages[1]["content"].endswith("So the answer is 6.")
    assert request.messages[-1]["content"].startswith(suite.tasks[0].input)
    completion = build_generate(suite, suite.tasks[0], 2, "completion", 256)
    assert completion.prompt is not None and completion.prompt.count("Question: ") == 3
    assert completion.prompt.endswith("\nAnswer:") and "Question:" in completion.stop


def test_code_prompts() -> None:
    humaneval = load_suite("humaneval")
    chat = build_generate(humaneval, humaneval.tasks[0], 0, "chat", 512)
    assert chat.messages is not None and "self-contained Python script" in chat.messages[0]["content"]
    codex = build_generate(humaneval, humaneval.tasks[0], 0, "completion", 512)
    assert codex.prompt == humaneval.tasks[0].input and "\ndef " in codex.stop
    mbpp = load_suite("mbpp")
    turn = build_generate(mbpp, mbpp.tasks[0], 0, "chat", 512).messages[0]["content"]  # type: ignore[index]
    assert "remove first and last occurrence" in turn and "assert remove_Occ" in turn


def test_sample_is_fixed_and_spread() -> None:
    suite = load_suite("mmlu")
    first, again = sample(suite, 200), sample(suite, 200)
    assert [t.id for t in first] == [t.id for t in again]
    assert len({t.meta["subject"] for t in first}) > 30
    assert sample(suite, None) == suite.tasks


# ---------------------------------------------------------------------------------------------------
# Scoring on fixed outputs


def test_continuation_logprob_counts_only_the_continuation() -> None:
    logprobs = {
        "tokens": ["Question", ":", " sky", "?", "\nAnswer", ":", " blue", " sky"],
        "token_logprobs": [None, -1.0, -2.0, -0.5, -0.1, -0.2, -1.5, -0.25],
        "text_offset": [0, 8, 9, 13, 14, 21, 22, 27],
    }
    total, count = continuation_logprob(logprobs, len("Question: sky?\nAnswer:"))
    assert (total, count) == (-1.75, 2)
    with pytest.raises(ValueError, match="no tokens of its own"):
        continuation_logprob(logprobs, 100)


def test_acc_and_acc_norm_differ_as_in_the_harness() -> None:
    # a short option with a low total vs a long option with a lower total but a higher per-byte score
    sums, options = [-4.0, -6.0], [" no", " absolutely yes indeed"]
    assert choose_option(sums, options) == (0, 1)
    assert choose_option([-1.0, -3.0], [" a", " b"]) == (0, 0)


class FixedAnswers:
    """A node stand-in that answers every chat call with the text a table gives for its question."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls = 0

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        assert path == "/v1/chat/completions"
        self.calls += 1
        question = body["messages"][-1]["content"]
        text = next(a for q, a in self.answers.items() if question.startswith(q))
        usage = {"prompt_tokens": 10, "completion_tokens": 3}
        return {"choices": [{"message": {"content": text}}], "usage": usage}


def test_run_eval_scores_fixed_outputs_with_an_interval_and_caches_them(tmp_path: Path) -> None:
    tasks = [Task(f"toy/{i}", f"What is {i} plus {i}?", str(2 * i), "numeric") for i in range(10)]
    suite = Suite("toy", "toy", tasks, "memory")
    answers = {
        t.input: (f"The answer is {t.target}." if i < 7 else "I do not know") for i, t in enumerate(tasks)
    }
    transport = FixedAnswers(answers)
    cache = ResultCache(tmp_path / "results.sqlite")
    config = EvalConfig(model="m", suite="toy", revision="r1")
    report = run_eval(transport, config, suite, cache)
    assert (report.n, report.score, report.cached) == (10, 0.7, 0)
    assert report.ci_low < 0.7 < report.ci_high and math.isclose(report.ci_low, 0.3968, abs_tol=1e-3)
    assert report.completion_tokens == 30 and transport.calls == 10
    again = run_eval(transport, config, suite, cache)
    assert (again.score, again.cached, transport.calls) == (0.7, 10, 10), "nothing asked twice"
    other_revision = run_eval(transport, EvalConfig(model="m", suite="toy", revision="r2"), suite, cache)
    assert other_revision.cached == 0 and transport.calls == 20, "a new model revision is scored anew"


def test_cached_answers_are_scored_again_with_todays_checker(tmp_path: Path) -> None:
    from iollm.paths.eval_run import ItemResult, suite_fingerprint

    task = Task("toy/0", "What is 2 plus 2?", "4", "numeric")
    suite = Suite("toy", "toy", [task], "memory")
    config = EvalConfig(model="m", suite="toy", revision="r1")
    cache = ResultCache(tmp_path / "results.sqlite")
    # a verdict an older, buggier checker left behind, with the answer it was given
    cache.put(
        config.cache_key(suite_fingerprint(suite)),
        ItemResult("toy/0", False, "", "old", output="The answer is 4."),
    )
    transport = FixedAnswers({})
    report = run_eval(transport, config, suite, cache)
    assert (report.score, report.cached, transport.calls) == (1.0, 1, 0)


# ---------------------------------------------------------------------------------------------------
# Model card


def _report(suite: str, score: float, protocol: str = "generate", norm: float | None = None):
    from iollm.paths.eval_run import EvalReport

    return EvalReport(
        "alice/m",
        "r" * 64,
        "c" * 40,
        suite,
        protocol,
        "chat",
        0,
        100,
        score,
        score - 0.1,
        score + 0.1,
        norm,
        0,
        1.0,
        0,
        0,
    )


def test_card_results_read_back_with_huggingface_hub() -> None:
    text = card_with_result(
        "---\nlicense: mit\n---\n\n# My model\n\nIt is small.\n", "alice/m", _report("gsm8k", 0.25)
    )
    text = card_with_result(text, "alice/m", _report("arc-easy", 0.5, "loglikelihood", 0.55))
    text = card_with_result(text, "alice/m", _report("gsm8k", 0.3))  # replaces the first gsm8k result
    card = ModelCard(text)
    assert card.data.license == "mit" and "It is small." in card.text
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("gsm8k", "accuracy"): 30.0,
        ("arc-easy", "accuracy"): 50.0,
        ("arc-easy", "acc_norm"): 55.0,
    }
    assert {r.dataset_name for r in card.data.eval_results} == {"GSM8K", "ARC-Easy"}


def test_card_for_a_model_without_readme() -> None:
    card = ModelCard(card_with_result(None, "alice/m", _report("mmlu/anatomy", 0.4, "loglikelihood", 0.4)))
    assert card.data.model_name == "alice/m"
    assert [r.dataset_name for r in card.data.eval_results] == ["MMLU", "MMLU"]


def test_card_results_json_roundtrip_is_stable() -> None:
    once = card_with_result(None, "alice/m", _report("gsm8k", 0.25))
    assert card_with_result(once, "alice/m", _report("gsm8k", 0.25)) == once
    assert json.dumps(ModelCard(once).data.to_dict())  # serialisable as HF tools expect


# ---------------------------------------------------------------------------------------------------
# Against a real node (SmolLM2 through the node's OpenAI API)

MODEL = "local/smol"


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    cache = tmp_path_factory.mktemp("eval-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IOLLM_EVAL_CACHE", str(cache))  # each run starts with an empty result cache
        yield node


def _hand_loglikelihood(gguf: Path, context: str, continuation: str) -> float:
    """The harness's computation, done directly with llama.cpp: tokenize the context and the whole text,
    evaluate it with logits for every position, and sum the continuation tokens' log-softmax."""
    import numpy as np
    from llama_cpp import Llama

    llm = _llm(gguf)
    whole = llm.tokenize((context + continuation).encode())
    start = len(llm.tokenize(context.encode()))
    llm.reset()
    llm.eval(whole)
    logits = np.asarray(llm.scores[: len(whole)], dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logsoftmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert isinstance(llm, Llama)
    return float(sum(logsoftmax[i - 1, whole[i]] for i in range(start, len(whole))))


_LLMS: dict[Path, Any] = {}


def _llm(gguf: Path) -> Any:
    from llama_cpp import Llama

    if gguf not in _LLMS:
        _LLMS[gguf] = Llama(model_path=str(gguf), n_ctx=1024, logits_all=True, verbose=False, seed=0)
    return _LLMS[gguf]


def test_loglikelihood_eval_matches_a_hand_computation(served, smollm2_gguf: Path) -> None:
    out = served.cli_json("eval", MODEL, "--task", "arc-easy", "--limit", "2")
    assert (out["n"], out["protocol"], out["shots"], out["cached"]) == (2, "loglikelihood", 0, 0)
    assert 0.0 <= out["score"] <= 1.0 and out["ci_low"] <= out["score"] <= out["ci_high"]
    suite = load_suite("arc-easy")
    task = sample(suite, 2)[0]
    item = out["items"][0]
    assert item["id"] == task.id
    served_sums = [float(x) for x in item["detail"].removeprefix("logprobs ").split(", ")]
    hand = [_hand_loglikelihood(smollm2_gguf, c, x) for c, x in task.meta["requests"]]
    assert served_sums == pytest.approx(hand, abs=0.05)
    assert item["extracted"] == task.choices[max(range(len(hand)), key=hand.__getitem__)]
    # the score went into the model card, where huggingface_hub reads it back
    assert out["card"]["written"]
    from huggingface_hub import hf_hub_download

    readme = hf_hub_download(MODEL, "README.md", endpoint=served.url, token=served.token)
    results = ModelCard.load(readme).data.eval_results
    assert next((r.dataset_type, r.metric_type, r.metric_value) for r in results) == (
        "arc-easy",
        "accuracy",
        round(100 * out["score"], 2),
    )
    # writing the card made a commit, but the weights are the same: a rerun is answered from the cache
    again = served.cli_json("eval", MODEL, "--task", "arc-easy", "--limit", "2", "--no-card")
    assert again["commit"] != out["commit"] and again["revision"] == out["revision"]
    assert again["cached"] == 2 and again["score"] == out["score"]


def test_generate_eval_through_chat_and_completion(served) -> None:
    chat = served.cli_json(
        "eval", MODEL, "--task", "gsm8k", "--limit", "2", "--shots", "0", "--max-tokens", "48", "--no-card"
    )
    assert (chat["n"], chat["protocol"], chat["api"]) == (2, "generate", "chat")
    assert chat["completion_tokens"] > 0 and all("extracted" in i for i in chat["items"])
    code = served.cli_json(
        "eval",
        MODEL,
        "--task",
        "humaneval",
        "--limit",
        "1",
        "--api",
        "completion",
        "--max-tokens",
        "64",
        "--no-card",
    )
    assert (code["n"], code["api"]) == (1, "completion")
    mc = served.cli_json(
        "eval",
        MODEL,
        "--task",
        "mmlu/anatomy",
        "--limit",
        "2",
        "--protocol",
        "generate",
        "--max-tokens",
        "8",
        "--no-card",
    )
    assert mc["n"] == 2 and mc["protocol"] == "generate"


def test_eval_refuses_what_it_cannot_do(served) -> None:
    wrong = served.cli("eval", MODEL, "--task", "gsm8k", "--protocol", "loglikelihood", "--json", check=False)
    assert wrong.returncode != 0 and "not multiple choice" in wrong.stderr
    unknown = served.cli("eval", MODEL, "--task", "gsm9k", check=False)
    assert unknown.returncode != 0 and "no suite 'gsm9k'" in unknown.stderr
    missing = served.cli("eval", "local/nope", "--task", "arc-easy", "--limit", "1", check=False)
    assert missing.returncode != 0 and "local/nope" in missing.stderr


def test_eval_of_a_published_path(served, tmp_path: Path) -> None:
    graph = {
        "schema": "iollm.workflow/1",
        "name": "answer",
        "nodes": [
            {
                "id": "solve",
                "kind": "model",
                "model": MODEL,
                "prompt": "{{input}}",
                "params": {"max_tokens": 16},
            },
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "solve", "to": "out"}],
    }
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    served.cli_json("path", "publish", str(path), "answer")
    out = served.cli_json("eval", "path/answer", "--task", "evals/first-letters", "--limit", "2", "--no-card")
    assert (out["model"], out["n"], out["api"]) == ("path/answer", 2, "chat")
