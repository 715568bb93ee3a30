"""advise.html: the Pareto front, every candidate's figures, the layer sensitivity, and why the winner won.

Charts are plotly figures with plotly.js embedded inline, so the page works offline.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def figures_line(figures: dict[str, Any]) -> str:
    return (
        f"{figures['speedup']:.2f}x, {figures['p50_ms']:.2f} ms, metric {figures['metric']:.4f} "
        f"(drop {figures['accuracy_drop']:+.4f}), {figures['size_bytes'] / 1e6:.3f} MB"
    )


def _float_twin(trials: list[dict[str, Any]], record: dict[str, Any]) -> float | None:
    """INT8's own gain for this candidate: pruned-float p50 / pruned-INT8 p50 (both measured in the trial)."""
    figures = record.get("proxy") or record.get("figures", {})
    flt = figures.get("float")
    if not flt or not record["candidate"].get("quantize"):
        return None
    return flt["p50_ms"] / figures["p50_ms"]


def explain(result: dict[str, Any]) -> list[str]:
    """Plain sentences: what each method gave on this provider, and why the winner won."""
    provider, batch = result["provider"], result["batch_size"]
    lines: list[str] = []
    best = result.get("recommended")
    trials = result["trials"]
    pruned_float = [t for t in trials if any(v > 0 for v in (t["candidate"].get("layer_amounts") or {}).values())]
    drop_limit = (result.get("proxy_budget") or {}).get("max_accuracy_drop")
    if drop_limit is not None:  # the fastest that kept its accuracy, not the fastest wreck
        pruned_float = [t for t in pruned_float if t["figures"]["float"]["accuracy_drop"] <= drop_limit] or pruned_float
    if pruned_float:
        fastest = max(pruned_float, key=lambda t: t["figures"]["float"]["speedup"])
        amounts = fastest["candidate"]["layer_amounts"]
        lines.append(
            f"Structured pruning alone (float) reached {fastest['figures']['float']['speedup']:.2f}x on "
            f"{provider} at batch {batch} in the search, removing "
            + ", ".join(f"{v:.0%} of {k.removesuffix('.*')}" for k, v in amounts.items())
            + f" (accuracy after the short proxy fine-tuning {fastest['figures']['float']['metric']:.4f})."
        )
    int8_gains = [g for g in (_float_twin(trials, t) for t in trials) if g]
    if int8_gains:
        gains = sorted(int8_gains)
        lines.append(
            f"INT8 (QDQ, u8 activations, s8 per-channel weights) added a median {gains[len(gains) // 2]:.2f}x "
            f"on top of the float model it quantized (range {gains[0]:.2f}x-{gains[-1]:.2f}x)."
        )
    elif trials and not any(t["candidate"].get("quantize") for t in trials):
        lines.append("No INT8 candidate was tried.")
    share = result["sensitivity"].get("latency_share", {})
    if share:
        top = list(share.items())[:3]
        lines.append("Latency is dominated by " + ", ".join(f"{k} ({v:.0%})" for k, v in top) + ".")
    prune = result["sensitivity"].get("prune", {})
    if prune:
        by_cost = sorted(prune.items(), key=lambda kv: kv[1].get("0.5", 0))
        cheap = [k for k, v in by_cost if v.get("0.5", 1) <= 0.01][:4]
        costly = [k for k, v in by_cost[::-1] if v.get("0.5", 0) > 0.05][:3]
        if cheap:
            lines.append("Cheap to prune (under 1 pt lost at 50 %, before fine-tuning): " + ", ".join(cheap) + ".")
        if costly:
            lines.append("Sensitive to pruning (over 5 pt lost at 50 %): " + ", ".join(costly) + ".")
    quant = result["sensitivity"].get("quantize", {})
    if quant:
        worst = max(quant.items(), key=lambda kv: kv[1])
        lines.append(f"The layer most hurt by INT8 alone is {worst[0]} ({worst[1] * 100:+.2f} pt).")
    lines.append(
        "Low-rank factorisation, distillation and network slimming were not part of this search space; "
        "they are not ruled out, only not measured."
    )
    if best:
        f = best["figures"]
        lines.append(
            f"Recommended: {best['description']}, confirmed by a full `compressctl apply` run: {figures_line(f)}. "
            "Among the finalists that met the budget (even at their p90 latency, when any did) it was the most "
            "accurate (the fastest of those within 0.2 pt of the best)."
        )
    else:
        lines.append("No finalist met the budget after full fine-tuning.")
    return lines


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _charts(result: dict[str, Any]) -> list[str]:
    import plotly.graph_objects as go

    from compressctl.advise.search import describe_candidate

    trials = result["trials"]
    front = set(result["pareto_front"])
    charts = []
    scatter = go.Figure()
    for label, pick, color in (
        ("Pareto front", lambda t: t["trial"] in front, "crimson"),
        ("feasible", lambda t: t["feasible"] and t["trial"] not in front, "seagreen"),
        ("outside the budget", lambda t: not t["feasible"] and t["trial"] not in front, "gray"),
    ):
        chosen = [t for t in trials if pick(t)]
        scatter.add_trace(
            go.Scatter(
                x=[t["figures"]["p50_ms"] for t in chosen],
                y=[t["figures"]["metric"] for t in chosen],
                mode="markers",
                name=label,
                marker={
                    "color": color,
                    "size": [
                        6 + 30 * t["figures"]["size_bytes"] / max(1, result["baseline"]["size_bytes"]) for t in chosen
                    ],
                },
                text=[f"trial {t['trial']}: {describe_candidate(t['candidate'])}" for t in chosen],
            )
        )
    scatter.update_layout(
        title=f"Candidates (proxy figures): latency at batch {result['batch_size']} vs metric; marker size = model size",
        xaxis_title=f"p50 ms on {result['provider']}",
        yaxis_title="metric",
    )
    charts.append(scatter.to_html(full_html=False, include_plotlyjs=True))
    prune = result["sensitivity"].get("prune", {})
    if prune:
        fig = go.Figure()
        for layer, drops in prune.items():
            fig.add_trace(
                go.Scatter(x=[float(r) for r in drops], y=list(drops.values()), name=layer, mode="lines+markers")
            )
        fig.update_layout(
            title="Pruning sensitivity (one layer, no fine-tuning)",
            xaxis_title="ratio of channels removed",
            yaxis_title="accuracy drop",
        )
        charts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    share = result["sensitivity"].get("latency_share", {})
    if share:
        fig = go.Figure(go.Bar(x=list(share), y=list(share.values())))
        fig.update_layout(title=f"Latency share per layer (float, {result['provider']})", yaxis_title="share")
        charts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    return charts


