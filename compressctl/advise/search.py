"""Multi-objective search over compression settings with Optuna's NSGA-II.

Objectives: the recipe's metric (max), the speedup over the baseline at the
gate batch on the provider, timed in a sitting together with it (max; see
``advise.timing``), size on disk (min). The budget's limits are constraints, so
NSGA-II ranks feasible candidates first. Each trial is a real proxy: the
workbench runs the candidate's stages with a brief fine-tune, exports,
quantizes and measures.

The search space: a structured pruning ratio per top-level part, the channel
ranking (l1, l2, or bn_scale after network slimming), Tucker-2 low-rank ranks
(none, a ratio or an energy) placed before or after pruning, and the
quantization (float, static INT8 with or without the accuracy-aware float
fallback, k-means at 4 or 8 bits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.advise.budget import Budget
from compressctl.advise.recipes import LOWRANK_METHOD, lowrank_rule, prune_amounts, quantization, slims
from compressctl.pruning.importance import SEARCHED_IMPORTANCES

log = logging.getLogger("compressctl")

MAX_LAYER_PRUNE = 0.8
PRUNE_STEP = 0.05
IMPORTANCES = SEARCHED_IMPORTANCES  # bn_scale: network slimming (a fine-tune with L1 on BN scales first)
QUANTIZATIONS = ("int8", "float", "kmeans")
KMEANS_BITS = (4, 8)
FLOAT_FALLBACKS = (None, 0.003, 0.001)  # quantize max_accuracy_drop: None keeps every node INT8
LOWRANK_RULES = {  # Tucker-2 ranks of the convs
    "ratio 0.3": {"ratio": 0.3},
    "ratio 0.5": {"ratio": 0.5},
    "ratio 0.7": {"ratio": 0.7},
    "energy 0.9": {"energy": 0.9},
}
LOWRANK_ORDERS = ("after", "before")  # relative to pruning: the search's stage order


def layer_groups(bench: Any) -> dict[str, str]:
    """Top-level parts of the model that hold prunable layers → their ``layer_amounts`` pattern."""
    from compressctl.advise.sensitivity import prunable_layers

    groups: dict[str, str] = {}
    for name in prunable_layers(bench.module, bench.example()):
        top = name.split(".")[0]
        groups.setdefault(top, f"{top}.*" if "." in name else top)
    return groups


def suggest_quantization(trial: Any, choices: tuple[str, ...]) -> dict[str, Any]:
    """INT8 (with or without the accuracy-aware float fallback), k-means at 4 or 8 bits, or float."""
    mode = trial.suggest_categorical("quantize", choices)
    if mode == "int8":
        return {"quantize": mode, "float_fallback": trial.suggest_categorical("float_fallback", FLOAT_FALLBACKS)}
    if mode == "kmeans":
        return {"quantize": mode, "bits": trial.suggest_categorical("kmeans_bits", KMEANS_BITS)}
    return {"quantize": mode}


def suggest(trial: Any, bench: Any, groups: dict[str, str]) -> dict[str, Any]:
    """One candidate from the trial (its keys: see ``recipes``)."""
    if bench.module is None:  # an ONNX-only model: quantization settings only
        candidate = suggest_quantization(trial, ("int8", "kmeans"))
        if candidate["quantize"] == "int8":
            candidate["per_channel"] = trial.suggest_categorical("per_channel", [True, False])
            candidate["calibration"] = trial.suggest_categorical("calibration", ["minmax", "entropy", "percentile"])
        return candidate
    amounts = {
        pattern: round(trial.suggest_float(f"prune:{group}", 0.0, MAX_LAYER_PRUNE, step=PRUNE_STEP), 4)
        for group, pattern in groups.items()
    }
    candidate: dict[str, Any] = {
        "layer_amounts": amounts,
        "importance": trial.suggest_categorical("importance", IMPORTANCES),
    }
    # with or without low-rank first, so that half the trials go without it
    if trial.suggest_categorical("lowrank", ("none", LOWRANK_METHOD)) != "none":
        candidate["lowrank"] = LOWRANK_RULES[trial.suggest_categorical("lowrank_rank", tuple(LOWRANK_RULES))]
        candidate["lowrank_order"] = trial.suggest_categorical("lowrank_order", LOWRANK_ORDERS)
    candidate.update(suggest_quantization(trial, QUANTIZATIONS))
    return candidate


def least_sensitive_part(groups: dict[str, str], prune_sensitivity: dict[str, dict[str, float]]) -> str | None:
    """The part whose layers lose the least accuracy at 50 % pruning (the sensitivity analysis, no fine-tuning)."""
    drops: dict[str, list[float]] = {}
    for layer, by_ratio in prune_sensitivity.items():
        top = layer.split(".")[0]
        if top in groups and "0.5" in by_ratio:
            drops.setdefault(top, []).append(by_ratio["0.5"])
    if len(drops) < 2:
        return None
    return min(drops, key=lambda part: sum(drops[part]) / len(drops[part]))


def starting_points(
    bench: Any, groups: dict[str, str], prune_sensitivity: dict[str, dict[str, float]] | None = None
) -> list[dict[str, Any]]:
    """Trials run first: the usual hand-written recipe (uniform pruning + INT8) and its slimmed,
    sensitivity-guided and low-rank variants."""
    if bench.module is None:
        return [{"quantize": "int8", "float_fallback": None, "per_channel": True, "calibration": "minmax"}]
    int8 = {"lowrank": "none", "quantize": "int8", "float_fallback": 0.003}

    def uniform(ratio: float, **choices: Any) -> dict[str, Any]:
        return {**{f"prune:{g}": ratio for g in groups}, "importance": "l1", **int8, **choices}

    points = [uniform(0.5), uniform(0.5, importance="bn_scale")]
    cheap = least_sensitive_part(groups, prune_sensitivity or {})
    if cheap is not None:  # prune the part that loses least harder
        guided = uniform(0.5, **{f"prune:{cheap}": 0.7})
        points += [dict(guided, importance="bn_scale"), guided]
    points.append(uniform(0.6, importance="bn_scale"))
    points.append(uniform(0.5, lowrank=LOWRANK_METHOD, lowrank_rank="ratio 0.5", lowrank_order="after"))
    return points


def effective_candidate(candidate: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The candidate without the stages that changed nothing in its proxy.

    A low-rank stage that replaced no conv (no conv's MACs would drop) or a
    k-means stage that found no weight large enough to cluster is left out:
    the recipe then has no stage that would do nothing (or fail), and the
    candidate counts as the same as its twin without it.
    """
    effective = dict(candidate)
    lowrank = figures.get("stages", {}).get("lowrank")
    if lowrank_rule(candidate) is not None and lowrank is not None and not lowrank["decomposed"]:
        effective.pop("lowrank")
        effective.pop("lowrank_order", None)
    if quantization(candidate) == "kmeans" and not figures.get("kmeans", {}).get("clustered", 1):
        effective.pop("bits", None)
        effective["quantize"] = "float"
    return effective


