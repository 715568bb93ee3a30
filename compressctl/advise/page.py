"""advise.html, read top to bottom: the Pareto plot, the recommendation, why it won (at most eight
sentences, ``findings.explain``), the finalists and every candidate (each row links to its recipe), the
layer sensitivity.

Speedups are the sittings' (``advise.timing``), shown once per candidate with
their 95 % interval. The charts share one plotly.js, written once beside the
page (``plotly.min.js``, no network needed); tables, escaping and styles are
report.html's.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from compressctl.advise.findings import figures_line, speedup_text
from compressctl.advise.search import describe_candidate
from compressctl.fsutil import atomic_write_text
from compressctl.report.html import Figures, html_page, html_table, plotly_figure

__all__ = ["figures_line", "write_page"]

PLOTLY_FILE = "plotly.min.js"  # beside advise.html: one bundle for every chart


def trial_notes(record: dict[str, Any]) -> str:
    """What a trial's stages did beyond its description (low-rank that replaced nothing, float fallback)."""
    figures = record["figures"]
    notes = []
    lowrank = figures.get("stages", {}).get("lowrank")
    if lowrank is not None:
        notes.append(
            f"low-rank replaced {len(lowrank['decomposed'])} convs"
            + (f" (MACs {lowrank['macs_after'] / lowrank['macs_before']:.2f}x)" if lowrank["macs_before"] else "")
        )
    if figures.get("kmeans", {}).get("changed") == 0:
        notes.append("k-means found no weight large enough to cluster")
    if "slower_than_float" in figures:
        notes.append(f"INT8 was slower than float ({figures['slower_than_float']['speedup']:.2f}x): float kept")
    fallback = figures.get("fallback")
    if fallback is not None:
        notes.append(f"{fallback['float_nodes']} nodes back to float" if fallback["float_nodes"] else "no fallback")
    return "; ".join(notes)


def pareto_figure(result: dict[str, Any]) -> dict[str, Any]:
    """Every candidate: speedup (with its interval) against metric, marker size = model size."""
    trials, front = result["trials"], set(result["pareto_front"])
    base_size = max(1, result["baseline"]["size_bytes"])
    groups = (
        ("Pareto front", lambda t: t["trial"] in front, "crimson"),
        ("within the budget", lambda t: t["feasible"] and t["trial"] not in front, "seagreen"),
        ("outside the budget", lambda t: not t["feasible"] and t["trial"] not in front, "gray"),
    )
    traces = [
        speedup_trace(label, [t["figures"] for t in trials if pick(t)], color, base_size)
        | {"text": [f"trial {t['trial']}: {describe_candidate(t['candidate'])}" for t in trials if pick(t)]}
        for label, pick, color in groups
    ]
    finalists = result["finalists"]
    if finalists:
        trace = speedup_trace("finalists (full runs)", [f["figures"] for f in finalists], "black", base_size)
        trace["marker"]["symbol"] = "diamond"
        traces.append(trace | {"text": [f"finalist {f['finalist']}: {f['description']}" for f in finalists]})
    figure = plotly_figure(
        traces,
        f"Candidates: speedup over the baseline at batch {result['batch_size']} on {result['provider']} "
        "vs metric; marker size = model size",
        "metric",
    )
    figure["layout"]["xaxis"] = {"title": {"text": "speedup (timed with the baseline; 95 % interval)"}}
    return figure


def speedup_trace(name: str, figures: list[dict[str, Any]], color: str, base_size: int) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [f["speedup"] for f in figures],
        "y": [f["metric"] for f in figures],
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": [f["speedup_ci"][1] - f["speedup"] for f in figures],
            "arrayminus": [f["speedup"] - f["speedup_ci"][0] for f in figures],
        },
        "marker": {"color": color, "size": [6 + 30 * f["size_bytes"] / base_size for f in figures]},
    }


def sensitivity_figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    prune = result["sensitivity"].get("prune", {})
    if prune:
        traces = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": layer,
                "x": [float(r) for r in drops],
                "y": list(drops.values()),
            }
            for layer, drops in prune.items()
        ]
        found["prune"] = plotly_figure(traces, "Pruning sensitivity (one layer, no fine-tuning)", "accuracy drop")
        found["prune"]["layout"]["xaxis"] = {"title": {"text": "ratio of channels removed"}}
    share = result["sensitivity"].get("latency_share", {})
    if share:
        bars = [{"type": "bar", "name": "share", "x": list(share), "y": list(share.values())}]
        found["latency-share"] = plotly_figure(bars, f"Latency share per layer (float, {result['provider']})", "share")
    return found