def write_page(result: dict[str, Any], path: Path) -> None:
    from compressctl.advise.search import describe_candidate

    parts = [f"<h1>compressctl advise: {html.escape(result['recipe'])}</h1>"]
    parts.append(
        f"<p>Budget: {html.escape(str({k: v for k, v in result['budget'].items() if v is not None}))} "
        f"on {html.escape(result['provider'])} at batch {result['batch_size']}; "
        f"{len(result['trials'])} trials, {result['seconds']:.0f} s.</p>"
    )
    parts.append("<h2>Why</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in result["explanation"]) + "</ul>")
    finalists = [
        [
            f["finalist"],
            f["description"],
            f"{f['figures']['speedup']:.2f}",
            f"{f['figures']['p50_ms']:.3f}",
            f"{f['figures']['metric']:.4f}",
            f"{f['figures']['size_bytes'] / 1e6:.3f}",
            "yes" if f["feasible"] else "no",
            f["recipe_path"],
        ]
        for f in result["finalists"]
    ]
    parts.append(
        "<h2>Finalists (full apply runs)</h2>"
        + _table(["#", "candidate", "speedup", "p50 ms", "metric", "MB", "meets budget", "recipe"], finalists)
    )
    front = set(result["pareto_front"])
    rows = [
        [
            t["trial"],
            describe_candidate(t["candidate"]),
            f"{t['figures']['speedup']:.2f}",
            f"{t['figures']['p50_ms']:.3f}",
            f"{t['figures']['metric']:.4f}",
            f"{t['figures']['size_bytes'] / 1e6:.3f}",
            "yes" if t["feasible"] else "no",
            "yes" if t["trial"] in front else "",
        ]
        for t in result["trials"]
    ]
    parts.append(
        "<h2>All candidates (proxy: short fine-tuning)</h2>"
        + _table(["trial", "candidate", "speedup", "p50 ms", "metric", "MB", "feasible", "Pareto"], rows)
    )
    sens = result["sensitivity"]
    layers = sorted(set(sens.get("prune", {})) | set(sens.get("quantize", {})) | set(sens.get("latency_share", {})))
    ratios = sorted({r for v in sens.get("prune", {}).values() for r in v}, key=float)
    sens_rows = [
        [layer, f"{sens.get('latency_share', {}).get(layer, 0):.1%}", sens.get("quantize", {}).get(layer, "")]
        + [sens.get("prune", {}).get(layer, {}).get(r, "") for r in ratios]
        for layer in sorted(layers, key=lambda n: -sens.get("latency_share", {}).get(n, 0))
    ]
    parts.append(
        "<h2>Layer sensitivity</h2>"
        + _table(
            ["layer", "latency share", "accuracy drop, INT8 alone"] + [f"drop, prune {r}" for r in ratios], sens_rows
        )
    )
    parts.extend(_charts(result))
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>advise</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>",
        encoding="utf-8",
    )
