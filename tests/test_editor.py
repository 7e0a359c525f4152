"""The web UI end to end: a real node serving SmolLM2, the built app at /ui, and Debian's Chromium driven by
Playwright. Screenshots of the main pages are kept in ``test-artifacts/editor/``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iollm.editor import built
from iollm.editor.diff import diff_graphs
from nodes import REPO_ROOT, Node

MODEL = "iollm/smollm2-135m-instruct"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "editor"


def two_nodes(max_tokens: int = 8) -> dict[str, Any]:
    return {
        "schema": "iollm.workflow/1",
        "name": "plan-solve",
        "nodes": [
            {"id": "plan", "kind": "model", "model": MODEL, "role": "planner", "params": {"max_tokens": 8}},
            {
                "id": "solve",
                "kind": "model",
                "model": MODEL,
                "prompt": "{{input}}\nPlan: {{plan}}\nAnswer:",
                "params": {"max_tokens": max_tokens},
            },
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "plan", "to": "solve"}, {"from": "solve", "to": "out"}],
    }


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed", name="editor")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


def api(node: Node, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {node.token}"}
    return httpx.request(method, node.url + path, headers=headers, timeout=120, **kw)


def events(reply: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]


# -- the API the pages use -----------------------------------------------------------------------


def test_missing_build_page_says_to_run_make_ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from iollm.editor import site

    monkeypatch.setattr(site, "STATIC_DIR", tmp_path)
    app = FastAPI()
    app.include_router(site.router)
    reply = TestClient(app).get("/ui/")
    assert reply.status_code == 503
    assert "make ui" in reply.text


def test_validate_names_every_culprit(served: Node) -> None:
    graph = two_nodes()
    graph["nodes"][0]["model"] = "nobody/none"
    graph["edges"].append({"from": "solve", "to": "plan"})
    reply = api(served, "POST", "/api/editor/validate", json={"graph": graph})
    problems = reply.json()["problems"]
    assert not reply.json()["ok"]
    assert {p["node"] for p in problems if "cycle" in p["message"]} == {"plan", "solve"}
    assert any(p["node"] == "plan" and "does not serve" in p["message"] for p in problems)
    clean = api(served, "POST", "/api/editor/validate", json={"graph": two_nodes()}).json()
    assert clean == {"ok": True, "problems": []}


def test_run_streams_then_reruns_one_node_without_paying_upstream(served: Node) -> None:
    reply = api(served, "POST", "/api/editor/run", json={"graph": two_nodes(), "input": "What is 2 plus 3?"})
    assert reply.headers["content-type"].startswith("text/event-stream")
    stream = events(reply)
    kinds = [e["type"] for e in stream]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    tokens = [e for e in stream if e["type"] == "token"]
    assert {e["node"] for e in tokens} == {"plan", "solve"}
    finished = {e["node"]: e["trace"] for e in stream if e["type"] == "node_finished"}
    assert "".join(e["text"] for e in tokens if e["node"] == "plan") == finished["plan"]["output"]
    result = stream[-1]["result"]
    assert result["completion_tokens"] == sum(n["completion_tokens"] for n in result["nodes"]) > 0
    assert result["cost"] > 0

    rerun = api(
        served,
        "POST",
        "/api/editor/run",
        json={
            "graph": two_nodes(max_tokens=6),
            "input": "What is 2 plus 3?",
            "only": "solve",
            "cached": {"plan": finished["plan"]["output"]},
        },
    )
    nodes = {n["id"]: n for n in events(rerun)[-1]["result"]["nodes"]}
    assert nodes["plan"]["calls"] == 0 and nodes["plan"]["cost"] == 0
    assert nodes["plan"]["detail"]["from_cache"] is True
    assert nodes["solve"]["calls"] == 1 and nodes["out"]["status"] == "skipped"

    missing = api(
        served, "POST", "/api/editor/run", json={"graph": two_nodes(), "input": "x", "only": "solve"}
    )
    assert missing.status_code == 400
    assert "run up to 'solve' instead" in missing.json()["error"]["message"]


def test_versions_live_in_the_hub(served: Node) -> None:
    first = api(
        served,
        "POST",
        "/api/editor/workflows/local/api-flow/versions",
        json={"graph": two_nodes(), "version": "v1"},
    )
    assert first.status_code == 200, first.text
    second = api(
        served,
        "POST",
        "/api/editor/workflows/local/api-flow/versions",
        json={"graph": two_nodes(max_tokens=12), "version": "v2"},
    ).json()
    diff = api(
        served, "GET", f"/api/editor/workflows/local/api-flow/diff?old=v1&new={second['commit']}"
    ).json()
    assert diff["changed"] == [
        {"id": "solve", "fields": {"params": {"old": {"max_tokens": 8}, "new": {"max_tokens": 12}}}}
    ]
    # A version is a commit of an ordinary hub repository, so the hub's own API lists it.
    log = api(served, "GET", "/api/repos/space/local/api-flow/log").json()["commits"]
    assert log[0]["commit"] == second["commit"] and len(log) == 2
    assert (
        api(served, "GET", "/api/repos/space/local/api-flow/refs").json()["tags"]["v1"]
        == first.json()["commit"]
    )


def test_diff_ignores_layout() -> None:
    moved = two_nodes()
    moved["nodes"][0]["position"] = {"x": 10, "y": 20}
    result = diff_graphs(two_nodes(), moved)
    assert result["same"] and result["moved"] == ["plan"]


def test_exported_script_runs_against_the_node(served: Node, tmp_path: Path) -> None:
    reply = api(served, "POST", "/api/editor/export/python", json={"graph": two_nodes(max_tokens=4)})
    assert reply.status_code == 200
    script = tmp_path / "plan_solve.py"
    script.write_text(reply.text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), "What is 1 plus 1?"],
        capture_output=True,
        text=True,
        timeout=300,
        env=served.env(IOLLM_TOKEN=served.token),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "plan" in done.stderr and "tokens" in done.stderr
    bad = api(served, "POST", "/api/editor/export/python", json={"graph": {"nodes": []}})
    assert bad.status_code == 400 and "does not run" in bad.json()["error"]["message"]


# -- in the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    if not built():
        pytest.fail("the web UI is not built: run `make ui`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, served: Node) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(served.url + "/ui/")
    tab.wait_for_selector("[data-ready=true]")
    tab.fill("input[aria-label=token]", served.token)
    tab.click("text=Sign in")
    tab.wait_for_selector("[data-testid=signed-in]")
    yield tab
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def fresh_canvas(page: Any) -> None:
    page.click("a[href='#/editor']")
    page.wait_for_selector("[data-ready=true]")
    page.click("text=New")
    page.wait_for_function("window.__iollm.count() === 0")


def settle(page: Any) -> None:
    """Two frames: the canvas has finished panning to a just-added node before the next pointer action."""
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def connect(page: Any, source: str, target: str) -> None:
    """Drag from a node's output handle to another node's input handle, as a user does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    edge = f"[data-testid='rf__edge-{source}->{target}']"
    for _ in range(3):  # a drag that starts while the view still moves can miss the handle: drag again
        settle(page)
        page.locator(f".react-flow__node[data-id={source}] .react-flow__handle.source").drag_to(
            page.locator(f".react-flow__node[data-id={target}] .react-flow__handle.target")
        )
        try:
            page.wait_for_selector(edge, state="attached", timeout=3000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"dragging {source} onto {target} did not connect them")