def objectives(figures: dict[str, Any]) -> tuple[float, float, float]:
    return figures["metric"], figures["speedup"], float(figures["size_bytes"])


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
    prune_sensitivity: dict[str, dict[str, float]] | None = None,
    evaluate: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run the study; returns one record per finished trial (candidate, proxy figures, feasibility).

    ``evaluate`` builds and times a candidate (default ``bench.evaluate``; ``advise.trials`` builds on
    workers); with ``jobs`` > 1 that many trials are in flight at once.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    groups = layer_groups(bench) if bench.module is not None else {}
    records: list[dict[str, Any]] = []
    sampler = optuna.samplers.NSGAIISampler(population_size=max(4, min(12, trials // 3)), seed=seed)
    study = optuna.create_study(directions=["maximize", "maximize", "minimize"], sampler=sampler)
    evaluate = evaluate or bench.evaluate
    for point in starting_points(bench, groups, prune_sensitivity)[:trials]:
        study.enqueue_trial(point)

    def objective(trial: Any) -> tuple[float, float, float]:
        suggested = suggest(trial, bench, groups)
        figures = evaluate(suggested, folder / f"trial-{trial.number:03d}")
        violations = budget.violations(figures)
        for name, value in violations.items():
            trial.set_constraint(name, value)  # NSGA-II ranks feasible trials (all <= 0) first
        candidate = effective_candidate(suggested, figures)
        record = {
            "trial": trial.number,
            "candidate": candidate,
            "figures": {k: v for k, v in figures.items() if k not in ("params_path", "trained_by", "timed_by")},
            "violations": violations,
            "feasible": budget.meets(figures),
            "trained_by": figures.get("trained_by"),
            "timed_by": figures.get("timed_by"),
        }
        if candidate != suggested:
            record["suggested"] = suggested
        records.append(record)
        log.info(
            "trial %d: %s → metric %.4f, %.2fx [%.2f, %.2f], %.0f kB%s",
            trial.number,
            describe_candidate(candidate),
            figures["metric"],
            figures["speedup"],
            *figures["speedup_ci"],
            figures["size_bytes"] / 1000,
            "" if record["feasible"] else " (outside the budget)",
        )
        return objectives(figures)

    def after_trial(study: Any, trial: Any) -> None:
        progress("trial", done=len(records), total=trials, front=len(pareto_front(records)))

    study.optimize(objective, n_trials=trials, timeout=timeout_s, callbacks=[after_trial], n_jobs=jobs)
    return records


def describe_lowrank(rule: dict[str, float]) -> str:
    return f"{LOWRANK_METHOD} " + " ".join(f"{k} {v:g}" for k, v in rule.items())


def describe_quantization(candidate: dict[str, Any]) -> str | None:
    mode = quantization(candidate)
    if mode == "kmeans":
        return f"k-means {candidate.get('bits', 4)}-bit"
    if mode != "int8":
        return None
    extra = [f"{k}={candidate[k]}" for k in ("per_channel", "calibration") if k in candidate]
    if candidate.get("float_fallback") is not None:
        extra.append(f"float fallback at {candidate['float_fallback']:g} drop")
    return "int8" + (f" ({', '.join(extra)})" if extra else "")


def describe_candidate(candidate: dict[str, Any]) -> str:
    """The candidate's stages in order, in a line: ``prune … (bn_scale, slimmed) + tucker ratio 0.5 + int8``."""
    parts = []
    amounts = prune_amounts(candidate)
    if amounts:
        importance = candidate.get("importance", "l1")
        parts.append(
            "prune "
            + " ".join(f"{k.removesuffix('.*')}={v:.2f}" for k, v in (candidate.get("layer_amounts") or {}).items())
            + f" ({importance}{', after network slimming' if slims(candidate) else ''})"
        )
    rule = lowrank_rule(candidate)
    if rule is not None:
        position = 0 if candidate.get("lowrank_order") == "before" else len(parts)
        parts.insert(position, describe_lowrank(rule))
    quantize = describe_quantization(candidate)
    if quantize:
        parts.append(quantize)
    return " + ".join(parts) or "float baseline"


def choose_finalists(records: list[dict[str, Any]], count: int, budget: Budget) -> list[dict[str, Any]]:
    """Candidates worth a full run, best first.

    1. feasible Pareto-front members, fastest first;
    2. candidates that meet every limit but accuracy, most accurate first: one
       proxy epoch underrates accuracy, full fine-tuning often recovers it;
    3. the rest, by how far they miss the limits (relative to each limit).
    """
    limits = budget.limits()
    feasible = [r for r in pareto_front(records) if r["feasible"]]
    first = sorted(feasible, key=lambda r: (-r["figures"]["speedup"], -r["figures"]["metric"]))
    near = [
        r
        for r in records
        if not r["feasible"] and all(v <= 0 for k, v in r["violations"].items() if k != "max_accuracy_drop")
    ]
    second = sorted(near, key=lambda r: -r["figures"]["metric"])

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
