"""What advise found, in plain sentences: what each method gave on this provider, and why the winner won.

``findings`` gives every sentence, most telling first; ``explain`` the first
``MAX_WHY`` of them, the page's "Why". Speedups are the sittings' (``advise.timing``):
a ratio to the baseline timed together with it, so INT8's own gain is the
quotient of two speedups from the same sitting.
"""

from __future__ import annotations

from typing import Any

from compressctl.advise.recipes import SLIMMING_PENALTY, lowrank_rule, prune_amounts, quantization, slims
from compressctl.advise.search import describe_lowrank
from compressctl.advise.workbench import SMALL_BN_SCALE

MAX_WHY = 8  # sentences on the page: a person reads this many


def speedup_text(figures: dict[str, Any]) -> str:
    """``5.12x [4.98-5.27]``: the sitting's speedup and its 95 % interval."""
    low, high = figures.get("speedup_ci") or (figures["speedup"], figures["speedup"])
    return f"{figures['speedup']:.2f}x [{low:.2f}-{high:.2f}]"


def figures_line(figures: dict[str, Any]) -> str:
    return (
        f"{speedup_text(figures)}, {figures['latency_ms']:.2f} ms, metric {figures['metric']:.4f} "
        f"(drop {figures['accuracy_drop']:+.4f}), {figures['size_bytes'] / 1e6:.3f} MB"
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _proxy(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("proxy") or record.get("figures", {})


def _own_gain(record: dict[str, Any]) -> float:
    """What quantization added to this candidate: its speedup over its float model's (the same sitting)."""
    figures = _proxy(record)
    return figures.get("slower_than_float", figures)["speedup"] / figures["float"]["speedup"]


def _float_twin(trials: list[dict[str, Any]], record: dict[str, Any], mode: str = "int8") -> float | None:
    """INT8's own gain for this candidate (``mode`` int8: static, or dynamic), when every node is INT8."""
    figures = _proxy(record)
    flt = figures.get("float")
    if not flt or quantization(record["candidate"]) != mode or figures.get("fallback", {}).get("float_nodes"):
        return None
    return _own_gain(record)


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
    dynamic_gains = sorted(g for g in (_float_twin(trials, t, "dynamic") for t in trials) if g)
    if dynamic_gains:
        lines.append(
            f"Dynamic INT8 (QOperator, activation ranges at run time) added a median {_median(dynamic_gains):.2f}x "
            f"on top of the float model it quantized (range {dynamic_gains[0]:.2f}x-{dynamic_gains[-1]:.2f}x)."
        )
    if trials and not any(quantization(t["candidate"]) in ("int8", "dynamic") for t in trials):
        lines.append("No INT8 candidate was tried.")
    for bits in (4, 8):
        clustered = [
            t for t in trials if quantization(t["candidate"]) == "kmeans" and t["candidate"].get("bits") == bits
        ]
        if not clustered:
            continue
        size = _median([t["figures"]["size_bytes"] / t["figures"]["float"]["size_bytes"] for t in clustered])
        speed = _median([_own_gain(t) for t in clustered])
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
            kept = _median([_own_gain(t) for t in used])
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
    sitting, finalists = result.get("finalist_sitting"), result["finalists"]
    if not sitting or not finalists:
        return []
    widest = max(
        (f["figures"]["speedup_ci"][1] - f["figures"]["speedup_ci"][0]) / 2 / f["figures"]["speedup"] for f in finalists
    )
    drift = max(
        (abs(f["proxy"]["speedup"] / f["figures"]["speedup"] - 1) for f in finalists if f["proxy"]), default=0.0
    )
    return [
        f"Timing: the finalists and the baseline were timed together in one sitting ({sitting['rounds']} rounds in "
        f"{sitting['sessions']} session sets, alternating run by run, the {sitting['statistic']} of each model's runs); "
        f"the widest 95 % interval of a finalist's speedup is ±{widest:.0%}. Each proxy was timed in a short sitting "
        f"with the baseline during the search; the finalists' speedups differ from their proxies' by up to {drift:.0%} "
        "(full fine-tuning and another sitting)."
    ]


def _recommendation_lines(result: dict[str, Any]) -> list[str]:
    best = result.get("recommended")
    if not best:
        return ["No finalist met the budget after full fine-tuning."]
    feasible = [f for f in result["finalists"] if f["feasible"]]
    return [
        f"{best['description']} won among the {len(feasible)} finalists that met the budget after a full "
        "`compressctl apply` run: preferring those that meet it even at the slow end of their speedup's interval, "
        "it was the fastest (speedups within 10 % of each other are within the run-to-run noise), the most "
        "accurate of those (within 0.2 pt of the best), and the smallest of those."
    ]


def _layer_lines(result: dict[str, Any]) -> list[str]:
    lines = []
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
    return lines


def findings(result: dict[str, Any]) -> list[str]:
    """Every finding, most telling first: the first sentence of each topic in this order (why the winner
    won, how sure the timing is, quantization, pruning, the layers, low-rank, slimming, what was not
    measured), then the topics' further sentences in the same order."""
    trials = result["trials"]
    torch_trials = [t for t in trials if "layer_amounts" in t["candidate"]]
    topics = [
        _recommendation_lines(result),
        _timing_lines(result),
        _quantization_lines(trials, result),
        _pruning_lines(torch_trials, result),
        _layer_lines(result),
        _lowrank_lines(torch_trials, result),
        _slimming_lines(torch_trials),
        ["Distillation was not part of this search space; it is not ruled out, only not measured."],
    ]
    return [lines[0] for lines in topics if lines] + [line for lines in topics for line in lines[1:]]


def explain(result: dict[str, Any]) -> list[str]:
    """The page's "Why": the ``MAX_WHY`` most telling findings."""
    return findings(result)[:MAX_WHY]
