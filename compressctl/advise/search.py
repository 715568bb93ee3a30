"""advise's search: proposals from a strategy, each measured as a real proxy.

The space comes from the runners' search tags (``compressctl.advise.space``):
a pruning ratio per Torch-Pruning layer group and the channel ranking (l1, l2,
or bn_scale after network slimming), least-squares reconstruction of pruned
Linear layers with or without the recovery training after it, Tucker-2 low-rank ranks (none, a ratio or
an energy) placed before or after pruning, the quantization (float, static INT8
with or without the accuracy-aware float fallback and with the nodes INT8 hurts
most kept float or not, k-means at 4 or 8 bits), and any tagged option of a
third-party stage the recipe lists. The strategy (``compressctl.advise.strategies``:
NSGA-II, an RL agent or random) proposes values; the workbench builds the
candidate (its stages with a brief fine-tune, export, quantization) and
``advise.timing`` times it with the baseline in a sitting.
Objectives: the recipe's metric (max), the speedup over the baseline at the
gate batch on the provider (max), size on disk (min); the budget's limits are
constraints.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.advise.budget import Budget
from compressctl.advise.recipes import LOWRANK_METHOD, lowrank_rule, prune_amounts, quantization, slims
from compressctl.advise.space import ORDER, RECOVERY, Dimension, Space
from compressctl.advise.strategies import objectives

log = logging.getLogger("compressctl")

GUIDED_SPREAD = 0.2  # the guided starting point prunes 0.5 ± this: most where latency is high and sensitivity low


def layer_groups(bench: Any) -> dict[str, str]:
    """Top-level parts of the model that hold prunable layers → their ``layer_amounts`` pattern."""
    from compressctl.advise.sensitivity import prunable_layers

    groups: dict[str, str] = {}
    for name in prunable_layers(bench.module, bench.example()):
        top = name.split(".")[0]
        groups.setdefault(top, f"{top}.*" if "." in name else top)
    return groups


def snap(dim: Dimension, ratio: float) -> float:
    """The grid value of ``dim`` nearest ``ratio`` (within its bound)."""
    return min(dim.choices, key=lambda choice: abs(choice - ratio))


def guided_ratios(space: Space, groups: list[Dimension]) -> dict[str, float] | None:
    """AMC/HAQ-style: prune hardest the groups with a high share of latency (of MACs without a profile) and a
    low sensitivity, least the opposite; None without a sensitivity analysis."""
    layers = {dim.name: space.layers[dim.name] for dim in groups}
    if len(layers) < 2 or not any(layer.sensitivity for layer in layers.values()):
        return None

    def rank(key: Callable[[Any], float]) -> dict[str, int]:
        return {name: position for position, name in enumerate(sorted(layers, key=lambda n: key(layers[n])))}

    cost = rank(lambda layer: layer.latency_share or layer.macs_share)  # higher: more to gain
    cheap = rank(lambda layer: -layer.sensitivity)  # higher: less to lose
    order = sorted(layers, key=lambda name: cost[name] + cheap[name])
    span = max(1, len(order) - 1)
    return {name: 0.5 - GUIDED_SPREAD + 2 * GUIDED_SPREAD * position / span for position, name in enumerate(order)}


def cheap_groups(space: Space, groups: list[Dimension]) -> set[str]:
    """The groups no more sensitive than the median when some group is more sensitive (an encoder's
    FFNs beside its residual width); empty without a sensitivity analysis."""
    sensitivity = {dim.name: space.layers[dim.name].sensitivity for dim in groups}
    if len(sensitivity) < 2 or not any(sensitivity.values()):
        return set()
    median = statistics.median(sensitivity.values())
    cheap = {name for name, value in sensitivity.items() if value <= median}
    return cheap if len(cheap) < len(sensitivity) else set()


def starting_points(space: Space) -> list[dict[str, Any]]:
    """Values proposed first, by every strategy: the usual hand-written recipe (uniform pruning + INT8) and its
    slimmed, sensitivity-guided, cheap-groups-only, least-squares-reconstructed (25 and 50 %, no training), heavier
    (60 and 70 %) and low-rank variants (each completed with the first choice of the rest; slimmed ones only for
    models with batch norms, reconstructed ones for models whose groups hold Linear layers)."""
    if space.onnx_only:
        point = {"quantize.mode": "static", "quantize.per_channel": True, "quantize.calibration": "minmax"}
        return [space.fill(point)]
    groups = [dim for dim in space.dimensions if dim.per == "layer_group"]
    int8 = {"quantize.mode": space.quantize_mode, "quantize.max_accuracy_drop": 0.003}
    importances = next((d.choices for d in space.dimensions if d.name == "prune.importance"), ())
    slim = "bn_scale" if "bn_scale" in importances else "l1"

    def pruned(ratios: dict[str, float], importance: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        point = {dim.name: snap(dim, ratios.get(dim.name, 0.5)) for dim in groups}
        return space.fill({**point, "prune.importance": importance, **int8, **(extra or {})})

    def uniform(ratio: float) -> dict[str, float]:
        return {dim.name: ratio for dim in groups}

    points = [pruned(uniform(0.5), "l1"), pruned(uniform(0.5), slim)]
    if space.quantize_mode == "dynamic":  # an encoder's usual recipes: dynamic INT8 alone, unpruned, or static
        points[:0] = [pruned(uniform(0.0), "l1"), pruned(uniform(0.0), "l1", {"quantize.mode": "static"})]
    guided = guided_ratios(space, groups)
    if guided is not None:
        points += [pruned(guided, slim), pruned(guided, "l1")]
    cheap = cheap_groups(space, groups)
    for ratio in (0.25, 0.5) if cheap else ():
        points.append(pruned({dim.name: ratio if dim.name in cheap else 0.0 for dim in groups}, "l1"))
    if any(dim.name == "prune.reconstruct" for dim in space.dimensions):  # re-solved, with no training after
        solved = {"prune.reconstruct": "least_squares", RECOVERY: "none"}
        narrowed = cheap or {dim.name for dim in groups}
        for ratio in (0.25, 0.5):
            points.append(pruned({dim.name: ratio if dim.name in narrowed else 0.0 for dim in groups}, "l1", solved))
    points += [pruned(uniform(0.6), slim), pruned(uniform(0.7), slim)]
    lowrank = {"lowrank.method": LOWRANK_METHOD, "lowrank.rank": "ratio 0.5", ORDER: "after"}
    points.append(pruned(uniform(0.5), "l1", lowrank))
    unique: list[dict[str, Any]] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def effective_candidate(candidate: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The candidate without the stages that changed nothing in its proxy.

    A low-rank stage that replaced no conv (no conv's MACs would drop) or a
    k-means or int4 stage that found no weight to rewrite is left out:
    the recipe then has no stage that would do nothing (or fail), and the
    candidate counts as the same as its twin without it.
    """
    effective = dict(candidate)
    lowrank = figures.get("stages", {}).get("lowrank")
    if lowrank_rule(candidate) is not None and lowrank is not None and not lowrank["decomposed"]:
        effective.pop("lowrank")
        effective.pop("lowrank_order", None)
    mode = quantization(candidate)
    if mode in ("kmeans", "int4") and not figures.get(mode, {}).get("changed", 1):
        effective.pop("bits", None)
        effective["quantize"] = "float"
    return effective


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (ma, xa, sa), (mb, xb, sb) = objectives(a), objectives(b)
    return ma >= mb and xa >= xb and sa <= sb and (ma > mb or xa > xb or sa < sb)


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated feasible records (all records when none is feasible)."""
    feasible = [r for r in records if r["feasible"]]
    pool = feasible or records
    return [r for r in pool if not any(dominates(o["figures"], r["figures"]) for o in pool if o is not r)]


def run_search(
    bench: Any,
    budget: Budget,
    folder: Path,
    *,
    trials: int,
    timeout_s: float | None,
    seed: int,
    progress: Callable[..., None],
    analysis: dict[str, Any] | None = None,
    strategy: str = "nsga2",
    evaluate: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run the search; returns one record per finished trial (candidate, proxy figures, feasibility).

    ``evaluate`` builds and times a candidate (default ``bench.evaluate``; ``advise.trials`` builds on
    workers); with ``jobs`` > 1 that many proposals are asked together, evaluated at once and told in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from compressctl.advise.space import build_space
    from compressctl.advise.strategies import make_strategy

    space = build_space(bench, analysis)
    start = starting_points(space)[:trials]
    agent = make_strategy(strategy, space, seed=seed, limits=budget.limits(), trials=trials, starting=start)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    evaluate = evaluate or bench.evaluate
    width = max(1, jobs)
    with ThreadPoolExecutor(max_workers=width) as pool:
        while len(records) < trials and (timeout_s is None or time.perf_counter() - started < timeout_s):
            batch = [agent.ask() for _ in range(min(width, trials - len(records)))]
            suggested = [space.candidate(p.values) for p in batch]
            folders = [folder / f"trial-{p.number:03d}" for p in batch]
            if width == 1:
                results = [evaluate(suggested[0], folders[0])]
            else:
                results = list(pool.map(evaluate, suggested, folders))
            for proposal, candidate, figures in zip(batch, suggested, results, strict=True):
                violations = budget.violations(figures)
                agent.tell(proposal, figures, violations)
                records.append(trial_record(proposal.number, candidate, figures, violations, budget))
                records[-1]["params"] = proposal.values
                progress("trial", done=len(records), total=trials, front=len(pareto_front(records)))
    return records


def trial_record(
    number: int, suggested: dict[str, Any], figures: dict[str, Any], violations: dict[str, float], budget: Budget
) -> dict[str, Any]:
    candidate = effective_candidate(suggested, figures)
    record = {
        "trial": number,
        "candidate": candidate,
        "figures": {k: v for k, v in figures.items() if k not in ("params_path", "trained_by", "timed_by")},
        "violations": violations,
        "feasible": budget.meets(figures),
        "trained_by": figures.get("trained_by"),
        "timed_by": figures.get("timed_by"),
        "model_path": figures.get("params_path"),  # the model its figures stand for (re-timed before finalists)
    }
    if candidate != suggested:
        record["suggested"] = suggested
    log.info(
        "trial %d: %s → metric %.4f, %.2fx [%.2f, %.2f], %.0f kB%s",
        number,
        describe_candidate(candidate),
        figures["metric"],
        figures["speedup"],
        *figures.get("speedup_ci", (figures["speedup"], figures["speedup"])),
        figures["size_bytes"] / 1000,
        "" if record["feasible"] else " (outside the budget)",
    )
    return record


def describe_lowrank(rule: dict[str, Any]) -> str:
    words = [f"{k} {v:g}" for k, v in rule.items() if k != "layer_ratios"]
    words += [f"{k}={v:g}" for k, v in (rule.get("layer_ratios") or {}).items()]
    return f"{LOWRANK_METHOD} " + " ".join(words)


def describe_quantization(candidate: dict[str, Any]) -> str | None:
    mode = quantization(candidate)
    if mode == "kmeans":
        return f"k-means {candidate.get('bits', 4)}-bit"
    if mode == "int4":
        return "int4 weight-only"
    if mode not in ("int8", "dynamic"):
        return None
    extra = [f"{k}={candidate[k]}" for k in ("per_channel", "calibration") if k in candidate]
    if candidate.get("float_nodes"):
        extra.append(f"{len(candidate['float_nodes'])} node(s) kept float")
    if candidate.get("float_fallback") is not None:
        extra.append(f"float fallback at {candidate['float_fallback']:g} drop")
    name = "int8" if mode == "int8" else "dynamic int8"
    return name + (f" ({', '.join(extra)})" if extra else "")


def describe_candidate(candidate: dict[str, Any]) -> str:
    """The candidate's stages in order, in a line: ``prune … (bn_scale, slimmed) + tucker ratio 0.5 + int8``."""
    parts = []
    amounts = prune_amounts(candidate)
    if amounts:
        importance = candidate.get("importance", "l1")
        parts.append(
            "prune "
            + " ".join(f"{k.removesuffix('.*')}={v:.2f}" for k, v in (candidate.get("layer_amounts") or {}).items())
            + f" ({importance}{', after network slimming' if slims(candidate) else ''}"
            + (", least-squares reconstruction" if candidate.get("reconstruct") else "")
            + (", no recovery training" if candidate.get("recovery") == "none" else "")
            + ")"
        )
    rule = lowrank_rule(candidate)
    if rule is not None:
        position = 0 if candidate.get("lowrank_order") == "before" else len(parts)
        parts.insert(position, describe_lowrank(rule))
    plugins = [f"{k}={v}" for k, v in candidate.items() if "." in k]  # third-party stages: ``stage.field``
    if plugins:
        parts.append(" ".join(plugins))
    quantize = describe_quantization(candidate)
    if quantize:
        parts.append(quantize)
    return " + ".join(parts) or "float baseline"


