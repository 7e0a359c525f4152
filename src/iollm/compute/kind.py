"""The job-kind registry. Each kind says how to validate a spec and split it into units (on the node),
how to run a unit (on a provider's worker) and how to finish the job from its units' results (on the
node).

A kind is one module in ``compute/kinds/`` that calls ``register_kind`` when imported (importing
``iollm.compute.kinds`` imports them all). Kinds that belong to upper layers (``path-eval`` lives with
the path module) register themselves here too, so the compute layer never imports the layers above it."""

from __future__ import annotations

from typing import Any, Protocol


class JobKind(Protocol):
    name: str
    # Whole-job units retry from their checkpoint on another provider; others are simply re-run.
    checkpointed: bool

    def validate(self, spec: dict[str, Any], services: Any, caller: Any) -> dict[str, Any]: ...

    def plan(self, job_id: str, spec: dict[str, Any], services: Any) -> list[tuple[str, dict[str, Any]]]: ...

    def resources(self, payload: dict[str, Any]) -> dict[str, int]: ...

    def run(self, payload: dict[str, Any], ctx: Any) -> Any: ...

    def finish(self, job: dict[str, Any], results: dict[str, Any], services: Any) -> dict[str, Any]: ...

    # Optional: ``audit_view(result) -> str``, the part of a result an honest re-run must reproduce.
    # Optional: ``cost(payload) -> float``, a unit's expected work in any unit the kind likes: the
    # scheduler starts the costliest units first, so no long unit is left to run alone at a job's end.


KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> JobKind:
    KINDS[kind.name] = kind
    return kind