def build_two_nodes(page: Any) -> None:
    """planner1 (role planner) -> model1 (prompt uses {{planner1}}) -> out, by palette, panel and drags."""
    page.click("[data-testid=add-role-planner]")
    page.select_option("#field-model", MODEL)
    page.fill("#field-params-max_tokens", "8")
    page.click("[data-testid=add-model]")
    page.select_option("#field-model", MODEL)
    page.fill("#field-prompt", "{{input}}\nPlan: {{planner1}}\nAnswer:")
    page.fill("#field-params-max_tokens", "8")
    page.click("[data-testid=add-output]")
    connect(page, "planner1", "model1")
    connect(page, "model1", "out")
    page.wait_for_function("document.querySelectorAll('.wf-node.invalid').length === 0")


@pytest.mark.slow
def test_build_and_run_a_two_node_workflow_in_the_browser(page: Any) -> None:
    fresh_canvas(page)
    build_two_nodes(page)
    graph = page.evaluate("window.__iollm.current()")
    assert [(e["from"], e["to"]) for e in graph["edges"]] == [("planner1", "model1"), ("model1", "out")]
    page.screenshot(path=str(ARTIFACTS / "editor-built.png"))

    page.click("[data-testid=toolbar-run]")
    # Streamed: text shows in a node while the run is still going.
    page.wait_for_function(
        "document.querySelector('[data-testid=output-planner1]')?.textContent.length > 0 "
        "&& !document.querySelector('[data-testid=run-totals]')",
        timeout=120_000,
    )
    page.wait_for_selector("[data-testid=run-totals]", timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "editor-run.png"))
    for node_id in ("planner1", "model1"):
        badges = page.inner_text(f"[data-testid=badges-{node_id}]")
        prompt, completion = badges.split(" tok")[0].split("+")
        assert int(prompt) > 0 and 0 < int(completion) <= 8
        assert "µcr" in badges
    totals = page.inner_text("[data-testid=run-totals]")
    assert "tokens" in totals and "µcr" in totals
    assert page.inner_text("[data-testid=run-answer]").strip()

    # Rerun only model1: planner1's output is reused from the last run, not called or paid again.
    page.click(".react-flow__node[data-id=model1]")
    page.click("[data-testid=tab-node]")
    page.click("text=Run this node")
    page.wait_for_selector("[data-testid=run-totals]", timeout=180_000)
    row = page.inner_text("[data-testid=run-row-planner1]")
    assert "cached" in row and "0+0" in row
    assert "ok" in page.inner_text("[data-testid=run-row-model1]")


