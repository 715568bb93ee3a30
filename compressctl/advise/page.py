"""advise.html: the Pareto front, every candidate's figures, the layer sensitivity, and why the winner won.

Charts embed plotly.js inline (the page works offline); tables, escaping and styles are report.html's.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from compressctl.advise.recipes import SLIMMING_PENALTY, lowrank_rule, prune_amounts, quantization, slims
from compressctl.advise.search import describe_candidate, describe_lowrank
from compressctl.advise.workbench import SMALL_BN_SCALE
from compressctl.fsutil import atomic_write_text
from compressctl.report.html import html_page, html_table


def figures_line(figures: dict[str, Any]) -> str:
    return (
        f"{figures['speedup']:.2f}x, {figures['p50_ms']:.2f} ms, metric {figures['metric']:.4f} "
        f"(drop {figures['accuracy_drop']:+.4f}), {figures['size_bytes'] / 1e6:.3f} MB"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _proxy(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("proxy") or record.get("figures", {})


def _float_twin(trials: list[dict[str, Any]], record: dict[str, Any]) -> float | None:
    """INT8's own gain for this candidate: its float p50 / its INT8 p50 (both measured in the trial)."""
    figures = _proxy(record)
    flt = figures.get("float")
    if not flt or quantization(record["candidate"]) != "int8" or figures.get("fallback", {}).get("float_nodes"):
        return None
    return flt["p50_ms"] / figures["p50_ms"]


def _tried(record: dict[str, Any]) -> dict[str, Any]:
    """The candidate as the search suggested it (before a low-rank stage that replaced nothing was dropped)."""
    return record.get("suggested", record["candidate"])


def _twins(trials: list[dict[str, Any]], keys: tuple[str, ...], has: Any) -> list[tuple[dict, dict]]:
    """Pairs (with, without) of trials whose candidates differ only in ``keys``, ``has`` telling them apart."""
    found = []
    for a in trials:
        for b in trials:
            same = {k: v for k, v in _tried(a).items() if k not in keys} == {
                k: v for k, v in _tried(b).items() if k not in keys
            }
            if same and has(a) and not has(b):
                found.append((a, b))
    return found


