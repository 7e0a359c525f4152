"""Compute commands: provider identities and joining the pool; jobs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ProtocolError
from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, errors, stdout

provider_app = typer.Typer(help="Lend this machine's compute: identity, joining a node's pool.")
job_app = typer.Typer(help="Jobs on the compute pool: submit, show, logs, cancel.")
app = typer.Typer()


def _kinds() -> None:
    """Job kinds that live in upper layers register themselves on import."""
    from ..compute import kinds  # noqa: F401
    from ..paths import cluster_eval  # noqa: F401


@provider_app.command("init")
def provider_init(
    name: Annotated[str | None, typer.Option("--name", help="A name people will see.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing identity.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create this machine's provider identity (an Ed25519 key, 0600). Example: iollm provider init --name lab-box"""
    from ..compute import init_identity

    ctx = Ctx(None, None, home, as_json)
    with errors(as_json):
        identity = init_identity(ctx.home, name, overwrite=force)
    emit(
        ctx,
        {"provider": identity.id, "name": identity.name, "key": str(ctx.home / "provider" / "provider.key")},
        lambda r: stdout.print(f"provider {r['name']}: {r['provider']}"),
    )


@provider_app.command("join")
def provider_join(
    cpus: Annotated[int | None, typer.Option("--cpus", help="CPUs to lend (default: all).")] = None,
    gpus: Annotated[int, typer.Option("--gpus")] = 0,
    memory: Annotated[
        int, typer.Option("--memory", help="Bytes of memory to lend (default: automatic).")
    ] = 0,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register with the node (signed, benchmarked) and work for its pool until Ctrl-C.

    Example: iollm provider join --endpoint http://10.0.0.1:8700 --cpus 8
    """
    from ..compute import load_identity
    from ..compute.provider import default_cpus, register, serve_worker

    ctx = Ctx(endpoint, token, home, as_json)
    _kinds()
    with errors(as_json):
        identity = load_identity(ctx.home)
        count = cpus or default_cpus()
        with ctx.client() as client:
            reply = register(client, identity, count, gpus, memory)

        def announce(address: str) -> None:
            info = {"provider": identity.id, "name": identity.name, "worker": address, **reply}
            emit(
                ctx,
                info,
                lambda r: stdout.print(
                    f"provider {r['name']} joined {r['scheduler']} as {r['worker']} "
                    f"({r['cpus']} CPUs, {r['benchmark_gflops']} GFLOP/s); Ctrl-C to leave"
                ),
            )

        asyncio.run(
            serve_worker(reply["scheduler"], identity, count, gpus, memory, ctx.home / "provider", announce)
        )


@provider_app.command("show")
def provider_show(
    provider_id: Annotated[str, typer.Argument(help="A provider id (ed25519:...)")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A provider's capacity, standing, audits and metered compute."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        info = client.provider(provider_id)
    emit(ctx, info)  # pretty JSON


@app.command("providers")
def providers_cmd(
    endpoint: EndpointOpt = None, token: TokenOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """Providers of the node's pool with capacity, benchmark, state, jobs run and compute metered."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.providers()

    def human(r: dict[str, Any]) -> None:
        table = Table(
            "provider", "name", "state", "cpus", "gpus", "GFLOP/s", "standing", "jobs", "cpu-s", "disputed"
        )
        for p in r["providers"]:
            table.add_row(
                p["id"][:20] + "…",
                p["name"],
                p["state"],
                str(p["cpus"]),
                str(p["gpus"]),
                f"{p['benchmark_gflops']:.1f}",
                f"{p['standing']:.2f}",
                str(p["jobs_run"]),
                f"{p['cpu_seconds']:.1f}",
                f"{p['disputed_cpu_seconds']:.1f}",
            )
        stdout.print(table)

    emit(ctx, result, human)


@job_app.command("submit")
def job_submit(
    kind: Annotated[str, typer.Argument(help="path-eval, finetune or batch-infer")],
    spec: Annotated[Path, typer.Argument(help="The job's spec, a JSON file.")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Resubmitting returns the same job.")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job. Example: iollm job submit finetune spec.json --idempotency-key run-1"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json):
        try:
            body = json.loads(spec.read_text())
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{spec}: not valid JSON ({exc})") from exc
        with ctx.client() as client:
            job = client.submit_job(kind, body, idempotency_key)
    emit(ctx, job, lambda j: stdout.print(f"job {j['id']} ({j['kind']}) {j['state']}"))


@app.command("jobs")
def jobs_cmd(
    state: Annotated[str | None, typer.Option("--state")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs, newest first."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.jobs(state)

    def human(r: dict[str, Any]) -> None:
        table = Table("job", "kind", "state", "created", "finished", "error")
        for j in r["jobs"]:
            table.add_row(
                j["id"],
                j["kind"],
                j["state"],
                j["created_at"][:19],
                (j["finished_at"] or "")[:19],
                (j["error"] or "")[:60],
            )
        stdout.print(table)

    emit(ctx, result, human)


@job_app.command("show")
def job_show(
    job_id: str,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A job's state, units, providers and result."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        job = client.job(job_id)
    emit(ctx, job)  # pretty JSON


@job_app.command("logs")
def job_logs(
    job_id: str,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A job's log lines (from the node and from the providers running it)."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.job_logs(job_id)
    emit(
        ctx,
        result,
        lambda r: [stdout.print(f"{x['at'][:19]} {x['line']}", highlight=False) for x in r["logs"]],
    )


@job_app.command("cancel")
def job_cancel(
    job_id: str,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a queued or running job."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        job = client.cancel_job(job_id)
    emit(ctx, job, lambda j: stdout.print(f"job {j['id']} {j['state']}"))