LATENCY_LIMITS = ("min_speedup", "max_latency_ms")
SPEED_SLACK = 0.25  # a proxy missing a latency limit by at most this share of it may still make it in a full run


def choose_finalists(records: list[dict[str, Any]], count: int, budget: Budget) -> list[dict[str, Any]]:
    """Candidates worth a full run, best first.

    1. feasible Pareto-front members, fastest first, with the most accurate of them among the
       first ``count`` (the fast ones may lose more accuracy in their full run than their proxy showed);
    2. candidates that meet every limit but speed, and miss that by at most ``SPEED_SLACK`` of it,
       fastest first: a proxy's short sitting can underrate a model by that much (2026-12-06: the
       tiny transformer's hand recipe, 2.29x in its apply run, measured 1.71x in one proxy sitting);
    3. candidates that meet every limit but accuracy, most accurate first: one
       proxy epoch underrates accuracy, full fine-tuning often recovers it;
    4. the rest, by how far they miss the limits (relative to each limit).
    """
    limits = budget.limits()
    feasible = [r for r in pareto_front(records) if r["feasible"]]
    first = sorted(feasible, key=lambda r: (-r["figures"]["speedup"], -r["figures"]["metric"]))
    if len(first) > count > 1:
        safest = max(first, key=lambda r: (r["figures"]["metric"], r["figures"]["speedup"]))
        if safest not in first[:count]:
            first.remove(safest)
            first.insert(count - 1, safest)
    near = [
        r
        for r in records
        if not r["feasible"] and all(v <= 0 for k, v in r["violations"].items() if k != "max_accuracy_drop")
    ]
    second = sorted(near, key=lambda r: -r["figures"]["metric"])
    slow = [
        r
        for r in records
        if not r["feasible"]
        and all(v <= 0 for k, v in r["violations"].items() if k not in LATENCY_LIMITS)
        and all(v <= SPEED_SLACK * abs(limits[k]) for k, v in r["violations"].items() if k in LATENCY_LIMITS)
    ]
    second = sorted(slow, key=lambda r: -r["figures"]["speedup"]) + second

    def shortfall(record: dict[str, Any]) -> float:
        return sum(max(0.0, v) / max(abs(limits[k]), 1e-9) for k, v in record["violations"].items())

    chosen: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for record in first + second + sorted(records, key=shortfall):
        keys = {describe_candidate(record["candidate"]), same_model_key(record)}
        if not keys & seen:
            seen |= keys
            chosen.append(record)
    return chosen[:count]


def same_model_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """Candidates whose ratios round to the same widths (``round_to``) build the same model: same proxy figures."""
    figures = record["figures"]
    flt = figures.get("float", {})
    return (round(figures["metric"], 6), figures["size_bytes"], flt.get("macs"), flt.get("size_bytes"))