def recipe_link(record: dict[str, Any], text: str, page_dir: Path) -> str:
    """``text`` linking to the record's recipe file, relative to the page (plain text without one)."""
    if not record.get("recipe_path"):
        return html.escape(text)
    href = Path(os.path.relpath(record["recipe_path"], page_dir)).as_posix()
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def recommendation(result: dict[str, Any], page_dir: Path) -> str:
    best = result.get("recommended")
    if not best:
        return "<h2>Recommendation</h2><p>No candidate meets the budget; the closest are below.</p>"
    recipe = recipe_link({"recipe_path": result.get("recommended_path")}, "recommended.yaml", page_dir)
    return (
        f"<h2>Recommendation</h2><p><b>{html.escape(best['description'])}</b>: "
        f"{html.escape(figures_line(best['figures']))} (speedup timed with the baseline in one sitting, "
        f"95 % interval in brackets). Recipe: {recipe}.</p>"
    )


def candidate_tables(result: dict[str, Any], page_dir: Path) -> list[str]:
    def cells(figures: dict[str, Any]) -> list[str]:
        return [
            speedup_text(figures),
            f"{figures['latency_ms']:.3f}",
            f"{figures['metric']:.4f}",
            f"{figures['size_bytes'] / 1e6:.3f}",
        ]

    finalists = [
        [
            f["finalist"],
            recipe_link(f, f["description"], page_dir)
            + (f" (between finalists {f['between'][0]} and {f['between'][1]})" if f.get("between") else ""),
            *cells(f["figures"]),
            "yes" if f["feasible"] else "no",
        ]
        for f in result["finalists"]
    ]
    front = set(result["pareto_front"])
    trials = [
        [
            t["trial"],
            recipe_link(t, describe_candidate(t["candidate"]), page_dir),
            *cells(t["figures"]),
            "yes" if t["feasible"] else "no",
            "yes" if t["trial"] in front else "",
            trial_notes(t),
        ]
        for t in result["trials"]
    ]
    figures = ["speedup [95 %]", "latency ms", "metric", "MB"]
    return [
        "<h2>Finalists (full apply runs, timed together with the baseline in one sitting)</h2>"
        + html_table(["#", "candidate (recipe)", *figures, "meets budget"], finalists, raw_columns=(1,)),
        "<h2>All candidates (proxies: short fine-tuning, each timed with the baseline in a short sitting)</h2>"
        + html_table(
            ["trial", "candidate (recipe)", *figures, "within budget", "Pareto", "notes"], trials, raw_columns=(1,)
        ),
    ]


def sensitivity_table(result: dict[str, Any]) -> str:
    sens = result["sensitivity"]
    layers = sorted(set(sens.get("prune", {})) | set(sens.get("quantize", {})) | set(sens.get("latency_share", {})))
    ratios = sorted({r for v in sens.get("prune", {}).values() for r in v}, key=float)
    rows = [
        [layer, f"{sens.get('latency_share', {}).get(layer, 0):.1%}", sens.get("quantize", {}).get(layer, "")]
        + [sens.get("prune", {}).get(layer, {}).get(r, "") for r in ratios]
        for layer in sorted(layers, key=lambda n: -sens.get("latency_share", {}).get(n, 0))
    ]
    header = ["layer", "latency share", "accuracy drop, INT8 alone"] + [f"drop, prune {r}" for r in ratios]
    return "<h2>Layer sensitivity</h2>" + html_table(header, rows)


def write_page(result: dict[str, Any], path: Path) -> None:
    """advise.html, and plotly.min.js beside it."""
    import plotly.offline

    page_dir = Path(path).parent
    charts = Figures(inline_bundle=False)
    limits = {k: v for k, v in result["budget"].items() if v is not None}
    parts = [
        f'<script src="{PLOTLY_FILE}" charset="utf-8"></script>',
        f"<h1>compressctl advise: {html.escape(result['recipe'])}</h1>",
        f"<p>Budget: {html.escape(str(limits))} on {html.escape(result['provider'])} at batch "
        f"{result['batch_size']}; {len(result['trials'])} trials, {result['seconds']:.0f} s.</p>",
        charts.div(pareto_figure(result), "pareto"),
        recommendation(result, page_dir),
        "<h2>Why</h2><ol>" + "".join(f"<li>{html.escape(x)}</li>" for x in result["explanation"]) + "</ol>",
        *candidate_tables(result, page_dir),
        sensitivity_table(result),
        *(charts.div(figure, name) for name, figure in sensitivity_figures(result).items()),
    ]
    atomic_write_text(page_dir / PLOTLY_FILE, plotly.offline.get_plotlyjs())
    atomic_write_text(path, html_page(f"compressctl advise: {result['recipe']}", parts))
