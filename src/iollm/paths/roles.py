"""Built-in role templates. A model node with a role and no prompt gets these; upstream outputs are
referred to by node id, so the same role works wherever it sits in a graph."""

from __future__ import annotations

DIRECT = "{{input}}"
STEP_BY_STEP = "{{input}}\nThink step by step, then give the final answer on the last line as 'Answer: ...'."


def role_prompt(role: str, upstream: list[str]) -> str:
    """The default prompt of ``role`` given the ids of the nodes that feed it (in edge order)."""
    first = upstream[0] if upstream else None
    others = "\n".join(f"Candidate {i + 1}: {{{{{u}}}}}" for i, u in enumerate(upstream))
    if role == "planner":
        return "Write a short numbered plan for solving this task. Do not solve it.\n\nTask: {{input}}\nPlan:"
    if role == "solver":
        if first:
            return f"Task: {{{{input}}}}\n\nFollow this plan:\n{{{{{first}}}}}\n\nGive the final answer on the last line as 'Answer: ...'."
        return DIRECT
    if role == "critic":
        return (
            f"Task: {{{{input}}}}\nProposed answer: {{{{{first}}}}}\n\n"
            "Check the proposed answer carefully. Say briefly what is wrong, or say it is correct."
        )
    if role == "refiner":
        answer = upstream[0] if upstream else "input"
        feedback = upstream[1] if len(upstream) > 1 else None
        review = f"\nReview: {{{{{feedback}}}}}" if feedback else ""
        return (
            f"Task: {{{{input}}}}\nPrevious answer: {{{{{answer}}}}}{review}\n\n"
            "Give the corrected answer. Put the final answer on the last line as 'Answer: ...'."
        )
    if role == "verifier":
        return f"Task: {{{{input}}}}\nAnswer: {{{{{first}}}}}\n\nIs this answer correct? Reply 'correct' or 'incorrect'."
    if role == "aggregator":
        return (
            f"Task: {{{{input}}}}\n\n{others}\n\n"
            "Give the single best final answer, on the last line as 'Answer: ...'."
        )
    raise ValueError(f"unknown role {role!r}")
