"""Export a drawn workflow as a runnable Python script: the workflow JSON (no embedded code beyond what
the user wrote in python nodes) plus a few lines that run it against a node's OpenAI-compatible API with
iollm's own executor, so the exported file does exactly what the editor's Run button does."""

from __future__ import annotations

import json
import re
from typing import Any

from ..paths.graph import GraphError, parse_graph

TEMPLATE = '''#!/usr/bin/env python3
"""{title}: exported from the iollm workflow editor.

Runs the workflow below against an iollm node and prints the answer with per-node tokens and cost.
Needs the iollm package (pip install iollm). Usage:

    IOLLM_TOKEN=... python {filename} "your input"

IOLLM_ENDPOINT picks the node (default {endpoint}).
"""

import asyncio
import json
import os
import sys

from iollm.paths.clients import OpenAIClient
from iollm.paths.executor import Executor
from iollm.paths.graph import parse_graph
from iollm.paths.pricing import node_prices

WORKFLOW = json.loads(r"""
{workflow}
""")


async def main(task_input: str) -> dict:
    endpoint = os.environ.get("IOLLM_ENDPOINT", "{endpoint}").rstrip("/")
    token = os.environ.get("IOLLM_TOKEN")
    graph = parse_graph(WORKFLOW)
    client = OpenAIClient(endpoint + "/v1", token)
    try:
        prices = node_prices(endpoint, token, graph.models())
        result = await Executor(client, prices).run(graph, task_input)
    finally:
        await client.close()
    return result.as_dict()


if __name__ == "__main__":
    text = " ".join(sys.argv[1:]) or {default_input!r}
    run = asyncio.run(main(text))
    for node in run["nodes"]:
        print(f"{{node['id']:>16}}  {{node['status']:7}}  tokens {{node['prompt_tokens']}}+{{node['completion_tokens']}}  "
              f"cost {{node['cost']}} µcr  {{node['seconds']:.2f}} s", file=sys.stderr)
    print(run["answer"])
'''


def script_name(graph: dict[str, Any]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(graph.get("name") or "workflow")).strip("_") or "workflow"
    return f"{stem}.py"


def python_script(graph: dict[str, Any], endpoint: str, default_input: str = "What is 2 plus 3?") -> str:
    """The script's source; the graph is checked first so an exported file never fails on load."""
    try:
        parsed = parse_graph(graph)
    except GraphError as exc:
        raise GraphError(f"cannot export a workflow that does not run: {exc}", exc.node) from exc
    body = json.dumps(parsed.to_json(), indent=2, sort_keys=True).replace('"""', '\\"\\"\\"')
    return TEMPLATE.format(
        title=parsed.name,
        filename=script_name(graph),
        endpoint=endpoint.rstrip("/"),
        workflow=body,
        default_input=default_input,
    )