@pytest.mark.slow
def test_save_change_and_restore_a_version(page: Any, served: Node) -> None:
    fresh_canvas(page)
    build_two_nodes(page)
    page.click("[data-testid=tab-versions]")
    page.fill("#wf-name", "browser-flow")
    page.fill("input[aria-label='version name']", "v1")
    page.click("[data-testid=save-version]")
    page.wait_for_selector("[data-testid=version-v1]")

    page.click(".react-flow__node[data-id=model1]")
    page.click("[data-testid=tab-node]")
    page.fill("#field-params-max_tokens", "5")
    page.click("[data-testid=tab-versions]")
    page.fill("input[aria-label='version name']", "v2")
    page.click("[data-testid=save-version]")
    page.wait_for_selector("[data-testid=version-v2]")

    page.check("input[aria-label='pick v1']")
    page.check("input[aria-label='pick v2']")
    page.click("[data-testid=compare]")
    diff = page.inner_text("[data-testid=diff]")
    assert "model1" in diff and "max_tokens" in diff and "8" in diff and "5" in diff
    page.screenshot(path=str(ARTIFACTS / "editor-versions.png"))

    page.click("[data-testid=restore-v1]")
    page.wait_for_selector("[data-testid='version-v1 (restored)']")
    restored = page.evaluate("window.__iollm.current()")
    assert next(n for n in restored["nodes"] if n["id"] == "model1")["params"]["max_tokens"] == 8
    log = api(served, "GET", "/api/repos/space/local/browser-flow/log").json()["commits"]
    assert len(log) == 3  # v1, v2, and the restore: history is never rewritten


@pytest.mark.slow
def test_bad_graph_is_marked_before_running(page: Any, tmp_path: Path) -> None:
    fresh_canvas(page)
    page.click("[data-testid=add-model]")
    page.click("[data-testid=add-model]")
    connect(page, "model1", "model2")
    connect(page, "model2", "model1")
    page.wait_for_selector("[data-testid=problem-model1]")
    assert "cycle" in page.inner_text("[data-testid=problem-model1]")
    assert "cycle" in page.inner_text("[data-testid=problem-model2]")
    page.screenshot(path=str(ARTIFACTS / "editor-invalid.png"))

    unknown = two_nodes()
    unknown["nodes"][1]["model"] = "nobody/no-such-model"
    unknown["nodes"][1]["prompt"] = "{{input}} {{ghost}}"
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps(unknown), encoding="utf-8")
    page.set_input_files("[data-testid=import]", str(path))
    page.wait_for_selector("[data-testid=problem-solve]")
    marked = page.get_attribute(".react-flow__node[data-id=solve] .wf-node", "title")
    assert "does not serve" in marked and "ghost" in marked
    assert page.locator(".wf-node.invalid").count() == 1


