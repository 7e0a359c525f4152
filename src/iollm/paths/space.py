"""The search space: workflow templates x assignments of models to roles x parameters, each candidate a
ready-to-run ``iollm.workflow/1`` graph.

Prompts are written for tiny models (SmolLM2-135M, Gemma-3-270M base without a chat template,
Qwen2.5-Coder-0.5B): short, one instruction, the answer format spelled out. Parameters are chosen so that
candidates share model calls wherever they can (the same prompt, ``max_tokens`` and seeds across
templates), which the call cache turns into calls made once: a cascade's first answer is the single
model's answer, its agreement sample is a vote sample, Self-MoA's samples are vote samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .candidate import Candidate, by_price, short
from .graph import SCHEMA, parse_graph
from .pricing import PriceBook
from .roles import role_prompt
from .template_texts import (
    CASCADE_CODE_TEST,
    CODE_CHECKER,
    CODE_PLAN_SOLVE,
    CODE_REFINE,
    CODE_STYLES,
    DIRECT_STOP,
    LOGPROBS,
    MAX_TOKENS,
    MOA_SAMPLES,
    PLAN_SOLVE,
    PROGRAM,
    PROGRAM_RUNNER,
    SAMPLE_TEMPERATURE,
    STOP,
    TEXT_STYLES,
    VOTE_KS,
)
from .verifiers import COMPARE, SELFTEST_PICK, SELFTEST_SAMPLES, SELFTEST_TESTS


def program_cascade_node(
    program: dict[str, Any], step: dict[str, Any], check: dict[str, Any]
) -> dict[str, Any]:
    """A cascade whose first stage is ``program`` (a model node writing code; its answer is what the code
    prints) and whose second is ``step`` (a model node reasoning step by step), each with the prompt and
    parameters of those nodes so it shares their calls. ``check`` decides when the program's answer
    stands (a program that fails or prints nothing always escalates)."""
    return {
        "id": "cascade",
        "kind": "cascade",
        "models": [program["model"], step["model"]],
        "stages": [
            {"prompt": program["prompt"], "params": dict(program["params"]), "program": True},
            {"prompt": step["prompt"], "params": dict(step["params"])},
        ],
        **check,
    }


def _graph(
    name: str, description: str, nodes: list[dict[str, Any]], edges: list[tuple[str, ...]]
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": name,
        "description": description,
        "nodes": nodes,
        "edges": [{"from": e[0], "to": e[1], **({"branch": e[2]} if len(e) > 2 else {})} for e in edges],
    }


def _model(
    node_id: str, model: str, role: str, prompt: str, max_tokens: int, **params: Any
) -> dict[str, Any]:
    return {
        "id": node_id,
        "kind": "model",
        "model": model,
        "role": role,
        "prompt": prompt,
        "params": {"temperature": 0.0, "max_tokens": max_tokens, "stop": STOP, **LOGPROBS, **params},
    }


_OUT = {"id": "out", "kind": "output"}


class _Builder:
    """Builds the candidates for one suite kind (text answers or code) and one price order."""

    def __init__(
        self,
        models: list[str],
        code: bool,
        seed: int,
        max_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        self.models = models
        self.code = code
        self.seed = seed
        self.cap = max_tokens
        self.reasoning = reasoning_tokens
        self.styles = CODE_STYLES if code else TEXT_STYLES
        self.out: list[Candidate] = []

    def tokens(self, style: str) -> int:
        if self.code:
            return MAX_TOKENS["code"]
        return self.reasoning if style == "step" and self.reasoning else MAX_TOKENS[style]

    def program_tokens(self) -> int:
        return self.reasoning or MAX_TOKENS["program"]

    def stop(self, style: str) -> list[str]:
        return DIRECT_STOP if style == "direct" and not self.code else STOP

    def add(
        self,
        name: str,
        template: str,
        assignment: dict[str, Any],
        params: dict[str, Any],
        nodes: list[dict[str, Any]],
        edges: list[tuple[str, ...]],
        description: str,
    ) -> None:
        if self.cap is not None:
            for node in nodes:
                for call in [node.get("params", {}), *(stage["params"] for stage in node.get("stages", []))]:
                    if "max_tokens" in call:
                        call["max_tokens"] = min(call["max_tokens"], self.cap)
        graph = _graph(name, description, [*nodes, _OUT], edges)
        parse_graph(graph)  # every candidate is a valid workflow, checked before any call
        self.out.append(Candidate(name, template, assignment, params, graph))

    def single(self) -> None:
        for style, prompt in self.styles.items():
            for m in self.models:
                self.add(
                    f"single:{style}({short(m)})",
                    "single",
                    {"solver": m},
                    {"style": style},
                    [_model("solve", m, "solver", prompt, self.tokens(style), stop=self.stop(style))],
                    [("solve", "out")],
                    f"{short(m)} answers directly ({style} prompt)",
                )

    def vote(self) -> None:
        for style, prompt in self.styles.items():
            for k in VOTE_KS:
                for m in self.models:
                    node = {
                        "id": "vote",
                        "kind": "vote",
                        "model": m,
                        "k": k,
                        "temperature": SAMPLE_TEMPERATURE,
                        "prompt": prompt,
                        "params": {"max_tokens": self.tokens(style), "stop": self.stop(style), **LOGPROBS},
                    }
                    self.add(
                        f"vote@{k}:{style}({short(m)})",
                        "vote",
                        {"voter": m},
                        {"style": style, "k": k, "temperature": SAMPLE_TEMPERATURE},
                        [node],
                        [("vote", "out")],
                        f"self-consistency: majority of {k} samples of {short(m)}",
                    )

    def plan_solve(self) -> None:
        solve_prompt = CODE_PLAN_SOLVE if self.code else PLAN_SOLVE
        for planner in self.models:
            for solver in self.models:
                nodes = [
                    _model("plan", planner, "planner", role_prompt("planner", []), MAX_TOKENS["plan"]),
                    _model("solve", solver, "solver", solve_prompt, self.tokens("step")),
                ]
                self.add(
                    f"plan-solve(planner={short(planner)},solver={short(solver)})",
                    "plan-solve",
                    {"planner": planner, "solver": solver},
                    {},
                    nodes,
                    [("plan", "solve"), ("solve", "out")],
                    "a planner writes a plan, a solver follows it",
                )

    def critique_refine(self) -> None:
        for solver in self.models:
            for critic in self.models:
                nodes = [
                    _model("solve", solver, "solver", self.styles["step"], self.tokens("step")),
                    _model(
                        "critique", critic, "critic", role_prompt("critic", ["solve"]), MAX_TOKENS["critique"]
                    ),
                    _model(
                        "refine",
                        solver,
                        "refiner",
                        role_prompt("refiner", ["solve", "critique"]),
                        self.tokens("step"),
                    ),
                ]
                edges = [
                    ("solve", "critique"),
                    ("solve", "refine"),
                    ("critique", "refine"),
                    ("refine", "out"),
                ]
                self.add(
                    f"critique-refine(solver={short(solver)},critic={short(critic)})",
                    "critique-refine",
                    {"solver": solver, "critic": critic, "refiner": solver},
                    {},
                    nodes,
                    edges,
                    "solve, critique, refine once",
                )

    def cascades(self) -> None:
        """Cheapest first: every ordered pair cheap -> strong, and all models in price order."""
        chains = [[a, b] for i, a in enumerate(self.models) for b in self.models[i + 1 :]]
        if len(self.models) > 2:
            chains.append(list(self.models))
        check = (
            {"check": "python", "test": CASCADE_CODE_TEST}
            if self.code
            else {"check": "agreement", "samples": 2, "threshold": 1.0}
        )
        for style, prompt in self.styles.items():
            for chain in chains:
                node = {
                    "id": "cascade",
                    "kind": "cascade",
                    "models": chain,
                    "prompt": prompt,
                    "params": {"max_tokens": self.tokens(style), "stop": self.stop(style), **LOGPROBS},
                    **check,
                }
                label = ">".join(short(m) for m in chain)
                self.add(
                    f"cascade:{style}({label})",
                    "cascade",
                    {"models": chain},
                    {"style": style, "check": check["check"]},
                    [node],
                    [("cascade", "out")],
                    "cheapest model first; escalate when its answer fails the check",
                )

    def program(self) -> None:
        """Program-aided: the model writes Python that prints the answer; with a fallback to a direct answer."""
        for m in self.models:
            nodes = [
                _model("program", m, "solver", PROGRAM, self.program_tokens()),
                {"id": "run", "kind": "python", "code": PROGRAM_RUNNER},
            ]
            self.add(
                f"program({short(m)})",
                "program",
                {"programmer": m},
                {},
                nodes,
                [("program", "run"), ("run", "out")],
                "the model writes a program; the sandbox runs it",
            )
            fallback = _model(
                "direct", m, "solver", self.styles["direct"], self.tokens("direct"), stop=self.stop("direct")
            )
            self.add(
                f"program+fallback({short(m)})",
                "program-fallback",
                {"programmer": m, "solver": m},
                {},
                [*nodes, fallback],
                [("program", "run"), ("run", "out"), ("direct", "out")],
                "program-aided; when the program fails, the direct answer",
            )

    def verify(self) -> None:
        """Code suites: run the answer and its docstring examples; refine once on failure."""
        for m in self.models:
            nodes = [
                _model("solve", m, "solver", self.styles["direct"], self.tokens("direct")),
                {"id": "check", "kind": "python", "code": CODE_CHECKER},
                {
                    "id": "gate",
                    "kind": "route",
                    "on": "{{check}}",
                    "default": "pass",
                    "rules": [{"branch": "fail", "pattern": "^FAIL"}],
                },
                _model("refine", m, "refiner", CODE_REFINE, self.tokens("direct")),
            ]
            edges = [
                ("solve", "check"),
                ("check", "gate"),
                ("gate", "refine", "fail"),
                ("solve", "refine"),
                ("check", "refine"),
                ("refine", "out"),
                ("solve", "out"),
            ]
            self.add(
                f"verify({short(m)})",
                "verify",
                {"solver": m, "refiner": m},
                {},
                nodes,
                edges,
                "solve, run the examples in the sandbox, refine once on failure",
            )

    def program_cascades(self) -> None:
        """Program first, then step by step: a program costs a fraction of a chain of thought's tokens, so
        each task pays for the chain of thought only when the program fails or prints nothing (then the
        same or a dearer model reasons step by step). Both calls are those of ``program(m)`` and
        ``single:step(m)``; the search also fits a logprob threshold on the program (``learned``)."""
        for i, a in enumerate(self.models):
            for b in self.models[i:]:
                program = _model("program", a, "solver", PROGRAM, self.program_tokens())
                step = _model(
                    "step", b, "solver", self.styles["step"], self.tokens("step"), stop=self.stop("step")
                )
                node = program_cascade_node(program, step, {"check": "format", "pattern": r"\S"})
                self.add(
                    f"program-cascade({short(a)}>{short(b)})",
                    "program-cascade",
                    {"programmer": a, "solver": b},
                    {},
                    [node],
                    [("cascade", "out")],
                    "a program first; when it fails or prints nothing, a step-by-step answer",
                )

    def pot_check(self) -> None:
        """Text suites: a program (program-of-thought) and a step-by-step answer of the same model; when
        their final answers agree, that answer; else the step-by-step answer (one model) or the dearer
        model's step-by-step answer (a cheap -> dearer pair, routed there only on disagreement). Every
        model call is one the single and program candidates make too (the call cache pays it once)."""

        def step(node_id: str, m: str) -> dict[str, Any]:
            return _model(
                node_id, m, "solver", self.styles["step"], self.tokens("step"), stop=self.stop("step")
            )

        def checked(m: str) -> list[dict[str, Any]]:
            return [
                _model("program", m, "solver", PROGRAM, self.program_tokens()),
                {"id": "run", "kind": "python", "code": PROGRAM_RUNNER},
                step("step", m),
                {"id": "compare", "kind": "python", "code": COMPARE},
            ]

        checks = [("program", "run"), ("run", "compare"), ("step", "compare")]
        for m in self.models:
            # the comparison prints nothing on disagreement, so the output falls through to the CoT answer
            self.add(
                f"pot-check({short(m)})",
                "pot-check",
                {"programmer": m, "solver": m},
                {},
                checked(m),
                [*checks, ("compare", "out"), ("step", "out")],
                "program and step-by-step answers; when they disagree, the step-by-step answer",
            )
        for i, a in enumerate(self.models):
            for b in self.models[i + 1 :]:
                gate = {
                    "id": "gate",
                    "kind": "route",
                    "on": "{{compare}}",
                    "default": "agree",
                    "rules": [{"branch": "escalate", "pattern": r"\A\s*\Z"}],
                }
                self.add(
                    f"pot-check({short(a)}>{short(b)})",
                    "pot-check",
                    {"programmer": a, "solver": a, "escalation": b},
                    {},
                    [*checked(a), gate, step("escalate", b)],
                    [
                        *checks,
                        ("compare", "gate"),
                        ("gate", "escalate", "escalate"),
                        ("escalate", "out"),
                        ("compare", "out"),
                        ("step", "out"),
                    ],
                    f"program and step-by-step answers of {short(a)}; when they disagree, {short(b)} answers",
                )

    def selftest_bon(self) -> None:
        """Code suites: best of n samples, judged by the model's own assert tests plus the task's docstring
        examples, run in the sandbox. The samples are the vote samples (same prompt, seeds, temperature)."""
        for m in self.models:
            samples = [
                _model(
                    f"cand{i + 1}",
                    m,
                    "solver",
                    self.styles["direct"],
                    self.tokens("direct"),
                    temperature=SAMPLE_TEMPERATURE,
                    seed=self.seed + i,
                )
                for i in range(SELFTEST_SAMPLES)
            ]
            ids = [s["id"] for s in samples]
            nodes = [
                *samples,
                _model("tests", m, "solver", SELFTEST_TESTS, MAX_TOKENS["tests"]),
                {"id": "pick", "kind": "python", "code": SELFTEST_PICK},
            ]
            self.add(
                f"selftest-bon@{SELFTEST_SAMPLES}({short(m)})",
                "selftest-bon",
                {"solver": m, "tester": m},
                {"samples": SELFTEST_SAMPLES, "temperature": SAMPLE_TEMPERATURE},
                nodes,
                # the first sample is the answer when the picker itself fails
                [*((i, "pick") for i in ids), ("tests", "pick"), ("pick", "out"), (ids[0], "out")],
                f"{SELFTEST_SAMPLES} samples; the one passing most of its own asserts and the examples",
            )

    def self_moa(self) -> None:
        """Self-MoA: samples of one model aggregated by the same model (samples are vote samples)."""
        for m in self.models:
            samples = [
                _model(
                    f"sample{i + 1}",
                    m,
                    "solver",
                    self.styles["step"],
                    self.tokens("step"),
                    temperature=SAMPLE_TEMPERATURE,
                    seed=self.seed + i,
                )
                for i in range(MOA_SAMPLES)
            ]
            ids = [s["id"] for s in samples]
            aggregate = _model(
                "aggregate",
                m,
                "aggregator",
                role_prompt("aggregator", ids),
                self.tokens("step") if self.code else MAX_TOKENS["aggregate"],
            )
            self.add(
                f"self-moa@{MOA_SAMPLES}({short(m)})",
                "self-moa",
                {"proposer": m, "aggregator": m},
                {"samples": MOA_SAMPLES},
                [*samples, aggregate],
                [*((i, "aggregate") for i in ids), ("aggregate", "out")],
                "several samples of one model, merged by the same model",
            )

    def moa(self) -> None:
        """Mixture-of-Agents (one layer): every model proposes (its step answer, the single's call), one
        model aggregates; Self-MoA is the one-model case above."""
        proposals = [
            _model(
                f"propose{i + 1}",
                m,
                "solver",
                self.styles["step"],
                self.tokens("step"),
                stop=self.stop("step"),
            )
            for i, m in enumerate(self.models)
        ]
        ids = [p["id"] for p in proposals]
        for m in self.models:
            aggregate = _model(
                "aggregate",
                m,
                "aggregator",
                role_prompt("aggregator", ids),
                self.tokens("step") if self.code else MAX_TOKENS["aggregate"],
            )
            self.add(
                f"moa(aggregator={short(m)})",
                "moa",
                {"proposers": list(self.models), "aggregator": m},
                {"proposers": len(self.models)},
                [*(dict(p, params=dict(p["params"])) for p in proposals), aggregate],
                [*((i, "aggregate") for i in ids), ("aggregate", "out")],
                "every model proposes an answer, one model merges them",
            )


def build_space(
    models: list[str],
    suite_checker: str,
    prices: PriceBook | None = None,
    seed: int = 0,
    max_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> list[Candidate]:
    """Every candidate for ``models`` on a suite whose (main) checker is ``suite_checker``.

        Models are taken in price order (cheapest first), which also orders the cascades. For 3 models this
        is 68 candidates on text suites and 56 on code suites (``python_tests``: program-aided templates, with
        the program/step-by-step check ``pot-check``, are replaced by solve-verify-refine and self-tested
        best-of-3 ``selftest-bon``, cascades check by running docstring examples). ``max_tokens`` caps
        every call's completion (a cheaper, cruder space for slow machines and tests); ``reasoning_tokens`` is the
    suite's budget for step-by-step answers and programs (``Suite.reasoning_tokens``), where the default is
    too short."""
    if not models:
        raise ValueError("the space needs at least one model")
    if len(set(models)) != len(models):
        raise ValueError("models must be distinct")
    ordered = by_price(models, prices or PriceBook())
    builder = _Builder(ordered, suite_checker == "python_tests", seed, max_tokens, reasoning_tokens)
    builder.single()
    builder.vote()
    if len(ordered) > 1:
        builder.cascades()
    builder.plan_solve()
    builder.critique_refine()
    if builder.code:
        builder.verify()
        builder.selftest_bon()
    else:
        builder.program()
        builder.pot_check()
        builder.program_cascades()
    builder.self_moa()
    if len(ordered) > 1:
        builder.moa()
    return builder.out


def restrict(
    space: list[Candidate], templates: Iterable[str] | None = None, styles: Iterable[str] | None = None
) -> list[Candidate]:
    """The candidates of some templates and prompt styles only (a cheaper space for slow machines)."""
    keep_t = set(templates) if templates else None
    keep_s = set(styles) if styles else None
    out = [
        c
        for c in space
        if (keep_t is None or c.template in keep_t)
        and (keep_s is None or "style" not in c.params or c.params["style"] in keep_s)
    ]
    if not out:
        raise ValueError("no candidate is left after restricting the space's templates and styles")
    return out
