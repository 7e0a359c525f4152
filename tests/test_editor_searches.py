"""Editor path searches: kept in the node's database across a restart (a search the stop cut short is
shown as interrupted, with what it had found), visible only to their owner and admins, and drawn in the
browser as a quality/cost Pareto plot whose paths open on the canvas in one click.

The searches are tiny: SmolLM2-135M, a few inline additions, 8 tokens per call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iollm.database import open_database
from iollm.editor.search_store import SearchStore
from nodes import Node
from test_editor import ARTIFACTS, CHROMIUM_ARGS, MODEL, browser, fresh_canvas  # noqa: F401 - fixture

PAIRS = [(2, 3), (4, 5), (7, 1), (6, 2), (3, 3), (8, 1), (5, 4), (1, 6), (9, 9), (2, 7), (4, 4), (6, 1)]


def one_model() -> dict[str, Any]:
    return {
        "schema": "iollm.workflow/1",
        "name": "solve",
        "nodes": [
            {"id": "solve", "kind": "model", "model": MODEL, "role": "solver", "params": {"max_tokens": 8}},
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "solve", "to": "out"}],
    }


def tasks(n: int) -> list[dict[str, Any]]:
    pairs = [PAIRS[i % len(PAIRS)] for i in range(n)]
    return [
        {"id": f"add/{i}", "input": f"What is {a} plus {b}?", "target": str(a + b), "checker": "numeric"}
        for i, (a, b) in enumerate(pairs)
    ]


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed", name="searches")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def bob(served: Node) -> str:
    return served.cli_json("user", "create", "bob")["token"]


def api(node: Node, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or node.token}"}
    return httpx.request(method, node.url + path, headers=headers, timeout=120, **kw)


def start(node: Node, n_tasks: int, **extra: Any) -> dict[str, Any]:
    body = {"graph": one_model(), "suite": "adds", "tasks": tasks(n_tasks), "max_tokens": 8, **extra}
    reply = api(node, "POST", "/api/editor/searches", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_for(node: Node, search_id: str, ready: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api(node, "GET", f"/api/editor/searches/{search_id}").json()
        if ready(found):
            return found
        assert found["state"] in ("running", "done"), found
        time.sleep(0.5)
    raise AssertionError(f"search {search_id} did not get there: {found}")


@pytest.fixture(scope="module")
def finished(served: Node) -> dict[str, Any]:
    """One complete search (4 search tasks, 4 held-out), as the API shows it."""
    started = start(served, 8)
    assert started["state"] == "running" and started["owner"] == "local"
    done = wait_for(served, started["id"], lambda s: s["state"] == "done")
    result = done["result"]
    assert result["best"]["graph"]["nodes"] and result["pareto"] and result["candidates"]
    return done


@pytest.mark.slow
def test_searches_survive_a_restart_and_stay_private(
    served: Node, bob: str, finished: dict[str, Any]
) -> None:
    bad = {"graph": one_model(), "tasks": tasks(8), "budget": "lots"}
    reply = api(served, "POST", "/api/editor/searches", json=bad)
    assert reply.status_code == 400 and "budget" in reply.json()["error"]["message"]

    # A bigger search, stopped with the node once it has found something.
    running = start(served, 24, budget=40)
    partial = wait_for(
        served, running["id"], lambda s: s["state"] == "running" and (s["result"] or {}).get("candidates")
    )
    assert partial["result"]["partial"] and partial["done"] >= 1
    served.stop()
    served.start()

    listed = api(served, "GET", "/api/editor/searches").json()["searches"]
    assert [s["id"] for s in listed][:2] == [running["id"], finished["id"]]
    again = api(served, "GET", f"/api/editor/searches/{finished['id']}").json()
    assert again["state"] == "done" and again["result"] == finished["result"]
    assert again["config"]["graph"] == one_model() and again["config"]["suite"] == "adds"

    cut = api(served, "GET", f"/api/editor/searches/{running['id']}").json()
    assert cut["state"] == "interrupted" and "stopped" in cut["error"] and cut["finished"]
    found = cut["result"]
    assert found["partial"] and len(found["candidates"]) >= len(partial["result"]["candidates"])
    assert found["pareto"] and all(p["graph"]["nodes"] for p in found["pareto"])
    assert (
        api(served, "POST", f"/api/editor/searches/{running['id']}/cancel").json()["state"] == "interrupted"
    )

    # Another user sees neither search, cannot cancel them, and cannot tell they exist.
    assert api(served, "GET", "/api/editor/searches", token=bob).json()["searches"] == []
    for search_id in (finished["id"], running["id"]):
        for method, path in (("GET", ""), ("POST", "/cancel")):
            reply = api(served, method, f"/api/editor/searches/{search_id}{path}", token=bob)
            assert reply.status_code == 404, reply.text
    anonymous = httpx.get(f"{served.url}/api/editor/searches/{finished['id']}", timeout=30)
    assert anonymous.status_code == 401


def test_a_search_left_running_by_a_dead_process_is_interrupted(tmp_path: Path) -> None:
    """What a node killed outright (no chance to write anything) leaves behind: its next process marks
    its own running searches interrupted, and leaves another node's alone."""
    db = open_database(tmp_path / "node.sqlite")
    mine, theirs = SearchStore(db, "/homes/a"), SearchStore(db, "/homes/b")
    mine.insert("s1", "alice", {"suite": "adds"}, {"budget": 12})
    mine.save("s1", state="running", phase="search", done=3, total=12, result={"partial": True}, error=None)
    theirs.insert("s2", "alice", {"suite": "adds"}, {"budget": 12})

    assert SearchStore(db, "/homes/a").interrupt_orphans() == 1
    cut = mine.get("s1")
    assert cut["state"] == "interrupted" and cut["done"] == 3 and cut["result"] == {"partial": True}
    assert "stopped" in cut["error"] and cut["finished"]
    assert theirs.get("s2")["state"] == "running"
    assert [s["id"] for s in mine.list("alice")] == ["s2", "s1"] and mine.list("bob") == []