def program_cascade() -> dict[str, Any]:
    """What `iollm path search` fits: a program first, a chain of thought when its tokens are unsure."""
    return {
        "schema": "iollm.workflow/1",
        "name": "program-cascade",
        "nodes": [
            {
                "id": "pc",
                "kind": "cascade",
                "models": [MODEL, MODEL],
                "check": "logprob",
                "threshold": -0.4,
                "stages": [
                    {"prompt": "Write Python that prints the answer.\n{{input}}", "program": True},
                    {"prompt": "{{input}}\nThink step by step.", "params": {"max_tokens": 64}},
                ],
            },
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "pc", "to": "out"}],
    }


@pytest.mark.slow
def test_a_learned_program_cascade_is_edited_in_the_panel(page: Any, tmp_path: Path) -> None:
    """A logprob cascade with stages (the search's found paths) shows its check, threshold and stages as
    fields, and edits to them reach the graph."""
    fresh_canvas(page)
    path = tmp_path / "program-cascade.json"
    path.write_text(json.dumps(program_cascade()), encoding="utf-8")
    page.set_input_files("[data-testid=import]", str(path))
    page.wait_for_function("window.__iollm.count() === 2")
    page.click(".react-flow__node[data-id=pc]")
    assert page.input_value("#field-check") == "logprob"
    assert json.loads(page.input_value("#field-threshold")) == -0.4
    assert json.loads(page.input_value("#field-stages"))[0]["program"] is True

    page.fill("#field-threshold", "-1.5")
    page.select_option("#field-metric", "min")
    stages = program_cascade()["nodes"][0]["stages"]
    stages[1]["params"]["max_tokens"] = 32
    page.fill("#field-stages", json.dumps(stages))
    page.wait_for_function("document.querySelectorAll('.wf-node.invalid').length === 0")
    node = page.evaluate("window.__iollm.current().nodes.find((n) => n.id === 'pc')")
    assert node["threshold"] == -1.5 and node["metric"] == "min"
    assert node["stages"][1]["params"]["max_tokens"] == 32

    page.fill("#field-threshold", "0.5")  # a log-probability is <= 0: the node says so on the canvas
    page.wait_for_selector("[data-testid=problem-pc]")
    assert "log-probability" in page.inner_text("[data-testid=problem-pc]")


@pytest.mark.slow
def test_browse_a_model_card(page: Any) -> None:
    page.click("a[href='#/models']")
    page.fill("input[aria-label='search models']", "smollm2")
    page.click(f"a[href='#/models/{MODEL}']")
    card = page.wait_for_selector("[data-testid=model-card]")
    assert MODEL in card.inner_text()
    assert ".gguf" in page.inner_text("[data-testid=model-files]")
    assert page.locator("[data-testid=model-versions] tr").count() >= 1
    assert f'snapshot_download("{MODEL}"' in page.inner_text("[data-testid=snippet-huggingface_hub]")
    assert f'model="{MODEL}"' in page.inner_text("[data-testid=snippet-openai]")
    assert f"iollm pull {MODEL}" in page.inner_text("[data-testid=snippet-iollm]")
    page.screenshot(path=str(ARTIFACTS / "model-card.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "route,marker", [("leaderboard", "leaderboard"), ("compute", "compute"), ("account", "account")]
)
def test_other_pages_render(page: Any, route: str, marker: str) -> None:
    page.click(f"a[href='#/{route}']")
    page.wait_for_selector(f"[data-testid={marker}]")
    page.wait_for_timeout(300)  # let the first poll land
    assert page.locator(".error").count() == 0, page.inner_text(".error")
    page.screenshot(path=str(ARTIFACTS / f"{route}.png"), full_page=True)
