"""The search report: a markdown page people read and a Pareto plot (quality vs cost) next to it.

Everything is drawn from the search's JSON result, so a report can be rebuilt from a saved result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .stats import pareto_front

MICRO = 1_000_000


def _credits(micro: float) -> str:
    return f"{micro / MICRO:.6f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _heldout_cells(entry: dict[str, Any]) -> list[Any]:
    h = entry.get("heldout") or {}
    if not h:
        return ["-", "-", "-", "-"]
    return [
        f"{h['score']:.3f}",
        f"[{h['ci_low']:.3f}, {h['ci_high']:.3f}]",
        _credits(h["cost_per_task"]),
        f"{h['latency_s']:.2f}",
    ]


def markdown(result: dict[str, Any]) -> str:
    """The report page: setup, spending, the chosen path, held-out figures, baselines, front, economics."""
    preview = result.get("preview") or {}
    split = result["split"]
    best = result["best"]
    used, exhaustive = result["evaluations_used"], result["evaluations_exhaustive"]
    made, cached = result.get("calls_made"), result.get("calls_cached")
    lines = [
        f"# Path search on `{result['suite']}`",
        "",
        f"Models: {', '.join(f'`{m}`' for m in result['models'])}. Seed {result['seed']}.",
        "",
        f"Split (seed {split['seed']}): {split['search_size']} search tasks, {split['heldout_size']} held-out tasks "
        f"(held-out fingerprint `{split['fingerprint']['heldout'][:16]}`). The search saw only the search split; "
        "every held-out figure below was measured after it had chosen.",
        "",
        "## Space and budget",
        "",
        f"{result['space']['size']} candidates: "
        + ", ".join(f"{n} {t}" for t, n in result["space"]["templates"].items())
        + ".",
        "",
        f"Budget {result['budget']} evaluations; used **{used}** of {exhaustive} exhaustive "
        f"({_pct(used / max(1, exhaustive))}), successive halving keeping 1/{result['schedule']['eta']} per round "
        f"from a first batch of {result['schedule']['first_batch']} tasks. "
        f"Baseline evaluations (completing every single-model candidate on the search split): "
        f"{result['baseline_evaluations']}; held-out evaluations: {result['heldout_evaluations']}.",
        "",
        f"Model calls: {made} made, {cached} served by the call cache "
        f"({_pct(cached / max(1, made + cached))} of all calls)."
        if made is not None and cached is not None
        else "Model calls: not counted (no call cache).",
    ]
    if preview.get("projected_calls"):
        p = preview["projected_calls"]
        lines += [
            "",
            f"Projected before starting: {p['search']} calls for the search "
            f"(exhaustive: {p['exhaustive']}, {p['exhaustive_unique']} distinct).",
        ]
    lines += ["", "### Rounds", ""]
    lines += _table(
        ["round", "tasks seen", "batch", "evaluations", "kept", "dropped as dominated"],
        [
            [r["index"], r["tasks_seen"], r["batch"], r["evaluated"], r["alive"], len(r["dropped_dominated"])]
            for r in result["rounds"]
        ],
    )
    lines += [
        "",
        "## Chosen path",
        "",
        f"**{best['name']}** (template `{best['template']}`, graph hash `{best['hash'][:16]}`): search-split quality "
        f"{best['search']['quality']:.3f} on {best['search']['n']} tasks.",
        "",
        "```json",
        json.dumps(best["graph"], indent=2)[:6000],
        "```",
        "",
        "## Held-out results",
        "",
    ]
    rows = [["chosen: " + best["name"], *_heldout_cells(best)]]
    for label, entry in result["baselines"].items():
        if entry:
            rows.append([f"{label}: {entry['name']}", *_heldout_cells(entry)])
    lines += _table(["path", "score", "95% CI", "credits/task", "latency s"], rows)
    vs = result["vs_best_single"]
    chosen = vs["chosen"]
    lines += [
        "",
        f"Against the best single model (`{vs['best_single']}`): {chosen['quality_delta']:+.3f} "
        f"(paired 95% CI {chosen['delta_ci'][0]:+.3f}..{chosen['delta_ci'][1]:+.3f}) at "
        f"{chosen['cost_ratio']:.2f}x its cost.",
    ]
    for label, point in vs["operating_points"].items():
        if point:
            lines.append(
                f"- {label.replace('_', ' ')} operating point `{point['name']}`: {point['quality_delta']:+.3f} "
                f"at {point['cost_ratio']:.2f}x cost."
            )
    lines.append(
        "- target (same quality at half cost, or +3 points at equal cost) met by: "
        + (", ".join(f"`{n}`" for n in vs["target_met_by"]) or "none")
    )
    lines += simple_baselines_section(result)
    lines += learned_section(result)
    lines += ["", "## Pareto front (quality, cost, latency)", ""]
    lines += _table(
        [
            "path",
            "search quality",
            "held-out score",
            "95% CI",
            "credits/task",
            "latency s",
            "on held-out front",
        ],
        [
            [
                e["name"],
                f"{e['search']['quality']:.3f}",
                *_heldout_cells(e),
                "yes" if e["on_heldout_front"] else "no",
            ]
            for e in result["pareto"]
        ],
    )
    econ = result.get("economics") or {}
    if econ:
        lines += ["", "## Break-even", ""]
        if econ.get("break_even_queries"):
            lines.append(
                f"The search spent {_credits(econ['search_spend'])} credits on model calls; the chosen path "
                f"saves {_credits(econ['saving_per_query'])} credits per query over the best single model, "
                f"so it pays the search back after {econ['break_even_queries']} queries."
            )
        else:
            lines.append(
                f"The search spent {_credits(econ['search_spend'])} credits on model calls. The chosen path "
                "costs no less per query than the best single model: it pays back in quality, not cost."
            )
    return "\n".join(lines) + "\n"


def simple_baselines_section(result: dict[str, Any]) -> list[str]:
    """The chosen path against the simple baselines on the same held-out tasks, and the plain verdict."""
    simple = result.get("simple_baselines") or {}
    if not simple:
        return []
    chosen = simple["chosen"]
    rows = [
        [
            f"chosen: {chosen['name']}",
            f"{chosen['score']:.3f}",
            f"[{chosen['ci'][0]:.3f}, {chosen['ci'][1]:.3f}]",
            _credits(chosen["cost_per_task"]),
            "-",
            "-",
        ]
    ]
    for label, entry in simple["baselines"].items():
        if entry is None:
            rows.append([label.replace("_", " "), "-", "-", "-", "-", "not measured"])
            continue
        vs = entry["vs_chosen"]
        rows.append(
            [
                f"{label.replace('_', ' ')}: {entry['name']}",
                f"{entry['score']:.3f}",
                f"[{entry['ci'][0]:.3f}, {entry['ci'][1]:.3f}]",
                _credits(entry["cost_per_task"]),
                f"{vs['delta']:+.3f} [{vs['delta_ci'][0]:+.3f}, {vs['delta_ci'][1]:+.3f}]",
                f"{vs['cost_ratio']:.2f}x" if vs["cost_ratio"] is not None else "-",
            ]
        )
    lines = ["", "## Simple baselines (held-out, same tasks)", ""]
    lines += _table(
        ["path", "score", "95% CI", "credits/task", "chosen minus it (paired CI)", "chosen cost ratio"], rows
    )
    lines += ["", *(f"- {sentence}" for sentence in simple["verdict"])]
    return lines


def learned_section(result: dict[str, Any]) -> list[str]:
    """Routers and logprob cascades fitted on the search split (cross-validated there), held-out figures."""
    learned = result.get("learned") or []
    notes = result.get("notes") or []
    if not learned and not notes:
        return []
    lines = ["", "## Learned paths (fitted on the search split)", ""]
    if learned:
        lines += _table(
            [
                "path",
                "search quality (cross-validated)",
                "held-out score",
                "95% CI",
                "credits/task",
                "latency s",
            ],
            [[e["name"], f"{e['search']['quality']:.3f}", *_heldout_cells(e)] for e in learned],
        )
    lines += [f"- {note}" for note in notes]
    return lines


def pareto_plot(result: dict[str, Any], path: Path) -> Path:
    """Quality vs cost per task: every evaluated candidate (search split, grey), the front, the baselines
    and the chosen path (held-out split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    others = result.get("candidates") or []
    if others:
        ax.scatter(
            [c["cost"] / MICRO for c in others],
            [c["quality"] for c in others],
            s=14,
            c="#bbbbbb",
            label="candidates (search split)",
            zorder=1,
        )
    members = [e for e in result["pareto"] if e.get("heldout")]
    if members:
        ax.scatter(
            [e["heldout"]["cost_per_task"] / MICRO for e in members],
            [e["heldout"]["score"] for e in members],
            s=36,
            facecolors="none",
            edgecolors="#d62728",
            label="search front (held-out figures)",
            zorder=3,
        )
        points = [(e["heldout"]["score"], e["heldout"]["cost_per_task"]) for e in members]
        front = sorted((points[i] for i in pareto_front(points)), key=lambda p: p[1])
        ax.plot(
            [p[1] / MICRO for p in front],
            [p[0] for p in front],
            "o-",
            color="#d62728",
            label="Pareto front of quality and cost (held-out)",
            zorder=3,
        )
    markers = {
        "best_single": ("s", "#1f77b4"),
        "self_consistency": ("^", "#2ca02c"),
        "cascade": ("D", "#9467bd"),
    }
    for label, entry in result["baselines"].items():
        if entry and entry.get("heldout"):
            marker, colour = markers.get(label, ("x", "black"))
            ax.scatter(
                [entry["heldout"]["cost_per_task"] / MICRO],
                [entry["heldout"]["score"]],
                marker=marker,
                s=60,
                c=colour,
                label=f"{label.replace('_', ' ')} (held-out)",
                zorder=4,
            )
    best = result["best"]
    ax.scatter(
        [best["heldout"]["cost_per_task"] / MICRO],
        [best["heldout"]["score"]],
        marker="*",
        s=220,
        c="#ff7f0e",
        edgecolors="black",
        label=f"chosen: {best['name']}",
        zorder=5,
    )
    costs = [c["cost"] for c in others] + [best["heldout"]["cost_per_task"]]
    positive = [c for c in costs if c > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("cost per task (credits)")
    ax.set_ylabel("quality (mean score)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{result['suite']}: quality vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(result: dict[str, Any], directory: Path) -> dict[str, str]:
    """Write ``report.md``, ``pareto.png`` and ``result.json`` into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "report.md"
    page.write_text(markdown(result), encoding="utf-8")
    plot = pareto_plot(result, directory / "pareto.png")
    saved = directory / "result.json"
    saved.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return {"markdown": str(page), "plot": str(plot), "json": str(saved)}