def _pruning_lines(trials: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    provider, batch = result["provider"], result["batch_size"]
    pruned_float = [t for t in trials if prune_amounts(t["candidate"]) and lowrank_rule(t["candidate"]) is None]
    drop_limit = (result.get("proxy_budget") or {}).get("max_accuracy_drop")
    if drop_limit is not None:  # the fastest that kept its accuracy, not the fastest wreck
        pruned_float = [t for t in pruned_float if t["figures"]["float"]["accuracy_drop"] <= drop_limit] or pruned_float
    if not pruned_float:
        return []
    fastest = max(pruned_float, key=lambda t: t["figures"]["float"]["speedup"])
    amounts = fastest["candidate"]["layer_amounts"]
    return [
        f"Structured pruning alone (float) reached {fastest['figures']['float']['speedup']:.2f}x on "
        f"{provider} at batch {batch} in the search, removing "
        + ", ".join(f"{v:.0%} of {k.removesuffix('.*')}" for k, v in amounts.items())
        + f" (accuracy after the short proxy fine-tuning {fastest['figures']['float']['metric']:.4f})."
    ]


def _slimming_lines(trials: list[dict[str, Any]]) -> list[str]:
    slimmed = [t for t in trials if slims(t["candidate"])]
    if not slimmed:
        return ["Network slimming (bn_scale ranking) was not tried."] if trials else []
    scales = slimmed[0]["figures"].get("stages", {}).get("slimming", {})
    lines = []
    if scales:
        before, after = scales["bn_scales_before"], scales["bn_scales_after"]
        switched_off = after["small_share"] > before["small_share"] + 0.05
        lines.append(
            f"Network slimming (the recipe's fine-tuning with an L1 penalty of {SLIMMING_PENALTY:g} on the BatchNorm "
            f"scales, then channels ranked by those scales) moved the median scale from {before['median']:.2f} to "
            f"{after['median']:.2f} and left {after['small_share']:.0%} of them under {SMALL_BN_SCALE:g} "
            f"({before['small_share']:.0%} before): "
            + (
                "it switched off channels the model does without."
                if switched_off
                else "a fine-tuning this short switches no channel off; the ranking only shifts."
            )
        )
    pairs = _twins(trials, ("importance",), lambda t: slims(t["candidate"]))
    if pairs:
        gains = [a["figures"]["float"]["metric"] - b["figures"]["float"]["metric"] for a, b in pairs]
        lines.append(
            f"At the same pruning ratios, slimmed candidates ended {_median(gains) * 100:+.2f} pt (median of "
            f"{len(pairs)} pairs, after the short proxy fine-tuning) against L1/L2 magnitude ranking: "
            + ("slimming kept the better channels." if _median(gains) > 0 else "it did not rank channels better here.")
        )
    return lines


def _lowrank_lines(trials: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    tried = [t for t in trials if lowrank_rule(_tried(t)) is not None]
    if not tried:
        return ["Low-rank factorisation was not tried."] if trials else []
    useless = [t for t in tried if lowrank_rule(t["candidate"]) is None]
    used = [t for t in tried if lowrank_rule(t["candidate"]) is not None]
    lines = []
    if useless:
        reasons = sorted({r for t in useless for r in t["figures"]["stages"]["lowrank"]["skipped"].values()})
        lines.append(
            f"Low-rank (Tucker-2) replaced no conv in {len(useless)} of {len(tried)} candidates that tried it: at "
            "those ranks a 1x1 → kxk → 1x1 chain would not have fewer MACs than the conv it replaces (the convs "
            "are already narrow, or thin after pruning)" + (f"; e.g. {reasons[0]}" if reasons else "") + "."
        )
    if not used:
        return lines
    base_macs = result["baseline"].get("macs")
    others = [t for t in trials if lowrank_rule(t["candidate"]) is None and t["figures"]["float"].get("macs")]
    if base_macs and others:
        cut = _median([base_macs / t["figures"]["float"]["macs"] for t in used])
        speed = _median([t["figures"]["float"]["speedup"] for t in used])
        cut_o = _median([base_macs / t["figures"]["float"]["macs"] for t in others])
        speed_o = _median([t["figures"]["float"]["speedup"] for t in others])
        lines.append(
            f"Low-rank candidates cut MACs by a median {cut:.1f}x and float latency by {speed:.1f}x on "
            f"{result['provider']}; candidates without it cut MACs by {cut_o:.1f}x and latency by {speed_o:.1f}x"
            + (
                ": per MAC removed, the three thin convs of a factorisation save less time than removed channels do."
                if speed / cut < speed_o / cut_o * 0.8
                else "."
            )
        )
    pairs = _twins(trials, ("lowrank", "lowrank_order"), lambda t: lowrank_rule(t["candidate"]) is not None)
    for a, b in pairs[:2]:
        lines.append(
            f"Same candidate with and without {describe_lowrank(lowrank_rule(a['candidate']))}: "
            f"{a['figures']['speedup']:.2f}x vs {b['figures']['speedup']:.2f}x, metric "
            f"{a['figures']['metric']:.4f} vs {b['figures']['metric']:.4f} (proxy)."
        )
    without = [t for t in trials if lowrank_rule(t["candidate"]) is None]
    for order in ("before", "after"):
        placed = [t for t in used if (t["candidate"].get("lowrank_order") == "before") == (order == "before")]
        feasible = [t for t in placed if t["feasible"]]
        if not placed:
            continue
        line = f"Low-rank {order} pruning: {len(placed)} candidates, {len(feasible) or 'none'} within the budget"
        if feasible:
            best = max(feasible, key=lambda t: t["figures"]["speedup"])
            line += f"; the fastest reached {best['figures']['speedup']:.2f}x at metric {best['figures']['metric']:.4f}"
        elif without:
            line += (
                f" (median metric {_median([t['figures']['metric'] for t in placed]):.4f} and speedup "
                f"{_median([t['figures']['speedup'] for t in placed]):.2f}x after the short proxy fine-tuning, "
                f"against {_median([t['figures']['metric'] for t in without]):.4f} and "
                f"{_median([t['figures']['speedup'] for t in without]):.2f}x without low-rank)"
            )
        lines.append(line + ".")
    return lines


def _quantization_lines(trials: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    provider = result["provider"]
    lines = []
    int8_gains = [g for g in (_float_twin(trials, t) for t in trials) if g]
    if int8_gains:
        gains = sorted(int8_gains)
        lines.append(
            f"INT8 (QDQ, u8 activations, s8 per-channel weights) added a median {_median(gains):.2f}x "
            f"on top of the float model it quantized (range {gains[0]:.2f}x-{gains[-1]:.2f}x)."
        )
    elif trials and not any(quantization(t["candidate"]) == "int8" for t in trials):
        lines.append("No INT8 candidate was tried.")
    for bits in (4, 8):
        clustered = [
            t for t in trials if quantization(t["candidate"]) == "kmeans" and t["candidate"].get("bits") == bits
        ]
        if not clustered:
            continue
        size = _median([t["figures"]["size_bytes"] / t["figures"]["float"]["size_bytes"] for t in clustered])
        speed = _median([t["figures"]["float"]["p50_ms"] / t["figures"]["p50_ms"] for t in clustered])
        drop = _median([t["figures"]["float"]["metric"] - t["figures"]["metric"] for t in clustered])
        lines.append(
            f"k-means {bits}-bit shrank the file to {size:.2f}x of the float model it clustered but ran at {speed:.2f}x "
            f"its speed on {provider}, losing {drop * 100:.2f} pt (medians of {len(clustered)} candidates): the "
            "codebook is decoded to float weights when the session starts, so it buys file size, not latency."
        )
    allowed = [t for t in trials if "fallback" in t["figures"]]
    if allowed:
        used = [t for t in allowed if t["figures"]["fallback"]["float_nodes"]]
        worst = max(t["figures"]["fallback"]["int8_drop"] for t in allowed)
        if used:
            nodes = _median([t["figures"]["fallback"]["float_nodes"] for t in used])
            kept = _median([t["figures"]["float"]["p50_ms"] / t["figures"]["p50_ms"] for t in used])
            lines.append(
                f"The accuracy-aware float fallback returned nodes to float in {len(used)} of {len(allowed)} INT8 "
                f"candidates that allowed it (median {nodes} nodes); with those nodes in float they ran at "
                f"{kept:.2f}x the speed of their float model (median), against the full-INT8 gain above."
            )
        else:
            lines.append(
                f"The accuracy-aware float fallback never had to act in the {len(allowed)} INT8 candidates that "
                f"allowed it: INT8 alone lost at most {worst * 100:.2f} pt against the float model it quantized."
            )
    return lines


def _timing_lines(result: dict[str, Any]) -> list[str]:
    timed = [f for f in result["finalists"] if f["figures"].get("session_p50s")]
    if not timed:
        return []
    spread = max(max(f["figures"]["session_p50s"]) / min(f["figures"]["session_p50s"]) for f in timed)
    drift = max(abs(f["proxy"]["p50_ms"] / f["figures"]["p50_ms"] - 1) for f in timed)
    return [
        f"Timing: the finalists and the baseline were timed side by side, {len(timed[0]['figures']['session_p50s'])} "
        f"fresh sessions each, and judged on their fastest; one model's sessions differed by up to {spread - 1:.0%}, "
        f"and the same layer widths timed minutes earlier in the search (its proxy) by up to {drift:.0%}. Latency on "
        "this machine drifts that much over time, so one `compressctl apply` of the recommendation can land that "
        "far either side of a latency limit."
    ]


def explain(result: dict[str, Any]) -> list[str]:
    """Plain sentences: what each method gave on this provider, and why the winner won."""
    lines: list[str] = []
    best = result.get("recommended")
    trials = result["trials"]
    torch_trials = [t for t in trials if "layer_amounts" in t["candidate"]]
    lines += _pruning_lines(torch_trials, result)
    lines += _slimming_lines(torch_trials)
    lines += _lowrank_lines(torch_trials, result)
    lines += _quantization_lines(trials, result)
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
    lines.append("Distillation was not part of this search space; it is not ruled out, only not measured.")
    lines += _timing_lines(result)
    if best:
        f = best["figures"]
        lines.append(
            f"Recommended: {best['description']}, confirmed by a full `compressctl apply` run: {figures_line(f)}. "
            "Among the finalists that met the budget (even at their p90 latency, when any did) it was the most "
            "accurate (within 0.2 pt of the best), the fastest of those, and the smallest of those within 10 % of "
            "that speed (closer latencies are within the run-to-run noise)."
        )
    else:
        lines.append("No finalist met the budget after full fine-tuning.")
    return lines


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
    if figures.get("kmeans", {}).get("clustered") == 0:
        notes.append("k-means found no weight large enough to cluster")
    fallback = figures.get("fallback")
    if fallback is not None:
        notes.append(f"{fallback['float_nodes']} nodes back to float" if fallback["float_nodes"] else "no fallback")
    return "; ".join(notes)


def _charts(result: dict[str, Any]) -> list[str]:
    import plotly.graph_objects as go

    trials = result["trials"]
    front = set(result["pareto_front"])
    charts = []
    base_size = max(1, result["baseline"]["size_bytes"])
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
                marker={"color": color, "size": [6 + 30 * t["figures"]["size_bytes"] / base_size for t in chosen]},
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
            f"{f['figures'].get('report_speedup', f['figures']['speedup']):.2f}",
            f"{f['figures']['p50_ms']:.3f}",
            f"{f['figures']['metric']:.4f}",
            f"{f['figures']['size_bytes'] / 1e6:.3f}",
            "yes" if f["feasible"] else "no",
            f["recipe_path"],
        ]
        for f in result["finalists"]
    ]
    header = ["#", "candidate", "speedup", "speedup in its report", "p50 ms", "metric", "MB", "meets budget", "recipe"]
    parts.append(
        "<h2>Finalists (full apply runs; latency: timed side by side, fastest session)</h2>"
        + html_table(header, finalists)
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
            trial_notes(t),
        ]
        for t in result["trials"]
    ]
    parts.append(
        "<h2>All candidates (proxy: short fine-tuning)</h2>"
        + html_table(["trial", "candidate", "speedup", "p50 ms", "metric", "MB", "feasible", "Pareto", "notes"], rows)
    )
    sens = result["sensitivity"]
    layers = sorted(set(sens.get("prune", {})) | set(sens.get("quantize", {})) | set(sens.get("latency_share", {})))
    ratios = sorted({r for v in sens.get("prune", {}).values() for r in v}, key=float)
    sens_rows = [
        [layer, f"{sens.get('latency_share', {}).get(layer, 0):.1%}", sens.get("quantize", {}).get(layer, "")]
        + [sens.get("prune", {}).get(layer, {}).get(r, "") for r in ratios]
        for layer in sorted(layers, key=lambda n: -sens.get("latency_share", {}).get(n, 0))
    ]
    sens_header = ["layer", "latency share", "accuracy drop, INT8 alone"] + [f"drop, prune {r}" for r in ratios]
    parts.append("<h2>Layer sensitivity</h2>" + html_table(sens_header, sens_rows))
    parts.extend(_charts(result))
    atomic_write_text(path, html_page(f"compressctl advise: {result['recipe']}", parts))