# -- in the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(browser: Any, served: Node) -> Iterator[Any]:  # noqa: F811 - the fixture imported above
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


@pytest.mark.slow
def test_pareto_plot_and_open_a_found_path(page: Any, finished: dict[str, Any]) -> None:
    result = finished["result"]
    fresh_canvas(page)
    page.click("[data-testid=tab-search]")
    page.click(f"[data-testid=search-history-{finished['id']}]")
    page.wait_for_selector("[data-testid=search-pareto]")

    points = page.locator("[data-testid=search-pareto] [data-testid=point]")
    assert points.count() == len(result["candidates"])
    front = page.locator("[data-testid=search-pareto] [data-front=true]")
    assert front.count() == len(result["pareto"])
    chosen = page.locator("[data-testid=search-pareto] [data-chosen=true]")
    assert chosen.count() == 1 and chosen.get_attribute("data-name") == result["best"]["name"]
    plot = page.text_content("[data-testid=search-pareto]") or ""
    assert "µcr" in plot and "quality" in plot
    page.screenshot(path=str(ARTIFACTS / "search-pareto.png"))

    others = [p for p in result["pareto"] if p["name"] != result["best"]["name"]]
    target = (others or result["pareto"])[0]
    page.click(f"[data-testid='open-{target['name']}']")
    page.wait_for_function(f"window.__iollm.count() === {len(target['graph']['nodes'])}")
    drawn = page.evaluate("window.__iollm.current()")
    assert sorted(n["id"] for n in drawn["nodes"]) == sorted(n["id"] for n in target["graph"]["nodes"])
    assert sorted((e["from"], e["to"]) for e in drawn["edges"]) == sorted(
        (e["from"], e["to"]) for e in target["graph"]["edges"]
    )
    page.screenshot(path=str(ARTIFACTS / "search-opened.png"))
